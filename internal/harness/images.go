package harness

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Standard image references.
const (
	PauseRef   = "registry.k8s.io/pause:3.10"
	BusyboxRef = "docker.io/library/busybox:latest"
)

// PauseRefs are all the references the pause image is served as, so that
// any sandbox_image default of containerd 1.6/1.7/2.0 resolves.
func PauseRefs() []string {
	return []string{PauseRef, "registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.6"}
}

// BusyboxRefs are all the references the busybox image is served as.
func BusyboxRefs() []string {
	return []string{BusyboxRef, "docker.io/library/busybox:1.28", "docker.io/library/busybox:1.36"}
}

// BusyboxPath is where the busybox-static package installs its binary.
const BusyboxPath = "/bin/busybox"

//go:embed csrc/pause.c
var pauseSource []byte

// PauseImage compiles the embedded pause program with `gcc -static -Os -s`
// in workDir and returns an image containing it as /pause, served under
// PauseRefs. It runs as 65535:65535 like the upstream pause image.
func PauseImage(ctx context.Context, workDir string) (*Image, error) {
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("pause image: %w", err)
	}
	src := filepath.Join(workDir, "pause.c")
	bin := filepath.Join(workDir, "pause")
	if err := os.WriteFile(src, pauseSource, 0o644); err != nil {
		return nil, fmt.Errorf("pause image: %w", err)
	}
	cmd := exec.CommandContext(ctx, "gcc", "-static", "-Os", "-s", "-o", bin, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pause image: gcc: %w: %s", err, bytes.TrimSpace(out))
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("pause image: %w", err)
	}
	return Build(ImageSpec{
		Refs:   PauseRefs(),
		Layers: [][]File{{{Path: "/pause", Mode: 0o755, Data: data}}},
		Config: ImageConfig{Entrypoint: []string{"/pause"}, User: "65535:65535"},
	})
}

// fallbackApplets is used when `busybox --list` cannot be run.
var fallbackApplets = []string{
	"sh", "ash", "ls", "cat", "echo", "sleep", "top", "true", "false", "id", "env",
	"ps", "mkdir", "rm", "rmdir", "touch", "wget", "nc", "httpd", "head", "tail",
	"dd", "grep", "sed", "awk", "hostname", "stat", "mount", "umount", "cp", "mv",
	"ln", "chmod", "chown", "kill", "test", "[", "wc", "sort", "uniq", "tr",
	"cut", "date", "df", "du", "find", "xargs", "tee", "uname", "whoami", "ip",
	"ping", "nslookup", "vi", "which", "timeout", "printf", "pwd", "readlink",
	"seq", "yes", "free", "pidof", "killall", "sync", "tar", "gzip", "gunzip",
}

// BusyboxImage builds a busybox image from BusyboxPath (busybox-static):
// /bin/busybox with a symlink in /bin for every applet, /etc/passwd and
// /etc/group with root and nobody, /tmp and /root; Cmd is ["sh"]. It is
// served under BusyboxRefs.
func BusyboxImage() (*Image, error) {
	data, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox image: %w (is busybox-static installed?)", err)
	}
	applets := fallbackApplets
	if out, err := exec.Command(BusyboxPath, "--list").Output(); err == nil && len(out) > 0 {
		applets = strings.Fields(string(out))
	}
	applets = append([]string(nil), applets...)
	sort.Strings(applets)
	files := []File{
		{Path: "/bin/busybox", Mode: 0o755, Data: data},
	}
	seen := map[string]bool{"busybox": true}
	for _, a := range applets {
		if seen[a] || strings.Contains(a, "/") {
			continue
		}
		seen[a] = true
		files = append(files, File{Path: "/bin/" + a, Linkname: "busybox"})
	}
	files = append(files,
		File{Path: "/etc/passwd", Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")},
		File{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\n")},
		File{Path: "/tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
		File{Path: "/root", Mode: os.ModeDir | 0o700},
		File{Path: "/home", Mode: os.ModeDir | 0o755},
		File{Path: "/var/www", Mode: os.ModeDir | 0o755},
	)
	return Build(ImageSpec{
		Refs:   BusyboxRefs(),
		Layers: [][]File{files},
		Config: ImageConfig{
			Cmd: []string{"sh"},
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
	})
}
