package main_test

// Restarts under load: a kubelet-like client makes 50 calls/s, holds a
// GetContainerEvents stream (subscribing again whenever it ends, as the
// kubelet's evented PLEG does) and has a slow StopContainer in flight while
// the daemon is restarted, in each of the ways an operator can. The test
// prints the figures of each case; it asserts no timing, only outcomes.

import (
	"context"
	"fmt"
	"io"
	"net"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// eventRuntime is a fake runtime with an event stream and a slow call.
type eventRuntime struct {
	versionOnly
	stops chan struct{} // one token per StopContainer that arrived
}

// GetContainerEvents sends one event at once, then holds the stream open.
func (eventRuntime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, ss runtimeapi.RuntimeService_GetContainerEventsServer) error {
	if err := ss.Send(&runtimeapi.ContainerEventResponse{ContainerId: "c1", ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT}); err != nil {
		return err
	}
	<-ss.Context().Done()
	return ss.Context().Err()
}

// StopContainer takes the duration its container id names, as a container
// with a grace period does.
func (r eventRuntime) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	d, err := time.ParseDuration(req.GetContainerId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	select {
	case r.stops <- struct{}{}:
	default:
	}
	select {
	case <-time.After(d):
		return &runtimeapi.StopContainerResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// eventRuntimeAt serves an eventRuntime; a token arrives on stops for
// each StopContainer that reached it.
func eventRuntimeAt(t *testing.T, dir string) (endpoint string, stops <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 16)
	return serveRuntimeAt(t, dir, eventRuntime{stops: ch}), ch
}

// load is the kubelet-like client.
type load struct {
	c runtimeapi.RuntimeServiceClient

	mu          sync.Mutex
	calls       int
	failed      []string
	longest     time.Duration
	answers     []time.Time // when each call was answered
	streamEnds  []streamEnd
	subscribed  []time.Time // first event of each subscription
	subFailures []string

	stop chan struct{}
	wg   sync.WaitGroup
}

type streamEnd struct {
	at  time.Time
	err error
}

func newLoad(t *testing.T, endpoint string) *load {
	t.Helper()
	// As the kubelet: default connection settings, calls fail fast.
	cc, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &load{c: runtimeapi.NewRuntimeServiceClient(cc), stop: make(chan struct{})}
}

func (ld *load) run() {
	ld.wg.Add(2)
	go func() {
		defer ld.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond) // 50 calls/s
		defer tick.Stop()
		for {
			select {
			case <-ld.stop:
				return
			case <-tick.C:
			}
			ld.wg.Add(1)
			go func() {
				defer ld.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // the kubelet's runtimeRequestTimeout
				defer cancel()
				start := time.Now()
				_, err := ld.c.Version(ctx, &runtimeapi.VersionRequest{})
				d := time.Since(start)
				ld.mu.Lock()
				defer ld.mu.Unlock()
				ld.calls++
				if d > ld.longest {
					ld.longest = d
				}
				if err != nil {
					ld.failed = append(ld.failed, err.Error())
					return
				}
				ld.answers = append(ld.answers, time.Now())
			}()
		}
	}()
	go func() {
		defer ld.wg.Done()
		for {
			select {
			case <-ld.stop:
				return
			default:
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-ld.stop:
				case <-ctx.Done():
				}
				cancel()
			}()
			st, err := ld.c.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			if err != nil {
				cancel()
				select {
				case <-ld.stop:
					return
				default:
				}
				ld.mu.Lock()
				ld.subFailures = append(ld.subFailures, err.Error())
				ld.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				continue
			}
			ld.mu.Lock()
			ld.subscribed = append(ld.subscribed, time.Now())
			ld.mu.Unlock()
			for err == nil {
				_, err = st.Recv()
			}
			cancel()
			select {
			case <-ld.stop:
				return
			default:
			}
			ld.mu.Lock()
			ld.streamEnds = append(ld.streamEnds, streamEnd{time.Now(), err})
			ld.mu.Unlock()
		}
	}()
}

func (ld *load) halt() {
	close(ld.stop)
	ld.wg.Wait()
}

func (ld *load) subscriptions() int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return len(ld.subscribed)
}

// longestGap is the longest time between two answers after from.
func (ld *load) longestGap(from time.Time) time.Duration {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	var gap time.Duration
	prev := from
	for _, a := range ld.answers {
		if a.Before(from) {
			continue
		}
		if d := a.Sub(prev); d > gap {
			gap = d
		}
		prev = a
	}
	return gap
}

// slowCall starts a StopContainer that takes d.
func slowCall(c runtimeapi.RuntimeServiceClient, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
		defer cancel()
		_, err := c.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: d.String()})
		done <- err
	}()
	return done
}

func waitExit(t *testing.T, d *daemon, what string) {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(2 * time.Minute): // hang guard
		t.Fatalf("%s did not exit:\n%s", what, d.out.String())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(5 * time.Millisecond) { // hang guard
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
	}
}

// TestRestartUnderLoad restarts the daemon in four ways, with each
// forwarding core, under a 50 calls/s client with an open event stream and
// a 3 s StopContainer in flight. With
// socket activation (systemd's way), a handover (a second `serve`) and an
// upgrade through `cri-guard reload` (the unit's ExecReload after the binary
// was replaced) no call may fail; a bare stop and start has a gap of one
// process start, whose failures are printed, not asserted. In every case
// the stream ends with Unavailable and is subscribed again to the new
// process, and the slow call is answered.
func TestRestartUnderLoad(t *testing.T) {
	bin := binary(t)
	const slow = 3 * time.Second
	type restart func(t *testing.T) (trigger time.Time)
	type figures struct {
		name                           string
		calls, failed, subFailed       int
		longest, gap, streamEnd, resub time.Duration
	}
	var (
		mu  sync.Mutex
		all []figures
		fw  []string // the forwarding core's flag, for every daemon
	)
	cases := []struct {
		name     string
		zeroFail bool
		setup    func(t *testing.T, dir, up string) (endpoint string, restart restart)
	}{
		{"socket-activation", true, func(t *testing.T, dir, up string) (string, restart) {
			path := filepath.Join(dir, "act.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			args := append([]string{"serve", "--listen", "unix://" + filepath.Join(dir, "g.sock"), "--upstream", up}, fw...)
			old := activate(t, bin, l, args...)
			return "unix://" + path, func(t *testing.T) time.Time {
				// systemctl restart: SIGTERM, wait for the exit, start again.
				at := time.Now()
				old.cmd.Process.Signal(syscall.SIGTERM)
				waitExit(t, old, "the old daemon")
				if old.err != nil {
					t.Errorf("old daemon: %v\n%s", old.err, old.out.String())
				}
				activate(t, bin, l, args...)
				return at
			}
		}},
		{"handover", true, func(t *testing.T, dir, up string) (string, restart) {
			sock := "unix://" + filepath.Join(dir, "g.sock")
			args := append([]string{"serve", "--listen", sock, "--upstream", up, "--metrics-listen", freePort(t)}, fw...)
			old := start(t, exec.Command(bin, args...))
			return sock, func(t *testing.T) time.Time {
				at := time.Now()
				nd := start(t, exec.Command(bin, args...))
				waitExit(t, old, "the old daemon")
				if old.err != nil {
					t.Errorf("old daemon: %v\n%s", old.err, old.out.String())
				}
				nd.waitLog(t, "took over from the running daemon")
				return at
			}
		}},
		{"upgrade-via-reload", true, func(t *testing.T, dir, up string) (string, restart) {
			// The binary at a path of its own, replaced as a package does.
			exe := filepath.Join(dir, "cri-guard")
			copyFile(t, bin, exe)
			sock := "unix://" + filepath.Join(dir, "g.sock")
			// Output to a file: the successor inherits it, and a pipe it
			// holds open would keep Wait from returning for the old one.
			logf, err := os.Create(filepath.Join(dir, "daemons.log"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					b, _ := os.ReadFile(logf.Name())
					t.Logf("daemons' output:\n%s", b)
				}
				logf.Close()
			})
			cmd := exec.Command(exe, append([]string{"serve", "--listen", sock, "--upstream", up}, fw...)...)
			cmd.Stdout, cmd.Stderr = logf, logf
			old := start(t, cmd)
			return sock, func(t *testing.T) time.Time {
				copyFile(t, bin, exe+".new")
				if err := os.Rename(exe+".new", exe); err != nil {
					t.Fatal(err)
				}
				at := time.Now()
				out, err := exec.Command(exe, append([]string{"reload", "--listen", sock, "--upstream", up}, fw...)...).CombinedOutput()
				var pid int
				if _, serr := fmt.Sscanf(string(out), "upgraded: pid %d", &pid); err != nil || serr != nil {
					t.Errorf("cri-guard reload after replacing the binary: %v\n%s", err, out)
				} else {
					t.Cleanup(func() { stopPID(pid) })
				}
				waitExit(t, old, "the old daemon")
				if old.err != nil {
					t.Errorf("old daemon: %v\n%s", old.err, old.out.String())
				}
				return at
			}
		}},
		{"bare-stop-start", false, func(t *testing.T, dir, up string) (string, restart) {
			sock := "unix://" + filepath.Join(dir, "g.sock")
			args := append([]string{"serve", "--listen", sock, "--upstream", up}, fw...)
			old := start(t, exec.Command(bin, args...))
			return sock, func(t *testing.T) time.Time {
				// kill, then start at once: the old one still drains.
				at := time.Now()
				old.cmd.Process.Signal(syscall.SIGTERM)
				nd := start(t, exec.Command(bin, args...))
				waitExit(t, old, "the old daemon")
				nd.waitLog(t, "cri-guard serving")
				return at
			}
		}},
	}
	for _, core := range []string{"frames", "grpc"} {
		fw = []string{"--forwarding", core}
		for _, tc := range cases {
			t.Run(core+"/"+tc.name, func(t *testing.T) {
				dir := shortDir(t)
				up, stops := eventRuntimeAt(t, dir)
				endpoint, restart := tc.setup(t, dir, up)
				if _, err := version(endpoint, time.Minute); err != nil {
					t.Fatalf("the first daemon does not answer: %v", err)
				}
				ld := newLoad(t, endpoint)
				ld.run()
				waitFor(t, "the event stream", func() bool { return ld.subscriptions() == 1 })
				slowDone := slowCall(ld.c, slow)
				// In flight at the restart: it reached the runtime (a hang
				// guard only; a sleep would not be sure of it on a busy
				// machine, and the call would then test nothing).
				select {
				case <-stops:
				case <-time.After(time.Minute):
					t.Fatal("the slow StopContainer never reached the runtime")
				}
				trigger := restart(t)
				waitFor(t, "the stream subscribed again", func() bool { return ld.subscriptions() >= 2 })
				time.Sleep(500 * time.Millisecond) // calls answered by the new process
				select {
				case err := <-slowDone:
					if err != nil {
						t.Errorf("the %v StopContainer in flight at the restart: %v", slow, err)
					}
				case <-time.After(2 * time.Minute):
					t.Fatal("the slow call never ended")
				}
				ld.halt()

				gap := ld.longestGap(trigger)
				ld.mu.Lock()
				defer ld.mu.Unlock()
				f := figures{name: core + "/" + tc.name, calls: ld.calls, failed: len(ld.failed), subFailed: len(ld.subFailures), longest: ld.longest, gap: gap}
				if len(ld.streamEnds) == 0 {
					t.Fatal("the event stream never ended")
				}
				end := ld.streamEnds[0]
				f.streamEnd = end.at.Sub(trigger)
				if st := status.Convert(end.err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "subscribe again") {
					t.Errorf("the stream ended with %v, want Unavailable ... subscribe again", end.err)
				}
				f.resub = ld.subscribed[1].Sub(trigger)
				if tc.zeroFail && (f.failed > 0 || f.subFailed > 0) {
					t.Errorf("%d of %d calls failed, %d subscriptions failed: %q %q", f.failed, f.calls, f.subFailed, first(ld.failed), first(ld.subFailures))
				}
				if len(ld.failed) > 0 {
					t.Logf("first failure: %s", ld.failed[0])
				}
				mu.Lock()
				all = append(all, f)
				mu.Unlock()
			})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "restart figures (50 calls/s, one event stream, a %v StopContainer in flight; times from the restart's trigger):\n", slow)
	fmt.Fprintf(&b, "%-26s %6s %7s %9s %12s %14s %13s %16s\n", "case", "calls", "failed", "sub-fail", "longest-call", "longest-no-ans", "stream-ended", "new-process-sub")
	for _, f := range all {
		fmt.Fprintf(&b, "%-26s %6d %7d %9d %12v %14v %13v %16v\n", f.name, f.calls, f.failed, f.subFailed,
			f.longest.Round(time.Millisecond), f.gap.Round(time.Millisecond), f.streamEnd.Round(100*time.Microsecond), f.resub.Round(100*time.Microsecond))
	}
	t.Log("\n" + b.String())
	if os.Getenv("CRI_GUARD_RESTART_FIGURES") != "" {
		fmt.Print(b.String())
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// stopPID stops a daemon that is not this process's child (a successor
// started by its predecessor): SIGTERM, then SIGKILL if it is still there.
func stopPID(pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || strings.Contains(string(b), ") Z ") {
			return // gone, or a zombie that PID 1 does not reap
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// execReload returns the unit's ExecReload command line, with the binary
// and the config file replaced by bin and cfg.
func execReload(t *testing.T, bin, cfg string) []string {
	t.Helper()
	b, err := os.ReadFile("../../systemd/cri-guard.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecReload="); ok {
			v = strings.ReplaceAll(v, "/usr/local/bin/cri-guard", bin)
			v = strings.ReplaceAll(v, "/etc/cri-guard/config.yaml", cfg)
			return strings.Fields(v)
		}
	}
	t.Fatal("cri-guard.service has no ExecReload=")
	return nil
}

func metricValue(t *testing.T, addr, series string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestReloadThroughTheUnit runs the unit's ExecReload command as systemctl
// reload does: a refused file makes it fail, with the reason, and the last
// good config stays; a good one is applied. Each edit is applied, logged
// and counted once although the file watcher, SIGHUP and the command all
// see it. Before, ExecReload was a bare kill -HUP, which succeeds whatever
// the daemon makes of the file, and the watcher and SIGHUP both applied it.
func TestReloadThroughTheUnit(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	up := fakeRuntime(t, dir)
	cfg := filepath.Join(dir, "config.yaml")
	addr := freePort(t)
	sock := "unix://" + filepath.Join(dir, "g.sock")
	base := "listen: " + sock + "\nupstream: " + up + "\nmetricsListen: " + addr + "\n"
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg+".tmp", []byte(base+s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfg+".tmp", cfg); err != nil {
			t.Fatal(err)
		}
	}
	write("mode: reject\n")
	d := start(t, exec.Command(bin, "serve", "--config", cfg))
	if _, err := version(sock, time.Minute); err != nil {
		t.Fatalf("daemon: %v\n%s", err, d.out.String())
	}
	reload := execReload(t, bin, cfg)
	runReload := func() (string, error) {
		out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput()
		return string(out), err
	}
	// Every trigger at once, then long enough for the watcher (2 s) twice.
	allTriggers := func() (string, error) {
		d.cmd.Process.Signal(syscall.SIGHUP)
		out, err := runReload()
		time.Sleep(4500 * time.Millisecond)
		d.cmd.Process.Signal(syscall.SIGHUP)
		time.Sleep(300 * time.Millisecond)
		return out, err
	}

	write("mode: audit\n")
	out, err := allTriggers()
	if err != nil || !regexp.MustCompile(`^config (reloaded|unchanged): sha256:[0-9a-f]{64}`).MatchString(out) {
		t.Errorf("reload of a good file: %v\n%s", err, out)
	}
	if got := strings.Count(d.out.String(), `msg="config reloaded"`); got != 1 {
		t.Errorf("one edit logged %d times as reloaded:\n%s", got, d.out.String())
	}
	if v := metricValue(t, addr, `cri_guard_config_reloads_total{result="success"}`); v != "1" {
		t.Errorf("successful reloads counted %q, want 1", v)
	}

	write("mode: block\n")
	out, err = allTriggers()
	if err == nil {
		t.Errorf("the unit's reload of a refused file succeeded:\n%s", out)
	}
	for _, want := range []string{`mode: "block": must be reject, raise or audit`, "the running daemon keeps its config"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refused reload's output lacks %q:\n%s", want, out)
		}
	}
	// The daemon heard of the bad file only through SIGHUP and the watcher:
	// wait until it counted it, then a watcher period more for a second
	// count that must not come.
	waitFor(t, "the refused reload counted", func() bool {
		return metricValue(t, addr, `cri_guard_config_reloads_total{result="failure"}`) != ""
	})
	time.Sleep(2500 * time.Millisecond)
	if got := strings.Count(d.out.String(), `msg="config reload refused`); got != 1 {
		t.Errorf("one bad edit logged %d times as refused:\n%s", got, d.out.String())
	}
	if v := metricValue(t, addr, `cri_guard_config_reloads_total{result="failure"}`); v != "1" {
		t.Errorf("refused reloads counted %q, want 1", v)
	}
	// audit is still in force.
	code, body := httpGet(t, "http://"+addr+"/status")
	if code != 200 || !strings.Contains(body, `"mode": "audit"`) {
		t.Errorf("after the refused reload /status says %d %s, want mode audit", code, body)
	}
}

// TestFailedHandoverKeepsServing: a successor that fails after it was
// handed the sockets (here: its metrics address is taken), and an upgrade
// whose new binary does not start, leave the running daemon serving, and
// `cri-guard reload` says the upgrade was refused.
func TestFailedHandoverKeepsServing(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	up := fakeRuntime(t, dir)
	exe := filepath.Join(dir, "cri-guard")
	copyFile(t, bin, exe)
	sock := "unix://" + filepath.Join(dir, "g.sock")
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "serve", "--listen", sock, "--upstream", up)
	cmd.Stdout, cmd.Stderr = logf, logf
	old := start(t, cmd)
	logText := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	if _, err := version(sock, time.Minute); err != nil {
		t.Fatalf("daemon: %v\n%s", err, logText())
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	n := start(t, exec.Command(bin, "serve", "--listen", sock, "--upstream", up, "--metrics-listen", busy.Addr().String()))
	waitExit(t, n, "the failing successor")
	if n.err == nil || !strings.Contains(n.out.String(), "address already in use") {
		t.Errorf("successor: exit %v, output:\n%s", n.err, n.out.String())
	}
	waitFor(t, "the old daemon to log the failed handover", func() bool {
		return strings.Contains(logText(), "the new process went away before serving; this one goes on serving")
	})
	if _, err := version(sock, time.Minute); err != nil {
		t.Fatalf("after a failed handover: %v\n%s", err, logText())
	}

	// A new "binary" that cannot serve.
	if err := os.WriteFile(exe+".new", []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "reload", "--listen", sock, "--upstream", up).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "upgrade refused: the new binary exited before serving (exit status 3)") {
		t.Errorf("reload with a broken new binary: %v\n%s", err, out)
	}
	if _, err := version(sock, time.Minute); err != nil {
		t.Fatalf("after a refused upgrade: %v\n%s", err, logText())
	}
	select {
	case <-old.exited:
		t.Fatalf("the daemon exited:\n%s", logText())
	default:
	}
}
