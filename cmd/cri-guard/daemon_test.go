package main_test

// These tests run the cri-guard binary, built once per test run, against an
// in-process fake runtime: readiness notification, socket activation,
// the metrics listener and `cri-guard status`.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var built struct {
	once sync.Once
	dir  string // removed by TestMain
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binary returns the cri-guard binary: $CRI_GUARD_BIN, or one built now.
func binary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.bin = os.Getenv("CRI_GUARD_BIN"); built.bin != "" {
			return
		}
		dir, err := os.MkdirTemp("", "cg-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir, built.bin = dir, filepath.Join(dir, "cri-guard")
		out, err := exec.Command("go", "build", "-o", built.bin, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

type versionOnly struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (versionOnly) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "fakert", RuntimeVersion: "9.8.7", RuntimeApiVersion: "v1"}, nil
}

// shortDir is a temporary directory whose socket paths fit sun_path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cg-d-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// fakeRuntime serves versionOnly at dir/rt.sock and returns its endpoint.
func fakeRuntime(t *testing.T, dir string) string {
	t.Helper()
	return serveRuntimeAt(t, dir, versionOnly{})
}

// serveRuntimeAt serves rs at dir/rt.sock and returns its endpoint.
func serveRuntimeAt(t *testing.T, dir string, rs runtimeapi.RuntimeServiceServer) string {
	t.Helper()
	path := filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o660) // as containerd's: cri-guard's socket may be no wider
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, rs)
	go s.Serve(l) //nolint:errcheck
	t.Cleanup(s.Stop)
	return "unix://" + path
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// daemon is a running cri-guard process.
type daemon struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

// start runs cmd and stops it (SIGTERM, then SIGKILL) at cleanup.
func start(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout, cmd.Stderr = d.out, d.out
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("cri-guard output:\n%s", d.out.String())
		}
	})
	return d
}

func (d *daemon) stop(t *testing.T) {
	t.Helper()
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(time.Minute): // a hang guard
		t.Errorf("cri-guard did not stop on SIGTERM")
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// version calls CRI Version at endpoint, waiting for the socket up to timeout.
func version(endpoint string, timeout time.Duration) (*runtimeapi.VersionResponse, error) {
	cc, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return runtimeapi.NewRuntimeServiceClient(cc).Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
}

// notifySocket listens for sd_notify datagrams; each arrives on the channel
// as sent.
func notifySocket(t *testing.T, dir string) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

func TestReadyOnlyOnceListening(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	up := fakeRuntime(t, dir)
	notify, msgs := notifySocket(t, dir)
	sock := "unix://" + filepath.Join(dir, "sub", "g.sock")
	cmd := exec.Command(bin, "serve", "--listen", sock, "--upstream", up)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	d := start(t, cmd)
	select {
	case m := <-msgs:
		if m != "READY=1" {
			t.Fatalf("first notification %q, want READY=1", m)
		}
	case <-d.exited:
		t.Fatalf("cri-guard exited before READY=1: %v", d.err)
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("no READY=1 within a minute")
	}
	// At the moment READY=1 arrives the socket must already accept.
	conn, err := net.Dial("unix", strings.TrimPrefix(sock, "unix://"))
	if err != nil {
		t.Fatalf("dial right after READY=1: %v", err)
	}
	conn.Close()
	v, err := version(sock, time.Minute)
	if err != nil {
		t.Fatalf("Version through cri-guard: %v", err)
	}
	if v.GetRuntimeName() != "fakert" {
		t.Fatalf("runtime %q, want fakert", v.GetRuntimeName())
	}
}

// activate runs bin with l on fd 3 and LISTEN_FDS=1, LISTEN_PID set to the
// process's own pid by a shell that then execs bin, as systemd does.
func activate(t *testing.T, bin string, l *net.UnixListener, args ...string) *daemon {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin}, args...)...)
	cmd.ExtraFiles = []*os.File{f}
	return start(t, cmd)
}

func TestSocketActivationSurvivesRestart(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	up := fakeRuntime(t, dir)
	path := filepath.Join(dir, "act.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// --listen names a path that must stay unused: the activated socket wins.
	unused := filepath.Join(dir, "unused.sock")
	args := []string{"serve", "--listen", "unix://" + unused, "--upstream", up}
	d := activate(t, bin, l, args...)
	if _, err := version("unix://"+path, time.Minute); err != nil {
		t.Fatalf("Version on the activated socket: %v\n%s", err, d.out.String())
	}
	d.waitLog(t, "socket-activated=true")
	if _, err := os.Stat(unused); !os.IsNotExist(err) {
		t.Errorf("--listen path was created although a socket was passed: %v", err)
	}
	d.stop(t)
	if d.err != nil {
		t.Fatalf("cri-guard exit after SIGTERM: %v", d.err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the activated socket file is gone after the daemon stopped: %v", err)
	}
	// A call made while the daemon is down waits in the socket's backlog and
	// is answered by the next daemon. Its connection is made here, before
	// the next daemon starts: a sleep could not be sure that the client
	// had dialled by then on a busy machine.
	pre, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect while the daemon is down: %v", err)
	}
	var dialled sync.Once
	cc, err := grpc.NewClient("passthrough:///backlog", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: time.Minute}),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			c := net.Conn(nil)
			dialled.Do(func() { c = pre })
			if c == nil {
				return nil, errors.New("the connection made while the daemon was down failed")
			}
			return c, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	type result struct {
		v   *runtimeapi.VersionResponse
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
		defer cancel()
		v, err := runtimeapi.NewRuntimeServiceClient(cc).Version(ctx, &runtimeapi.VersionRequest{})
		res <- result{v, err}
	}()
	d2 := activate(t, bin, l, args...)
	r := <-res
	if r.err != nil {
		t.Fatalf("Version across the restart: %v\n%s", r.err, d2.out.String())
	}
	if r.v.GetRuntimeVersion() != "9.8.7" {
		t.Fatalf("runtime version %q, want 9.8.7", r.v.GetRuntimeVersion())
	}
}

// freePort returns a loopback address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsAndStatusOfARealDaemon(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	up := fakeRuntime(t, dir)
	cfg := filepath.Join(dir, "config.yaml")
	addr := freePort(t)
	sock := "unix://" + filepath.Join(dir, "g.sock")
	if err := os.WriteFile(cfg, []byte("listen: "+sock+"\nupstream: "+up+"\nmetricsListen: "+addr+"\nmode: audit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check-config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	digest := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(string(out))
	if digest == "" {
		t.Fatalf("no digest in check-config output %q", out)
	}
	notify, msgs := notifySocket(t, dir)
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	d := start(t, cmd)
	select {
	case <-msgs:
	case <-d.exited:
		t.Fatalf("cri-guard exited: %v\n%s", d.err, d.out.String())
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("no READY=1 within a minute")
	}
	for range 3 {
		if _, err := version(sock, time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	// The upstream state gauge follows the daemon's own connection to the
	// runtime, on a goroutine of its own: the calls above do not wait for
	// it. Wait until it says READY (a hang guard), then read the rest.
	var code int
	var body string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if code, body = httpGet(t, "http://"+addr+"/metrics"); strings.Contains(body, `cri_guard_upstream_state{state="READY"} 1`+"\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never said READY:\n%s", body)
		}
	}
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`cri_guard_requests_total{code="OK",method="/runtime.v1.RuntimeService/Version"} 3`,
		`cri_guard_request_duration_seconds_count{method="/runtime.v1.RuntimeService/Version"} 3`,
		`cri_guard_upstream_state{state="READY"} 1`,
		`cri_guard_build_info{`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body := httpGet(t, "http://"+addr+"/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	// Plain relayed calls are not logged at info level.
	if strings.Contains(d.out.String(), "Version") {
		t.Errorf("a plain relayed call was logged:\n%s", d.out.String())
	}

	out, err = exec.Command(bin, "status", "--config", cfg, "--timeout", "1m").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^daemon: +cri-guard \S+ \(commit \S+, cri-api \S+\), pid ` + fmt.Sprint(d.cmd.Process.Pid) + `, up \S+$`),
		regexp.MustCompile(`(?m)^config digest: +` + digest + `$`),
		regexp.MustCompile(`(?m)^mode: +audit$`),
		regexp.MustCompile(`(?m)^upstream: +` + regexp.QuoteMeta(up) + ` \(READY\)$`),
		regexp.MustCompile(`(?m)^runtime: +fakert 9\.8\.7 \(CRI v1\)$`),
		regexp.MustCompile(`(?m)^socket: +` + regexp.QuoteMeta(sock) + `: fakert 9\.8\.7 answers through cri-guard$`),
	} {
		if !want.Match(out) {
			t.Errorf("status output lacks %s:\n%s", want, out)
		}
	}

	out, err = exec.Command(bin, "status", "--config", cfg, "--json", "--timeout", "1m").Output()
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var rep struct {
		Daemon struct {
			ConfigDigest  string `json:"configDigest"`
			UpstreamState string `json:"upstreamState"`
		} `json:"daemon"`
		Runtime struct{ Name string } `json:"runtime"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if rep.Daemon.ConfigDigest != digest || rep.Daemon.UpstreamState != "READY" || rep.Runtime.Name != "fakert" {
		t.Errorf("status --json = %+v, want digest %s, READY, fakert", rep, digest)
	}

	// Stopped daemon: status fails and says why.
	d.stop(t)
	// The refused connection is immediate; the timeout bounds the wait for
	// the socket, which no one serves now (WaitForReady).
	out, err = exec.Command(bin, "status", "--config", cfg, "--timeout", "5s").CombinedOutput()
	if err == nil {
		t.Fatalf("status of a stopped daemon succeeded:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^daemon: +unreachable: status: Get "http://` + regexp.QuoteMeta(addr) + `/status": .*connection refused`).Match(out) {
		t.Errorf("status of a stopped daemon:\n%s", out)
	}
}

func TestMetricsListenLoopbackOnly(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"all interfaces", "0.0.0.0:0", "must be a loopback address"},
		{"empty host", ":0", "must be a loopback address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, "serve", "--listen", "unix://"+filepath.Join(dir, "x.sock"), "--metrics-listen", tc.addr)
			d := start(t, cmd)
			select {
			case <-d.exited:
			case <-time.After(time.Minute): // a hang guard
				t.Fatal("cri-guard kept running with a non-loopback metrics address")
			}
			if d.err == nil || !strings.Contains(d.out.String(), tc.want) {
				t.Fatalf("exit %v, output:\n%s\nwant an error containing %q", d.err, d.out.String(), tc.want)
			}
		})
	}
}

// TestSystemdSocketActivate hands the socket over with systemd's own tool,
// as cri-guard.socket does.
func TestSystemdSocketActivate(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CRI_GUARD_E2E") == "" {
			t.Skip("systemd-socket-activate not found (apt-get install systemd)")
		}
		t.Fatal("CRI_GUARD_E2E is set but systemd-socket-activate is missing: run make deps")
	}
	bin := binary(t)
	dir := shortDir(t)
	up := fakeRuntime(t, dir)
	path := filepath.Join(dir, "sd.sock")
	d := start(t, exec.Command(tool, "-l", path, bin, "serve", "--listen", "unix://"+filepath.Join(dir, "unused.sock"), "--upstream", up))
	deadline := time.Now().Add(time.Minute) // a hang guard
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate did not create %s:\n%s", path, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	v, err := version("unix://"+path, time.Minute)
	if err != nil {
		t.Fatalf("Version through the activated socket: %v", err)
	}
	if v.GetRuntimeName() != "fakert" {
		t.Fatalf("runtime %q, want fakert", v.GetRuntimeName())
	}
	d.waitLog(t, "socket-activated=true")
}

// waitLog waits for the output to contain s: the serving line is logged
// just after the socket starts serving. The minute only guards against a
// hang.
func (d *daemon) waitLog(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(d.out.String(), s); {
		if time.Now().After(deadline) {
			t.Fatalf("output lacks %q:\n%s", s, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// neverStarts is a runtime with no sandbox; a RunPodSandbox that reaches it
// is counted and refused.
type neverStarts struct {
	versionOnly
	reached chan struct{}
}

func (neverStarts) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{}, nil
}

func (n neverStarts) RunPodSandbox(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	n.reached <- struct{}{}
	return nil, fmt.Errorf("the fake runtime creates no sandbox")
}

// Issue 16 item 11: a pod that never started is known to the node by its
// uid alone (its cgroup's name); `cri-guard explain namespace/name` finds
// it through the RunPodSandbox calls the running daemon refused, and
// prints the uid the cgroup uses.
func TestExplainNeverStartedPodByName(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	rt := neverStarts{reached: make(chan struct{}, 8)}
	up := serveRuntimeAt(t, dir, rt)
	sock := "unix://" + filepath.Join(dir, "g.sock")
	root := filepath.Join(dir, "cgroup") // no cgroups: explain must not need them
	os.MkdirAll(filepath.Join(root, "memory"), 0o755)
	d := start(t, exec.Command(bin, "serve", "--listen", sock, "--upstream", up, "--cgroup-root", root))
	if _, err := version(sock, time.Minute); err != nil {
		t.Fatalf("Version through cri-guard: %v\n%s", err, d.out.String())
	}

	cc, err := grpc.NewClient(sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	const refusal = "pod team-a/tiny: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"
	for attempt := range uint32(2) { // the kubelet tries again
		_, err = runtimeapi.NewRuntimeServiceClient(cc).RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
			Metadata:    &runtimeapi.PodSandboxMetadata{Namespace: "team-a", Name: "tiny", Uid: "5f3c9a1e", Attempt: attempt},
			Annotations: map[string]string{"kubernetes.io/config.source": "file"},
			Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/burstable/pod5f3c9a1e",
				Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}},
		}})
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != refusal {
			t.Fatalf("RunPodSandbox of 2000 bytes: %v, want InvalidArgument: %s", err, refusal)
		}
	}
	if len(rt.reached) != 0 {
		t.Fatal("the refused RunPodSandbox reached the runtime")
	}

	for _, pod := range []string{"team-a/tiny", "5f3c9a1e"} {
		// --timeout: a hang guard, not explain's 10 s default.
		out, err := exec.Command(bin, "explain", pod, "--runtime-endpoint", up, "--listen", sock, "--cgroup-root", root, "--timeout", "2m").CombinedOutput()
		if err != nil {
			t.Fatalf("explain %s: %v\n%s", pod, err, out)
		}
		t.Logf("cri-guard explain %s:\n%s", pod, out)
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^pod team-a/tiny \(uid 5f3c9a1e\)\nsandboxes: 0\n`),
			regexp.MustCompile(`(?m)^RunPodSandbox calls that created no sandbox, as the running cri-guard saw them:\n` +
				`  uid 5f3c9a1e  attempt 1  refused by cri-guard  2 calls, from \S+ \S+ UTC to \S+ \S+ UTC  cgroup parent /kubepods/burstable/pod5f3c9a1e\n` +
				`    InvalidArgument: ` + regexp.QuoteMeta(refusal) + `\n`),
			regexp.MustCompile(`(?m)^note: never created: found through the RunPodSandbox calls the running cri-guard \(pid ` + fmt.Sprint(d.cmd.Process.Pid) +
				`\) saw; the uid here, 5f3c9a1e, is the one the kubelet sent and the pod's cgroup is named after$`),
			regexp.MustCompile(`(?m)^note: a static pod \(kubernetes.io/config.source file\): kubectl shows its mirror pod's uid, which differs from 5f3c9a1e$`),
			regexp.MustCompile(`(?m)^verdict: no pod sandbox exists: cri-guard refused its RunPodSandbox \(2 calls, the last at \S+ \S+ UTC\): InvalidArgument: ` + regexp.QuoteMeta(refusal) + `$`),
		} {
			if !want.Match(out) {
				t.Errorf("explain %s lacks %s", pod, want)
			}
		}
	}

	// Once the daemon is gone, the same question has no answer: explain
	// says it is unknown, not that there was none.
	d.stop(t)
	out, err := exec.Command(bin, "explain", "team-a/tiny", "--runtime-endpoint", up, "--listen", sock, "--cgroup-root", root).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no sandbox of pod team-a/tiny, and the running cri-guard could not be asked which RunPodSandbox calls it saw fail (no daemon answers on "+strings.TrimPrefix(sock, "unix://")+".ctl), so whether any did is unknown: ") {
		t.Errorf("explain with no daemon: %v\n%s", err, out)
	}
}
