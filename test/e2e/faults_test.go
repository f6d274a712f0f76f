package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// callDeadline is the deadline of every call made by the load goroutines,
// the kubelet's usual for a quick call.
const callDeadline = 2 * time.Second

// hangSlack is how far past its deadline a call may end before a test calls
// it hung: far more than any scheduling delay, far less than a hang.
const hangSlack = 10 * time.Second

// ownRuntime starts a containerd that this test alone uses, so that it can
// be killed. The shared one must never be.
func ownRuntime(t *testing.T) *harness.Runtime {
	t.Helper()
	requireE2E(t)
	dir, err := os.MkdirTemp("/tmp", "cg-f-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rt, err := harness.Start(ctx, harness.Options{Dir: filepath.Join(dir, "c"), DisableCNI: true})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("own runtime: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("closing the runtime: %v", err)
		}
		os.RemoveAll(dir)
	})
	return rt
}

// result is one call made under load.
type result struct {
	method     string
	start, end time.Time
	err        error
}

// load calls ListPodSandbox and Version through c from n goroutines until
// stop is closed, and returns every result.
func load(c *harness.CRIClient, n int, stop <-chan struct{}) func() []result {
	var (
		mu  sync.Mutex
		out []result
		wg  sync.WaitGroup
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
				r := result{start: time.Now()}
				if i%2 == 0 {
					r.method = "ListPodSandbox"
					_, r.err = c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
				} else {
					r.method = "Version"
					_, r.err = c.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
				}
				r.end = time.Now()
				cancel()
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}(i)
	}
	return func() []result {
		wg.Wait()
		return out
	}
}

// TestContainerdKilledUnderLoad SIGKILLs containerd while calls flow
// through cri-guard, and restarts it on the same socket.
func TestContainerdKilledUnderLoad(t *testing.T) {
	_, bin := sharedRuntime(t) // for the binary
	rt := ownRuntime(t)
	g := startGuard(t, rt, bin)

	// containerd 1.6 has no GetContainerEvents: it must come back as the
	// runtime's Unimplemented, at once; containerd 2.x streams (an event
	// of its backlog, or none before the deadline). (The stream ending when
	// the runtime dies, and subscribing again, is
	// TestStreamEndsWhenUpstreamDies in pkg/proxy.)
	events := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		defer cancel()
		s, err := g.CRI.Runtime.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
	evErr := events()
	t.Logf("GetContainerEvents through cri-guard before the kill: %v", evErr)
	if c := eventsAnswerClass(evErr); c != eventsLive && status.Code(evErr) != codes.Unimplemented {
		t.Errorf("GetContainerEvents: got %v, want the runtime's Unimplemented (or a live stream)", evErr)
	}

	stop := make(chan struct{})
	results := load(g.CRI, 4, stop)
	time.Sleep(500 * time.Millisecond)

	killed := time.Now()
	if err := rt.Kill(); err != nil {
		close(stop)
		results()
		t.Fatal(err)
	}
	gapEnd := time.Now().Add(3 * time.Second)
	time.Sleep(3 * time.Second) // the gap: containerd is gone
	restartBegin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := rt.Restart(ctx)
	cancel()
	answered := time.Now()
	if err != nil {
		close(stop)
		results()
		t.Fatal(err)
	}
	// Calls through cri-guard recover without restarting it. How soon is
	// printed below; the 10 s are a hang guard (the reconnect backoff is
	// capped at 1 s), not a timing target that load could move.
	var recovered time.Time
	for deadline := answered.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		cctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		_, err := g.CRI.Runtime.Version(cctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			recovered = time.Now()
			break
		}
	}
	time.Sleep(time.Second)
	close(stop)
	all := results()

	if recovered.IsZero() {
		t.Fatalf("no call through cri-guard succeeded within 10s of containerd answering again")
	}
	t.Logf("containerd answered %s after the restart began; cri-guard relayed again %s after that",
		answered.Sub(restartBegin).Round(time.Millisecond), recovered.Sub(answered).Round(time.Millisecond))

	codesSeen := map[string]int{}
	var before, gap, restarting, after int
	for _, r := range all {
		// A hang guard, not a timing target: a call must end near its
		// deadline, but a busy machine may schedule its end late.
		if d := r.end.Sub(r.start); d > callDeadline+hangSlack {
			t.Errorf("%s started %s after the kill took %s: past its %s deadline by more than %s", r.method, r.start.Sub(killed), d, callDeadline, hangSlack)
		}
		code := status.Code(r.err)
		codesSeen[code.String()]++
		switch {
		case r.end.Before(killed):
			before++
			if r.err != nil {
				t.Errorf("%s before the kill: %v", r.method, r.err)
			}
		case r.start.Before(gapEnd) && r.end.Before(restartBegin) || r.start.Before(killed):
			// In flight at the kill, or made while containerd was down.
			gap++
			if r.err == nil && r.start.After(killed) {
				t.Errorf("%s succeeded %s after containerd was killed", r.method, r.start.Sub(killed))
			}
			if r.err != nil && code != codes.Unavailable {
				t.Errorf("%s while containerd was down: got %v, want Unavailable", r.method, r.err)
			}
		case r.start.Before(recovered):
			// containerd is starting: its socket may not be there yet, or
			// its CRI plugin may not be initialized (containerd's own
			// error, relayed unchanged).
			restarting++
			if r.err != nil && code != codes.Unavailable && !strings.Contains(r.err.Error(), "not initialized") {
				t.Errorf("%s while containerd restarted: %v", r.method, r.err)
			}
		default:
			after++
			if r.err != nil {
				t.Errorf("%s after recovery: %v", r.method, r.err)
			}
		}
	}
	t.Logf("%d calls: %d before the kill, %d in the gap, %d while restarting, %d after; codes %v", len(all), before, gap, restarting, after, codesSeen)
	if before == 0 || gap == 0 || after == 0 {
		t.Errorf("the load did not cover every phase")
	}
	if err := events(); eventsAnswerClass(err) != eventsAnswerClass(evErr) {
		t.Errorf("GetContainerEvents after the restart: got %v, want %s as before the kill", err, eventsAnswerClass(evErr))
	}
	select {
	case <-g.Exited():
		t.Fatalf("cri-guard exited:\n%s", g.Logs())
	default:
	}
}

// TestGuardRestartedUnderLoad stops cri-guard and starts it again on the
// same socket while a kubelet client lists and creates pods through it:
// once as a plain process that creates its socket, once socket-activated,
// with the socket held across the restart as systemd holds it.
func TestGuardRestartedUnderLoad(t *testing.T) {
	for _, activated := range []bool{false, true} {
		name := "own socket"
		if activated {
			name = "socket activation"
		}
		t.Run(name, func(t *testing.T) { testGuardRestartedUnderLoad(t, activated) })
	}
}

func testGuardRestartedUnderLoad(t *testing.T, activated bool) {
	_, bin := sharedRuntime(t)
	rt := ownRuntime(t)
	dir, err := os.MkdirTemp("/tmp", "cg-gr-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	endpoint := "unix://" + filepath.Join(dir, "cri-guard.sock")
	opts := harness.GuardOptions{Binary: bin, Upstream: rt.Endpoint, Dir: dir}
	if activated {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "cri-guard.sock"), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		opts.Activation = l
	}
	start := func() *harness.Guard {
		g, err := harness.StartGuard(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := start()
	rs := kubelet(t, endpoint)

	countAll := func() int {
		resp, err := rt.CRI.Runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetItems())
	}
	for i := 0; i < 3; i++ {
		u := fmt.Sprintf("%s-pre%d", uid(t), i)
		parent, err := rt.CreatePodCgroup(u, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rs.RunPodSandbox(context.Background(), podConfig("pod-"+u, u, parent, 64<<20), ""); err != nil {
			t.Fatal(err)
		}
	}
	preexisting := countAll()

	// A kubelet: lists, and creates pods one after another.
	type created struct {
		uid string
		err error
	}
	stop := make(chan struct{})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		pods    []created
		listErr = map[codes.Code]int{}
		listOK  int
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			u := fmt.Sprintf("%s-%d", uid(t), i)
			parent, err := rt.CreatePodCgroup(u, 64<<20)
			if err != nil {
				t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, err = rs.RunPodSandbox(ctx, podConfig("pod-"+u, u, parent, 64<<20), "")
			cancel()
			mu.Lock()
			pods = append(pods, created{u, err})
			mu.Unlock()
			if err != nil {
				time.Sleep(100 * time.Millisecond) // as a kubelet backs off
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
			_, err := rs.ListPodSandbox(ctx, nil)
			cancel()
			mu.Lock()
			if err != nil {
				listErr[status.Code(err)]++
			} else {
				listOK++
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()

	time.Sleep(time.Second)
	if err := g.Stop(); err != nil {
		t.Errorf("stopping cri-guard: %v\n%s", err, g.Logs())
	}
	time.Sleep(time.Second)
	if _, err := os.Stat(filepath.Join(dir, "cri-guard.sock")); activated && err != nil {
		t.Errorf("the held socket disappeared while cri-guard was down: %v", err)
	}
	g = start()
	defer func() {
		if err := g.Stop(); err != nil {
			t.Errorf("stopping cri-guard: %v", err)
		}
	}()
	restarted := time.Now()
	// The kubelet's client reconnects by itself.
	var back time.Duration
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
		_, err := rs.Version(ctx, "")
		cancel()
		if err == nil {
			back = time.Since(restarted)
			break
		}
		if time.Since(restarted) > 2*time.Minute { // a hang guard; the time is printed below
			t.Fatalf("the kubelet's client did not reconnect within 2m: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("the kubelet's client reconnected %s after cri-guard was back; lists: %d ok, errors %v", back.Round(time.Millisecond), listOK, listErr)
	for c := range listErr {
		if c != codes.Unavailable && c != codes.DeadlineExceeded {
			t.Errorf("ListPodSandbox while cri-guard restarted: code %v", c)
		}
	}

	var ok, failed int
	for _, p := range pods {
		n := len(sandboxesOf(t, rt, p.uid))
		switch {
		case p.err == nil && n != 1:
			t.Errorf("pod %s: RunPodSandbox succeeded and the runtime has %d sandboxes for it", p.uid, n)
		case p.err != nil && n != 0:
			t.Errorf("pod %s: RunPodSandbox failed (%v) and the runtime has %d sandboxes for it", p.uid, p.err, n)
		case p.err != nil:
			failed++
			if c := status.Code(p.err); c != codes.Unavailable && !errors.Is(p.err, context.DeadlineExceeded) {
				t.Errorf("pod %s: RunPodSandbox while cri-guard restarted: %v", p.uid, p.err)
			}
		default:
			ok++
		}
	}
	if got, want := countAll(), preexisting+ok; got != want {
		t.Errorf("the runtime has %d sandboxes, want %d (%d before, %d created)", got, want, preexisting, ok)
	}
	t.Logf("pods created under load: %d ok, %d refused while cri-guard was down; none lost or duplicated", ok, failed)
	if ok == 0 {
		t.Error("no pod was created under load")
	}
}
