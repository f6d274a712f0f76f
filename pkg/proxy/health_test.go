package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// syncBuffer is a log buffer that the watcher and the test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testLogger logs text lines without the time.
func testLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
}

// scriptConn plays a sequence of states, one per WaitForStateChange, and
// moves a fake clock by a second per state; it counts Connect calls.
type scriptConn struct {
	states   []connectivity.State
	i        int
	clock    time.Time
	connects int
	// hold[i] waits with a deadline at state i time out this many times
	// (50ms each on the clock) before the state changes; held counts them.
	hold map[int]int
	held int
}

func (c *scriptConn) GetState() connectivity.State { return c.states[c.i] }
func (c *scriptConn) Connect()                     { c.connects++ }
func (c *scriptConn) WaitForStateChange(ctx context.Context, _ connectivity.State) bool {
	if _, ok := ctx.Deadline(); ok && c.held < c.hold[c.i] {
		c.held++
		c.clock = c.clock.Add(50 * time.Millisecond)
		return false
	}
	if c.i+1 >= len(c.states) {
		return false
	}
	c.i++
	c.clock = c.clock.Add(time.Second)
	return true
}

func TestWatchStates(t *testing.T) {
	const (
		I  = connectivity.Idle
		C  = connectivity.Connecting
		R  = connectivity.Ready
		TF = connectivity.TransientFailure
	)
	const up = "unix:///run/rt.sock"
	for _, tc := range []struct {
		name       string
		states     []connectivity.State
		dials      []uint64 // failed dials so far, at each state; nil: one more at each TF
		reconnects int
		connects   int
		log        string
	}{
		{name: "start, runtime up", states: []connectivity.State{I, C, R}, connects: 1},
		{name: "runtime killed and back", states: []connectivity.State{I, C, R, I, C, TF, C, TF, C, R}, reconnects: 1, connects: 2,
			log: `level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="dial unix /run/rt.sock: connect: connection refused"` + "\n" +
				`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=6s` + "\n"},
		{name: "two outages", states: []connectivity.State{C, R, TF, R, I, TF, TF, R}, reconnects: 2, connects: 1,
			log: `level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="dial unix /run/rt.sock: connect: connection refused"` + "\n" +
				`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=1s` + "\n" +
				`level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="dial unix /run/rt.sock: connect: connection refused"` + "\n" +
				`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=3s` + "\n"},
		{name: "connection lost, runtime answers at once", states: []connectivity.State{R, I, C, R}, reconnects: 1, connects: 1,
			log: `level=INFO msg="reconnected to the runtime" upstream=unix:///run/rt.sock after=2s` + "\n"},
		{name: "down at start, then up", states: []connectivity.State{I, C, TF, C, TF, C, R}, connects: 1,
			log: `level=INFO msg="runtime answers" upstream=unix:///run/rt.sock after=4s` + "\n"},
		// A killed runtime's socket can still accept for a moment: the
		// first attempt fails after its dial, the next one's dial fails.
		{name: "first failure after a dial that succeeded", states: []connectivity.State{R, I, C, TF, C, TF, C, R},
			dials: []uint64{0, 0, 0, 0, 0, 1, 1, 1}, reconnects: 1, connects: 1,
			log: `level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="dial unix /run/rt.sock: connect: connection refused"` + "\n" +
				`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=6s` + "\n"},
		{name: "one failure after a dial, then back", states: []connectivity.State{R, I, C, TF, C, R},
			dials: []uint64{0, 0, 0, 0, 0, 0}, reconnects: 1, connects: 1,
			log: `level=INFO msg="reconnected to the runtime" upstream=unix:///run/rt.sock after=4s` + "\n"},
		{name: "failures without a failed dial", states: []connectivity.State{R, TF, C, TF, C, R},
			dials: []uint64{3, 3, 3, 3, 3, 3}, reconnects: 1,
			log: `level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="the connection failed after it was made"` + "\n" +
				`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=4s` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &scriptConn{states: tc.states, clock: time.Unix(1e9, 0)}
			dials := tc.dials
			if dials == nil {
				n := uint64(0)
				for _, s := range tc.states {
					if s == TF {
						n++
					}
					dials = append(dials, n)
				}
			}
			var seen []connectivity.State
			reconnects := 0
			var buf syncBuffer
			watch(context.Background(), c, up, func() (error, uint64) {
				return errors.New("dial unix /run/rt.sock: connect: connection refused"), dials[c.i]
			},
				HealthOptions{Logger: testLogger(&buf), OnState: func(s connectivity.State) { seen = append(seen, s) },
					OnReconnect: func() { reconnects++ }, now: func() time.Time { return c.clock }})
			if len(seen) != len(tc.states) {
				t.Errorf("OnState saw %v, want %v", seen, tc.states)
			}
			if reconnects != tc.reconnects || c.connects != tc.connects {
				t.Errorf("reconnects %d, Connect calls %d; want %d, %d", reconnects, c.connects, tc.reconnects, tc.connects)
			}
			if got := buf.String(); got != tc.log {
				t.Errorf("log:\n%s\nwant:\n%s", got, tc.log)
			}
		})
	}
}

// TestWatchStickyTransientFailure: gRPC stays in TRANSIENT_FAILURE while
// it retries; when the attempt that got there failed after its dial (a
// dying runtime's socket accepted it), the next failed dial, seen while the
// state stays, is what the log line tells.
func TestWatchStickyTransientFailure(t *testing.T) {
	const up = "unix:///run/rt.sock"
	for _, tc := range []struct {
		name  string
		holds int
		dials func(held int) uint64
		log   string
	}{
		{"a dial fails while it stays", 3, func(held int) uint64 {
			if held >= 2 {
				return 1
			}
			return 0
		}, `level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="dial unix /run/rt.sock: connect: connection refused"` + "\n" +
			`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=3.1s` + "\n"},
		{"no dial fails for 2s", 60, func(int) uint64 { return 0 },
			`level=WARN msg="runtime unreachable" upstream=unix:///run/rt.sock error="the connection failed after it was made"` + "\n" +
				`level=INFO msg="runtime answers again" upstream=unix:///run/rt.sock downtime=5s` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &scriptConn{states: []connectivity.State{connectivity.Ready, connectivity.Idle, connectivity.Connecting,
				connectivity.TransientFailure, connectivity.Ready}, clock: time.Unix(1e9, 0), hold: map[int]int{3: tc.holds}}
			var buf syncBuffer
			watch(context.Background(), c, up, func() (error, uint64) {
				return errors.New("dial unix /run/rt.sock: connect: connection refused"), tc.dials(c.held)
			}, HealthOptions{Logger: testLogger(&buf), now: func() time.Time { return c.clock }})
			if got := buf.String(); got != tc.log {
				t.Errorf("log:\n%s\nwant:\n%s", got, tc.log)
			}
		})
	}
}

// TestWatchUpstreamFollowsTheRuntime: with nothing calling, the state that
// WatchUpstream reports follows a runtime that is killed and started again,
// through both cores.
func TestWatchUpstreamFollowsTheRuntime(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		sock := shortSock(t)
		rt := startUnixRuntime(t, sock)
		p, err := newCore("unix://"+sock, WithReconnectBackoff(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		states := make(chan connectivity.State, 100)
		var buf syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		reconnects := make(chan struct{}, 10)
		go func() {
			defer close(done)
			WatchUpstream(ctx, p, HealthOptions{Logger: testLogger(&buf),
				OnState:     func(s connectivity.State) { states <- s },
				OnReconnect: func() { reconnects <- struct{}{} }})
		}()
		waitState := func(want connectivity.State) {
			t.Helper()
			hang := time.After(time.Minute) // a hang guard, not a timing
			for {
				select {
				case s := <-states:
					if s == want {
						return
					}
				case <-hang:
					t.Fatalf("no %v within a minute; log:\n%s", want, buf.String())
				}
			}
		}
		waitState(connectivity.Ready)
		rt.Stop() // the runtime dies: its socket closes
		waitState(connectivity.TransientFailure)
		if got := p.UpstreamState(); got == connectivity.Ready || got == connectivity.Idle {
			t.Errorf("UpstreamState %v while the runtime is down", got)
		}
		back := time.Now()
		startUnixRuntime(t, sock)
		waitState(connectivity.Ready)
		t.Logf("READY %v after the runtime came back", time.Since(back).Round(time.Millisecond))
		// OnReconnect runs after OnState(READY), on the watcher's
		// goroutine: wait for it (the limit only guards against a hang).
		select {
		case <-reconnects:
		case <-time.After(time.Minute):
			t.Error("no reconnect counted")
		}
		if got := p.UpstreamState(); got != connectivity.Ready {
			t.Errorf("UpstreamState %v after the runtime came back", got)
		}
		cancel()
		<-done
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		wantErr := `error="dial unix ` + sock + `: connect: `
		if len(lines) != 2 || !strings.HasPrefix(lines[0], `level=WARN msg="runtime unreachable" upstream=unix://`+sock+` `+wantErr) ||
			!strings.HasPrefix(lines[1], `level=INFO msg="runtime answers again" upstream=unix://`+sock+` downtime=`) {
			t.Errorf("log:\n%s\nwant a runtime unreachable line with %s... and a runtime answers again line", buf.String(), wantErr)
		}
	})
}

func shortSock(t *testing.T) string {
	return filepath.Join(t.TempDir(), "rt.sock")
}

// startUnixRuntime serves the fake runtime on a unix socket at path; Stop
// closes it and removes the socket file, as a runtime that dies.
func startUnixRuntime(t *testing.T, path string) *grpc.Server {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(newFakeRuntime().handle))
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return s
}
