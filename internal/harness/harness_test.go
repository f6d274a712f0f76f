package harness

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/podcgroup"
)

// requireE2E skips unless CRI_GUARD_E2E=1; with it set, a missing
// prerequisite is a failure, not a skip.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("CRI_GUARD_E2E") != "1" {
		t.Skip("real-runtime test: set CRI_GUARD_E2E=1 and run as root to enable")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("CRI_GUARD_E2E=1 but not running as root (uid %d)", os.Geteuid())
	}
	if err := EnsurePackages(context.Background(), testWriter{t}); err != nil {
		t.Fatalf("CRI_GUARD_E2E=1 but prerequisites are missing: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestRuntimeEndToEnd(t *testing.T) {
	requireE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// t.TempDir paths are long; the containerd socket must fit in sun_path.
	dir, err := os.MkdirTemp("", "cg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	netnsBefore := listDir(t, netnsDir)

	rt, err := Start(ctx, Options{Dir: dir, Log: testWriter{t}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			if err := rt.Close(); err != nil {
				t.Errorf("Close (cleanup): %v", err)
			}
		}
	})
	rs, is := rt.CRI.Runtime, rt.CRI.Image

	imgs, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages: %v", err)
	}
	tags := map[string]bool{}
	for _, img := range imgs.Images {
		for _, tag := range img.RepoTags {
			tags[tag] = true
		}
	}
	for _, want := range append(PauseRefs(), BusyboxRefs()...) {
		if !tags[want] {
			t.Errorf("image %s not present after Start; have %v", want, tags)
		}
	}

	// An OCI archive from WriteOCIArchive is accepted by `ctr images import`.
	extra, err := Build(ImageSpec{
		Refs:   []string{"example.com/harness/imported:v1"},
		Layers: [][]File{{{Path: "/hello", Mode: 0o644, Data: []byte("hello\n")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "import.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(f, extra); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.CommandContext(ctx, rt.CtrPath(), "--address", rt.Socket, "--namespace", K8sNamespace,
		"images", "import", "--snapshotter", rt.Snapshotter, archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	// containerd 2.x updates its CRI image store from the image event, a
	// moment after the import returns: poll (the deadline is a hang guard).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ist, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: extra.Refs[0]}})
		if err == nil && ist.Image != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("imported image not visible through CRI after 30s: %v %v", ist, err)
			break
		}
	}

	// Pod 1: host network, in a kubelet-style pod cgroup limited to 64 MiB.
	const limit = 64 << 20
	parent, err := rt.CreatePodCgroup("e2e-host", limit)
	if err != nil {
		t.Fatalf("CreatePodCgroup: %v", err)
	}
	cg, err := podcgroup.Detect(rt.CgroupRoot)
	if err != nil {
		t.Fatal(err)
	}
	mem := cg.Memory
	if got := readTrim(t, filepath.Join(mem, parent, "memory.limit_in_bytes")); got != strconv.Itoa(limit) {
		t.Errorf("memory.limit_in_bytes = %s, want %d", got, limit)
	}
	hostPod := podConfig("host", "e2e-host", parent, runtimeapi.NamespaceMode_NODE)
	hostID, ctrID := runPod(ctx, t, rs, hostPod)
	if !exists(filepath.Join(mem, parent, ctrID)) {
		t.Errorf("container cgroup %s not under the pod cgroup", filepath.Join(mem, parent, ctrID))
	}
	ex, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ctrID, Cmd: []string{"echo", "hi"}, Timeout: 10})
	if err != nil {
		t.Fatalf("ExecSync: %v", err)
	}
	if string(ex.Stdout) != "hi\n" || ex.ExitCode != 0 {
		t.Errorf("ExecSync echo hi: stdout %q stderr %q exit %d", ex.Stdout, ex.Stderr, ex.ExitCode)
	}

	// Pod 2: CNI bridge network; its IP must be in our subnet.
	cniPod := podConfig("cni", "e2e-cni", "", runtimeapi.NamespaceMode_POD)
	cniID, _ := runPod(ctx, t, rs, cniPod)
	st, err := rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: cniID})
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	_, subnet, err := net.ParseCIDR(rt.Subnet)
	if err != nil {
		t.Fatalf("Subnet %q: %v", rt.Subnet, err)
	}
	ip := net.ParseIP(st.GetStatus().GetNetwork().GetIp())
	if ip == nil || !subnet.Contains(ip) {
		t.Errorf("CNI pod IP %q not in %s", st.GetStatus().GetNetwork().GetIp(), rt.Subnet)
	} else {
		t.Logf("CNI pod IP %s in %s on bridge %s", ip, rt.Subnet, rt.Bridge)
	}

	// Stop and remove the host pod explicitly; leave the CNI pod for Close.
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: hostID}); err != nil {
		t.Errorf("StopPodSandbox: %v", err)
	}
	if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: hostID}); err != nil {
		t.Errorf("RemovePodSandbox: %v", err)
	}

	start := time.Now()
	closed = true
	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
	if err := rt.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// Nothing may be left.
	if err := rt.VerifyClean(); err != nil {
		t.Errorf("VerifyClean: %v", err)
	}
	for _, p := range listProcs() {
		if !alive(p.pid) {
			continue
		}
		cmd := strings.Join(p.cmdline, " ")
		if strings.Contains(cmd, dir) || strings.Contains(p.cwd, dir) {
			t.Errorf("process left: %d %s", p.pid, cmd)
		}
	}
	for _, m := range readMountInfo() {
		if strings.HasPrefix(m.mountPoint, dir) {
			t.Errorf("mount left: %s", m.mountPoint)
		}
	}
	for _, h := range cgroupHierarchies() {
		if exists(filepath.Join(h, rt.CgroupRoot)) {
			t.Errorf("cgroup left: %s", filepath.Join(h, rt.CgroupRoot))
		}
		for _, id := range []string{hostID, cniID, ctrID} {
			if exists(filepath.Join(h, K8sNamespace, id)) {
				t.Errorf("cgroup left: %s", filepath.Join(h, K8sNamespace, id))
			}
		}
	}
	if after := listDir(t, netnsDir); len(after) > len(netnsBefore) {
		t.Errorf("network namespaces before %v, after %v", netnsBefore, after)
	}
	if exists(filepath.Join("/sys/class/net", rt.Bridge)) {
		t.Errorf("bridge %s left", rt.Bridge)
	}
	if exists(dir) {
		t.Errorf("directory %s left", dir)
	}
}

func podConfig(name, uid, cgroupParent string, netMode runtimeapi.NamespaceMode) *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Uid: uid, Namespace: "e2e"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: netMode},
			},
		},
	}
	if netMode != runtimeapi.NamespaceMode_NODE {
		cfg.Hostname = name // a host-network pod shares the node's UTS namespace
	}
	return cfg
}

// runPod runs a sandbox with one busybox container sleeping for an hour.
func runPod(ctx context.Context, t *testing.T, rs runtimeapi.RuntimeServiceClient, cfg *runtimeapi.PodSandboxConfig) (podID, ctrID string) {
	t.Helper()
	pod, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.Metadata.Name, err)
	}
	ctr, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.PodSandboxId,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
			Image:    &runtimeapi.ImageSpec{Image: BusyboxRef},
			Command:  []string{"sleep", "3600"},
			Linux:    &runtimeapi.LinuxContainerConfig{},
		},
		SandboxConfig: cfg,
	})
	if err != nil {
		t.Fatalf("CreateContainer in %s: %v", cfg.Metadata.Name, err)
	}
	if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		t.Fatalf("StartContainer in %s: %v", cfg.Metadata.Name, err)
	}
	return pod.PodSandboxId, ctr.ContainerId
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestRuntimeCloseAfterCrash kills containerd while pods run, as a crashed
// test would leave it, and checks that Close still removes everything.
func TestRuntimeCloseAfterCrash(t *testing.T) {
	requireE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "cg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Start(ctx, Options{Dir: dir, Log: testWriter{t}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	rs := rt.CRI.Runtime
	parent, err := rt.CreatePodCgroup("crash-host", -1)
	if err != nil {
		t.Fatal(err)
	}
	runPod(ctx, t, rs, podConfig("crash-host", "crash-host", parent, runtimeapi.NamespaceMode_NODE))
	runPod(ctx, t, rs, podConfig("crash-cni", "crash-cni", "", runtimeapi.NamespaceMode_POD))

	if err := rt.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-rt.exited
	pids, shims := rt.ownedProcesses()
	if len(shims) == 0 || len(pids) < 4 {
		t.Fatalf("after killing containerd expected live shims and pod processes, got pids %v shims %v", pids, shims)
	}
	if len(mountsUnder(dir)) == 0 {
		t.Fatal("expected rootfs/netns mounts under Dir before Close")
	}
	if err := rt.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := rt.VerifyClean(); err != nil {
		t.Errorf("VerifyClean: %v", err)
	}
}

// TestStartFailureCleansUp makes containerd's CRI plugin fail and checks
// that Start reports containerd's log and leaves nothing behind.
func TestStartFailureCleansUp(t *testing.T) {
	requireE2E(t)
	dir, err := os.MkdirTemp("", "cg-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	rt, err := Start(ctx, Options{Dir: dir, Snapshotter: "no-such-snapshotter", Log: testWriter{t}})
	if err == nil {
		rt.Close()
		t.Fatal("Start succeeded with a bogus snapshotter")
	}
	t.Logf("Start failed after %s as expected: %.300s", time.Since(start).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "containerd log") {
		t.Errorf("error does not include containerd's log: %v", err)
	}
	if exists(dir) {
		t.Errorf("%s left after failed Start", dir)
	}
	if left := mountsUnder(dir); len(left) > 0 {
		t.Errorf("mounts left: %v", left)
	}
}
