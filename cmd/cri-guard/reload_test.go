package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime answers RunPodSandbox and Version.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake"}, nil
}

func (fakeRuntime) RunPodSandbox(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "created"}, nil
}

// startServe runs `cri-guard serve` in process against a fake runtime and a
// fake cgroup tree whose pod cgroup holds a limit of 0 bytes.
func startServe(t *testing.T, extra ...string) (client runtimeapi.RuntimeServiceClient, dir string, done <-chan error, stop func()) {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cg-cmd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	up := filepath.Join(dir, "runtime.sock")
	l, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(up, 0o660) // as containerd's: cri-guard's socket may be no wider
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, fakeRuntime{})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	pod := filepath.Join(dir, "cgroup", "memory", "kubepods", "pod1")
	os.MkdirAll(pod, 0o755)
	for name, body := range map[string]string{
		"memory.stat": "rss 0\n", "memory.oom_control": "oom_kill 0\n", "memory.usage_in_bytes": "0\n",
		"memory.max_usage_in_bytes": "0\n", "memory.failcnt": "0\n", "memory.limit_in_bytes": "0\n",
	} {
		os.WriteFile(filepath.Join(pod, name), []byte(body), 0o644)
	}

	guardSock := filepath.Join(dir, "guard", "guard.sock")
	args := append([]string{"serve", "--listen", "unix://" + guardSock, "--upstream", "unix://" + up,
		"--cgroup-root", filepath.Join(dir, "cgroup"), "--log-level", "error"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, args) }()
	conn, err := grpc.NewClient("unix://"+guardSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client = runtimeapi.NewRuntimeServiceClient(conn)
	deadline := time.Now().Add(time.Minute) // a hang guard
	for {
		if _, err := client.Version(context.Background(), &runtimeapi.VersionRequest{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cri-guard never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
		}
	}
	t.Cleanup(stop)
	return client, dir, errc, stop
}

// reloadCount reads cri_guard_config_reloads_total{result}.
func reloadCount(t *testing.T, result string) float64 {
	t.Helper()
	var m dto.Metric
	if err := reloads.WithLabelValues(result).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// waitReloadCount waits until the daemon has counted reloads up to want, so
// that what a test checks next is the reloaded state however long the
// reload took; the limit only guards against a hang.
func waitReloadCount(t *testing.T, result string, want float64) {
	t.Helper()
	for end := time.Now().Add(time.Minute); reloadCount(t, result) < want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("config_reloads_total{result=%q} is %v, want %v", result, reloadCount(t, result), want)
		}
	}
}

func tinyPod(ctx context.Context, c runtimeapi.RuntimeServiceClient) error {
	_, err := c.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a"},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod1", Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}},
	}})
	return err
}

func TestServeStopsOnSignalContext(t *testing.T) {
	client, _, done, stop := startServe(t)
	if err := tinyPod(context.Background(), client); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 2000-byte pod: got %v, want InvalidArgument", err)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("serve did not stop")
	}
}

func TestReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("mode: reject\n")
	client, _, _, _ := startServe(t, "--config", cfg)
	ctx := context.Background()
	expect := func(want codes.Code) {
		t.Helper()
		deadline := time.Now().Add(time.Minute) // a hang guard
		for {
			err := tinyPod(ctx, client)
			if status.Code(err) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("got %v, want %v", err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	expect(codes.InvalidArgument)

	write("mode: audit\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	expect(codes.OK)

	// A bad file is refused and the last good config (audit) stays.
	refused := reloadCount(t, "failure")
	write("mode: block\nsandboxMinMemory: lots\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitReloadCount(t, "failure", refused+1)
	expect(codes.OK)

}

func TestFlagsWinOverTheFileOnReload(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("mode: reject\n"), 0o644)
	client, _, _, _ := startServe(t, "--config", cfg, "--mode", "audit")
	if err := tinyPod(context.Background(), client); err != nil {
		t.Fatalf("--mode audit over a file that says reject: %v", err)
	}
	applied := reloadCount(t, "success")
	os.WriteFile(cfg, []byte("mode: reject\nsandboxMinMemory: 64Mi\n"), 0o644)
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitReloadCount(t, "success", applied+1)
	if err := tinyPod(context.Background(), client); err != nil {
		t.Fatalf("after reload, the flag should still win: %v", err)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("mode: raise\n"), 0o644)
	os.WriteFile(bad, []byte("mode: raise\ncontainerMinMemory: 12MB\n"), 0o644)
	if err := checkConfig([]string{good}); err != nil {
		t.Errorf("good file: %v", err)
	}
	err := checkConfig([]string{bad})
	want := bad + `:
containerMinMemory: "12MB": "12MB" is not a quantity`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("bad file: got %v, want prefix %q", err, want)
	}
	if err := checkConfig(nil); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("no file: %v", err)
	}
}

// A change to the file is picked up without a signal.
func TestReloadOnFileChange(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("mode: reject\n"), 0o644)
	client, _, _, _ := startServe(t, "--config", cfg)
	if err := tinyPod(context.Background(), client); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("before the change: %v", err)
	}
	// Changed at once: a change before the watcher's first look counts too.
	os.WriteFile(cfg, []byte("mode: audit\n"), 0o644)
	deadline := time.Now().Add(time.Minute) // a hang guard
	for status.Code(tinyPod(context.Background(), client)) != codes.OK {
		if time.Now().After(deadline) {
			t.Fatal("the changed file was not applied within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestVersion(t *testing.T) {
	got := versionString()
	for _, want := range []string{"cri-guard ", "(commit ", "cri-api v0.37"} {
		if !strings.Contains(got, want) {
			t.Errorf("version %q lacks %q", got, want)
		}
	}
}

// cri-guard refuses to open the runtime wider than the runtime's own socket.
func TestServeRefusesAWiderSocket(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "cg-cmd-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	up := filepath.Join(dir, "runtime.sock")
	l, err := net.Listen("unix", up)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(up, 0o600)
	err = run(context.Background(), []string{"serve", "--listen", "unix://" + filepath.Join(dir, "g.sock"), "--upstream", "unix://" + up, "--socket-group", "4242"})
	want := "the socket would give access that the runtime's own socket does not: mode 0660 owner 0 group 4242 lets the members of group 4242 (not listed in /etc/group) connect, but " + up + " is mode 0600 owner 0 group 0; set socketMode and socketGroup no wider than the runtime's socket"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "g.sock")); !os.IsNotExist(err) {
		t.Errorf("the socket was created: %v", err)
	}
}
