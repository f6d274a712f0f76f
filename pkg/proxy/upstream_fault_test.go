package proxy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// passThrough is an Interceptor that forwards the request as it is, so the
// intercepted path is exercised with an upstream that misbehaves.
type passThrough string

func (p passThrough) Method() string { return string(p) }
func (p passThrough) Intercept(ctx context.Context, in []byte, forward Forward) ([]byte, error) {
	return forward(ctx, in)
}

// unixProxy serves p on a unix socket in dir and returns a client to it.
func unixProxy(t *testing.T, p Core, dir string) (*grpc.ClientConn, string) {
	t.Helper()
	sock := filepath.Join(dir, "guard.sock")
	l, err := Listen("unix://"+sock, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	c, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, sock
}

// settle waits until the goroutine count is at most max, and returns it.
func settle(max int, within time.Duration) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(within); n > max && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(50 * time.Millisecond)
	}
	return n
}

// TestWedgedUpstream: a runtime that never answers must not hold the
// kubelet past its deadline, must see its calls cancelled, and must not
// leave goroutines behind.
func TestWedgedUpstream(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		const (
			callers  = 20
			perCall  = 10
			deadline = 100 * time.Millisecond
			// A hang guard, not a timing figure: the kubelet's own client
			// enforces the deadline too, so a call held past it is seen in
			// its code and in the runtime's cancellations below, and how
			// late the caller's goroutine runs depends on the machine's load.
			hang = 30 * time.Second
		)
		methods := []struct {
			name   string
			stream bool
		}{
			{"/runtime.v1.RuntimeService/Version", false},           // relayed unary
			{"/runtime.v1.RuntimeService/RunPodSandbox", false},     // intercepted
			{"/runtime.v1.RuntimeService/GetContainerEvents", true}, // relayed stream
			{"/runtime.v1.RuntimeService/NotInThisBuild", false},    // unknown: relayed as a stream
		}
		// seen counts the calls that reached the runtime, and those of them
		// it saw cancelled.
		type seen struct{ arrived, cancelled atomic.Int64 }
		for name, upstream := range map[string]func(t *testing.T, sock string) *seen{
			// The runtime accepts the call and never replies.
			"handler never answers": func(t *testing.T, sock string) *seen {
				var n seen
				l, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				srv := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
					n.arrived.Add(1)
					<-ss.Context().Done()
					n.cancelled.Add(1)
					return ss.Context().Err()
				}))
				go srv.Serve(l)
				t.Cleanup(srv.Stop)
				return &n
			},
			// The runtime's socket accepts connections and never speaks.
			"socket never speaks": func(t *testing.T, sock string) *seen {
				l, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				var mu sync.Mutex
				var conns []net.Conn
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						mu.Lock()
						conns = append(conns, c)
						mu.Unlock()
					}
				}()
				t.Cleanup(func() {
					l.Close()
					mu.Lock()
					for _, c := range conns {
						c.Close()
					}
					mu.Unlock()
				})
				return nil
			},
		} {
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				sock := filepath.Join(dir, "runtime.sock")
				cancelled := upstream(t, sock)
				p, err := newCore("unix://"+sock, WithInterceptors(passThrough("/runtime.v1.RuntimeService/RunPodSandbox")))
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				client, _ := unixProxy(t, p, dir)
				call := func(m string, stream bool) (time.Duration, error) {
					ctx, cancel := context.WithTimeout(context.Background(), deadline)
					defer cancel()
					start := time.Now()
					req, resp := []byte("r"), []byte(nil)
					if !stream {
						err := client.Invoke(ctx, m, &req, &resp)
						return time.Since(start), err
					}
					cs, err := client.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, m)
					if err == nil {
						if err = cs.SendMsg(&req); err == nil {
							if err = cs.CloseSend(); err == nil {
								err = cs.RecvMsg(&resp)
							}
						}
					}
					return time.Since(start), err
				}
				// Warm up: connections and the server's workers exist before
				// the baseline is taken.
				for _, m := range methods {
					call(m.name, m.stream)
				}
				time.Sleep(200 * time.Millisecond)
				base := runtime.NumGoroutine()

				var (
					wg     sync.WaitGroup
					mu     sync.Mutex
					worst  time.Duration
					byCode = map[codes.Code]int{}
				)
				for i := 0; i < callers; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						for j := 0; j < perCall; j++ {
							m := methods[(i+j)%len(methods)]
							d, err := call(m.name, m.stream)
							mu.Lock()
							if d > worst {
								worst = d
							}
							byCode[status.Code(err)]++
							mu.Unlock()
						}
					}(i)
				}
				wg.Wait()
				t.Logf("%d calls, slowest %s, codes %v", callers*perCall, worst.Round(time.Millisecond), byCode)
				if worst > hang {
					t.Errorf("a call took %s with a %s deadline", worst, deadline)
				}
				for c, n := range byCode {
					if c != codes.DeadlineExceeded {
						t.Errorf("%d calls ended with %v, want DeadlineExceeded", n, c)
					}
				}
				if cancelled != nil {
					// Every call that reached the runtime is cancelled
					// there. Which calls reach it before their deadline
					// depends on the machine's load, so the count is
					// compared with the arrivals, not with the calls made.
					all := int64(callers*perCall + len(methods))
					for end := time.Now().Add(hang); cancelled.cancelled.Load() < cancelled.arrived.Load() && time.Now().Before(end); {
						time.Sleep(20 * time.Millisecond)
					}
					got, arrived := cancelled.cancelled.Load(), cancelled.arrived.Load()
					t.Logf("%d of %d calls reached the runtime before their deadline", arrived, all)
					if arrived == 0 {
						t.Errorf("none of %d calls reached the runtime", all)
					}
					if got != arrived {
						t.Errorf("the runtime saw %d of the %d calls that reached it cancelled", got, arrived)
					}
				}
				const tolerance = 5
				if n := settle(base+tolerance, hang); n > base+tolerance {
					buf := make([]byte, 1<<20)
					t.Errorf("%d goroutines after the calls, baseline %d (tolerance %d):\n%s", n, base, tolerance, buf[:runtime.Stack(buf, true)])
				}
			})
		}
	})
}

// TestStreamEndsWhenUpstreamDies: an event stream through the relay ends
// with Unavailable when the runtime goes away, and a new subscription works
// once it is back on the same socket.
func TestStreamEndsWhenUpstreamDies(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "runtime.sock")
		startUpstream := func() *grpc.Server {
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
				var req []byte
				if err := ss.RecvMsg(&req); err != nil {
					return err
				}
				ev := []byte("event")
				if err := ss.SendMsg(&ev); err != nil {
					return err
				}
				<-ss.Context().Done()
				return nil
			}))
			go srv.Serve(l)
			return srv
		}
		up := startUpstream()
		p, err := newCore("unix://"+sock, WithReconnectBackoff(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		client, _ := unixProxy(t, p, dir)
		subscribe := func(ctx context.Context) (grpc.ClientStream, error) {
			cs, err := client.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/runtime.v1.RuntimeService/GetContainerEvents")
			if err != nil {
				return nil, err
			}
			req := []byte{}
			if err := cs.SendMsg(&req); err != nil {
				return nil, err
			}
			if err := cs.CloseSend(); err != nil {
				return nil, err
			}
			var ev []byte
			if err := cs.RecvMsg(&ev); err != nil {
				return nil, err
			}
			return cs, nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cs, err := subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() {
			var ev []byte
			ended <- cs.RecvMsg(&ev)
		}()
		up.Stop()
		select {
		case err := <-ended:
			if status.Code(err) != codes.Unavailable {
				t.Errorf("the stream ended with %v, want Unavailable", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the stream did not end when the runtime went away")
		}

		up = startUpstream()
		defer up.Stop()
		var lastErr error
		// Hang guards, not timing figures: each try may take as long as a
		// loaded machine needs.
		for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
			_, lastErr = subscribe(sctx)
			scancel()
			if lastErr == nil {
				return
			}
			if c := status.Code(lastErr); c != codes.Unavailable && !errors.Is(lastErr, context.DeadlineExceeded) && c != codes.DeadlineExceeded {
				t.Fatalf("subscribing while the runtime comes back: %v", lastErr)
			}
		}
		t.Fatalf("no new subscription within a minute of the runtime coming back: %v", lastErr)
	})
}
