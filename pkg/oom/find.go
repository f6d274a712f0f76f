package oom

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Bounds of a search for a pod's cgroup.
const (
	findMaxDepth   = 5
	findMaxEntries = 100000
)

// MemoryHierarchy is the directory under root (a cgroup mount point such as
// /sys/fs/cgroup) that holds the memory controller: root/memory on cgroup
// v1 and hybrid hosts, root itself on cgroup v2.
func MemoryHierarchy(root string) string {
	if fi, err := os.Stat(filepath.Join(root, "memory")); err == nil && fi.IsDir() {
		return filepath.Join(root, "memory")
	}
	return root
}

// FindPodCgroups searches the memory hierarchy under root for the cgroups of
// pod uid and returns their paths relative to the hierarchy, e.g.
// /kubepods/burstable/pod<uid> (cgroupfs driver) or
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice
// (systemd driver). within, when set, limits the search to that directory
// of the hierarchy (e.g. "/kubepods" or "/criguard-e2e-x"). The search goes
// at most five levels deep and does not descend into pod cgroups.
func FindPodCgroups(root, within, uid string) ([]string, error) {
	if uid == "" || strings.ContainsAny(uid, "/\x00") {
		return nil, fmt.Errorf("find pod cgroup: invalid pod uid %q", uid)
	}
	h := MemoryHierarchy(root)
	start := filepath.Join(h, filepath.Clean("/"+within))
	cgroupfs := "pod" + uid
	systemd := "-pod" + strings.ReplaceAll(uid, "-", "_") + ".slice"
	var (
		found   []string
		entries int
	)
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		des, err := os.ReadDir(dir)
		if err != nil {
			if dir == start {
				return fmt.Errorf("find pod cgroup: %w", err)
			}
			return nil
		}
		for _, de := range des {
			if !de.IsDir() {
				continue
			}
			if entries++; entries > findMaxEntries {
				return errors.New("find pod cgroup: too many cgroups to search; give a narrower search root")
			}
			name, p := de.Name(), filepath.Join(dir, de.Name())
			if name == cgroupfs || strings.HasSuffix(name, systemd) {
				rel, _ := filepath.Rel(h, p)
				found = append(found, "/"+rel)
				continue
			}
			if depth+1 >= findMaxDepth || strings.HasPrefix(name, "pod") || strings.Contains(name, "-pod") {
				continue // another pod, or too deep
			}
			if err := walk(p, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk(start, 0)
	return found, err
}
