package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/codes"
)

// DefaultMaxMsgSize is the largest message relayed in either direction by
// default. The kubelet's own limit is 16 MiB.
const DefaultMaxMsgSize = 16 << 20

// Observer is told about every call once it has ended. It must be cheap and
// must not block: it runs on the call's goroutine.
type Observer func(method string, code codes.Code, elapsed time.Duration)

type options struct {
	maxMsgSize   int
	interceptors map[string]Interceptor
	logger       *slog.Logger
	observer     Observer
	onPanic      func()
	backoffMax   time.Duration
	dialer       func(context.Context, string) (net.Conn, error)
}

// Option configures a Server. Options check their own arguments.
type Option func(*options) error

// WithMaxMsgSize sets the largest message relayed in either direction.
func WithMaxMsgSize(n int) Option {
	return func(o *options) error {
		if n < 4<<20 {
			return fmt.Errorf("max message size %d is below the gRPC default of 4 MiB", n)
		}
		o.maxMsgSize = n
		return nil
	}
}

// WithInterceptors registers typed handlers. At most one per method.
func WithInterceptors(ics ...Interceptor) Option {
	return func(o *options) error {
		for _, ic := range ics {
			m := ic.Method()
			if _, dup := o.interceptors[m]; dup {
				return fmt.Errorf("two interceptors for %s", m)
			}
			o.interceptors[m] = ic
		}
		return nil
	}
}

// WithLogger sets the logger. The default discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("nil logger")
		}
		o.logger = l
		return nil
	}
}

// WithPanicHook sets a function called once for every panic that the
// relay recovered from (the call gets Internal; the daemon keeps serving).
// It must not block.
func WithPanicHook(f func()) Option {
	return func(o *options) error {
		o.onPanic = f
		return nil
	}
}

// WithObserver sets a function called at the end of every call.
func WithObserver(f Observer) Option {
	return func(o *options) error {
		o.observer = f
		return nil
	}
}

// WithReconnectBackoff caps the delay between attempts to reach a runtime
// that is down. The default is one second.
func WithReconnectBackoff(max time.Duration) Option {
	return func(o *options) error {
		if max < 10*time.Millisecond || max > time.Minute {
			return fmt.Errorf("reconnect backoff %s is outside 10ms..1m", max)
		}
		o.backoffMax = max
		return nil
	}
}

// WithDialer replaces how the upstream is dialled; tests use it for
// in-memory connections.
func WithDialer(d func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(o *options) error {
		if d == nil {
			return fmt.Errorf("nil dialer")
		}
		o.dialer = d
		return nil
	}
}
