package systemd_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/pkg/config"
)

// analyze returns systemd-analyze. It skips the test only when the tool is
// missing and the real-node tests were not asked for (make test installs
// the systemd package first).
func analyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CRI_GUARD_E2E") == "" {
			t.Skip("systemd-analyze not found (apt-get install systemd; make deps does)")
		}
		t.Fatal("CRI_GUARD_E2E is set but systemd-analyze is missing: run make deps")
	}
	return p
}

// verify runs systemd-analyze verify on units and fails on any output: it
// exits 0 on warnings such as unknown keys.
func verify(t *testing.T, tool string, units ...string) string {
	t.Helper()
	out, err := exec.Command(tool, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil {
		return "exit " + err.Error() + ": " + string(out)
	}
	return string(out)
}

// installed is a `make install` into a scratch DESTDIR.
type installed struct {
	root, bin, units, dropin, config string
	runtimeDropin                    string // cri-guard.service.d/10-runtime.conf
}

func install(t *testing.T, args ...string) installed {
	t.Helper()
	root := t.TempDir()
	bin := t.TempDir()
	cmd := exec.Command("make", append([]string{"-s", "-C", "..", "install", "DESTDIR=" + root, "BIN=" + bin}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return installed{
		root:          root,
		runtimeDropin: filepath.Join(root, "etc/systemd/system/cri-guard.service.d/10-runtime.conf"),
		bin:           filepath.Join(root, "usr/local/bin/cri-guard"),
		units:         filepath.Join(root, "etc/systemd/system"),
		dropin:        filepath.Join(root, "etc/systemd/system/kubelet.service.d/10-cri-guard.conf"),
		config:        filepath.Join(root, "etc/cri-guard/config.yaml"),
	}
}

// stage copies the installed units into a directory of their own, with
// ExecStart pointing at the installed binary (verify checks that it is
// executable), next to a stub kubelet.service carrying the drop-in.
func stage(t *testing.T, in installed) string {
	t.Helper()
	dir := t.TempDir()
	for _, u := range []string{"cri-guard.service", "cri-guard.socket"} {
		b, err := os.ReadFile(filepath.Join(in.units, u))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/cri-guard"), []byte(in.bin))
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(in.runtimeDropin); err == nil {
		os.MkdirAll(filepath.Join(dir, "cri-guard.service.d"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, "cri-guard.service.d", "10-runtime.conf"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Stubs of the runtimes' units that this machine may lack, so that
	// verify checks the drop-ins' dependencies.
	for _, u := range []string{"crio.service", "cri-docker.service", "cri-docker.socket"} {
		if _, err := os.Stat(filepath.Join("/lib/systemd/system", u)); err == nil {
			continue
		}
		stub := "[Unit]\nDescription=stub " + u + "\n[Service]\nExecStart=/bin/true\n"
		if strings.HasSuffix(u, ".socket") {
			stub = "[Unit]\nDescription=stub " + u + "\n[Socket]\nListenStream=/run/cri-dockerd.sock\nService=cri-docker.service\n"
		}
		if err := os.WriteFile(filepath.Join(dir, u), []byte(stub), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kubelet := "[Unit]\nDescription=stub kubelet\n[Service]\nExecStart=/bin/true $KUBELET_EXTRA_ARGS\n"
	if err := os.WriteFile(filepath.Join(dir, "kubelet.service"), []byte(kubelet), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(in.dropin)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "kubelet.service.d"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "kubelet.service.d", "10-cri-guard.conf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestUnitsVerify(t *testing.T) {
	tool := analyze(t)
	in := install(t)
	dir := stage(t, in)
	if out := verify(t, tool, filepath.Join(dir, "cri-guard.service"), filepath.Join(dir, "cri-guard.socket"),
		filepath.Join(dir, "kubelet.service")); out != "" {
		t.Fatalf("systemd-analyze verify:\n%s", out)
	}
	// The hardening keeps the exposure score at 3.0 or lower ("OK").
	svc := filepath.Join(dir, "cri-guard.service")
	if out, err := exec.Command(tool, "security", "--offline=true", "--threshold=30", svc).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
}

// TestVerifyCatchesWarnings shows that verify's warnings fail the test.
func TestVerifyCatchesWarnings(t *testing.T) {
	tool := analyze(t)
	in := install(t)
	dir := stage(t, in)
	f, err := os.OpenFile(filepath.Join(dir, "kubelet.service.d", "10-cri-guard.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("Frobnicate=yes\n")
	f.Close()
	out := verify(t, tool, filepath.Join(dir, "kubelet.service"))
	if !strings.Contains(out, "Unknown key 'Frobnicate'") {
		t.Fatalf("verify of a drop-in with an unknown key said %q", out)
	}
}

// directives reads a unit file into section.Key -> values.
func directives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			m[section+"."+k] = append(m[section+"."+k], v)
		}
	}
	return m
}

func TestUnitContents(t *testing.T) {
	svc := directives(t, "cri-guard.service")
	sock := directives(t, "cri-guard.socket")
	kubelet := directives(t, "10-cri-guard.conf")
	for _, tc := range []struct {
		name string
		got  map[string][]string
		key  string
		want []string // nil: must be absent
	}{
		{"notify", svc, "Service.Type", []string{"notify"}},
		{"exec", svc, "Service.ExecStart", []string{"/usr/local/bin/cri-guard serve --config /etc/cri-guard/config.yaml"}},
		{"reload", svc, "Service.ExecReload", []string{"/usr/local/bin/cri-guard reload --config /etc/cri-guard/config.yaml"}},
		{"successor may notify", svc, "Service.NotifyAccess", []string{"all"}},
		{"stop outlasts the hard cap", svc, "Service.TimeoutStopSec", []string{"150s"}},
		{"restart", svc, "Service.Restart", []string{"always"}},
		{"after every runtime", svc, "Unit.After", []string{"containerd.service crio.service cri-docker.socket cri-docker.service cri-guard.socket"}},
		{"before kubelet", svc, "Unit.Before", []string{"kubelet.service"}},
		{"wants", svc, "Unit.Wants", []string{"cri-guard.socket"}},
		{"no requires", svc, "Unit.Requires", nil},
		{"no binds", svc, "Unit.BindsTo", nil},
		{"rw only run dir", svc, "Service.ReadWritePaths", []string{"/run/cri-guard"}},
		{"strict", svc, "Service.ProtectSystem", []string{"strict"}},
		{"run dir kept for the socket", svc, "Service.RuntimeDirectoryPreserve", []string{"yes"}},
		{"kmsg readable", svc, "Service.ProtectKernelLogs", nil},
		{"no private devices", svc, "Service.PrivateDevices", nil},
		{"caps", svc, "Service.CapabilityBoundingSet", []string{"CAP_CHOWN CAP_SYSLOG"}},
		{"loopback only", svc, "Service.IPAddressAllow", []string{"localhost"}},
		{"families", svc, "Service.RestrictAddressFamilies", []string{"AF_UNIX AF_INET AF_INET6"}},
		{"socket path", sock, "Socket.ListenStream", []string{"/run/cri-guard/cri-guard.sock"}},
		{"socket mode", sock, "Socket.SocketMode", []string{"0660"}},
		{"socket dir mode", sock, "Socket.DirectoryMode", []string{"0750"}},
		{"socket service", sock, "Socket.Service", []string{"cri-guard.service"}},
		{"kubelet endpoint", kubelet, "Service.Environment", []string{`"KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///run/cri-guard/cri-guard.sock"`}},
		{"kubelet after", kubelet, "Unit.After", []string{"cri-guard.socket cri-guard.service"}},
		{"kubelet no requires", kubelet, "Unit.Requires", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.got[tc.key]; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("%s = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

// uncomment turns every commented-out key line ("#key: value") of the
// default config into a live one; explanations ("# ...") are dropped.
func uncomment(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "# ") && line != "#" {
			out.WriteString(line[1:] + "\n")
		}
	}
	return out.Bytes()
}

func TestDefaultConfig(t *testing.T) {
	b, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(b); err != nil {
		t.Fatalf("config.yaml as shipped: %v", err)
	}
	all := uncomment(b)
	f, err := config.Parse(all)
	if err != nil {
		t.Fatalf("config.yaml with every key uncommented: %v\n%s", err, all)
	}
	if _, err := config.Resolve(f); err != nil {
		t.Fatalf("config.yaml with every key uncommented: %v", err)
	}
	// Every key of the file format is documented in the default file.
	typ := reflect.TypeOf(config.File{})
	for i := range typ.NumField() {
		key, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if !regexp.MustCompile(`(?m)^` + key + `:`).Match(all) {
			t.Errorf("config.yaml has no commented-out %q line", key)
		}
	}
	// Shipped defaults are the real defaults.
	d, err := config.Resolve(config.Defaults)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := config.Resolve(f)
	if r.Listen != d.Listen || r.Upstream != d.Upstream || r.Policy.Floors != d.Policy.Floors || r.Policy.Mode != d.Policy.Mode {
		t.Errorf("config.yaml's commented values differ from config.Defaults")
	}
}

func TestInstallKeepsConfigAndUninstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not found")
	}
	in := install(t)
	if err := os.WriteFile(in.config, []byte("mode: audit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("make", "-s", "-C", "..", "install", "DESTDIR="+in.root, "BIN="+t.TempDir()).CombinedOutput(); err != nil {
		t.Fatalf("second make install: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(in.config); string(b) != "mode: audit\n" {
		t.Fatalf("make install overwrote the config: %q", b)
	}
	if out, err := exec.Command("make", "-s", "-C", "..", "uninstall", "DESTDIR="+in.root).CombinedOutput(); err != nil {
		t.Fatalf("make uninstall: %v\n%s", err, out)
	}
	var left []string
	filepath.Walk(in.root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, strings.TrimPrefix(p, in.root))
		}
		return nil
	})
	if !reflect.DeepEqual(left, []string{"/etc/cri-guard/config.yaml"}) {
		t.Fatalf("after uninstall: %q, want only the config", left)
	}
}

// TestRuntimeDropins: `make install RUNTIME=...` installs the drop-in that
// pulls that runtime in, and a config whose upstream is that runtime's
// socket; the units verify with each; uninstall removes the drop-in.
func TestRuntimeDropins(t *testing.T) {
	tool := analyze(t)
	for _, rt := range []struct {
		runtime, wants, upstream string
	}{
		{"containerd", "containerd.service", "unix:///run/containerd/containerd.sock"},
		{"crio", "crio.service", "unix:///var/run/crio/crio.sock"},
		{"cri-docker", "cri-docker.socket cri-docker.service", "unix:///run/cri-dockerd.sock"},
	} {
		t.Run(rt.runtime, func(t *testing.T) {
			in := install(t, "RUNTIME="+rt.runtime)
			want, err := os.ReadFile(filepath.Join("runtime", rt.runtime+".conf"))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(in.runtimeDropin); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("installed runtime drop-in %q (%v), want runtime/%s.conf", got, err, rt.runtime)
			}
			d := directives(t, in.runtimeDropin)
			if !reflect.DeepEqual(d, map[string][]string{"Unit.Wants": {rt.wants}}) {
				t.Errorf("runtime/%s.conf = %q, want only Wants=%s", rt.runtime, d, rt.wants)
			}
			b, err := os.ReadFile(in.config)
			if err != nil {
				t.Fatal(err)
			}
			f, err := config.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Resolve(f)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Upstream != rt.upstream {
				t.Errorf("installed config's upstream %q, want %q", cfg.Upstream, rt.upstream)
			}
			dir := stage(t, in)
			if out := verify(t, tool, filepath.Join(dir, "cri-guard.service"), filepath.Join(dir, "cri-guard.socket"),
				filepath.Join(dir, "kubelet.service")); out != "" {
				t.Fatalf("systemd-analyze verify with runtime/%s.conf:\n%s", rt.runtime, out)
			}
			if out, err := exec.Command("make", "-s", "-C", "..", "uninstall", "DESTDIR="+in.root).CombinedOutput(); err != nil {
				t.Fatalf("make uninstall: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Dir(in.runtimeDropin)); !os.IsNotExist(err) {
				t.Errorf("uninstall left %s: %v", filepath.Dir(in.runtimeDropin), err)
			}
		})
	}
	out, err := exec.Command("make", "-s", "-C", "..", "install", "DESTDIR="+t.TempDir(), "BIN="+t.TempDir(), "RUNTIME=docker").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "RUNTIME=docker: want containerd, crio or cri-docker") {
		t.Errorf("make install RUNTIME=docker: %v\n%s", err, out)
	}
}
