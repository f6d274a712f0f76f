package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cri-guard/cri-guard/pkg/config"
)

// configFlags binds one flag to each configuration key, so a flag wins over
// the file. It returns the keys that the command line set.
type configFlags struct {
	fs    *flag.FlagSet
	path  string
	set   config.File
	stamp fileStamp // of the file as last loaded
}

// fileStamp tells whether a file changed: its modification time and size.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

func newConfigFlags(name string) *configFlags {
	c := &configFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := c.fs
	fs.StringVar(&c.path, "config", "", "YAML configuration file; flags win over it")
	str := func(dst *string, name, usage string) {
		fs.Func(name, usage, func(v string) error { *dst = v; return nil })
	}
	boolean := func(dst **bool, name, usage string) {
		fs.BoolFunc(name, usage, func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return err
			}
			*dst = &b
			return nil
		})
	}
	d := config.Defaults
	str(&c.set.Listen, "listen", "socket for the kubelet (default "+d.Listen+")")
	str(&c.set.Upstream, "upstream", "the runtime's socket (default "+d.Upstream+")")
	str(&c.set.SocketMode, "socket-mode", "octal mode of the socket (default "+d.SocketMode+")")
	str(&c.set.SocketGroup, "socket-group", "group of the socket, a name or a gid (default: root's)")
	str(&c.set.MaxMessageSize, "max-message-size", "largest message relayed either way (default "+d.MaxMessageSize+")")
	str(&c.set.Forwarding, "forwarding", "forwarding core: grpc or frames (HTTP/2 frame level) (default "+d.Forwarding+")")
	str(&c.set.ShutdownTimeout, "shutdown-timeout", "hard cap of a graceful stop: calls in flight end on their own deadlines, those still open after this are cancelled (default "+d.ShutdownTimeout+")")
	str(&c.set.LogFormat, "log-format", "text or json (default "+d.LogFormat+")")
	str(&c.set.LogLevel, "log-level", "debug, info, warn or error (default "+d.LogLevel+")")
	str(&c.set.MetricsListen, "metrics-listen", "host:port for /metrics, /healthz and /readyz (default off; loopback only)")
	boolean(&c.set.MetricsAllowNonLoopback, "metrics-allow-non-loopback", "allow --metrics-listen on a non-loopback address")
	str(&c.set.CgroupRoot, "cgroup-root", "where cgroups are mounted (default "+d.CgroupRoot+")")
	str(&c.set.Mode, "mode", "reject, raise or audit: what to do with a container below the floor (default "+d.Mode+")")
	str(&c.set.SandboxMinMemory, "sandbox-min-memory", "smallest pod memory limit that can start a sandbox (default "+d.SandboxMinMemory+")")
	str(&c.set.ContainerMinMemory, "container-min-memory", "smallest container memory limit (default "+d.ContainerMinMemory+")")
	boolean(&c.set.FailClosed, "fail-closed", "refuse a pod whose memory limit cannot be read")
	fs.Func("exempt-namespaces", "comma-separated namespaces never checked", func(v string) error {
		c.set.ExemptNamespaces = strings.Split(v, ",")
		return nil
	})
	return c
}

// parse parses the command line, which takes no arguments besides flags,
// and loads the configuration.
func (c *configFlags) parse(args []string) (*config.Config, error) {
	if err := c.fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if c.fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, c.fs.Arg(0))
	}
	_, cfg, err := c.load()
	return cfg, err
}

// load reads the file, if any, and puts the flags over it.
func (c *configFlags) load() (config.File, *config.Config, error) {
	var file config.File
	if c.path != "" {
		c.stamp = stampOf(c.path) // before reading: a change while reading is seen later
		f, err := config.Load(c.path)
		if err != nil {
			return config.File{}, nil, fmt.Errorf("config %s: %w", c.path, err)
		}
		file = f
	}
	merged := file.Merge(c.set)
	cfg, err := config.Resolve(merged)
	if err != nil {
		if c.path != "" {
			return merged, nil, fmt.Errorf("config %s:\n%w", c.path, err)
		}
		return merged, nil, fmt.Errorf("config:\n%w", err)
	}
	return merged, cfg, nil
}

// parseInterspersed parses args with fs, accepting flags before and after
// the positional arguments, as crictl and kubectl do (`explain POD
// --runtime-endpoint X`), and returns the positional arguments. Everything
// after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
