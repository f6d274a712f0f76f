package main

import (
	"context"
	"net"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// bytesCodec moves pre-encoded messages, so that neither the fake runtime
// nor the client spends anything on protobuf.
type bytesCodec struct{}

func (bytesCodec) Name() string                    { return "proto" }
func (bytesCodec) Marshal(v any) ([]byte, error)   { return *(v.(*[]byte)), nil }
func (bytesCodec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = b; return nil }

// rawUpstream answers every unary call with reply.
func rawUpstream(b testing.TB, reply []byte) *bufconn.Listener {
	l := bufconn.Listen(4 << 20)
	s := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.MaxSendMsgSize(16<<20),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			var req []byte
			if err := ss.RecvMsg(&req); err != nil {
				return err
			}
			r := reply
			return ss.SendMsg(&r)
		}))
	go s.Serve(l)
	b.Cleanup(s.Stop)
	return l
}

func bufDial(l *bufconn.Listener) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }
}

// BenchmarkRelay relays unary calls with 1 KiB and 1 MiB replies, directly
// and through each forwarding core (frames, the default, and grpc). allocs/op
// counts the client and the fake runtime too; for the frames core,
// relay-allocs/op counts only what the relay's own goroutines allocated (see
// relayAllocs), and it does not grow with the size.
func BenchmarkRelay(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		for _, via := range []string{"direct", proxy.ForwardingFrames, proxy.ForwardingGRPC} {
			b.Run(via+"/"+size.name, func(b *testing.B) {
				call := relayClient(b, via, size.n)
				call()
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					call()
				}
				if via == proxy.ForwardingFrames {
					b.StopTimer()
					b.ReportMetric(relayAllocs(call, 50), "relay-allocs/op")
				}
			})
		}
	}
}

// relayClient starts a fake runtime that answers every unary call with n
// bytes, and, unless via is "direct", a relay of that core in front of it.
// It returns a function that makes one call through it.
func relayClient(tb testing.TB, via string, n int) func() {
	up := rawUpstream(tb, make([]byte, n))
	target := up
	if via != "direct" {
		p, err := proxy.NewCore(via, "passthrough:///upstream", proxy.WithDialer(bufDial(up)))
		if err != nil {
			tb.Fatal(err)
		}
		front := bufconn.Listen(4 << 20)
		go p.Serve(front)
		tb.Cleanup(func() { p.Close() })
		target = front
	}
	conn, err := grpc.NewClient("passthrough:///relay", grpc.WithContextDialer(bufDial(target)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{}), grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	req := []byte{}
	return func() {
		var resp []byte
		if err := conn.Invoke(context.Background(), "/runtime.v1.RuntimeService/ListPodSandbox", &req, &resp); err != nil {
			tb.Fatal(err)
		}
		if len(resp) != n {
			tb.Fatalf("reply of %d bytes, want %d", len(resp), n)
		}
	}
}

// h2Package prefixes the functions of the frames core. Every goroutine of
// that relay runs under one of them; the client and the fake runtime never
// call into it.
const h2Package = "github.com/cri-guard/cri-guard/pkg/proxy/h2."

// relayAllocs makes calls and returns the objects allocated per call by
// stacks that pass through the frames core: the relay's own allocations,
// with the client's and the fake runtime's left out. It profiles every
// allocation while it runs.
func relayAllocs(call func(), calls int) float64 {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	before := h2Allocs()
	for range calls {
		call()
	}
	return float64(h2Allocs()-before) / float64(calls)
}

// h2Allocs is the number of objects allocated so far under the frames core,
// from the heap profile. The profile lags by up to two collections.
func h2Allocs() int64 {
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	for {
		n, ok := runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
		recs = make([]runtime.MemProfileRecord, n+50)
	}
	var total int64
	for _, r := range recs {
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			if strings.HasPrefix(f.Function, h2Package) {
				total += r.AllocObjects
				break
			}
			if !more {
				break
			}
		}
	}
	return total
}

// TestRelayAllocationsDoNotGrow: what the frames core allocates per call
// does not depend on the size of the reply. Each WINDOW_UPDATE and PING
// that the client sends with a large reply used to cost the relay a frame
// (and a PING a closure): 12 objects a call at 1 KiB, 21 at 1 MiB, 70 at
// 8 MiB.
func TestRelayAllocationsDoNotGrow(t *testing.T) {
	base := -1.0
	for _, n := range []int{1 << 10, 1 << 20, 8 << 20} {
		call := relayClient(t, proxy.ForwardingFrames, n)
		for range 5 {
			call() // warm: windows, caches, free lists
		}
		// A reply that waits for the client's window is queued, and a
		// queued call may cost an object or two (its trailers are copied),
		// as scheduling has it: the least of five runs is the relay's own
		// cost, and up to two more objects a call are not growth.
		got := relayAllocs(call, 20)
		for range 4 {
			got = min(got, relayAllocs(call, 20))
		}
		t.Logf("reply of %d bytes: %.2f objects allocated by the relay per call", n, got)
		if base < 0 {
			base = got
			continue
		}
		if got > base+2 {
			t.Errorf("reply of %d bytes: %.2f objects per call, %.2f with 1 KiB", n, got, base)
		}
	}
}
