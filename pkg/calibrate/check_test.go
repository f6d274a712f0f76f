package calibrate

import (
	"os"
	"strings"
	"testing"
)

func TestNotRuntime(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		runtimeName, socket string
		peer                Peer
		want                string // "" means it is a runtime
	}{
		"containerd":        {"containerd", "/run/containerd/containerd.sock", Peer{PID: 10, Exe: "/usr/bin/containerd", Cmdline: []string{"/usr/bin/containerd"}}, ""},
		"peer unknown":      {"containerd", "/run/containerd/containerd.sock", Peer{}, ""},
		"no runtime name":   {"", "/run/x.sock", Peer{}, "without a runtime name"},
		"names itself":      {"cri-guard", "/run/x.sock", Peer{}, `calls itself "cri-guard"`},
		"guard binary name": {"containerd", "/tmp/x/guard.sock", Peer{PID: 7, Exe: "/usr/local/bin/cri-guard", Cmdline: []string{"cri-guard", "serve", "--upstream", "unix:///run/containerd/containerd.sock"}}, "served by cri-guard (pid 7, /usr/local/bin/cri-guard), which relays to a runtime; calibrate against its upstream, unix:///run/containerd/containerd.sock"},
		"upstream= form":    {"containerd", "/tmp/x/guard.sock", Peer{PID: 7, Exe: "/opt/cri-guard (deleted)", Cmdline: []string{"/opt/cri-guard", "serve", "--upstream=unix:///c.sock"}}, "its upstream, unix:///c.sock"},
		"same executable":   {"containerd", "/tmp/x/guard.sock", Peer{PID: 8, Exe: self, Cmdline: []string{"renamed"}}, "served by cri-guard (pid 8"},
		"argv0 only":        {"containerd", "/tmp/x/guard.sock", Peer{PID: 9, Cmdline: []string{"/usr/bin/cri-guard", "serve"}}, "served by cri-guard (pid 9"},
		"socket name":       {"containerd", "/run/cri-guard/cri-guard.sock", Peer{PID: 1, Exe: "/usr/lib/systemd/systemd"}, "named like cri-guard's"},
		"dir name is fine":  {"containerd", "/run/cri-guard/containerd.sock", Peer{PID: 10, Exe: "/usr/bin/containerd"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			got := notRuntime(tc.runtimeName, tc.socket, tc.peer, self)
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
