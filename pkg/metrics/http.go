package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HandlerOptions configure Handler.
type HandlerOptions struct {
	// Ready says whether cri-guard can serve: usually, whether the runtime
	// answers Version. Nil means always ready.
	Ready func(ctx context.Context) error
	// ReadyTimeout bounds one Ready call (default 2s).
	ReadyTimeout time.Duration
	// Status returns the value that /status encodes as JSON. Nil: no
	// /status.
	Status func(ctx context.Context) any
}

// Handler serves
//
//	/metrics  Prometheus text format from Registry
//	/healthz  200 "ok" while the process runs
//	/readyz   200 "ok" when Ready returns nil, else 503 and the error
//	/status   the JSON of Status (see `cri-guard status`)
func Handler(o HandlerOptions) http.Handler {
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 2 * time.Second
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), o.ReadyTimeout)
			err := o.Ready(ctx)
			cancel()
			if err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	if o.Status != nil {
		mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), o.ReadyTimeout)
			v := o.Status(ctx)
			cancel()
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(v)
		})
	}
	return mux
}

// ErrNotLoopback is returned by Listen for an address that is not loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// Listen listens on the TCP address addr. Unless allowNonLoopback, the
// address actually bound must be loopback: a name that resolves elsewhere,
// or an empty host (every interface), is refused.
func Listen(addr string, allowNonLoopback bool) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	if allowNonLoopback {
		return l, nil
	}
	if ta, ok := l.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		l.Close()
		return nil, fmt.Errorf("metrics listen %s: bound %s: %w", addr, l.Addr(), ErrNotLoopback)
	}
	return l, nil
}
