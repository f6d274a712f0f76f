package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("cri-guard: server closed")

// Options configure a Server; package proxy fills them from its own
// options.
type Options struct {
	MaxMsgSize   int
	Interceptors []Interceptor
	Logger       *slog.Logger
	Observer     func(method string, code codes.Code, elapsed time.Duration)
	OnPanic      func() // told of every panic recovered
	BackoffMax   time.Duration
	Dialer       func(ctx context.Context, addr string) (net.Conn, error)
}

// Server relays CRI calls at the HTTP/2 frame level.
type Server struct {
	upstream     string
	o            Options
	interceptors map[string]Interceptor
	gconn        *grpc.ClientConn

	dialErr LastError // the last failed attempt to reach the runtime

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]bool
	serving   int // Serve calls that have not returned
	conns     map[*conn]bool
	idle      chan struct{} // closed during Shutdown when conns is empty and serving 0
}

// New returns a Server that forwards to upstream, a target such as
// "unix:///run/containerd/containerd.sock". It does not connect yet.
func New(upstream string, o Options) (*Server, error) {
	if o.MaxMsgSize == 0 {
		o.MaxMsgSize = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = time.Second
	}
	s := &Server{upstream: upstream, o: o, interceptors: map[string]Interceptor{},
		listeners: map[net.Listener]bool{}, conns: map[*conn]bool{}}
	for _, ic := range o.Interceptors {
		if _, dup := s.interceptors[ic.Method()]; dup {
			return nil, fmt.Errorf("two interceptors for %s", ic.Method())
		}
		s.interceptors[ic.Method()] = ic
	}
	if o.Dialer == nil {
		if _, err := unixPath(upstream); err != nil {
			return nil, err
		}
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           SideBackoff(o.BackoffMax),
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.MaxMsgSize), grpc.MaxCallSendMsgSize(o.MaxMsgSize)),
		// Never idle: the connection is kept up (proxy.WatchUpstream) so
		// that its state is the runtime's.
		grpc.WithIdleTimeout(0),
		// Every attempt, and its error, is noted for UpstreamError.
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			nc, err := s.dial(ctx)
			s.dialErr.Note(err)
			return nc, err
		}),
	}
	gc, err := grpc.NewClient(upstream, dopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", upstream, err)
	}
	s.gconn = gc
	return s, nil
}

func unixPath(target string) (string, error) {
	switch {
	case strings.HasPrefix(target, "unix://"):
		return strings.TrimPrefix(target, "unix://"), nil
	case strings.HasPrefix(target, "unix:"):
		return strings.TrimPrefix(target, "unix:"), nil
	case strings.HasPrefix(target, "/"):
		return target, nil
	}
	return "", fmt.Errorf("upstream %q: the frames core reaches unix sockets only", target)
}

func (s *Server) dial(ctx context.Context) (net.Conn, error) {
	if s.o.Dialer != nil {
		return s.o.Dialer(ctx, s.upstream)
	}
	p, err := unixPath(s.upstream)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", p)
}

// unavailable is the status of a call that could not reach the runtime.
func (s *Server) unavailable(err error) *status.Status {
	return status.Newf(codes.Unavailable, "cri-guard: runtime %s is unavailable: %v", s.upstream, err)
}

// Serve accepts connections on l until Shutdown or Close. It always returns
// a non-nil error: ErrServerClosed after a stop.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = true
	// Until Serve returns, a connection it accepted as Shutdown began may
	// still be on its way into conns: Shutdown waits for it too.
	s.serving++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.serving--
		s.idleLocked()
		s.mu.Unlock()
	}()
	s.gconn.Connect()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				time.Sleep(delay)
				continue
			}
			s.mu.Lock()
			delete(s.listeners, l)
			s.mu.Unlock()
			return err
		}
		delay = 0
		ctx, cancel := context.WithCancel(context.Background())
		c := &conn{s: s, nc: nc, ctx: ctx, cancel: cancel, ups: map[*side]bool{}}
		s.mu.Lock()
		closed := s.closed
		// Accepted as Shutdown began: taken from the socket's queue, so
		// no successor can have it; serve answers it with GOAWAY rather
		// than close it unread.
		c.draining = closed
		s.conns[c] = true
		s.mu.Unlock()
		go c.serve()
		if closed {
			return ErrServerClosed
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.idleLocked()
	s.mu.Unlock()
}

// idleLocked tells a Shutdown that waits when no connection is left and no
// Serve can add one.
func (s *Server) idleLocked() {
	if len(s.conns) == 0 && s.serving == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// stop closes the listeners and returns the open connections.
func (s *Server) stop() (conns []*conn, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first = !s.closed
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	s.listeners = map[net.Listener]bool{}
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns, first
}

// Shutdown stops accepting connections and calls, ends the streaming calls
// such as GetContainerEvents at once with StoppingStatus, and waits for the
// other calls in flight, which end on their own deadlines. When ctx ends
// first, the remaining calls are cancelled and ctx's error is returned: ctx
// is a safety net, not the expected way out. The listeners are closed;
// whether that removes a unix socket's file is the listener's choice
// (net.UnixListener.SetUnlinkOnClose).
func (s *Server) Shutdown(ctx context.Context) error {
	conns, _ := s.stop()
	s.mu.Lock()
	idle := make(chan struct{})
	s.idle = idle
	s.idleLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
		cs, _ := s.stop()
		for _, c := range cs {
			c.close()
		}
	}
	return errors.Join(err, s.gconn.Close())
}

// Close stops at once: listeners close and calls in flight are cancelled.
func (s *Server) Close() error {
	conns, first := s.stop()
	for _, c := range conns {
		c.close()
	}
	if !first {
		return nil
	}
	return s.gconn.Close()
}

// Upstream is the runtime's target, as given to New.
func (s *Server) Upstream() string { return s.upstream }

// Conn is a connection to the runtime for cri-guard's own calls. It
// encodes proto messages.
func (s *Server) Conn() grpc.ClientConnInterface { return s.gconn }

// UpstreamState is the state of Conn.
func (s *Server) UpstreamState() connectivity.State { return s.gconn.GetState() }

// UpstreamError is the error of the last attempt to reach the runtime that
// failed, by Conn or by a kubelet connection (nil if none failed), and how
// many have failed so far.
func (s *Server) UpstreamError() (error, uint64) { return s.dialErr.Last() }

// upstreamDialled is told of every dial of a kubelet connection's runtime
// connection. A success while Conn is not connected means the runtime is
// back: Conn tries again at once instead of at the end of its backoff.
func (s *Server) upstreamDialled(err error) {
	s.dialErr.Note(err)
	if err == nil && s.gconn.GetState() != connectivity.Ready {
		s.gconn.ResetConnectBackoff()
	}
}

// SideBackoff is the reconnect backoff of a connection whose state stands
// for the runtime's: from 50ms up to max, jitter included, so that a
// runtime that is back is seen within max.
func SideBackoff(max time.Duration) backoff.Config {
	const jitter = 0.2
	return backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: jitter,
		MaxDelay: time.Duration(float64(max) / (1 + jitter))}
}

// LastError keeps the error of the last failed attempt to reach the
// runtime. Its zero value is ready to use.
type LastError struct {
	mu  sync.Mutex
	err error
	n   uint64
}

// Note records err if it is not nil.
func (l *LastError) Note(err error) {
	if err == nil {
		return
	}
	l.mu.Lock()
	l.err = err
	l.n++
	l.mu.Unlock()
}

// Last returns the last error noted (nil if none) and how many were.
func (l *LastError) Last() (error, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err, l.n
}

// CheckUpstream asks the runtime for its Version.
func (s *Server) CheckUpstream(ctx context.Context) (*runtimeapi.VersionResponse, error) {
	resp, err := runtimeapi.NewRuntimeServiceClient(s.gconn).Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return nil, RuntimeError(s.upstream, s.gconn.GetState(), err)
	}
	return resp, nil
}

// RuntimeError words the error of a call made to the runtime at target
// over a grpc.ClientConn in state, as both cores say it: a runtime that
// cannot be reached is named in an Unavailable status; other statuses pass
// as they are, and a context error becomes its status.
func RuntimeError(target string, state connectivity.State, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return status.FromContextError(err).Err()
	}
	if st.Code() == codes.Unavailable && state != connectivity.Ready && !strings.HasPrefix(st.Message(), "cri-guard:") {
		return status.Errorf(codes.Unavailable, "cri-guard: runtime %s is unavailable: %s", target, st.Message())
	}
	return err
}

func (s *Server) panicked() {
	if s.o.OnPanic != nil {
		s.o.OnPanic()
	}
}
