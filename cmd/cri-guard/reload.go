package main

import (
	"log/slog"
	"os"

	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/guard"
)

// reloader applies a new configuration file to a running daemon. The policy
// and the log level change for the next call; keys that need a restart
// (sockets, message size) are reported and left as they are.
type reloader struct {
	flags   *configFlags
	current *config.Config
	guard   *guard.Guard
	level   *slog.LevelVar
	log     *slog.Logger
	refused string // the error of the last refused file, logged once
}

// fileChanged reports whether the file differs from the one last loaded.
func (r *reloader) fileChanged() bool {
	return r.flags.path != "" && stampOf(r.flags.path) != r.flags.stamp
}

// reload loads the file again and applies it. Each edit is applied, logged
// and counted once, whatever triggers see it (the file watcher, SIGHUP,
// `cri-guard reload`): a config that is already in force is not applied
// again, and a refused one is logged and counted once until it changes;
// every trigger still gets the answer.
func (r *reloader) reload(why string) ctlReply {
	_, cfg, err := r.flags.load()
	if err != nil {
		if err.Error() != r.refused {
			r.refused = err.Error()
			r.log.Error("config reload refused; the last good config stays in force", "trigger", why, "error", err)
			reloads.WithLabelValues("failure").Inc()
		}
		return ctlReply{Error: err.Error() + "\nthe last good config stays in force (" + r.current.Digest + ")", Digest: r.current.Digest, PID: os.Getpid()}
	}
	r.refused = ""
	if cfg.Digest == r.current.Digest {
		r.log.Debug("config unchanged", "trigger", why, "config-digest", cfg.Digest)
		return ctlReply{OK: true, Digest: cfg.Digest, PID: os.Getpid()}
	}
	old := r.current
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"listen", cfg.Listen != old.Listen},
		{"upstream", cfg.Upstream != old.Upstream},
		{"socketMode", cfg.SocketMode != old.SocketMode},
		{"socketGroup", cfg.SocketGID != old.SocketGID},
		{"maxMessageSize", cfg.MaxMessageSize != old.MaxMessageSize},
		{"forwarding", cfg.Forwarding != old.Forwarding},
		{"metricsListen", cfg.MetricsListen != old.MetricsListen},
		{"logFormat", cfg.LogFormat != old.LogFormat},
		{"cgroupRoot", cfg.CgroupRoot != old.CgroupRoot},
	} {
		if k.changed {
			r.log.Warn("config key changed but needs a restart to apply", "key", k.key)
		}
	}
	r.guard.SetPolicy(&cfg.Policy)
	setLevel(r.level, cfg.LogLevel)
	r.current = cfg
	reloads.WithLabelValues("success").Inc()
	r.log.Info("config reloaded", "trigger", why, "config-digest", cfg.Digest, "mode", string(cfg.Policy.Mode),
		"sandbox-min-memory", cfg.Policy.Floors.Sandbox, "container-min-memory", cfg.Policy.Floors.Container)
	return ctlReply{OK: true, Changed: true, Digest: cfg.Digest, PID: os.Getpid()}
}
