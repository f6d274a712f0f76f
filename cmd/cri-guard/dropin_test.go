package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/systemd"
)

// node is a scratch file system tree for kubelet-dropin.
type node struct {
	t     *testing.T
	root  string
	calls []string
	fail  map[string]error // systemctl command line -> its error
}

func newNode(t *testing.T, sd bool, files map[string]string) *node {
	t.Helper()
	n := &node{t: t, root: t.TempDir(), fail: map[string]error{}}
	if sd {
		os.MkdirAll(filepath.Join(n.root, "run/systemd/system"), 0o755)
	}
	for p, s := range files {
		n.write(p, s)
	}
	old := runSystemctl
	runSystemctl = func(args ...string) error {
		c := strings.Join(args, " ")
		n.calls = append(n.calls, c)
		return n.fail[c]
	}
	t.Cleanup(func() { runSystemctl = old })
	return n
}

func (n *node) write(p, s string) {
	n.t.Helper()
	p = filepath.Join(n.root, p)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) run(action string, flags ...string) (string, error) {
	var out bytes.Buffer
	d := dropin{root: n.root, out: &out}
	var err error
	switch action {
	case "install":
		err = d.install(len(flags) > 0 && flags[0] == "force", !(len(flags) > 0 && flags[0] == "no-restart"))
	case "remove":
		err = d.remove(!(len(flags) > 0 && flags[0] == "no-restart"))
	case "status":
		err = d.status()
	}
	return out.String(), err
}

const (
	dropinPath = "/etc/systemd/system/kubelet.service.d/10-cri-guard.conf"
	endpoint   = "--container-runtime-endpoint=unix:///run/cri-guard/cri-guard.sock"
	// A running kubelet as /proc shows it: comm and NUL-separated cmdline.
	kubeletComm = "kubelet\n"
)

func cmdline(args ...string) string { return strings.Join(args, "\x00") + "\x00" }

func TestKubeletDropinStatus(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string // exact output
		wired bool
	}{
		{"nothing", nil, "nothing points the kubelet at cri-guard\n", false},
		{"our drop-in", map[string]string{dropinPath: string(systemd.KubeletDropin)},
			"the kubelet is pointed at cri-guard by:\n  " + dropinPath + `: Environment="KUBELET_EXTRA_ARGS=` + endpoint + "\"\n", true},
		{"comments only", map[string]string{"/etc/default/kubelet": "# KUBELET_EXTRA_ARGS=" + endpoint + "\n"},
			"nothing points the kubelet at cri-guard\n", false},
		{"ordering-only drop-in", map[string]string{"/etc/systemd/system/kubelet.service.d/10-cri-guard.conf": "[Unit]\nAfter=cri-guard.socket\n"},
			"nothing points the kubelet at cri-guard\n", false},
		{"kubeadm flags", map[string]string{"/var/lib/kubelet/kubeadm-flags.env": `KUBELET_KUBEADM_ARGS="` + endpoint + `"` + "\n"},
			"the kubelet is pointed at cri-guard by:\n  /var/lib/kubelet/kubeadm-flags.env: KUBELET_KUBEADM_ARGS=\"" + endpoint + "\"\n", true},
		{"kubelet config", map[string]string{"/var/lib/kubelet/config.yaml": "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock\n"},
			"the kubelet is pointed at cri-guard by:\n  /var/lib/kubelet/config.yaml: containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock\n", true},
		{"running kubelet flag", map[string]string{"/proc/4242/comm": kubeletComm, "/proc/4242/cmdline": cmdline("/usr/bin/kubelet", endpoint)},
			"the kubelet is pointed at cri-guard by:\n  the running kubelet (pid 4242): " + endpoint + "\n", true},
		{"running kubelet config file", map[string]string{"/proc/7/comm": kubeletComm, "/proc/7/cmdline": cmdline("/usr/bin/kubelet", "--config", "/etc/k/c.yaml"),
			"/etc/k/c.yaml": "containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock\n"},
			"the kubelet is pointed at cri-guard by:\n  /etc/k/c.yaml: containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock\n", true},
		{"kubelet straight to containerd", map[string]string{"/proc/7/comm": kubeletComm, "/proc/7/cmdline": cmdline("/usr/bin/kubelet", "--container-runtime-endpoint=unix:///run/containerd/containerd.sock"),
			"/proc/8/comm": "containerd\n", "/proc/8/cmdline": cmdline("containerd", "--address", "/run/cri-guard/x")},
			"nothing points the kubelet at cri-guard\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, false, tc.files)
			out, err := n.run("status")
			if out != tc.want {
				t.Errorf("output %q, want %q", out, tc.want)
			}
			if tc.wired && err != nil {
				t.Errorf("err = %v, want nil (exit 0)", err)
			}
			var ec *exitCode
			if !tc.wired && !(errors.As(err, &ec) && ec.code == 3 && ec.err == nil) {
				t.Errorf("err = %v, want exit status 3", err)
			}
		})
	}
}

func TestKubeletDropinInstallRemove(t *testing.T) {
	n := newNode(t, true, nil)
	out, err := n.run("install")
	if err != nil {
		t.Fatal(err)
	}
	want := "wrote " + dropinPath + ": the kubelet's runtime endpoint is unix:///run/cri-guard/cri-guard.sock\n" +
		"systemd reloaded and the kubelet (if it was running) restarted: it now talks to cri-guard; no pod was restarted\n"
	if out != want {
		t.Errorf("install said %q, want %q", out, want)
	}
	b, err := os.ReadFile(filepath.Join(n.root, dropinPath))
	if err != nil || !bytes.Equal(b, systemd.KubeletDropin) {
		t.Fatalf("drop-in %q (%v), want systemd/10-cri-guard.conf", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(n.root, dropinPath)); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if want := []string{"is-active --quiet cri-guard.socket", "daemon-reload", "try-restart kubelet.service"}; !reflect.DeepEqual(n.calls, want) {
		t.Errorf("systemctl calls %q, want %q", n.calls, want)
	}
	if _, err := n.run("status"); err != nil {
		t.Errorf("status after install: %v, want wired", err)
	}

	n.calls = nil
	out, err = n.run("remove")
	if err != nil {
		t.Fatal(err)
	}
	want = "removed " + dropinPath + "\n" +
		"systemd reloaded and the kubelet (if it was running) restarted: it talks to the runtime directly; no pod was restarted\n"
	if out != want {
		t.Errorf("remove said %q, want %q", out, want)
	}
	if _, err := os.Stat(filepath.Join(n.root, "etc/systemd/system/kubelet.service.d")); !os.IsNotExist(err) {
		t.Errorf("the empty drop-in directory is left: %v", err)
	}
	if want := []string{"daemon-reload", "try-restart kubelet.service"}; !reflect.DeepEqual(n.calls, want) {
		t.Errorf("systemctl calls %q, want %q", n.calls, want)
	}
	if _, err := n.run("status"); err != errNotWired {
		t.Errorf("status after remove: %v, want not wired", err)
	}
}

func TestKubeletDropinInstallRefusesWithoutSocket(t *testing.T) {
	n := newNode(t, true, nil)
	n.fail["is-active --quiet cri-guard.socket"] = errors.New("exit status 3")
	_, err := n.run("install")
	if err == nil || !strings.Contains(err.Error(), "cri-guard.socket is not active, and the kubelet would have no runtime") {
		t.Fatalf("install with the socket down: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.root, dropinPath)); !os.IsNotExist(err) {
		t.Fatalf("install wrote the drop-in anyway: %v", err)
	}
	if want := []string{"is-active --quiet cri-guard.socket"}; !reflect.DeepEqual(n.calls, want) {
		t.Errorf("systemctl calls %q, want %q", n.calls, want)
	}
	// --force installs anyway.
	if _, err := n.run("install", "force"); err != nil {
		t.Fatalf("install --force: %v", err)
	}
}

func TestKubeletDropinWithoutSystemd(t *testing.T) {
	n := newNode(t, false, map[string]string{"/etc/systemd/system/kubelet.service.d/20-other.conf": "[Service]\nEnvironment=X=1\n"})
	out, err := n.run("install")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out, "systemd is not running here: run systemctl daemon-reload && systemctl restart kubelet on the node\n") {
		t.Errorf("install said %q", out)
	}
	if _, err := n.run("remove"); err != nil {
		t.Fatal(err)
	}
	if len(n.calls) != 0 {
		t.Errorf("systemctl ran without systemd: %q", n.calls)
	}
	// Another drop-in keeps its directory.
	if _, err := os.Stat(filepath.Join(n.root, "etc/systemd/system/kubelet.service.d/20-other.conf")); err != nil {
		t.Error(err)
	}
}

func TestKubeletDropinRemoveReportsOtherWiring(t *testing.T) {
	cfg := "containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock\n"
	n := newNode(t, true, map[string]string{dropinPath: string(systemd.KubeletDropin), "/var/lib/kubelet/config.yaml": cfg})
	_, err := n.run("remove")
	want := "the kubelet is still pointed at cri-guard:\n  /var/lib/kubelet/config.yaml: containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock"
	if err == nil || err.Error() != want {
		t.Fatalf("remove: %v, want %q", err, want)
	}
	// Without a restart, the running kubelet's flag is reported, not an error.
	n = newNode(t, true, map[string]string{dropinPath: string(systemd.KubeletDropin),
		"/proc/9/comm": kubeletComm, "/proc/9/cmdline": cmdline("kubelet", endpoint)})
	out, err := n.run("remove", "no-restart")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out, "still pointing the kubelet at cri-guard:\n  the running kubelet (pid 9): "+endpoint+"\n") {
		t.Errorf("remove --no-restart said %q", out)
	}
}

func TestKubeletDropinUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"frob"}, {"status", "extra"}, {"install", "--nope"}} {
		if err := kubeletDropinCmd(t.Context(), args); !errors.Is(err, errUsage) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}
