package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// bytesCodec is the tests' own raw codec, independent of the one under test.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }
func (bytesCodec) Marshal(v any) ([]byte, error) {
	return *(v.(*[]byte)), nil
}
func (bytesCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

// fakeRuntime answers every method. Metadata keys steer it:
// x-code (return that status), x-count (stream that many replies),
// x-size (reply of that many bytes), x-block (wait for cancellation),
// x-sleep (take that long, a duration, before answering), x-gate (wait
// until the test closes gate, as a call with a long grace period would).
type fakeRuntime struct {
	mu        sync.Mutex
	requests  map[string][]byte
	metadata  map[string]metadata.MD
	deadlines map[string]time.Time
	arrived   map[string]time.Time // when the handler had the request
	cancelled chan string
	gate      chan struct{}
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		requests:  map[string][]byte{},
		metadata:  map[string]metadata.MD{},
		deadlines: map[string]time.Time{},
		arrived:   map[string]time.Time{},
		cancelled: make(chan string, 16),
		gate:      make(chan struct{}),
	}
}

// arrival returns when the runtime last had a request on method (zero: never).
func (f *fakeRuntime) arrival(method string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.arrived[method]
}

// waitArrival waits until a request on method reached the runtime; the limit
// only guards against a hang.
func (f *fakeRuntime) waitArrival(t *testing.T, method string) {
	t.Helper()
	for end := time.Now().Add(time.Minute); f.arrival(method).IsZero(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s never reached the runtime", method)
		}
	}
}

func (f *fakeRuntime) lastRequest(method string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[method]
}

// reply is what the fake answers to req on method: both are echoed, so the
// client can check that nothing was changed on the way.
func reply(method string, req []byte) []byte {
	return append([]byte(method+"|"), req...)
}

func (f *fakeRuntime) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	f.mu.Lock()
	f.arrived[method] = time.Now()
	f.requests[method] = req
	f.metadata[method] = md
	if d, ok := ctx.Deadline(); ok {
		f.deadlines[method] = d
	}
	f.mu.Unlock()

	ss.SetHeader(metadata.Pairs("x-upstream-header", "h-"+method))
	ss.SetTrailer(metadata.Pairs("x-upstream-trailer", "t-"+method))
	get := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if d, err := time.ParseDuration(get("x-sleep")); err == nil {
		select { // a slow call, such as a StopContainer with a grace period
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if get("x-gate") != "" {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if get("x-block") != "" {
		<-ctx.Done()
		f.cancelled <- method
		return ctx.Err()
	}
	if c := get("x-code"); c != "" {
		n, _ := strconv.Atoi(c)
		st, _ := status.New(codes.Code(n), "message from runtime: "+method).WithDetails(wrapperspb.String("detail"))
		return st.Err()
	}
	if s := get("x-size"); s != "" {
		n, _ := strconv.Atoi(s)
		out := bytes.Repeat([]byte{'x'}, n)
		return ss.SendMsg(&out)
	}
	count := 1
	if c := get("x-count"); c != "" {
		count, _ = strconv.Atoi(c)
	}
	for i := 0; i < count; i++ {
		out := reply(method, append(req, []byte(strconv.Itoa(i))...))
		if err := ss.SendMsg(&out); err != nil {
			return err
		}
	}
	return nil
}

type env struct {
	fake    *fakeRuntime
	proxy   Core
	client  *grpc.ClientConn
	upLis   *bufconn.Listener
	upSrv   *grpc.Server
	lis     *bufconn.Listener // the proxy's
	cleanup []func()
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	e := &env{fake: newFakeRuntime()}
	e.upLis = bufconn.Listen(1 << 20)
	e.upSrv = grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(e.fake.handle),
		grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	go e.upSrv.Serve(e.upLis)

	opts = append([]Option{WithDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return e.upLis.DialContext(ctx)
	})}, opts...)
	p, err := newCore("passthrough:///fake-runtime", opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	pLis := bufconn.Listen(1 << 20)
	e.lis = pLis
	go p.Serve(pLis)
	e.client, err = grpc.NewClient("passthrough:///cri-guard",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return pLis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{}), grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.client.Close()
		p.Close()
		e.upSrv.Stop()
	})
	return e
}

func (e *env) call(ctx context.Context, method string, req []byte, opts ...grpc.CallOption) ([]byte, error) {
	var resp []byte
	err := e.client.Invoke(ctx, method, &req, &resp, opts...)
	return resp, err
}

// stream makes a server-streaming call and collects every reply.
func (e *env) stream(ctx context.Context, method string, req []byte) ([][]byte, error) {
	cs, err := e.client.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(&req); err != nil {
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		var m []byte
		err := cs.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

// allMethods lists every CRI v1 method from the cri-api service
// descriptors, so that a method added to cri-api is tested without a change
// here, plus methods that this build does not know.
func allMethods() (unary, streams []string) {
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, m := range sd.Methods {
			unary = append(unary, "/"+sd.ServiceName+"/"+m.MethodName)
		}
		for _, s := range sd.Streams {
			streams = append(streams, "/"+sd.ServiceName+"/"+s.StreamName)
		}
	}
	unary = append(unary, "/runtime.v1.RuntimeService/MethodFromTheFuture", "/runtime.v2.RuntimeService/Version")
	return unary, streams
}

// withUnknownField appends field 999 to a valid request, as a newer kubelet
// would send it.
func withUnknownField(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	b = protowire.AppendTag(b, 999, protowire.BytesType)
	return protowire.AppendBytes(b, []byte("from a newer kubelet"))
}

func TestEveryMethodIsRelayed(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		ctx := context.Background()
		unary, streams := allMethods()
		if len(unary) < 30 || len(streams) < 6 {
			t.Fatalf("descriptor lists look wrong: %d unary, %d streams", len(unary), len(streams))
		}
		req := withUnknownField(&runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: "abc"}})
		for _, m := range unary {
			resp, err := e.call(ctx, m, req)
			if err != nil {
				t.Errorf("%s: %v", m, err)
				continue
			}
			if got := e.fake.lastRequest(m); !bytes.Equal(got, req) {
				t.Errorf("%s: runtime got %q, want the kubelet's bytes %q", m, got, req)
			}
			if want := reply(m, append(req, '0')); !bytes.Equal(resp, want) {
				t.Errorf("%s: kubelet got %q, want %q", m, resp, want)
			}
		}
		for _, m := range streams {
			got, err := e.stream(ctx, m, req)
			if err != nil || len(got) != 1 || !bytes.Equal(got[0], reply(m, append(req, '0'))) {
				t.Errorf("%s: got %q, %v", m, got, err)
			}
		}
	})
}

func TestStatusCodesPassThrough(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
			if c == codes.Unavailable {
				continue // covered, with the connection state, by TestUpstreamDown
			}
			for _, m := range []string{"/runtime.v1.RuntimeService/StopPodSandbox", "/runtime.v1.RuntimeService/GetContainerEvents", "/runtime.v1.RuntimeService/Unknown"} {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-code", strconv.Itoa(int(c)))
				_, err := e.call(ctx, m, []byte("req"))
				st := status.Convert(err)
				if st.Code() != c || st.Message() != "message from runtime: "+m {
					t.Errorf("%s code %v: got %v %q", m, c, st.Code(), st.Message())
				}
				if d := st.Details(); len(d) != 1 || d[0].(*wrapperspb.StringValue).GetValue() != "detail" {
					t.Errorf("%s code %v: details %v", m, c, d)
				}
			}
		}
	})
}

func TestMetadataHeadersAndTrailers(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		for _, m := range []string{"/runtime.v1.RuntimeService/Version", "/runtime.v1.RuntimeService/StreamContainers", "/runtime.v1.ImageService/FutureThing"} {
			for _, code := range []string{"", "5"} {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-kubelet", "k1")
				if code != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "x-code", code)
				}
				var hdr, tlr metadata.MD
				_, err := e.call(ctx, m, []byte("r"), grpc.Header(&hdr), grpc.Trailer(&tlr))
				if (err != nil) != (code != "") {
					t.Fatalf("%s: %v", m, err)
				}
				if got := hdr.Get("x-upstream-header"); len(got) != 1 || got[0] != "h-"+m {
					t.Errorf("%s code %q: header %v", m, code, hdr)
				}
				if got := tlr.Get("x-upstream-trailer"); len(got) != 1 || got[0] != "t-"+m {
					t.Errorf("%s code %q: trailer %v", m, code, tlr)
				}
				e.fake.mu.Lock()
				md := e.fake.metadata[m]
				e.fake.mu.Unlock()
				if got := md.Get("x-kubelet"); len(got) != 1 || got[0] != "k1" {
					t.Errorf("%s: runtime saw metadata %v", m, md)
				}
			}
		}
	})
}

func TestDeadlineAndCancellationReachUpstream(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		for _, m := range []string{"/runtime.v1.RuntimeService/ListContainers", "/runtime.v1.RuntimeService/GetContainerEvents"} {
			// The deadline must expire during the test, and the call must
			// reach the runtime before it does: on a loaded machine no
			// fixed figure is sure to be enough, so a call that did not
			// reach the runtime is made again with twice the time.
			for timeout := 300 * time.Millisecond; ; timeout *= 2 {
				if timeout > 2*time.Minute {
					t.Fatalf("%s: never reached the runtime before its deadline", m)
				}
				start := time.Now()
				deadline := start.Add(timeout)
				ctx, cancel := context.WithDeadline(metadata.AppendToOutgoingContext(context.Background(), "x-block", "1"), deadline)
				_, err := e.call(ctx, m, []byte("r"))
				cancel()
				if status.Code(err) != codes.DeadlineExceeded {
					t.Errorf("%s: got %v, want DeadlineExceeded", m, err)
				}
				select {
				case got := <-e.fake.cancelled:
					if got != m {
						t.Errorf("cancelled %s, want %s", got, m)
					}
				case <-time.After(5 * time.Second):
					if e.fake.arrival(m).IsZero() {
						t.Logf("%s: the call did not reach the runtime within %s; again with twice the time", m, timeout)
						continue
					}
					// It arrived: its end must come (a hang guard).
					select {
					case got := <-e.fake.cancelled:
						if got != m {
							t.Errorf("cancelled %s, want %s", got, m)
						}
					case <-time.After(time.Minute):
						t.Fatalf("%s: the runtime never saw the call end", m)
					}
				}
				// The runtime's deadline is the kubelet's, moved later by
				// at most the time the call took to reach it (a timeout
				// travels as a duration), and earlier by at most the
				// rounding of that duration.
				e.fake.mu.Lock()
				d, arrived := e.fake.deadlines[m], e.fake.arrived[m]
				e.fake.mu.Unlock()
				if diff, transit := d.Sub(deadline), arrived.Sub(start); diff < -time.Millisecond || diff > transit+time.Millisecond {
					t.Errorf("%s: runtime saw deadline %v, kubelet set %v, the call took %s to reach the runtime", m, d, deadline, transit)
				}
				break
			}
		}

		// An explicit cancel, with no deadline, reaches the runtime too.
		ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "x-block", "1"))
		done := make(chan error, 1)
		go func() { _, err := e.call(ctx, "/runtime.v1.RuntimeService/ExecSync", []byte("r")); done <- err }()
		e.fake.waitArrival(t, "/runtime.v1.RuntimeService/ExecSync")
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Errorf("got %v, want Canceled", err)
		}
		select {
		case <-e.fake.cancelled:
		case <-time.After(30 * time.Second):
			t.Fatal("the runtime never saw the cancel")
		}
	})
}

func TestLongServerStream(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-count", "10000")
		m := "/runtime.v1.RuntimeService/GetContainerEvents"
		got, err := e.stream(ctx, m, []byte("ev"))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 10000 {
			t.Fatalf("got %d messages, want 10000", len(got))
		}
		for i, g := range got {
			if want := reply(m, []byte("ev"+strconv.Itoa(i))); !bytes.Equal(g, want) {
				t.Fatalf("message %d: got %q, want %q", i, g, want)
			}
		}
	})
}

func TestLargeMessages(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-size", strconv.Itoa(20<<20))
		// 20 MiB is above the default limit: the proxy must be configured for it.
		if _, err := e.call(ctx, "/runtime.v1.RuntimeService/ListContainers", []byte("r")); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("20 MiB with the 16 MiB default: got %v, want ResourceExhausted", err)
		}
		e = newEnv(t, WithMaxMsgSize(32<<20))
		resp, err := e.call(ctx, "/runtime.v1.RuntimeService/ListContainers", []byte("r"))
		if err != nil || len(resp) != 20<<20 {
			t.Fatalf("got %d bytes, %v", len(resp), err)
		}
		// 15 MiB passes both ways with the defaults.
		e = newEnv(t)
		big := bytes.Repeat([]byte{'y'}, 15<<20)
		resp, err = e.call(context.Background(), "/runtime.v1.ImageService/PullImage", big)
		if err != nil || len(resp) != len(big)+len("/runtime.v1.ImageService/PullImage|")+1 {
			t.Fatalf("15 MiB request: got %d bytes, %v", len(resp), err)
		}
	})
}

// A stream whose client does not read holds at most its stream window in
// the relay: other calls on the same connection go on. The kubelet has one
// such stream (GetContainerEvents); six are tried.
func TestStalledStreamsDoNotBlockOthers(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 6 {
			sctx := metadata.AppendToOutgoingContext(ctx, "x-count", "1000000")
			cs, err := e.client.NewStream(sctx, &grpc.StreamDesc{ServerStreams: true}, "/runtime.v1.RuntimeService/GetContainerEvents")
			if err != nil {
				t.Fatal(err)
			}
			req := []byte("ev")
			if err := cs.SendMsg(&req); err != nil {
				t.Fatal(err)
			}
			cs.CloseSend()
			var first []byte
			if err := cs.RecvMsg(&first); err != nil { // then never read again
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond) // let the windows fill
		// The timeout only guards against a hang: a blocked relay never answers.
		cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-size", strconv.Itoa(3<<20)), time.Minute)
		defer ccancel()
		resp, err := e.call(cctx, "/runtime.v1.RuntimeService/ListContainers", []byte("r"))
		if err != nil || len(resp) != 3<<20 {
			t.Fatalf("a 3 MiB reply next to six stalled streams: got %d bytes, %v", len(resp), err)
		}
	})
}

func TestUpstreamDownThenBack(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		dir := t.TempDir()
		sock := filepath.Join(dir, "runtime.sock")
		p, err := newCore("unix://"+sock, WithReconnectBackoff(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		pl, err := Listen("unix://"+filepath.Join(dir, "guard", "guard.sock"), 0o660, -1)
		if err != nil {
			t.Fatal(err)
		}
		go p.Serve(pl)
		client, err := grpc.NewClient("unix://"+filepath.Join(dir, "guard", "guard.sock"),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		rs := runtimeapi.NewRuntimeServiceClient(client)

		// The relay answers at once when the runtime is down; the
		// timeout only guards against a hang.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = rs.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		want := "cri-guard: runtime unix://" + sock + " is unavailable: "
		if st := status.Convert(err); st.Code() != codes.Unavailable || len(st.Message()) <= len(want) || st.Message()[:len(want)] != want {
			t.Fatalf("runtime down: got %v, want Unavailable starting %q", err, want)
		}

		// The runtime comes up; the next calls succeed without a restart.
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		fake := newFakeRuntime()
		up := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(fake.handle))
		go up.Serve(l)
		defer up.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var resp []byte
			req := []byte{}
			err := client.Invoke(context.Background(), "/runtime.v1.RuntimeService/Version", &req, &resp, grpc.ForceCodec(bytesCodec{}))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no recovery after the runtime came back: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// needleFilter is a ReplyFilter that marks replies holding its needle.
type needleFilter struct {
	method string
	calls  atomic.Int32
}

func (n *needleFilter) Method() string { return n.method }
func (n *needleFilter) Needle() []byte { return []byte("OOMKilled") }
func (n *needleFilter) Intercept(ctx context.Context, req []byte, forward Forward) ([]byte, error) {
	n.calls.Add(1)
	out, err := forward(ctx, req)
	if err != nil || !bytes.Contains(out, n.Needle()) {
		return out, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	return append([]byte("explained for "+strings.Join(md.Get("x-who"), ",")+": "), out...), nil
}

func TestReplyFilter(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		const method = "/runtime.v1.RuntimeService/ContainerStatus"
		f := &needleFilter{method: method}
		e := newEnv(t, WithInterceptors(f))
		// The frame-level core runs Intercept only for replies with the
		// needle; the gRPC-level core for every call.
		wantCalls := func(frames, grpcCore int32) {
			t.Helper()
			want := grpcCore
			if testCore == ForwardingFrames {
				want = frames
			}
			if got := f.calls.Swap(0); got != want {
				t.Errorf("Intercept ran %d times, want %d", got, want)
			}
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-who", "kubelet")
		var hdr, tlr metadata.MD
		got, err := e.call(ctx, method, []byte("plain"), grpc.Header(&hdr), grpc.Trailer(&tlr))
		if err != nil || !bytes.Equal(got, reply(method, []byte("plain0"))) {
			t.Fatalf("plain: got %q, %v", got, err)
		}
		if hdr.Get("x-upstream-header")[0] != "h-"+method || tlr.Get("x-upstream-trailer")[0] != "t-"+method {
			t.Errorf("plain: header %v, trailer %v", hdr, tlr)
		}
		wantCalls(0, 1)

		hdr, tlr = nil, nil
		got, err = e.call(ctx, method, []byte("OOMKilled"), grpc.Header(&hdr), grpc.Trailer(&tlr))
		if want := append([]byte("explained for kubelet: "), reply(method, []byte("OOMKilled0"))...); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("needle: got %q, %v; want %q", got, err, want)
		}
		if hdr.Get("x-upstream-header")[0] != "h-"+method || tlr.Get("x-upstream-trailer")[0] != "t-"+method {
			t.Errorf("needle: header %v, trailer %v", hdr, tlr)
		}
		wantCalls(1, 1)

		_, err = e.call(metadata.AppendToOutgoingContext(ctx, "x-code", "5"), method, []byte("OOMKilled"))
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "message from runtime: "+method {
			t.Errorf("runtime error: got %v", err)
		}
		wantCalls(0, 1)

		_, err = e.call(metadata.AppendToOutgoingContext(ctx, "x-size", strconv.Itoa(20<<20)), method, []byte("r"))
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("20 MiB reply with the 16 MiB limit: got %v", err)
		}
		f.calls.Store(0)
		if _, err := e.call(ctx, method, []byte("after")); err != nil {
			t.Errorf("after an oversized reply: %v", err)
		}
	})
}

// needlesFilter watches for either of two needles.
type needlesFilter struct{ needleFilter }

func (n *needlesFilter) Needles() [][]byte {
	return [][]byte{[]byte("OOMKilled"), []byte("StartError")}
}
func (n *needlesFilter) Intercept(ctx context.Context, req []byte, forward Forward) ([]byte, error) {
	n.calls.Add(1)
	out, err := forward(ctx, req)
	if err != nil || !bytes.Contains(out, []byte("StartError")) {
		return out, err
	}
	return append([]byte("explained: "), out...), nil
}

// A filter with several needles has Intercept run for a reply with any of
// them, and only for those on the frame-level core.
func TestReplyFilterNeedles(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		const method = "/runtime.v1.RuntimeService/ContainerStatus"
		f := &needlesFilter{needleFilter{method: method}}
		e := newEnv(t, WithInterceptors(f))
		ctx := context.Background()
		for name, tc := range map[string]struct {
			body      string
			want      []byte
			intercept bool
		}{
			"plain":             {body: "plain", want: reply(method, []byte("plain0"))},
			"the second needle": {body: "StartError", want: append([]byte("explained: "), reply(method, []byte("StartError0"))...), intercept: true},
		} {
			got, err := e.call(ctx, method, []byte(tc.body))
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Errorf("%s: got %q, %v; want %q", name, got, err, tc.want)
			}
			want := int32(1)
			if testCore == ForwardingFrames && !tc.intercept {
				want = 0
			}
			if n := f.calls.Swap(0); n != want {
				t.Errorf("%s: Intercept ran %d times, want %d", name, n, want)
			}
		}
	})
}

func TestInterceptor(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		const method = "/runtime.v1.RuntimeService/RunPodSandbox"
		var seen *runtimeapi.RunPodSandboxRequest
		h := func(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error)) (*runtimeapi.RunPodSandboxResponse, error) {
			seen = req
			switch req.GetConfig().GetMetadata().GetName() {
			case "refuse":
				return nil, status.Error(codes.InvalidArgument, "refused by policy")
			case "panic":
				panic("boom")
			case "rewrite":
				r := proto.Clone(req).(*runtimeapi.RunPodSandboxRequest)
				r.RuntimeHandler = "rewritten"
				resp, err := next(ctx, r)
				if err != nil {
					return nil, err
				}
				out := proto.Clone(resp).(*runtimeapi.RunPodSandboxResponse)
				out.PodSandboxId = "changed"
				return out, nil
			}
			return next(ctx, req)
		}
		var panics atomic.Int32
		e := newEnv(t, WithInterceptors(Unary(method, h)), WithPanicHook(func() { panics.Add(1) }))
		ctx := context.Background()
		mk := func(name string) []byte {
			return withUnknownField(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name}}})
		}

		t.Run("request keeps its bytes; a lying runtime's reply is a clear error", func(t *testing.T) {
			req := mk("plain")
			_, err := e.call(ctx, method, req)
			// This fake's reply is not a RunPodSandboxResponse.
			// protobuf-go varies the spaces in its own error texts on purpose,
			// so only cri-guard's part is compared exactly.
			want := "cri-guard: cannot decode the runtime's " + method + " reply: proto:"
			if st := status.Convert(err); st.Code() != codes.Internal || !strings.HasPrefix(st.Message(), want) {
				t.Errorf("got %v, want Internal %q...", err, want)
			}
			if got := e.fake.lastRequest(method); !bytes.Equal(got, req) {
				t.Errorf("runtime got %q, want %q", got, req)
			}
			if seen.GetConfig().GetMetadata().GetName() != "plain" {
				t.Errorf("handler saw %v", seen)
			}
		})
		t.Run("refusal never reaches the runtime", func(t *testing.T) {
			before := e.fake.lastRequest(method)
			_, err := e.call(ctx, method, mk("refuse"))
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "refused by policy" {
				t.Errorf("got %v", err)
			}
			if got := e.fake.lastRequest(method); !bytes.Equal(got, before) {
				t.Errorf("runtime saw the refused call")
			}
		})
		t.Run("panic becomes Internal and the server keeps serving", func(t *testing.T) {
			_, err := e.call(ctx, method, mk("panic"))
			if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "cri-guard: internal error in "+method+": boom" {
				t.Errorf("got %v", err)
			}
			if _, err := e.call(ctx, "/runtime.v1.RuntimeService/Version", nil); err != nil {
				t.Errorf("after a panic: %v", err)
			}
			if n := panics.Load(); n != 1 {
				t.Errorf("the panic hook was called %d times, want 1", n)
			}
		})
		t.Run("garbage request is InvalidArgument", func(t *testing.T) {
			_, err := e.call(ctx, method, []byte{0xff, 0xff, 0xff})
			if st := status.Convert(err); st.Code() != codes.InvalidArgument {
				t.Errorf("got %v", err)
			}
		})
		t.Run("runtime errors pass through", func(t *testing.T) {
			c := metadata.AppendToOutgoingContext(ctx, "x-code", strconv.Itoa(int(codes.NotFound)))
			_, err := e.call(c, method, mk("plain"))
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "message from runtime: "+method {
				t.Errorf("got %v", err)
			}
		})
	})
}

// TestInterceptorReplyBytes uses a fake whose replies decode, to check that
// an intercepted reply keeps its bytes or is re-encoded when changed.
func TestInterceptorReplyBytes(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		const method = "/runtime.v1.RuntimeService/RunPodSandbox"
		h := func(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error)) (*runtimeapi.RunPodSandboxResponse, error) {
			r := req
			if req.GetRuntimeHandler() == "rewrite" {
				r = proto.Clone(req).(*runtimeapi.RunPodSandboxRequest)
				r.RuntimeHandler = "rewritten"
			}
			resp, err := next(ctx, r)
			if err != nil || req.GetRuntimeHandler() != "rewrite" {
				return resp, err
			}
			out := proto.Clone(resp).(*runtimeapi.RunPodSandboxResponse)
			out.PodSandboxId += "-changed"
			return out, nil
		}
		upLis := bufconn.Listen(1 << 20)
		var got []byte
		up := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			if err := ss.RecvMsg(&got); err != nil {
				return err
			}
			out := withUnknownField(&runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"})
			return ss.SendMsg(&out)
		}))
		go up.Serve(upLis)
		defer up.Stop()
		p, err := newCore("passthrough:///x", WithInterceptors(Unary(method, h)), WithDialer(func(ctx context.Context, _ string) (net.Conn, error) { return upLis.DialContext(ctx) }))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		pl := bufconn.Listen(1 << 20)
		go p.Serve(pl)
		c, _ := grpc.NewClient("passthrough:///y", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return pl.DialContext(ctx) }))
		defer c.Close()

		for _, handler := range []string{"keep", "rewrite"} {
			req := withUnknownField(&runtimeapi.RunPodSandboxRequest{RuntimeHandler: handler})
			var resp []byte
			if err := c.Invoke(context.Background(), method, &req, &resp, grpc.ForceCodec(bytesCodec{})); err != nil {
				t.Fatal(err)
			}
			var sent runtimeapi.RunPodSandboxRequest
			if err := proto.Unmarshal(got, &sent); err != nil {
				t.Fatal(err)
			}
			var back runtimeapi.RunPodSandboxResponse
			if err := proto.Unmarshal(resp, &back); err != nil {
				t.Fatal(err)
			}
			switch handler {
			case "keep":
				if !bytes.Equal(got, req) {
					t.Errorf("request bytes changed")
				}
				if want := withUnknownField(&runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"}); !bytes.Equal(resp, want) {
					t.Errorf("reply bytes changed: %q", resp)
				}
			case "rewrite":
				if sent.RuntimeHandler != "rewritten" || len(sent.ProtoReflect().GetUnknown()) == 0 {
					t.Errorf("runtime got %v, want the rewrite with the unknown field kept", &sent)
				}
				if back.PodSandboxId != "sb-changed" || len(back.ProtoReflect().GetUnknown()) == 0 {
					t.Errorf("kubelet got %v", &back)
				}
			}
		}
	})
}

// Shutdown ends a GetContainerEvents stream at once, with Unavailable, and
// waits for an ordinary call in flight to end on its own, however long it
// takes: before, the stream held Shutdown until its deadline and the call
// was cut there.
func TestShutdownEndsStreamsAndWaitsForCalls(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		const events = "/runtime.v1.RuntimeService/GetContainerEvents"
		const stop = "/runtime.v1.RuntimeService/StopContainer"
		streamEnd := make(chan error, 1)
		go func() {
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-block", "1")
			_, err := e.stream(ctx, events, []byte("r"))
			streamEnd <- err
		}()
		callEnd := make(chan error, 1)
		go func() {
			// Held until the test lets it go, however long Shutdown waits.
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-gate", "1")
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			_, err := e.call(ctx, stop, []byte("c"))
			callEnd <- err
		}()
		for e.fake.lastRequest(events) == nil || e.fake.lastRequest(stop) == nil {
			time.Sleep(5 * time.Millisecond)
		}
		// The hang guard only: Shutdown must not need it.
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		shut := make(chan error, 1)
		go func() { shut <- e.proxy.Shutdown(sctx) }()
		select {
		case err := <-streamEnd:
			t.Logf("stream ended %v after Shutdown began", time.Since(start))
			if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "subscribe again") {
				t.Errorf("stream ended with %v, want Unavailable ... subscribe again", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Shutdown did not end the event stream")
		}
		select {
		case m := <-e.fake.cancelled:
			if m != events {
				t.Errorf("runtime saw %s cancelled, want %s", m, events)
			}
		case <-time.After(30 * time.Second):
			t.Error("the runtime's side of the stream was not cancelled")
		}
		// The stream has ended and the call is still held: Shutdown must
		// still be waiting for it.
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v while a call was in flight", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(e.fake.gate)
		if err := <-callEnd; err != nil {
			t.Errorf("the call in flight: %v, want it answered", err)
		}
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := e.proxy.Serve(bufconn.Listen(10)); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	})
}

// The hard cap: a call that outlives Shutdown's context is cancelled.
func TestShutdownDeadlineCancelsCalls(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		const method = "/runtime.v1.RuntimeService/ExecSync"
		done := make(chan error, 1)
		go func() {
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-block", "1")
			_, err := e.call(ctx, method, []byte("x"))
			done <- err
		}()
		for e.fake.lastRequest(method) == nil {
			time.Sleep(5 * time.Millisecond)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := e.proxy.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: got %v, want DeadlineExceeded", err)
		}
		select {
		case err := <-done:
			if err == nil {
				t.Error("the call outliving the hard cap was answered")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the call was not ended at the hard cap")
		}
	})
}

func TestOptionsCheckThemselves(t *testing.T) {
	for name, tc := range map[string]struct {
		opt  Option
		want string
	}{
		"tiny max message":  {WithMaxMsgSize(1024), "proxy option: max message size 1024 is below the gRPC default of 4 MiB"},
		"nil logger":        {WithLogger(nil), "proxy option: nil logger"},
		"backoff too short": {WithReconnectBackoff(time.Millisecond), "proxy option: reconnect backoff 1ms is outside 10ms..1m"},
		"two interceptors": {WithInterceptors(
			Unary[*runtimeapi.VersionRequest, *runtimeapi.VersionResponse]("/m", nil),
			Unary[*runtimeapi.VersionRequest, *runtimeapi.VersionResponse]("/m", nil)), "proxy option: two interceptors for /m"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New("unix:///nowhere.sock", tc.opt)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func ExampleUnary() {
	h := func(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error)) (*runtimeapi.RunPodSandboxResponse, error) {
		if req.GetConfig().GetMetadata().GetNamespace() == "" {
			return nil, status.Error(codes.InvalidArgument, "a pod needs a namespace")
		}
		return next(ctx, req)
	}
	ic := Unary(runtimeapi.RuntimeService_RunPodSandbox_FullMethodName, h)
	fmt.Println(ic.Method())
	// Output: /runtime.v1.RuntimeService/RunPodSandbox
}
