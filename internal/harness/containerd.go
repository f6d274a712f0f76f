package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CNIBinDir is where Debian's containernetworking-plugins installs the
// CNI plugins.
const CNIBinDir = "/usr/lib/cni"

// K8sNamespace is the containerd namespace the CRI plugin uses.
const K8sNamespace = "k8s.io"

const (
	startTimeout = 2 * time.Minute // a hang guard
	pullTimeout  = 60 * time.Second
	maxSockPath  = 100 // sun_path is 108 bytes; containerd adds ".ttrpc"
)

// DefaultMirrorHosts returns the upstream registry hosts that Start points
// at the loopback registry, in addition to the hosts of the served images.
// Pulls from any of them never leave the machine.
func DefaultMirrorHosts() []string {
	return []string{
		"docker.io", "registry-1.docker.io", "index.docker.io",
		"registry.k8s.io", "k8s.gcr.io", "gcr.io", "quay.io", "ghcr.io",
		"us-docker.pkg.dev", "mcr.microsoft.com", "public.ecr.aws", "localhost",
	}
}

// Options configures Start.
type Options struct {
	// Dir is the scratch root for everything containerd writes (required).
	// It is created if missing and removed by Close. Keep it short: the
	// containerd socket lives in it and unix socket paths are limited.
	Dir string
	// Log receives harness progress messages (nil: discarded). containerd's
	// own output goes to Runtime.LogPath.
	Log io.Writer
	// Images are extra images to serve from the loopback registry, pulled
	// at start like the pause and busybox images.
	Images []*Image
	// DisableCNI leaves the CNI configuration empty, so only host-network
	// pods can run. By default a bridge network is configured.
	DisableCNI bool
	// Snapshotter forces a containerd snapshotter; by default overlayfs is
	// used when an overlay mount works in Dir, native otherwise.
	Snapshotter string
	// MirrorHosts are extra upstream hosts to mirror (see DefaultMirrorHosts).
	MirrorHosts []string
	// ContainerdDir is a directory holding containerd and its runc v2 shim,
	// e.g. the containerd 2.x that tools/containerd2.sh builds into
	// $CRI_GUARD_CACHE/bin/containerd-v2.4.2. Empty: the directory in the
	// environment variable CRI_GUARD_CONTAINERD_DIR (ContainerdDirEnv), and
	// when that is empty too, containerd and the shim from PATH (Debian's).
	ContainerdDir string
}

// ContainerdDirEnv names the environment variable that selects the
// containerd build Start runs when Options.ContainerdDir is empty.
const ContainerdDirEnv = "CRI_GUARD_CONTAINERD_DIR"

// Runtime is a running private containerd with the CRI plugin. Close it to
// remove every trace of it.
type Runtime struct {
	Dir        string // scratch root
	Socket     string // containerd gRPC socket path
	Endpoint   string // "unix://" + Socket
	ConfigPath string // containerd config.toml
	LogPath    string // containerd stdout and stderr

	// Containerd is the daemon's binary; the runc v2 shim is taken from the
	// same directory (ShimPath).
	Containerd string
	ShimPath   string
	// Version is what `containerd --version` says, e.g. "1.6.20~ds1" or
	// "v2.4.2"; Major is its major version (1 or 2), which decides the
	// configuration layout (version 2, or version 3 for containerd 2.x).
	Version string
	Major   int

	Registry   *Registry
	PauseRef   string // sandbox image
	BusyboxRef string

	// CgroupRoot is a cgroup parent unique to this runtime, e.g.
	// "/criguard-e2e-1a2b3c4d". CreatePodCgroup creates pod cgroups below
	// it; Close removes it in every hierarchy.
	CgroupRoot  string
	Snapshotter string

	// CNI network; empty with Options.DisableCNI.
	NetworkName string // CNI network name
	Bridge      string // bridge link name, e.g. "cg1a2b"
	Subnet      string // pod subnet, e.g. "10.231.17.0/24"

	// CRI is a client connected to Endpoint, closed by Close.
	CRI *CRIClient

	log        io.Writer
	cmd        *exec.Cmd
	exited     chan struct{}
	before     hostState
	subnetLock net.Listener

	mu        sync.Mutex
	taskIDs   map[string]bool // sandbox and container IDs seen
	closeOnce sync.Once
	closeErr  error
}

// Start starts a private containerd as described by opts, waits until its
// CRI service answers and pulls the pause and busybox images (and
// opts.Images) into it. On error everything already set up is torn down.
func Start(ctx context.Context, opts Options) (_ *Runtime, retErr error) {
	if opts.Dir == "" {
		return nil, errors.New("start containerd: Options.Dir is required")
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("start containerd: must run as root (uid %d)", os.Geteuid())
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	if len(sock)+len(".ttrpc") > maxSockPath {
		return nil, fmt.Errorf("start containerd: socket path %q too long for a unix socket; use a shorter Dir", sock)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	ctrdBin, shimBin, err := containerdBinaries(opts.ContainerdDir)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if !present("runc") {
		return nil, errors.New("start containerd: runc not found (see EnsurePackages)")
	}
	version, major, err := ContainerdVersion(ctx, ctrdBin)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	id, err := randomHex(4)
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	r := &Runtime{
		Dir:        dir,
		Socket:     sock,
		Endpoint:   "unix://" + sock,
		ConfigPath: filepath.Join(dir, "config.toml"),
		LogPath:    filepath.Join(dir, "containerd.log"),
		Containerd: ctrdBin,
		ShimPath:   shimBin,
		Version:    version,
		Major:      major,
		Registry:   NewRegistry(),
		PauseRef:   PauseRef,
		BusyboxRef: BusyboxRef,
		CgroupRoot: "/criguard-e2e-" + id,
		log:        opts.Log,
		exited:     make(chan struct{}),
		taskIDs:    map[string]bool{},
	}
	if r.log == nil {
		r.log = io.Discard
	}
	r.before = captureHostState()
	defer func() {
		if retErr != nil {
			if cerr := r.Close(); cerr != nil {
				retErr = errors.Join(retErr, fmt.Errorf("cleanup after failed start: %w", cerr))
			}
		}
	}()

	// Images and the loopback registry.
	pause, err := PauseImage(ctx, filepath.Join(dir, "pause-build"))
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	busybox, err := BusyboxImage()
	if err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	images := append([]*Image{pause, busybox}, opts.Images...)
	for _, img := range images {
		if err := r.Registry.Add(img); err != nil {
			return nil, fmt.Errorf("start containerd: %w", err)
		}
	}
	if err := r.Registry.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}

	r.Snapshotter = opts.Snapshotter
	if r.Snapshotter == "" {
		r.Snapshotter = "overlayfs"
		if err := probeOverlay(filepath.Join(dir, "overlay-probe")); err != nil {
			fmt.Fprintf(r.log, "harness: overlayfs unusable (%v), using native snapshotter\n", err)
			r.Snapshotter = "native"
		}
	}

	if err := r.writeHostsConfig(append(DefaultMirrorHosts(), opts.MirrorHosts...)); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	if !opts.DisableCNI {
		if err := r.writeCNIConfig(id); err != nil {
			return nil, fmt.Errorf("start containerd: %w", err)
		}
	}
	if err := os.WriteFile(r.ConfigPath, []byte(r.config()), 0o644); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}

	if err := r.startDaemon(ctx); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	for _, img := range images {
		for _, ref := range img.Refs {
			if err := r.pull(ctx, ref); err != nil {
				return nil, fmt.Errorf("start containerd: %w", err)
			}
		}
	}
	fmt.Fprintf(r.log, "harness: containerd %s ready at %s (snapshotter %s, cgroup root %s, network %s %s)\n",
		r.Version, r.Endpoint, r.Snapshotter, r.CgroupRoot, r.Bridge, r.Subnet)
	return r, nil
}

func (r *Runtime) startDaemon(ctx context.Context) error {
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// Not CommandContext: the daemon must outlive ctx; Close stops it.
	cmd := exec.Command(r.Containerd, "--config", r.ConfigPath)
	cmd.Dir = r.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// The shim's directory first on PATH: containerd looks the shim up
	// there, and a shim of another version must not be picked up.
	cmd.Env = append(withPathFirst(os.Environ(), filepath.Dir(r.ShimPath)), "TMPDIR="+filepath.Join(r.Dir, "tmp"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := os.MkdirAll(filepath.Join(r.Dir, "tmp"), 0o755); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec containerd: %w", err)
	}
	r.cmd = cmd
	go func() {
		cmd.Wait() //nolint:errcheck // exit status is reported through the log
		close(r.exited)
	}()
	fmt.Fprintf(r.log, "harness: started containerd pid %d, config %s\n", cmd.Process.Pid, r.ConfigPath)

	r.CRI, err = DialCRI(r.Endpoint)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	v, err := WaitForCRI(wctx, r.CRI, r.exited)
	if err != nil {
		return fmt.Errorf("%w\ncontainerd log (%s) ends with:\n%s", err, r.LogPath, r.LogTail(40))
	}
	fmt.Fprintf(r.log, "harness: CRI answers: %s %s (CRI %s)\n", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
	if bad := configComplaints(r.LogPath); len(bad) > 0 {
		return fmt.Errorf("containerd %s did not take the configuration %s as written:\n%s", r.Version, r.ConfigPath, strings.Join(bad, "\n"))
	}
	return nil
}

func (r *Runtime) pull(ctx context.Context, ref string) error {
	pctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	resp, err := r.CRI.Image.PullImage(pctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return fmt.Errorf("pull %s: %w\ncontainerd log ends with:\n%s", ref, err, r.LogTail(20))
	}
	fmt.Fprintf(r.log, "harness: pulled %s (%s)\n", ref, resp.ImageRef)
	return nil
}

// LogTail returns the last n lines of containerd's log.
func (r *Runtime) LogTail(n int) string {
	return tailFile(r.LogPath, n)
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	b, _ := json.Marshal(s) // JSON string escapes are valid TOML escapes
	return string(b)
}

func (r *Runtime) config() string {
	if r.Major >= 2 {
		return r.configV3()
	}
	q := tomlString
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by the cri-guard test harness; see internal/harness.
version = 2
root = %s
state = %s
temp = %s
plugin_dir = ""
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
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

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %s
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    systemd_cgroup = false
    disable_hugetlb_controller = true
    tolerate_missing_hugetlb_controller = true

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = %s
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %s

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %s
      conf_dir = %s
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = %s
`,
		q(filepath.Join(r.Dir, "root")), q(filepath.Join(r.Dir, "state")), q(filepath.Join(r.Dir, "tmp")),
		q(r.Socket), q(r.Socket+".ttrpc"),
		q(filepath.Join(r.Dir, "opt")),
		q(r.PauseRef),
		q(r.Snapshotter),
		q(filepath.Join(r.Dir, "runc")),
		q(CNIBinDir), q(filepath.Join(r.Dir, "net.d")),
		q(filepath.Join(r.Dir, "certs.d")),
	)
	return b.String()
}

// writeHostsConfig writes one certs.d/<host>/hosts.toml per mirrored host,
// sending every pull to the loopback registry (and nowhere else).
func (r *Runtime) writeHostsConfig(extra []string) error {
	set := map[string]bool{}
	for _, h := range append(extra, r.Registry.Hosts()...) {
		set[h] = true
	}
	hosts := make([]string, 0, len(set))
	for h := range set {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		// docker.io aliases are stored under docker.io in the registry.
		store := h
		if h == "registry-1.docker.io" || h == "index.docker.io" {
			store = "docker.io"
		}
		u := r.Registry.MirrorURL(store)
		content := fmt.Sprintf(`# Written by the cri-guard test harness: serve %s from the loopback registry.
server = %s

[host.%s]
  capabilities = ["pull", "resolve"]
  skip_verify = true
`, h, tomlString(u), tomlString(u))
		d := filepath.Join(r.Dir, "certs.d", hostDirName(h))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hostDirName converts "host:port" to containerd's "host_port_" form.
func hostDirName(h string) string {
	if i := strings.LastIndex(h, ":"); i > 0 {
		return h[:i] + "_" + h[i+1:] + "_"
	}
	return h
}

// writeCNIConfig picks a free /24 under 10.231.0.0/16 and a bridge name,
// and writes the bridge conflist. host-local keeps its state in Dir.
func (r *Runtime) writeCNIConfig(id string) error {
	subnet, lock, err := claimSubnet()
	if err != nil {
		return err
	}
	r.subnetLock = lock
	r.Subnet = subnet
	r.NetworkName = "criguard-" + id
	for i := 0; ; i++ {
		suffix, err := randomHex(2)
		if err != nil {
			return err
		}
		name := "cg" + suffix
		if _, err := os.Stat(filepath.Join("/sys/class/net", name)); os.IsNotExist(err) {
			r.Bridge = name
			break
		}
		if i > 20 {
			return errors.New("no free bridge name")
		}
	}
	conf := map[string]any{
		"cniVersion": "0.4.0",
		"name":       r.NetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      r.Bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": subnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(r.Dir, "cni-ipam"),
				},
			},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(r.Dir, "net.d", "10-criguard.conflist"), data, 0o644)
}

const subnetClaimPrefix = "cri-guard-harness-subnet-"

// claimSubnet picks a 10.231.X.0/24 that no local address is in and that
// no other live harness holds. The claim is an abstract unix socket
// "@cri-guard-harness-subnet-X": it leaves nothing on disk and the kernel
// releases it when the process dies.
func claimSubnet() (string, net.Listener, error) {
	used := map[byte]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 10 && ip4[1] == 231 {
					used[ip4[2]] = true
				}
			}
		}
	}
	start, err := randomHex(1)
	if err != nil {
		return "", nil, err
	}
	first, _ := strconv.ParseUint(start, 16, 8)
	for i := 0; i < 254; i++ {
		x := byte((int(first)+i)%254 + 1)
		if used[x] {
			continue
		}
		ln, err := net.Listen("unix", fmt.Sprintf("@%s%d", subnetClaimPrefix, x))
		if err != nil {
			continue
		}
		return fmt.Sprintf("10.231.%d.0/24", x), ln, nil
	}
	return "", nil, errors.New("no free subnet in 10.231.0.0/16")
}

// probeOverlay checks that an overlay mount works with dir as backing
// storage, as the overlayfs snapshotter needs.
func probeOverlay(dir string) error {
	defer os.RemoveAll(dir)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	merged := filepath.Join(dir, "merged")
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	if err := unix.Unmount(merged, 0); err != nil {
		return errors.Join(fmt.Errorf("unmount overlay probe: %w", err), unix.Unmount(merged, unix.MNT_DETACH))
	}
	return nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
