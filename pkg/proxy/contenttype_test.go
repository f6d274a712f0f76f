package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/test/bufconn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// strictRuntime is a runtime served as CRI-O serves its socket: behind
// cmux, which hands a connection to the gRPC server only when its HEADERS
// carry exactly "content-type: application/grpc", and otherwise closes it
// (the client sees "connection reset by peer"). This one is stricter than
// cmux, which looks only at a connection's first HEADERS: it checks every
// header block. The gRPC server behind it answers every method with an
// empty message, which every CRI reply type decodes.
type strictRuntime struct {
	lis   *bufconn.Listener // what the proxy dials
	inner *bufconn.Listener // what the gRPC server serves
	srv   *grpc.Server

	mu    sync.Mutex
	types map[string]int // content-types seen, accepted or not
	reset int            // connections closed for a content-type
}

func newStrictRuntime(t *testing.T) *strictRuntime {
	r := &strictRuntime{lis: bufconn.Listen(1 << 20), inner: bufconn.Listen(1 << 20), types: map[string]int{}}
	r.srv = grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		var req []byte
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		out := []byte{}
		return ss.SendMsg(&out)
	}))
	go r.srv.Serve(r.inner)
	go func() {
		for {
			c, err := r.lis.Accept()
			if err != nil {
				return
			}
			go r.filter(c)
		}
	}()
	t.Cleanup(func() { r.lis.Close(); r.srv.Stop() })
	return r
}

func (r *strictRuntime) dial(ctx context.Context, _ string) (net.Conn, error) {
	return r.lis.DialContext(ctx)
}

// filter copies the client's frames to the gRPC server, decoding each
// header block, and closes both connections at the first content-type that
// is not exactly "application/grpc".
func (r *strictRuntime) filter(c net.Conn) {
	s, err := r.inner.Dial()
	if err != nil {
		c.Close()
		return
	}
	defer c.Close()
	defer s.Close()
	go io.Copy(c, s)
	br := bufio.NewReader(c)
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, pre); err != nil {
		return
	}
	if _, err := s.Write(pre); err != nil {
		return
	}
	dec := hpack.NewDecoder(4096, nil)
	var block []byte
	for {
		var h [9]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
		typ, flags := http2.FrameType(h[3]), http2.Flags(h[4])
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		if typ == http2.FrameHeaders || typ == http2.FrameContinuation {
			frag := payload
			if typ == http2.FrameHeaders {
				if flags.Has(http2.FlagHeadersPadded) {
					pad := int(frag[0])
					frag = frag[1 : len(frag)-pad]
				}
				if flags.Has(http2.FlagHeadersPriority) {
					frag = frag[5:]
				}
			}
			block = append(block, frag...)
			if flags.Has(http2.FlagHeadersEndHeaders) {
				fields, err := dec.DecodeFull(block)
				block = nil
				if err != nil {
					return
				}
				ct := ""
				for _, f := range fields {
					if f.Name == "content-type" {
						ct = f.Value
					}
				}
				r.mu.Lock()
				r.types[ct]++
				ok := ct == "application/grpc"
				if !ok {
					r.reset++
				}
				r.mu.Unlock()
				if !ok {
					return
				}
			}
		}
		if _, err := s.Write(append(h[:], payload...)); err != nil {
			return
		}
	}
}

func (r *strictRuntime) seen() (map[string]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]int{}
	for k, v := range r.types {
		m[k] = v
	}
	return m, r.reset
}

// TestStrictContentType: a runtime that accepts only the exact
// "application/grpc" (CRI-O) is reached by every kind of call through both
// cores: relayed unary and streaming calls, an intercepted call's forward,
// a ReplyFilter's call, and cri-guard's own calls on Conn. A kubelet that
// names a subtype has it passed on as it is.
func TestStrictContentType(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		rt := newStrictRuntime(t)
		p, err := newCore("passthrough:///crio", WithDialer(rt.dial),
			WithInterceptors(passThrough(runtimeapi.RuntimeService_RunPodSandbox_FullMethodName),
				&needleFilter{method: runtimeapi.RuntimeService_ContainerStatus_FullMethodName}))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		pl := bufconn.Listen(1 << 20)
		go p.Serve(pl)
		// The kubelet's client: generated stubs with the default codec, so
		// "content-type: application/grpc".
		cc, err := grpc.NewClient("passthrough:///cri-guard", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return pl.DialContext(ctx) }))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		rs := runtimeapi.NewRuntimeServiceClient(cc)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		calls := map[string]func() error{
			"relayed unary": func() error {
				_, err := rs.Version(ctx, &runtimeapi.VersionRequest{})
				return err
			},
			"relayed stream": func() error {
				st, err := rs.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
				if err != nil {
					return err
				}
				for {
					if _, err := st.Recv(); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
				}
			},
			"intercepted": func() error {
				_, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{})
				return err
			},
			"reply filter": func() error {
				_, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "c"})
				return err
			},
			"own call (CheckUpstream)": func() error {
				_, err := p.CheckUpstream(ctx)
				return err
			},
			"own call (Conn)": func() error {
				_, err := runtimeapi.NewRuntimeServiceClient(p.Conn()).ListContainers(ctx, &runtimeapi.ListContainersRequest{})
				return err
			},
		}
		for _, name := range []string{"relayed unary", "relayed stream", "intercepted", "reply filter", "own call (CheckUpstream)", "own call (Conn)"} {
			if err := calls[name](); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		types, reset := rt.seen()
		if reset != 0 || len(types) != 1 || types["application/grpc"] < 6 {
			t.Errorf("the runtime saw content-types %v and reset %d connections; want only application/grpc, no reset", types, reset)
		}
	})
}

// TestContentTypePassedOn: the upstream call carries the content-type of
// the kubelet's call, subtype included.
func TestContentTypePassedOn(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t, WithInterceptors(passThrough(runtimeapi.RuntimeService_RunPodSandbox_FullMethodName)))
		for _, method := range []string{runtimeapi.RuntimeService_Version_FullMethodName, runtimeapi.RuntimeService_RunPodSandbox_FullMethodName} {
			for _, tc := range []struct {
				name string
				opts []grpc.CallOption
				want string
			}{
				// bytesCodec is named "proto": gRPC sends it as a subtype.
				{"subtype", nil, "application/grpc+proto"},
				{"none", []grpc.CallOption{grpc.ForceCodecV2(unnamedCodec{})}, "application/grpc"},
			} {
				if _, err := e.call(context.Background(), method, []byte("x"), tc.opts...); err != nil {
					t.Fatalf("%s %s: %v", method, tc.name, err)
				}
				e.fake.mu.Lock()
				got := e.fake.metadata[method].Get("content-type")
				e.fake.mu.Unlock()
				if fmt.Sprint(got) != fmt.Sprint([]string{tc.want}) {
					t.Errorf("%s, kubelet sent %s: the runtime got content-type %v", method, tc.want, got)
				}
			}
		}
	})
}

// unnamedCodec sends plain "application/grpc", as the kubelet's generated
// stubs do, with the tests' raw messages.
type unnamedCodec struct{}

func (unnamedCodec) Name() string { return "" }
func (unnamedCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*(v.(*[]byte)))}, nil
}
func (unnamedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
