package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/metrics"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// reloads counts configuration reloads by result (reload.go).
var reloads = metrics.Reloads

// daemonStatus is what GET /status returns and `cri-guard status` prints.
type daemonStatus struct {
	Version       string       `json:"version"`
	Commit        string       `json:"commit"`
	CRIAPI        string       `json:"criApi"`
	PID           int          `json:"pid"`
	Started       time.Time    `json:"started"`
	ConfigDigest  string       `json:"configDigest"`
	Mode          string       `json:"mode"`
	Listen        string       `json:"listen"`
	Upstream      string       `json:"upstream"`
	UpstreamState string       `json:"upstreamState"`
	Runtime       *runtimeInfo `json:"runtime,omitempty"`
	RuntimeError  string       `json:"runtimeError,omitempty"`
}

type runtimeInfo struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	APIVersion string `json:"apiVersion"`
}

// startMetrics serves /metrics, /healthz, /readyz and /status on
// cfg.MetricsListen, if set, until the returned stop is called; on l when
// it is not nil (handed over by a predecessor). It returns the listener it
// serves on. It also keeps the connection to the runtime up, the upstream
// state gauge and reconnect counter current, and logs when the runtime goes
// away and comes back, until ctx ends or stop is called
// (proxy.WatchUpstream).
func startMetrics(ctx context.Context, cfg *config.Config, p proxy.Core, current *atomic.Pointer[config.Config], log *slog.Logger, l net.Listener) (stop func(), _ net.Listener, err error) {
	metrics.SetBuildInfo(version, buildCommit(), criAPIVersion(), runtime.Version())
	wctx, cancelWatch := context.WithCancel(ctx)
	go proxy.WatchUpstream(wctx, p, proxy.HealthOptions{Logger: log,
		OnState: metrics.SetUpstreamState, OnReconnect: metrics.UpstreamReconnects.Inc})
	if cfg.MetricsListen == "" {
		return cancelWatch, nil, nil
	}
	if l == nil {
		if l, err = metrics.Listen(cfg.MetricsListen, cfg.MetricsAllowNonLoopback); err != nil {
			cancelWatch()
			return nil, nil, err
		}
	}
	started := time.Now().UTC()
	h := metrics.Handler(metrics.HandlerOptions{
		Ready: func(ctx context.Context) error {
			_, err := p.CheckUpstream(ctx)
			return err
		},
		Status: func(ctx context.Context) any {
			c := current.Load()
			st := daemonStatus{
				Version: version, Commit: buildCommit(), CRIAPI: criAPIVersion(), PID: os.Getpid(), Started: started,
				ConfigDigest: c.Digest, Mode: string(c.Policy.Mode), Listen: c.Listen, Upstream: p.Upstream(),
				UpstreamState: p.UpstreamState().String(),
			}
			if v, err := p.CheckUpstream(ctx); err != nil {
				st.RuntimeError = err.Error()
			} else {
				st.Runtime = &runtimeInfo{Name: v.GetRuntimeName(), Version: v.GetRuntimeVersion(), APIVersion: v.GetRuntimeApiVersion()}
			}
			return st
		},
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "error", err)
		}
	}()
	log.Info("metrics serving", "listen", l.Addr().String())
	var once sync.Once
	return func() {
		once.Do(func() {
			cancelWatch()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			<-done
		})
	}, l, nil
}
