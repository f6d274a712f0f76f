package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// installer is how cri-guard came onto this node (run.sh): its package,
// or the files `make install` wrote (staged by the host in /inputs/install).
type installer struct {
	pkg   bool
	files []string // make install's files, relative to /
}

func nodeInstaller(t *testing.T) installer {
	t.Helper()
	by, err := os.ReadFile("/run/cri-guard-installed-by")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(by)) == "package" {
		return installer{pkg: true}
	}
	var in installer
	filepath.Walk("/inputs/install", func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			in.files = append(in.files, strings.TrimPrefix(p, "/inputs/install"))
		}
		return nil
	})
	if len(in.files) == 0 {
		t.Fatal("no make install files in /inputs/install")
	}
	return in
}

// install is `make install` holding the drop-in back (or the package,
// which ships the drop-in inactive; its postinst enables the units).
func (in installer) install(t *testing.T) {
	t.Helper()
	if in.pkg {
		debs, _ := filepath.Glob("/inputs/pkg/cri-guard_*.deb")
		MustRun(t, "dpkg", append([]string{"-i", "--force-confold"}, debs...)...)
		return
	}
	for _, f := range in.files {
		if f == dropIn || f == GuardConfig {
			continue
		}
		mode := "0644"
		if strings.HasSuffix(f, "/bin/cri-guard") {
			mode = "0755"
		}
		MustRun(t, "install", "-D", "-m", mode, "/inputs/install"+f, f)
	}
}

// uninstall is `make uninstall` (or removing the package): both keep the
// config.
func (in installer) uninstall(t *testing.T) {
	t.Helper()
	if in.pkg {
		MustRun(t, "dpkg", "-r", "cri-guard")
		return
	}
	for _, f := range in.files {
		if f != GuardConfig {
			os.Remove(f)
		}
	}
	os.Remove(filepath.Dir(dropIn))
}

// dropInSource is the drop-in the operator puts in place.
func (in installer) dropInSource() string {
	if in.pkg {
		return "/usr/share/cri-guard/10-cri-guard.conf"
	}
	return "/inputs/install" + dropIn
}

const dropIn = "/etc/systemd/system/kubelet.service.d/10-cri-guard.conf"

// kubeletEndpoint returns the --container-runtime-endpoint of the running
// kubelet ("" if it has none: the config file's default, containerd).
func kubeletEndpoint(t *testing.T) string {
	t.Helper()
	pid := strings.TrimSpace(Systemctl(t, "show", "-p", "MainPID", "--value", "kubelet.service"))
	b, err := os.ReadFile("/proc/" + pid + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(a, "--container-runtime-endpoint="); ok {
			return v
		}
	}
	return ""
}

func restartKubelet(t *testing.T) {
	t.Helper()
	Systemctl(t, "daemon-reload")
	Systemctl(t, "restart", "kubelet.service")
	Poll(t, "kubelet healthy", HangGuard, func() (bool, string) {
		_, err := get(KubeletURL + "/healthz")
		return err == nil, errString(err)
	})
}

// TestReadmeRollbackAndRollout executes the README's "Rollback" (full) and
// then its "Node rollout", step by step as written, on this node with a pod
// running throughout: the pod keeps its container, the kubelet follows the
// drop-in, and each step's check (check-config, `cri-guard status`, the
// audit counter, the reload to reject) holds. `make install` and `make
// uninstall` are what they write and remove (the files staged from `make
// install DESTDIR=...`; uninstall keeps the config), or, when the node
// has cri-guard's package, dpkg -i and dpkg -r (the package ships the
// drop-in inactive in /usr/share/cri-guard; its postinst enables the units,
// which step 2 then finds enabled).
func TestReadmeRollbackAndRollout(t *testing.T) {
	in := nodeInstaller(t)
	baseConfig, err := os.ReadFile(GuardConfig)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever happens below, leave the node as the next scenario expects
	// it: installed, enabled, the base config, the kubelet through cri-guard.
	t.Cleanup(func() {
		if _, err := os.Stat("/usr/bin/cri-guard"); err != nil {
			if _, err := os.Stat("/usr/local/bin/cri-guard"); err != nil {
				in.install(t)
			}
		}
		os.WriteFile(GuardConfig, baseConfig, 0o644)
		Run("systemctl", "daemon-reload")
		Run("systemctl", "enable", "--now", "cri-guard.socket", "cri-guard.service")
		Run("systemctl", "restart", "cri-guard.service")
		if _, err := os.Stat(dropIn); err != nil {
			Run("install", "-D", "-m", "0644", in.dropInSource(), dropIn)
			restartKubelet(t)
		}
	})
	WriteStaticPod(t, StaticPod("survivor", sleeper("app", "64Mi")))
	before := containers(WaitRunning(t, "survivor"))
	if got := kubeletEndpoint(t); got != GuardEndpoint {
		t.Fatalf("kubelet runs with --container-runtime-endpoint=%q, want cri-guard's %s (the drop-in)", got, GuardEndpoint)
	}

	// Rollback, full: drop-in out, daemon-reload, restart kubelet, then
	// disable cri-guard, then uninstall.
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	restartKubelet(t)
	if got := kubeletEndpoint(t); got != "" {
		t.Errorf("after the drop-in's removal the kubelet runs with --container-runtime-endpoint=%q", got)
	}
	Systemctl(t, "disable", "--now", "cri-guard.service", "cri-guard.socket")
	in.uninstall(t)
	Systemctl(t, "daemon-reload")
	// Nothing answers on cri-guard's socket any more (systemd leaves the
	// file: RemoveOnStop= is off).
	for _, u := range []string{"cri-guard.socket", "cri-guard.service"} {
		if out, err := Run("systemctl", "is-active", u); err == nil {
			t.Errorf("%s is still active after the rollback: %s", u, out)
		}
	}
	if out, err := Crictl("--timeout", "5s", "version"); err == nil {
		t.Errorf("cri-guard's socket still answers after the rollback: %s", out)
	}
	if after := containers(WaitRunning(t, "survivor")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("rollback: containers before %v, after %v", before, after)
	}
	if _, err := os.Stat(GuardConfig); err != nil {
		t.Errorf("uninstall removed the config: %v", err)
	}

	// Rollout 1: make install, holding the drop-in back; check-config;
	// mode: audit and metricsListen on the first nodes.
	cfg := strings.ReplaceAll(string(baseConfig), "\nmode: reject\n", "\n") + "\nmode: audit\n"
	if err := os.WriteFile(GuardConfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	in.install(t)
	MustRun(t, "cri-guard", "check-config", GuardConfig)
	// Rollout 2: enable --now; status shows the runtime READY and
	// answering through the socket.
	Systemctl(t, "daemon-reload")
	Systemctl(t, "enable", "--now", "cri-guard.socket", "cri-guard.service")
	st := MustRun(t, "cri-guard", "status", "--config", GuardConfig)
	if !strings.Contains(st, "READY") {
		t.Errorf("cri-guard status after enable --now:\n%s", st)
	}
	// Rollout 3: the drop-in, daemon-reload, restart kubelet; running pods
	// are untouched.
	MustRun(t, "install", "-D", "-m", "0644", in.dropInSource(), dropIn)
	restartKubelet(t)
	if got := kubeletEndpoint(t); got != GuardEndpoint {
		t.Errorf("after the rollout the kubelet runs with --container-runtime-endpoint=%q, want %s", got, GuardEndpoint)
	}
	if after := containers(WaitRunning(t, "survivor")); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("rollout: containers before %v, after %v", before, after)
	}
	// Rollout 4: watch the audit counter, then mode: reject and reload.
	audit := map[string]string{"action": "audit", "namespace": "default"}
	a0 := Metric(Metrics(t), "cri_guard_policy_decisions_total", audit)
	log := MarkJournal(t, "kubelet")
	WriteStaticPod(t, StaticPod("rollout2k", sleeper("app", "2000")))
	Poll(t, "the 2000-byte pod counted as audit", HangGuard, func() (bool, string) {
		a := Metric(Metrics(t), "cri_guard_policy_decisions_total", audit)
		return a > a0, fmt.Sprint(a)
	})
	if refused := log.Lines(t, "below the 12Mi minimum", "InvalidArgument"); len(refused) > 0 {
		t.Errorf("mode: audit refused a call: %s", refused[0])
	}
	pid := Systemctl(t, "show", "-p", "MainPID", "--value", "cri-guard.service")
	reject := strings.Replace(cfg, "\nmode: audit\n", "\nmode: reject\n", 1)
	if err := os.WriteFile(GuardConfig, []byte(reject), 0o644); err != nil {
		t.Fatal(err)
	}
	Systemctl(t, "reload", "cri-guard.service")
	log = MarkJournal(t, "kubelet")
	Poll(t, "the 2000-byte pod refused after the reload to reject", HangGuard, func() (bool, string) {
		l := log.Lines(t, `"CreatePodSandbox for pod failed"`, `pod="default/rollout2k-node"`, "below the 12Mi minimum", "InvalidArgument")
		return len(l) > 0, "not yet"
	})
	if now := Systemctl(t, "show", "-p", "MainPID", "--value", "cri-guard.service"); now != pid {
		t.Errorf("the reload restarted cri-guard: MainPID %s, then %s", strings.TrimSpace(pid), strings.TrimSpace(now))
	}
}
