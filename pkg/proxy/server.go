package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/proxy/h2"
)

// Server relays CRI calls from its listeners to one upstream runtime.
type Server struct {
	upstream string
	opts     options
	unary    map[string]bool // methods known to be unary: relayed without a goroutine
	grpc     *grpc.Server
	conn     *grpc.ClientConn
	dialErr  h2.LastError // the last failed attempt to reach the runtime

	mu        sync.Mutex
	closed    bool
	stopping  bool                              // Shutdown has begun
	streams   map[*context.CancelCauseFunc]bool // streaming calls in flight
	late      sync.WaitGroup                    // connections in lateConns
	lateConns map[net.Conn]bool                 // accepted as Shutdown began (see lateConn)
	live      map[*lateConn]bool                // accepted and not closed
	draining  atomic.Bool                       // Shutdown began: lateConns watch for GOAWAY
}

// New returns a Server that forwards to upstream, a gRPC target such as
// "unix:///run/containerd/containerd.sock". It does not connect yet: the
// runtime may be down, and calls made meanwhile fail with Unavailable.
func New(upstream string, opts ...Option) (*Server, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("proxy option: %w", err)
		}
	}
	s := &Server{
		upstream: upstream,
		opts:     o,
		unary:    unaryMethods(),
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           h2.SideBackoff(o.backoffMax),
			MinConnectTimeout: 5 * time.Second,
		}),
		// Never idle: the connection is kept up (WatchUpstream) so that its
		// state is the runtime's.
		grpc.WithIdleTimeout(0),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(rawCodec{}),
			grpc.MaxCallRecvMsgSize(o.maxMsgSize),
			grpc.MaxCallSendMsgSize(o.maxMsgSize),
		),
	}
	// Every attempt, and its error, is noted for UpstreamError. A target
	// other than a unix socket keeps gRPC's own dialer, unobserved.
	dial := o.dialer
	if path, err := SocketPath(upstream); dial == nil && err == nil {
		dial = func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	if dial != nil {
		dopts = append(dopts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := dial(ctx, addr)
			s.dialErr.Note(err)
			return nc, err
		}))
	}
	conn, err := grpc.NewClient(upstream, dopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", upstream, err)
	}
	s.conn = conn
	s.grpc = grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(s.handle),
		grpc.MaxRecvMsgSize(o.maxMsgSize),
		grpc.MaxSendMsgSize(o.maxMsgSize),
		grpc.SharedWriteBuffer(true),
		// Reuse goroutines for calls: a fresh goroutine per call grows
		// its stack on every call (runtime.newstack and copystack were
		// about a tenth of the relay's CPU in the profile).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	return s, nil
}

func defaultOptions() options {
	return options{
		maxMsgSize:   DefaultMaxMsgSize,
		interceptors: map[string]Interceptor{},
		logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		backoffMax:   time.Second,
	}
}

// unaryMethods lists the unary methods of CRI v1. Any other method, known or
// not, is relayed as a stream, which is correct for every kind of call.
func unaryMethods() map[string]bool {
	m := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, md := range sd.Methods {
			m["/"+sd.ServiceName+"/"+md.MethodName] = true
		}
	}
	return m
}

// Serve accepts connections on l until Shutdown or Close. It always returns
// a non-nil error: ErrServerClosed after a stop.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	// Start connecting now, so that the first call need not wait.
	s.conn.Connect()
	err := s.grpc.Serve(&lateListener{Listener: l, s: s})
	if errors.Is(err, grpc.ErrServerStopped) || s.isClosed() {
		return ErrServerClosed
	}
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) markClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.closed
	s.closed = true
	return was
}

// Shutdown stops accepting connections and calls, ends the streaming calls
// such as GetContainerEvents at once with h2.StoppingStatus (they never end
// by themselves), and waits for the other calls in flight, which end on
// their own deadlines. When ctx ends first, the remaining calls are
// cancelled (their callers see Unavailable or Canceled) and ctx's error is
// returned: ctx is a safety net, not the expected way out.
func (s *Server) Shutdown(ctx context.Context) error {
	s.markClosed()
	s.draining.Store(true)
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	// The GOAWAYs first, then the streams' ends (as the frames core
	// orders them): a client that subscribes again on seeing its stream
	// end then does so on a new connection.
	s.goAwaysSent()
	s.mu.Lock()
	s.stopping = true
	for cancel := range s.streams {
		(*cancel)(errStopping)
	}
	s.mu.Unlock()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		err = ctx.Err()
	}
	// Connections accepted as the stop began, answered by GoAwayUnread:
	// each ends when its client closes it, or at ctx's end.
	late := make(chan struct{})
	go func() { s.late.Wait(); close(late) }()
	select {
	case <-late:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for nc := range s.lateConns {
			nc.Close()
		}
		s.mu.Unlock()
		<-late
	}
	return errors.Join(err, s.conn.Close())
}

// errStopping is the cause with which Shutdown cancels a streaming call.
var errStopping = errors.New("cri-guard: stopping")

// trackStream registers a streaming call's cancel, so that Shutdown can end
// it; it returns false, and registers nothing, once Shutdown has begun.
func (s *Server) trackStream(cancel *context.CancelCauseFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	if s.streams == nil {
		s.streams = map[*context.CancelCauseFunc]bool{}
	}
	s.streams[cancel] = true
	return true
}

func (s *Server) untrackStream(cancel *context.CancelCauseFunc) {
	s.mu.Lock()
	delete(s.streams, cancel)
	s.mu.Unlock()
}

// Close stops at once: listeners close and calls in flight are cancelled.
func (s *Server) Close() error {
	if s.markClosed() {
		return nil
	}
	s.grpc.Stop()
	return s.conn.Close()
}

// Upstream is the runtime's target, as given to New.
func (s *Server) Upstream() string { return s.upstream }

// Conn is the connection to the runtime, for calls that cri-guard makes
// itself, such as looking up a container's pod. It encodes proto messages.
func (s *Server) Conn() grpc.ClientConnInterface { return s.conn }

// UpstreamState is the state of the connection to the runtime.
func (s *Server) UpstreamState() connectivity.State { return s.conn.GetState() }

// UpstreamError is the error of the last attempt to reach the runtime that
// failed (nil if none failed, or the target is not a unix socket), and how
// many have failed so far.
func (s *Server) UpstreamError() (error, uint64) { return s.dialErr.Last() }

// CheckUpstream asks the runtime for its Version: a runtime that answers is
// ready.
func (s *Server) CheckUpstream(ctx context.Context) (*runtimeapi.VersionResponse, error) {
	resp, err := runtimeapi.NewRuntimeServiceClient(s.conn).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return nil, s.upstreamError(err)
	}
	return resp, nil
}
