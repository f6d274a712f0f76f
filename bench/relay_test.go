package main

import (
	"context"
	"net"
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
func rawUpstream(b *testing.B, reply []byte) *bufconn.Listener {
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
// and through each forwarding core (frames, the default, and grpc). The
// relay's own allocations are the difference between a core's row and the
// direct row of the same size; they should not grow with the size.
func BenchmarkRelay(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KiB", 1 << 10}, {"1MiB", 1 << 20}} {
		for _, via := range []string{"direct", proxy.ForwardingFrames, proxy.ForwardingGRPC} {
			b.Run(via+"/"+size.name, func(b *testing.B) {
				up := rawUpstream(b, make([]byte, size.n))
				target := up
				if via != "direct" {
					p, err := proxy.NewCore(via, "passthrough:///upstream", proxy.WithDialer(bufDial(up)))
					if err != nil {
						b.Fatal(err)
					}
					front := bufconn.Listen(4 << 20)
					go p.Serve(front)
					b.Cleanup(func() { p.Close() })
					target = front
				}
				conn, err := grpc.NewClient("passthrough:///relay", grpc.WithContextDialer(bufDial(target)),
					grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{}), grpc.MaxCallRecvMsgSize(16<<20)))
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				req := []byte{}
				call := func() {
					var resp []byte
					if err := conn.Invoke(context.Background(), "/runtime.v1.RuntimeService/ListPodSandbox", &req, &resp); err != nil {
						b.Fatal(err)
					}
					if len(resp) != size.n {
						b.Fatalf("reply of %d bytes, want %d", len(resp), size.n)
					}
				}
				call()
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					call()
				}
			})
		}
	}
}
