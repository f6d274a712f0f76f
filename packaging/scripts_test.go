package packaging_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// stubs are the commands the maintainer scripts call; each logs its
// command line, and fails if that is $STUB_FAIL. `cri-guard kubelet-dropin
// status` exits $STUB_STATUS.
var stubs = []string{"deb-systemd-helper", "deb-systemd-invoke", "systemctl", "cri-guard"}

// node is what a maintainer script finds: the exit status of `cri-guard
// kubelet-dropin status`, a stub call that fails, whether a daemon's
// control socket (/run/cri-guard/cri-guard.sock.ctl) exists, and more
// environment.
type node struct {
	status int
	fail   string
	ctl    bool
	env    []string
}

// runScript runs a maintainer script with stub commands first on the PATH,
// in a private mount namespace whose /run is an empty tmpfs holding
// /run/systemd/system (systemd is PID 1, as far as the script can tell).
// It returns the commands called, in order, and the exit status.
func runScript(t *testing.T, script string, n node, args ...string) ([]string, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	log := filepath.Join(dir, "calls")
	for _, s := range stubs {
		body := "#!/bin/sh\necho \"" + s + " $*\" >> \"$STUB_LOG\"\n" +
			"[ \"" + s + " $*\" = \"$STUB_FAIL\" ] && exit 1\n"
		if s == "cri-guard" {
			body += "exit \"$STUB_STATUS\"\n"
		} else {
			body += "exit 0\n"
		}
		if err := os.WriteFile(filepath.Join(bin, s), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	abs, _ := filepath.Abs(script)
	prelude := `mount -t tmpfs none /run && mkdir -p /run/systemd/system && `
	if n.ctl {
		// A real unix socket, bound into the namespace's /run.
		ctl := filepath.Join(dir, "ctl")
		l, err := net.Listen("unix", ctl)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		prelude += `mkdir -p /run/cri-guard && touch /run/cri-guard/cri-guard.sock.ctl && mount --bind ` + ctl + ` /run/cri-guard/cri-guard.sock.ctl && `
	}
	cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c",
		prelude + `exec "$@"`, "sh", abs}, args...)...)
	cmd.Env = append([]string{"PATH=" + bin + ":/usr/sbin:/usr/bin:/sbin:/bin", "STUB_LOG=" + log,
		"STUB_STATUS=" + strconv.Itoa(n.status), "STUB_FAIL=" + n.fail}, n.env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		code = ee.ExitCode()
	}
	b, _ := os.ReadFile(log)
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			calls = append(calls, l)
		}
	}
	if code != 0 {
		t.Logf("%s %v printed:\n%s", script, args, out)
	}
	return calls, code
}

func TestMaintainerScriptCalls(t *testing.T) {
	enable := []string{
		"deb-systemd-helper unmask cri-guard.socket", "deb-systemd-helper --quiet was-enabled cri-guard.socket", "deb-systemd-helper enable cri-guard.socket",
		"deb-systemd-helper unmask cri-guard.service", "deb-systemd-helper --quiet was-enabled cri-guard.service", "deb-systemd-helper enable cri-guard.service",
		"systemctl --system daemon-reload",
	}
	status := "cri-guard kubelet-dropin status"
	for _, tc := range []struct {
		name   string
		script string
		args   []string
		node   node
		want   []string
		code   int
	}{
		{"deb install", "deb/postinst", []string{"configure", ""}, node{status: 3},
			append(enable[:len(enable):len(enable)], "deb-systemd-invoke start cri-guard.socket", "deb-systemd-invoke start cri-guard.service"), 0},
		{"deb upgrade", "deb/postinst", []string{"configure", "0.0.0~git20261201000000.abcdef0"}, node{status: 3},
			append(enable[:len(enable):len(enable)], "deb-systemd-invoke start cri-guard.socket", "deb-systemd-invoke restart cri-guard.service"), 0},
		{"deb upgrade, handover", "deb/postinst", []string{"configure", "0.0.0~git20261201000000.abcdef0"}, node{status: 3, ctl: true},
			append(enable[:len(enable):len(enable)], "deb-systemd-invoke start cri-guard.socket", "systemctl is-active --quiet cri-guard.service", "deb-systemd-invoke try-reload-or-restart cri-guard.service"), 0},
		{"deb upgrade, handover fails", "deb/postinst", []string{"configure", "0.0.0~git20261201000000.abcdef0"},
			node{status: 3, ctl: true, fail: "deb-systemd-invoke try-reload-or-restart cri-guard.service"},
			append(enable[:len(enable):len(enable)], "deb-systemd-invoke start cri-guard.socket", "systemctl is-active --quiet cri-guard.service", "deb-systemd-invoke try-reload-or-restart cri-guard.service"), 1},
		// Reinstall after `dpkg -r` (config-files state): dpkg passes the
		// last configured version and the control socket's file is left
		// in /run, but the service is stopped: try-reload-or-restart would
		// leave it stopped; restart starts it.
		{"deb reinstall after remove", "deb/postinst", []string{"configure", "0.0.0~git20261201000000.abcdef0"},
			node{status: 3, ctl: true, fail: "systemctl is-active --quiet cri-guard.service"},
			append(enable[:len(enable):len(enable)], "deb-systemd-invoke start cri-guard.socket", "systemctl is-active --quiet cri-guard.service", "deb-systemd-invoke restart cri-guard.service"), 0},
		{"deb remove, kubelet not wired", "deb/prerm", []string{"remove"}, node{status: 3},
			[]string{status, "deb-systemd-invoke stop cri-guard.service cri-guard.socket"}, 0},
		{"deb remove refused, kubelet wired", "deb/prerm", []string{"remove"}, node{status: 0}, []string{status, status}, 1},
		{"deb remove refused, status fails", "deb/prerm", []string{"remove"}, node{status: 1}, []string{status, status}, 1},
		{"deb prerm upgrade", "deb/prerm", []string{"upgrade", "1.0"}, node{status: 0}, nil, 0},
		{"deb postrm remove", "deb/postrm", []string{"remove"}, node{status: 3},
			[]string{"deb-systemd-helper mask cri-guard.socket cri-guard.service", "systemctl --system daemon-reload"}, 0},
		{"deb postrm purge", "deb/postrm", []string{"purge"}, node{status: 3},
			[]string{"deb-systemd-helper purge cri-guard.socket cri-guard.service", "deb-systemd-helper unmask cri-guard.socket cri-guard.service", "systemctl --system daemon-reload"}, 0},
		{"rpm install", "rpm/post", []string{"1"}, node{status: 3},
			[]string{"systemctl enable cri-guard.socket cri-guard.service", "systemctl daemon-reload", "systemctl start cri-guard.socket cri-guard.service"}, 0},
		{"rpm upgrade", "rpm/post", []string{"2"}, node{status: 3},
			[]string{"systemctl daemon-reload", "systemctl try-restart cri-guard.service"}, 0},
		{"rpm upgrade, handover", "rpm/post", []string{"2"}, node{status: 3, ctl: true},
			[]string{"systemctl daemon-reload", "systemctl try-reload-or-restart cri-guard.service"}, 0},
		{"rpm upgrade, handover fails", "rpm/post", []string{"2"}, node{status: 3, ctl: true, fail: "systemctl try-reload-or-restart cri-guard.service"},
			[]string{"systemctl daemon-reload", "systemctl try-reload-or-restart cri-guard.service"}, 1},
		{"rpm erase", "rpm/preun", []string{"0"}, node{status: 3},
			[]string{status, "systemctl --no-reload disable --now cri-guard.service cri-guard.socket"}, 0},
		{"rpm erase refused", "rpm/preun", []string{"0"}, node{status: 0}, []string{status, status}, 1},
		{"rpm preun upgrade", "rpm/preun", []string{"1"}, node{status: 0}, nil, 0},
		{"rpm postun erase", "rpm/postun", []string{"0"}, node{status: 3}, []string{"systemctl daemon-reload"}, 0},
		{"rpm postun upgrade", "rpm/postun", []string{"1"}, node{status: 3}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, code := runScript(t, tc.script, tc.node, tc.args...)
			if code != tc.code || !reflect.DeepEqual(calls, tc.want) {
				t.Errorf("%s %q: exit %d, calls\n  %s\nwant exit %d, calls\n  %s", tc.script, tc.args, code,
					strings.Join(calls, "\n  "), tc.code, strings.Join(tc.want, "\n  "))
			}
			for _, c := range calls {
				if strings.Contains(c, "kubelet.service") {
					t.Errorf("a maintainer script touches the kubelet: %s", c)
				}
			}
		})
	}
}

// TestPurgeRemovesConfig: postrm purge deletes /etc/cri-guard (with files
// beside the config) and /run/cri-guard, under DPKG_ROOT.
func TestPurgeRemovesConfig(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"etc/cri-guard/config.yaml", "etc/cri-guard/config.yaml.dpkg-old", "run/cri-guard/cri-guard.sock", "etc/keep"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), nil, 0o644)
	}
	calls, code := runScript(t, "deb/postrm", node{status: 3, env: []string{"DPKG_ROOT=" + root}}, "purge")
	if code != 0 {
		t.Fatalf("postrm purge exit %d", code)
	}
	// DPKG_ROOT: deb-systemd-helper acts on that root; systemd is not reloaded.
	if want := []string{"deb-systemd-helper purge cri-guard.socket cri-guard.service", "deb-systemd-helper unmask cri-guard.socket cri-guard.service"}; !reflect.DeepEqual(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
	for _, p := range []string{"etc/cri-guard", "run/cri-guard"} {
		if _, err := os.Stat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("after purge %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/keep")); err != nil {
		t.Errorf("purge removed another file: %v", err)
	}
}
