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

	"github.com/cri-guard/cri-guard/pkg/attempts"
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

	// The CRI socket: passed by systemd (cri-guard.socket), or handed over
	// by a daemon already serving it, which then drains and exits, or made
	// here. The control socket is the CRI socket's path plus ".ctl".
	al, err := activated(cfg)
	if err != nil {
		return err
	}
	var inh *inherited
	var ctlPath string
	if al != nil {
		ctlPath = al.Addr().String() + ".ctl"
	} else {
		if ctlPath = os.Getenv(controlEnv); ctlPath == "" {
			if ctlPath, err = controlPath(cfg); err != nil {
				return err
			}
		}
		if inh, err = takeOver(ctlPath); err != nil {
			return err
		}
	}
	os.Unsetenv(controlEnv)
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

	// The RunPodSandbox calls that created no sandbox, for `cri-guard
	// explain` of a pod that never started (asked on the control socket).
	tried := attempts.New(0, 0)
	g, err := guard.New(guard.Options{
		Attempts: tried,
		Policy:   &cfg.Policy,
		Facts:    facts.Reader{Root: cfg.CgroupRoot},
		Logger:   log,
		Record:   metrics.Record,
		Explained: func(family string) {
			metrics.TranslatedErrors.WithLabelValues(family).Inc()
		},
		Rewrote: func(reason string) {
			metrics.StatusRewrites.WithLabelValues(reason).Inc()
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
	// Each distinct policy decision, rewritten status or explained failure
	// is logged once; how often it repeated, every summaryInterval.
	go g.SummarizeEvery(ctx, summaryInterval)

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
	isActivated := al != nil
	switch {
	case inh != nil:
		l, ctl, isActivated = inh.cri, inh.control, inh.activated
	case al != nil:
		l = al
	default:
		if l, err = listen(cfg); err != nil {
			p.Close()
			return err
		}
	}
	if ctl == nil {
		// Without it the daemon serves all the same; only handover and
		// `cri-guard reload` need it.
		if ctl, err = listenControl(ctlPath); err != nil {
			log.Warn("no control socket: cri-guard reload and handover to a new process are not available; SIGHUP reloads", "error", err)
			err = nil
		}
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	cs := newControlServer(ctl, ctlPath, log, exe, func() ([]*os.File, ctlReply, error) {
		return handoverFiles(l, ctl, ml, cfg.MetricsListen, isActivated)
	})
	cs.attempts = tried
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
	log.Info("cri-guard serving", "listen", cfg.Listen, "socket-activated", isActivated, "version", version, "forwarding", cfg.Forwarding,
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

// summaryInterval is how often the log says how many times each logged
// event repeated.
const summaryInterval = 5 * time.Minute

// activated returns the socket passed by systemd, if any.
func activated(cfg *config.Config) (net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	if len(ls) == 0 {
		return nil, nil
	}
	if len(ls) > 1 || ls[0] == nil {
		return nil, fmt.Errorf("socket activation: want one unix socket, got %d", len(ls))
	}
	// The same rule as for a socket of our own: systemd made this one
	// with the socket unit's SocketMode=, SocketUser= and SocketGroup=.
	if err := proxy.CheckListenerNotWider(ls[0], cfg.Upstream); err != nil {
		ls[0].Close()
		return nil, fmt.Errorf("socket activation: %w; set SocketMode= and SocketGroup= of cri-guard.socket no wider than the runtime's socket", err)
	}
	return ls[0], nil
}

// listen creates the CRI socket at cfg.Listen.
func listen(cfg *config.Config) (net.Listener, error) {
	if err := proxy.CheckNotWider(cfg.SocketMode, cfg.SocketGID, cfg.Upstream); err != nil {
		return nil, fmt.Errorf("%w; set socketMode and socketGroup no wider than the runtime's socket", err)
	}
	l, err := proxy.Listen(cfg.Listen, cfg.SocketMode, cfg.SocketGID)
	if err != nil {
		return nil, err
	}
	// The socket file stays when this process stops: a successor that was
	// handed the socket, or that already bound a new one at the same path,
	// must not lose it. A successor replaces a stale file.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
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
