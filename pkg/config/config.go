package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// File is the configuration file as written. Every field is optional.
type File struct {
	Listen                  string                   `json:"listen,omitempty"`
	Upstream                string                   `json:"upstream,omitempty"`
	SocketMode              string                   `json:"socketMode,omitempty"`
	SocketGroup             string                   `json:"socketGroup,omitempty"`
	MaxMessageSize          string                   `json:"maxMessageSize,omitempty"`
	Forwarding              string                   `json:"forwarding,omitempty"`
	ShutdownTimeout         string                   `json:"shutdownTimeout,omitempty"`
	LogFormat               string                   `json:"logFormat,omitempty"`
	LogLevel                string                   `json:"logLevel,omitempty"`
	MetricsListen           string                   `json:"metricsListen,omitempty"`
	MetricsAllowNonLoopback *bool                    `json:"metricsAllowNonLoopback,omitempty"`
	CgroupRoot              string                   `json:"cgroupRoot,omitempty"`
	Mode                    string                   `json:"mode,omitempty"`
	SandboxMinMemory        string                   `json:"sandboxMinMemory,omitempty"`
	ContainerMinMemory      string                   `json:"containerMinMemory,omitempty"`
	FailClosed              *bool                    `json:"failClosed,omitempty"`
	ExemptNamespaces        []string                 `json:"exemptNamespaces,omitempty"`
	RuntimeHandlers         map[string]HandlerFloors `json:"runtimeHandlers,omitempty"`
}

// HandlerFloors override the floors for one runtime handler.
type HandlerFloors struct {
	SandboxMinMemory   string `json:"sandboxMinMemory,omitempty"`
	ContainerMinMemory string `json:"containerMinMemory,omitempty"`
}

// Defaults are the values of keys that neither the file nor a flag set.
//
// The floors follow CRI-O's for runc (12 MiB). Measured on containerd 1.6
// with runc 1.1 on cgroup v1, a pause container needs about 2 MiB and runc's
// init process fails below that; Docker's floor is 6 MB. 12Mi leaves room
// for runc's own setup, and `cri-guard calibrate` measures a node's real
// threshold.
var Defaults = File{
	Listen:             "unix:///run/cri-guard/cri-guard.sock",
	Upstream:           "unix:///run/containerd/containerd.sock",
	SocketMode:         "0660",
	MaxMessageSize:     "16Mi",
	Forwarding:         proxy.ForwardingFrames,
	ShutdownTimeout:    "2m",
	LogFormat:          "text",
	LogLevel:           "info",
	CgroupRoot:         facts.DefaultRoot,
	Mode:               string(policy.ModeReject),
	SandboxMinMemory:   "12Mi",
	ContainerMinMemory: "12Mi",
}

// Config is a validated configuration.
type Config struct {
	Listen         string
	Upstream       string
	SocketMode     os.FileMode
	SocketGID      int // -1: leave the group alone
	MaxMessageSize int
	// Forwarding is the forwarding core: proxy.ForwardingGRPC or
	// proxy.ForwardingFrames.
	Forwarding              string
	ShutdownTimeout         time.Duration
	LogFormat               string
	LogLevel                string
	MetricsListen           string
	MetricsAllowNonLoopback bool
	CgroupRoot              string
	Policy                  policy.Config
	// Digest identifies the effective configuration, for `cri-guard status`.
	Digest string
}

// Load reads and parses a configuration file. Unknown keys are errors.
func Load(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, err
	}
	return Parse(b)
}

// Parse parses a configuration file's contents.
func Parse(b []byte) (File, error) {
	var f File
	if len(bytes.TrimSpace(b)) == 0 {
		return f, nil
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return File{}, fmt.Errorf("parse: %w", err)
	}
	return f, nil
}

// Merge returns f with every key that over sets replaced by over's value.
func (f File) Merge(over File) File {
	str := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	str(&f.Listen, over.Listen)
	str(&f.Upstream, over.Upstream)
	str(&f.SocketMode, over.SocketMode)
	str(&f.SocketGroup, over.SocketGroup)
	str(&f.MaxMessageSize, over.MaxMessageSize)
	str(&f.Forwarding, over.Forwarding)
	str(&f.ShutdownTimeout, over.ShutdownTimeout)
	str(&f.LogFormat, over.LogFormat)
	str(&f.LogLevel, over.LogLevel)
	str(&f.MetricsListen, over.MetricsListen)
	str(&f.CgroupRoot, over.CgroupRoot)
	str(&f.Mode, over.Mode)
	str(&f.SandboxMinMemory, over.SandboxMinMemory)
	str(&f.ContainerMinMemory, over.ContainerMinMemory)
	if over.MetricsAllowNonLoopback != nil {
		f.MetricsAllowNonLoopback = over.MetricsAllowNonLoopback
	}
	if over.FailClosed != nil {
		f.FailClosed = over.FailClosed
	}
	if over.ExemptNamespaces != nil {
		f.ExemptNamespaces = over.ExemptNamespaces
	}
	if over.RuntimeHandlers != nil {
		f.RuntimeHandlers = over.RuntimeHandlers
	}
	return f
}

// Resolve validates f over the defaults. Every error names the key and its
// value; all of them are reported at once.
func Resolve(f File) (*Config, error) {
	f = Defaults.Merge(f)
	c := &Config{
		Listen:                  f.Listen,
		Upstream:                f.Upstream,
		Forwarding:              f.Forwarding,
		LogFormat:               f.LogFormat,
		LogLevel:                f.LogLevel,
		MetricsListen:           f.MetricsListen,
		MetricsAllowNonLoopback: f.MetricsAllowNonLoopback != nil && *f.MetricsAllowNonLoopback,
		CgroupRoot:              f.CgroupRoot,
		SocketGID:               -1,
	}
	var errs []error
	bad := func(key, value string, why any) {
		errs = append(errs, fmt.Errorf("%s: %q: %v", key, value, why))
	}
	if _, err := proxy.SocketPath(f.Listen); err != nil {
		bad("listen", f.Listen, "must be unix:///absolute/path")
	}
	if _, err := proxy.SocketPath(f.Upstream); err != nil {
		bad("upstream", f.Upstream, "must be unix:///absolute/path")
	}
	if f.Listen == f.Upstream {
		bad("listen", f.Listen, "is the upstream socket too")
	}
	if m, err := strconv.ParseUint(f.SocketMode, 8, 32); err != nil || m > 0o777 {
		bad("socketMode", f.SocketMode, "must be an octal file mode such as 0660")
	} else if m&0o007 != 0 {
		bad("socketMode", f.SocketMode, "must not give access to others: whoever reaches the socket controls the node's containers")
	} else {
		c.SocketMode = os.FileMode(m)
	}
	if f.SocketGroup != "" {
		if gid, err := lookupGroup(f.SocketGroup); err != nil {
			bad("socketGroup", f.SocketGroup, err)
		} else {
			c.SocketGID = gid
		}
	}
	if n, err := policy.ParseQuantity(f.MaxMessageSize); err != nil {
		bad("maxMessageSize", f.MaxMessageSize, err)
	} else if n < 4<<20 || n > 1<<30 {
		bad("maxMessageSize", f.MaxMessageSize, "must be between 4Mi and 1Gi")
	} else {
		c.MaxMessageSize = int(n)
	}
	if f.Forwarding != proxy.ForwardingGRPC && f.Forwarding != proxy.ForwardingFrames {
		bad("forwarding", f.Forwarding, "must be grpc or frames")
	}
	if d, err := time.ParseDuration(f.ShutdownTimeout); err != nil || d <= 0 {
		bad("shutdownTimeout", f.ShutdownTimeout, "must be a positive duration such as 10s")
	} else {
		c.ShutdownTimeout = d
	}
	if f.LogFormat != "text" && f.LogFormat != "json" {
		bad("logFormat", f.LogFormat, "must be text or json")
	}
	switch f.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("logLevel", f.LogLevel, "must be debug, info, warn or error")
	}
	if f.MetricsListen != "" {
		if err := checkMetricsAddr(f.MetricsListen, c.MetricsAllowNonLoopback); err != nil {
			bad("metricsListen", f.MetricsListen, err)
		}
	}
	if !strings.HasPrefix(f.CgroupRoot, "/") {
		bad("cgroupRoot", f.CgroupRoot, "must be an absolute path")
	}
	switch policy.Mode(f.Mode) {
	case policy.ModeReject, policy.ModeRaise, policy.ModeAudit:
		c.Policy.Mode = policy.Mode(f.Mode)
	default:
		bad("mode", f.Mode, "must be reject, raise or audit")
	}
	floor := func(key, v string) int64 {
		if v == "" {
			return 0
		}
		n, err := policy.ParseQuantity(v)
		if err != nil {
			bad(key, v, err)
		}
		return n
	}
	c.Policy.Floors.Sandbox = floor("sandboxMinMemory", f.SandboxMinMemory)
	c.Policy.Floors.Container = floor("containerMinMemory", f.ContainerMinMemory)
	c.Policy.FailClosed = f.FailClosed != nil && *f.FailClosed
	for _, ns := range f.ExemptNamespaces {
		if ns == "" {
			bad("exemptNamespaces", ns, "empty namespace")
		}
	}
	c.Policy.ExemptNamespaces = f.ExemptNamespaces
	if len(f.RuntimeHandlers) > 0 {
		c.Policy.Handlers = map[string]policy.Floors{}
		for name, h := range f.RuntimeHandlers {
			key := "runtimeHandlers." + name
			c.Policy.Handlers[name] = policy.Floors{
				Sandbox:   floor(key+".sandboxMinMemory", h.SandboxMinMemory),
				Container: floor(key+".containerMinMemory", h.ContainerMinMemory),
			}
		}
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	canon, err := yaml.Marshal(f)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canon)
	c.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return c, nil
}

func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil {
		if n < 0 {
			return 0, errors.New("negative group id")
		}
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(grp.Gid)
}

// checkMetricsAddr allows a loopback address unless the operator allowed
// any.
func checkMetricsAddr(addr string, any bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port: %v", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("bad port %q", port)
	}
	if any {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("must be a loopback address (127.0.0.1, [::1]); set metricsAllowNonLoopback to listen elsewhere")
	}
	return nil
}
