package config

import (
	"strings"
	"testing"
	"time"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

func TestResolveDefaults(t *testing.T) {
	c, err := Resolve(File{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "unix:///run/cri-guard/cri-guard.sock" || c.Upstream != "unix:///run/containerd/containerd.sock" ||
		c.SocketMode != 0o660 || c.SocketGID != -1 || c.MaxMessageSize != 16<<20 || c.Forwarding != "frames" || c.ShutdownTimeout != 2*time.Minute ||
		c.Policy.Mode != policy.ModeReject || c.Policy.Floors != (policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}) {
		t.Errorf("defaults: %+v", c)
	}
}

func TestParseAndResolve(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml  string
		err   string
		check func(*testing.T, *Config)
	}{
		"full file": {
			yaml: `
listen: unix:///run/x/guard.sock
upstream: unix:///run/crio/crio.sock
socketMode: "0600"
socketGroup: "0"
maxMessageSize: 32Mi
forwarding: grpc
mode: raise
sandboxMinMemory: 6M
containerMinMemory: 4Mi
failClosed: true
exemptNamespaces: [kube-system]
runtimeHandlers:
  crun: {sandboxMinMemory: 500Ki}
metricsListen: 127.0.0.1:9464
`,
			check: func(t *testing.T, c *Config) {
				want := policy.Config{Mode: policy.ModeRaise, Floors: policy.Floors{Sandbox: 6_000_000, Container: 4 << 20},
					Handlers: map[string]policy.Floors{"crun": {Sandbox: 500 << 10}}, ExemptNamespaces: []string{"kube-system"}, FailClosed: true}
				if c.Policy.Mode != want.Mode || c.Policy.Floors != want.Floors || c.Policy.Handlers["crun"] != want.Handlers["crun"] ||
					!c.Policy.FailClosed || c.SocketMode != 0o600 || c.SocketGID != 0 || c.MaxMessageSize != 32<<20 || c.Forwarding != "grpc" {
					t.Errorf("got %+v", c)
				}
			},
		},
		"empty file": {yaml: "  \n", check: func(t *testing.T, c *Config) {}},
		"unknown key": {
			yaml: "sandboxMinMemroy: 12Mi\n",
			err:  `parse: error unmarshaling JSON: while decoding JSON: json: unknown field "sandboxMinMemroy"`,
		},
		"not yaml": {
			yaml: "mode: [\n",
			err:  "parse: error converting YAML to JSON: yaml: line 1: did not find expected node content",
		},
		"every bad value is named": {
			yaml: `
listen: relative.sock
upstream: tcp://1.2.3.4:5
socketMode: "0666"
maxMessageSize: 1Mi
forwarding: bytes
shutdownTimeout: soon
logFormat: xml
logLevel: loud
metricsListen: 0.0.0.0:9464
mode: block
sandboxMinMemory: 12MB
runtimeHandlers:
  kata: {containerMinMemory: lots}
`,
			err: strings.Join([]string{
				`forwarding: "bytes": must be grpc or frames`,
				`listen: "relative.sock": must be unix:///absolute/path`,
				`logFormat: "xml": must be text or json`,
				`logLevel: "loud": must be debug, info, warn or error`,
				`maxMessageSize: "1Mi": must be between 4Mi and 1Gi`,
				`metricsListen: "0.0.0.0:9464": must be a loopback address (127.0.0.1, [::1]); set metricsAllowNonLoopback to listen elsewhere`,
				`mode: "block": must be reject, raise or audit`,
				`runtimeHandlers.kata.containerMinMemory: "lots": "lots" is not a quantity (use a number of bytes or a suffix such as Ki, Mi, Gi): quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`,
				`sandboxMinMemory: "12MB": "12MB" is not a quantity (use a number of bytes or a suffix such as Ki, Mi, Gi): quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`,
				`shutdownTimeout: "soon": must be a positive duration such as 10s`,
				`socketMode: "0666": must not give access to others: whoever reaches the socket controls the node's containers`,
				`upstream: "tcp://1.2.3.4:5": must be unix:///absolute/path`,
			}, "\n"),
		},
		"metrics elsewhere when allowed": {
			yaml:  "metricsListen: 0.0.0.0:9464\nmetricsAllowNonLoopback: true\n",
			check: func(t *testing.T, c *Config) {},
		},
		"negative floor": {
			yaml: "containerMinMemory: -1\n",
			err:  `containerMinMemory: "-1": "-1" is negative`,
		},
		"listen on the upstream": {
			yaml: "listen: unix:///a.sock\nupstream: unix:///a.sock\n",
			err:  `listen: "unix:///a.sock": is the upstream socket too`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Parse([]byte(tc.yaml))
			var c *Config
			if err == nil {
				c, err = Resolve(f)
			}
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got error:\n%v\nwant:\n%s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestFlagsWinOverTheFile(t *testing.T) {
	file, _ := Parse([]byte("mode: audit\nsandboxMinMemory: 4Mi\n"))
	flags := File{Mode: "raise"}
	c, err := Resolve(file.Merge(flags))
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Mode != policy.ModeRaise || c.Policy.Floors.Sandbox != 4<<20 {
		t.Errorf("got %+v", c.Policy)
	}
}

func TestDigestFollowsContent(t *testing.T) {
	a, _ := Resolve(File{Mode: "audit"})
	b, _ := Resolve(File{Mode: "audit"})
	c, _ := Resolve(File{Mode: "raise"})
	if a.Digest != b.Digest || a.Digest == c.Digest || !strings.HasPrefix(a.Digest, "sha256:") {
		t.Errorf("digests %s %s %s", a.Digest, b.Digest, c.Digest)
	}
}

func FuzzConfig(f *testing.F) {
	for _, s := range []string{"mode: raise\n", "sandboxMinMemory: 1e400\n", "runtimeHandlers: {a: {}}\n", "listen: 5\n", "- a\n", "socketMode: 0777"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		c, err := Resolve(file)
		if err != nil {
			if !strings.Contains(err.Error(), ": ") {
				t.Fatalf("error names no key: %v", err)
			}
			return
		}
		if c.MaxMessageSize < 4<<20 || c.Policy.Floors.Sandbox < 0 || c.Policy.Floors.Container < 0 {
			t.Fatalf("accepted a bad config: %+v", c)
		}
	})
}
