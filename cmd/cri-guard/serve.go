package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/guard"
	"github.com/cri-guard/cri-guard/pkg/metrics"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

func serve(ctx context.Context, args []string) (err error) {
	flags := newConfigFlags("serve")
	cfg, err := flags.parse(args)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg, level)
	// Take SIGHUP before anything can reach the socket: its default action
	// would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	exe := currentExecutable()

	// A daemon already serving this socket hands its sockets over; this
	// process then serves them and tells it to drain and exit.
	ctlPath, err := controlPath(cfg)
	if err != nil {
		return err
	}
	inh, err := takeOver(ctlPath)
	if err != nil {
		return err
	}
	if inh != nil {
		defer func() {
			if err != nil { // not started: the predecessor goes on serving
				inh.conn.Close()
				inh.cri.Close()
				inh.control.Close()
				if inh.metrics != nil {
					inh.metrics.Close()
				}
			}
		}()
	}

	g, err := guard.New(guard.Options{
		Policy: &cfg.Policy,
		Facts:  facts.Reader{Root: cfg.CgroupRoot},
		Logger: log,
		Record: metrics.Record,
		Explained: func(family string) {
			metrics.TranslatedErrors.WithLabelValues(family).Inc()
		},
	})
	if err != nil {
		return err
	}
	p, err := proxy.NewCore(cfg.Forwarding, cfg.Upstream,
		proxy.WithMaxMsgSize(cfg.MaxMessageSize),
		proxy.WithInterceptors(g.Interceptors()...),
		proxy.WithLogger(log),
		proxy.WithObserver(metrics.Observe),
		proxy.WithPanicHook(metrics.Panics.Inc),
	)
	if err != nil {
		return err
	}
	g.SetRuntime(runtimeapi.NewRuntimeServiceClient(p.Conn()))

	var current atomic.Pointer[config.Config]
	current.Store(cfg)
	var ml net.Listener
	if inh != nil && inh.metrics != nil {
		if inh.metricsAt == cfg.MetricsListen {
			ml, inh.metrics = inh.metrics, nil
		} else {
			inh.metrics.Close()
			inh.metrics = nil
		}
	}
	stopMetrics, ml, err := startMetrics(ctx, cfg, p, &current, log, ml)
	if err != nil {
		p.Close()
		return err
	}
	defer stopMetrics()

	var l net.Listener
	var ctl *net.UnixListener
	activated := false
	if inh != nil {
		l, ctl, activated = inh.cri, inh.control, inh.activated
	} else {
		if l, activated, err = listen(cfg); err != nil {
			p.Close()
			return err
		}
		if ctl, err = listenControl(ctlPath); err != nil {
			l.Close()
			p.Close()
			return err
		}
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	cs := newControlServer(ctl, log, exe, func() ([]*os.File, ctlReply, error) {
		return handoverFiles(l, ctl, ml, cfg.MetricsListen, activated)
	})
	go cs.serve()

	// Try the runtime once before saying we are ready, so the log tells at
	// once whether it answers. cri-guard serves either way.
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if v, err := p.CheckUpstream(tctx); err != nil {
		log.Warn("runtime does not answer yet; calls get Unavailable until it does", "upstream", cfg.Upstream, "error", err)
	} else {
		log.Info("runtime answers", "upstream", cfg.Upstream, "runtime", v.GetRuntimeName(), "version", v.GetRuntimeVersion())
	}
	cancel()
	log.Info("cri-guard serving", "listen", cfg.Listen, "socket-activated", activated, "version", version, "forwarding", cfg.Forwarding,
		"mode", string(cfg.Policy.Mode), "sandbox-min-memory", cfg.Policy.Floors.Sandbox,
		"container-min-memory", cfg.Policy.Floors.Container, "config-digest", cfg.Digest, "pid", os.Getpid())
	if inh != nil {
		// systemd first: the predecessor, its main process, exits soon.
		// NotifyAccess=all lets a process other than the main one say so.
		if _, err := daemon.SdNotify(false, fmt.Sprintf("MAINPID=%d\n%s", os.Getpid(), daemon.SdNotifyReady)); err != nil {
			log.Warn("sd_notify failed", "error", err)
		}
		if err := inh.ready(); err != nil {
			log.Warn("the predecessor did not confirm the handover", "pid", inh.from, "error", err)
		} else {
			log.Info("took over from the running daemon; it drains and exits", "pid", inh.from)
		}
	} else if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify failed", "error", err)
	}

	r := &reloader{flags: flags, current: cfg, guard: g, level: level, log: log}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var why string
loop:
	for {
		select {
		case err := <-served:
			cs.close()
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			r.reload("SIGHUP")
			current.Store(r.current)
		case <-tick.C:
			if r.fileChanged() {
				r.reload("file changed")
				current.Store(r.current)
			}
		case rc := <-cs.reloads:
			rep := r.reload("reload request")
			current.Store(r.current)
			rc <- rep
		case pid := <-cs.handed:
			why = fmt.Sprintf("handed over to pid %d", pid)
			// The successor answers /metrics and /status from now on.
			stopMetrics()
			break loop
		case <-ctx.Done():
			why = "signal"
			break loop
		}
	}
	// Stop accepting (the socket stays: a successor or systemd has it),
	// end the event streams at once and let the calls in flight end on
	// their own deadlines; shutdownTimeout is only the safety net.
	cs.close()
	log.Info("stopping: no new connections; event streams ended; waiting for the calls in flight", "why", why, "hard-cap", cfg.ShutdownTimeout)
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	err = p.Shutdown(sctx)
	cancel()
	<-served
	cs.wait(5 * time.Second)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("calls still open at the hard cap (shutdownTimeout) were cancelled", "hard-cap", cfg.ShutdownTimeout)
		return nil
	}
	log.Info("stopped", "drained-in", time.Since(start).Round(time.Millisecond))
	return err
}

// listen returns the socket passed by systemd, if any, or creates one.
func listen(cfg *config.Config) (net.Listener, bool, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, false, fmt.Errorf("socket activation: %w", err)
	}
	if len(ls) > 0 {
		if len(ls) > 1 || ls[0] == nil {
			return nil, false, fmt.Errorf("socket activation: want one unix socket, got %d", len(ls))
		}
		// The same rule as for a socket of our own: systemd made this one
		// with the socket unit's SocketMode=, SocketUser= and SocketGroup=.
		if err := proxy.CheckListenerNotWider(ls[0], cfg.Upstream); err != nil {
			ls[0].Close()
			return nil, false, fmt.Errorf("socket activation: %w; set SocketMode= and SocketGroup= of cri-guard.socket no wider than the runtime's socket", err)
		}
		return ls[0], true, nil
	}
	if err := proxy.CheckNotWider(cfg.SocketMode, cfg.SocketGID, cfg.Upstream); err != nil {
		return nil, false, fmt.Errorf("%w; set socketMode and socketGroup no wider than the runtime's socket", err)
	}
	l, err := proxy.Listen(cfg.Listen, cfg.SocketMode, cfg.SocketGID)
	if err != nil {
		return nil, false, err
	}
	// The socket file stays when this process stops: a successor that was
	// handed the socket, or that already bound a new one at the same path,
	// must not lose it. A successor replaces a stale file.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, false, nil
}

func newLogger(cfg *config.Config, level *slog.LevelVar) *slog.Logger {
	setLevel(level, cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func setLevel(v *slog.LevelVar, s string) {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s)) // validated by config.Resolve
	v.Set(l)
}
