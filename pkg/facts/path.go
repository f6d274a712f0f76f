package facts

import (
	"fmt"
	"path"
	"strings"
)

// maxPathLen bounds a cgroup path; the kernel's PATH_MAX.
const maxPathLen = 4096

// ResolveParent turns a PodSandboxConfig.Linux.CgroupParent into a path
// relative to the cgroup root, such as "/kubepods/burstable/pod123". A
// systemd slice name (kubepods-burstable-pod123.slice) is expanded to its
// nested path (/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice).
// A path with ".." is refused, never cleaned away.
func ResolveParent(parent string) (string, error) {
	switch {
	case parent == "":
		return "", fmt.Errorf("%w: empty", ErrBadPath)
	case len(parent) > maxPathLen:
		return "", fmt.Errorf("%w: %d bytes long", ErrBadPath, len(parent))
	case strings.ContainsRune(parent, 0):
		return "", fmt.Errorf("%w: %q has a NUL byte", ErrBadPath, parent)
	}
	for _, elem := range strings.Split(parent, "/") {
		if elem == ".." {
			return "", fmt.Errorf("%w: %q", ErrEscape, parent)
		}
	}
	if !strings.Contains(parent, "/") && strings.HasSuffix(parent, ".slice") {
		return ExpandSlice(parent)
	}
	return path.Clean("/" + parent), nil
}

// ExpandSlice expands a systemd slice name into its path, as systemd and
// runc do: each dash-separated prefix is a parent slice.
func ExpandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || strings.Contains(slice, "/") {
		return "", fmt.Errorf("%w: %q is not a slice name", ErrBadPath, slice)
	}
	if name == "-" {
		return "/", nil
	}
	var b strings.Builder
	prefix := ""
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			return "", fmt.Errorf("%w: %q has an empty component", ErrBadPath, slice)
		}
		b.WriteString("/" + prefix + part + ".slice")
		prefix += part + "-"
	}
	return b.String(), nil
}
