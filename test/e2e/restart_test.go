package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// TestRestartWithEventStream restarts cri-guard three times in front of a
// real containerd 2.x while the kubelet's own CRI client (cri-client, as
// kubelet 1.34 builds it) makes 50 calls/s and holds a GetContainerEvents
// stream the way the evented PLEG does: subscribe, read until the stream
// ends, subscribe again. Once with the socket held as cri-guard.socket
// holds it (stop, then start with the same socket), once by handover (a
// second serve takes the socket over). No call may fail; each stream end
// must be the Unavailable cri-guard sends when it stops, and after each
// restart a container created at containerd must show up on the new
// subscription. A StopContainer that takes its 3 s grace period is in
// flight at the first restart and must be answered. The figures of each
// restart are printed. containerd 1.6
// has no GetContainerEvents: the test is skipped there. Before, the stream
// held each stop for the whole shutdownTimeout (10 s) and ended with a
// transport error, and a second serve was refused (socket in use).
func TestRestartWithEventStream(t *testing.T) {
	rt, bin := sharedRuntime(t)
	if err := eventsProbe(rt); status.Code(err) == codes.Unimplemented {
		t.Skipf("containerd %s has no GetContainerEvents (%v)", rt.Version, err)
	}
	var report strings.Builder
	for _, mode := range []string{"socket-activation", "handover"} {
		t.Run(mode, func(t *testing.T) { restartLoop(t, rt, bin, mode, &report) })
	}
	t.Logf("restart figures against containerd %s (50 calls/s through the kubelet's client, the evented PLEG's stream; times from the trigger):\n%s", rt.Version, report.String())
}

func restartLoop(t *testing.T, rt *harness.Runtime, bin, mode string, report *strings.Builder) {
	dir, err := os.MkdirTemp("/tmp", "cg-rs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts := harness.GuardOptions{Binary: bin, Upstream: rt.Endpoint, Dir: dir}
	if mode == "socket-activation" {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "act.sock"), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		os.Chmod(l.Addr().String(), 0o660)
		opts.Activation = l
	}
	var guards []*harness.Guard
	startOne := func() *harness.Guard {
		g, err := harness.StartGuard(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		guards = append(guards, g)
		return g
	}
	t.Cleanup(func() {
		for _, g := range guards {
			if err := g.Stop(); err != nil {
				t.Errorf("stopping cri-guard: %v", err)
			}
			if t.Failed() {
				t.Logf("cri-guard output:\n%s", g.Logs())
			}
		}
	})
	g := startOne()
	rs := kubelet(t, g.Endpoint)

	var (
		mu       sync.Mutex
		calls    int
		failed   []string
		longest  time.Duration
		subs     []time.Time
		ends     []time.Time
		endErrs  []error
		events   = map[string]int{} // container id -> subscription it arrived on
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		streamCh = make(chan *runtimeapi.ContainerEventResponse, 100)
	)
	wg.Add(3)
	go func() { // 50 calls/s
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				_, err := rs.ListContainers(context.Background(), nil)
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				calls++
				if d > longest {
					longest = d
				}
				if err != nil {
					failed = append(failed, err.Error())
				}
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // the evented PLEG's loop
		defer wg.Done()
		for {
			err := rs.GetContainerEvents(ctx, streamCh, func(runtimeapi.RuntimeService_GetContainerEventsClient) {
				mu.Lock()
				subs = append(subs, time.Now())
				mu.Unlock()
			})
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			ends = append(ends, time.Now())
			endErrs = append(endErrs, err)
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case ev := <-streamCh:
				mu.Lock()
				events[ev.ContainerId] = len(subs)
				mu.Unlock()
			}
		}
	}()
	count := func(s *[]time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		return len(*s)
	}
	hangGuard := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited 2m for %s", what)
			}
		}
	}
	sb, cfg := runningPod(t, rt, kubelet(t, rt.Endpoint), 256<<20)
	// beacon creates containers at containerd until one shows up on
	// subscription n: containerd sends an event only to the subscribers
	// it has at that moment.
	beacon := func(n int) {
		t.Helper()
		for i := 1; ; i++ {
			cr, err := rt.CRI.Runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: containerConfig(rt, fmt.Sprintf("beacon-%d-%d", n, i), 0), SandboxConfig: cfg})
			if err != nil {
				t.Fatal(err)
			}
			seen := false
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !seen; time.Sleep(10 * time.Millisecond) {
				mu.Lock()
				seen = events[cr.ContainerId] == n
				mu.Unlock()
			}
			rt.CRI.Runtime.RemoveContainer(context.Background(), &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId})
			if seen {
				return
			}
			if i == 20 {
				t.Fatalf("no beacon event on subscription %d", n)
			}
		}
	}
	hangGuard("the first subscription", func() bool { return count(&subs) >= 1 })
	beacon(1)

	// A StopContainer that takes its 3 s grace period (the container
	// notes SIGTERM in its log and goes on) is in flight at the first
	// restart.
	lc := containerConfig(rt, "long", 0)
	lc.Command = []string{"sh", "-c", "trap 'echo got-SIGTERM' TERM; while true; do sleep 1; done"}
	long, err := rt.CRI.Runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: lc, SandboxConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.CRI.Runtime.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: long.ContainerId}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		err  error
		took time.Duration
	}
	longDone := make(chan result, 1)
	var longEnd time.Time // set before longDone is sent
	go func() {
		start := time.Now()
		err := rs.StopContainer(context.Background(), long.ContainerId, 3)
		longEnd = time.Now()
		longDone <- result{err, time.Since(start)}
	}()
	// The call has reached containerd once the container got SIGTERM: a
	// sleep would not be sure of it on a busy machine. Whether it was
	// still in flight at the restart is printed with the figures.
	longLog := filepath.Join(cfg.GetLogDirectory(), lc.GetLogPath())
	hangGuard("the long container's SIGTERM", func() bool {
		b, _ := os.ReadFile(longLog)
		return strings.Contains(string(b), "got-SIGTERM")
	})

	fmt.Fprintf(report, "%-18s %-8s %13s %17s\n", mode, "restart", "stream-ended", "new-subscription")
	var firstTrigger time.Time
	for i := 1; i <= 3; i++ {
		old := g
		trigger := time.Now()
		if i == 1 {
			firstTrigger = trigger
		}
		if mode == "socket-activation" {
			old.Cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-old.Exited():
			case <-time.After(2 * time.Minute):
				t.Fatal("cri-guard did not exit on SIGTERM")
			}
			g = startOne()
		} else {
			g = startOne() // takes the socket over
			select {
			case <-old.Exited():
			case <-time.After(2 * time.Minute):
				t.Fatal("the old cri-guard did not exit after the handover")
			}
		}
		hangGuard("a new subscription", func() bool { return count(&subs) >= i+1 })
		beacon(i + 1)
		mu.Lock()
		fmt.Fprintf(report, "%-18s %-8d %13v %17v\n", "", i, ends[i-1].Sub(trigger).Round(100*time.Microsecond), subs[i].Sub(trigger).Round(100*time.Microsecond))
		mu.Unlock()
	}
	select {
	case r := <-longDone:
		fmt.Fprintf(report, "%-18s StopContainer(grace 3s) at restart 1: %v after %v, ended %v after the trigger\n", "", r.err, r.took.Round(time.Millisecond), longEnd.Sub(firstTrigger).Round(time.Millisecond))
		if r.err != nil {
			t.Errorf("the StopContainer in flight at the restart: %v", r.err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the StopContainer in flight never ended")
	}
	close(stop)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(report, "%-18s calls %d, failed %d, longest %v, subscriptions %d\n", "", calls, len(failed), longest.Round(time.Millisecond), len(subs))
	if len(failed) > 0 {
		t.Errorf("%d of %d calls failed across the restarts; first: %s", len(failed), calls, failed[0])
	}
	for i, err := range endErrs {
		if i >= 3 {
			break // the test's own cancel
		}
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "subscribe again") {
			t.Errorf("stream %d ended with %v, want Unavailable ... subscribe again", i+1, err)
		}
	}
}
