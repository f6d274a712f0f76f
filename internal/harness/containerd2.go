package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// This file chooses the containerd build a Runtime runs (Debian's 1.6 from
// PATH, or another build in a directory such as the containerd 2.x of
// tools/containerd2.sh) and writes the configuration layout containerd 2.x
// reads (version 3).

// containerdBinaries returns the daemon and the runc v2 shim to run: from
// dir, else from $CRI_GUARD_CONTAINERD_DIR, else from PATH.
func containerdBinaries(dir string) (daemon, shim string, err error) {
	if dir == "" {
		dir = os.Getenv(ContainerdDirEnv)
	}
	if dir == "" {
		for _, bin := range []string{"containerd", "containerd-shim-runc-v2"} {
			if !present(bin) {
				return "", "", fmt.Errorf("%s not found (see EnsurePackages)", bin)
			}
		}
		daemon, _ = exec.LookPath("containerd")
		shim, _ = exec.LookPath("containerd-shim-runc-v2")
		if filepath.Dir(daemon) != filepath.Dir(shim) {
			return "", "", fmt.Errorf("containerd (%s) and its shim (%s) are in different directories: set %s", daemon, shim, ContainerdDirEnv)
		}
		return daemon, shim, nil
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	daemon = filepath.Join(dir, "containerd")
	shim = filepath.Join(dir, "containerd-shim-runc-v2")
	for _, p := range []string{daemon, shim} {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", "", fmt.Errorf("containerd directory %s: no executable %s (tools/containerd2.sh builds one)", dir, filepath.Base(p))
		}
	}
	return daemon, shim, nil
}

// ContainerdVersion runs `bin --version` and returns the version it
// names and its major number. containerd prints
// "containerd <package> <version> <revision>", e.g.
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1".
func ContainerdVersion(ctx context.Context, bin string) (version string, major int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", 0, fmt.Errorf("%s --version: %w", bin, err)
	}
	return parseContainerdVersion(string(out))
}

func parseContainerdVersion(out string) (version string, major int, err error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" {
		return "", 0, fmt.Errorf("unexpected containerd --version output %q", strings.TrimSpace(out))
	}
	version = f[2]
	m, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	major, err = strconv.Atoi(m)
	if err != nil || major < 1 {
		return "", 0, fmt.Errorf("unexpected containerd version %q in %q", version, strings.TrimSpace(out))
	}
	return version, major, nil
}

// withPathFirst returns env with dir in front of PATH.
func withPathFirst(env []string, dir string) []string {
	out := make([]string, 0, len(env)+1)
	path := dir
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			if v != "" {
				path = dir + string(os.PathListSeparator) + v
			}
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PATH="+path)
}

// configComplaints returns the lines of containerd's log that say it
// ignored part of its configuration (containerd 2.x warns "Ignoring
// unknown key in TOML" for a key it does not know, e.g. a 1.x name).
func configComplaints(logPath string) []string {
	f, err := os.Open(logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var bad []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "Ignoring unknown key") {
			bad = append(bad, line)
		}
	}
	return bad
}

// configV3 is the configuration for containerd 2.x: the layout of config
// version 3, which every 2.x release reads (2.4 migrates it to its own
// version 4 and logs that it did). The CRI plugin is split in three:
// io.containerd.cri.v1.images (snapshotter, sandbox image, registry),
// io.containerd.cri.v1.runtime (runtimes, CNI, OOM score and cgroup
// settings) and io.containerd.grpc.v1.cri (the streaming server). NRI is
// disabled: no test uses it.
func (r *Runtime) configV3() string {
	q := tomlString
	return fmt.Sprintf(`# Written by the cri-guard test harness for containerd %s; see internal/harness.
version = 3
root = %s
state = %s
temp = %s
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = %s
  tcp_address = ""

[ttrpc]
  address = %s

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %s

  [plugins."io.containerd.cri.v1.images"]
    snapshotter = %s

    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = %s

    [plugins."io.containerd.cri.v1.images".registry]
      config_path = %s

  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_selinux = false
    disable_hugetlb_controller = true
    tolerate_missing_hugetlb_controller = true

    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        runtime_path = %s

        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %s

    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = [%s]
      conf_dir = %s
      max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`,
		r.Version,
		q(filepath.Join(r.Dir, "root")), q(filepath.Join(r.Dir, "state")), q(filepath.Join(r.Dir, "tmp")),
		q(r.Socket), q(r.Socket+".ttrpc"),
		q(filepath.Join(r.Dir, "opt")),
		q(r.Snapshotter),
		q(r.PauseRef),
		q(filepath.Join(r.Dir, "certs.d")),
		q(r.ShimPath),
		q(filepath.Join(r.Dir, "runc")),
		q(CNIBinDir), q(filepath.Join(r.Dir, "net.d")),
	)
}

// CtrPath returns the ctr client beside the daemon, or "ctr" from PATH
// when the daemon's directory has none.
func (r *Runtime) CtrPath() string {
	p := filepath.Join(filepath.Dir(r.Containerd), "ctr")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "ctr"
}
