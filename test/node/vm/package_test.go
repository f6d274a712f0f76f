package vm

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// provisionScript is docs/provisioning.md's cloud-init runcmd script
// (packaging/provisioning_test.go keeps the two equal).
//
//go:embed testdata/provision.sh
var provisionScript string

// The packages the host staged (make test-node after make package): the
// .deb run.sh installed at boot, and a second build of the same tree with a
// higher version, for the upgrade.
const (
	pkgDir     = "/inputs/pkg"
	pkgNextDir = "/inputs/pkg-next"
	// kubeletFragment is docs/provisioning.md's KubeletConfiguration field.
	kubeletFragment = "containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock\n"
	kubeletConfig   = "/var/lib/kubelet/config.yaml"
)

// pkgPod is a static pod whose container runs until stopped; with probe,
// an exec liveness probe makes the kubelet call the runtime through
// cri-guard every second (ExecSync), beside its PLEG relists. (One probe:
// under TCG each exec costs the VM a lot.)
func pkgPod(name string, probe bool) *corev1.Pod {
	c := corev1.Container{Name: "a", Command: []string{"sleep", "100000"}, Resources: MemoryLimit("64Mi")}
	if probe {
		c.LivenessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}},
			PeriodSeconds: 1, TimeoutSeconds: 30, FailureThreshold: 1000,
		}
	}
	return StaticPod(name, c)
}

// podState is what must not change when cri-guard is installed, upgraded
// or removed: the pod's sandboxes in containerd, and each container's ID
// and restart count as the kubelet reports them.
func podState(t *testing.T, name string) (string, bool) {
	t.Helper()
	p := FindPod(t, name)
	if p == nil {
		return "not reported", false
	}
	sb, err := CrictlDirect("pods", "-q", "--label", "io.kubernetes.pod.name="+name+"-"+NodeName)
	if err != nil {
		return err.Error(), false
	}
	parts := []string{"sandboxes=" + strings.Join(strings.Fields(sb), ",")}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil || cs.ContainerID == "" {
			return fmt.Sprintf("container %s not running: %+v", cs.Name, cs.State), false
		}
		parts = append(parts, fmt.Sprintf("%s=%s restarts=%d", cs.Name, cs.ContainerID, cs.RestartCount))
	}
	sort.Strings(parts[1:])
	return strings.Join(parts, " "), len(p.Status.ContainerStatuses) == len(p.Spec.Containers)
}

// waitPodState waits until the pod reports want (after a kubelet restart
// its status is rebuilt) and fails if it settles on something else.
func waitPodState(t *testing.T, name, want, why string) {
	t.Helper()
	Poll(t, name+" unchanged "+why, HangGuard, func() (bool, string) {
		got, ok := podState(t, name)
		return ok && got == want, got + "\n  want " + want
	})
}

func waitRunning(t *testing.T, name string, timeout time.Duration) string {
	t.Helper()
	var st string
	Poll(t, name+" running", timeout, func() (bool, string) {
		s, ok := podState(t, name)
		st = s
		return ok && strings.Contains(s, "sandboxes=") && !strings.Contains(s, "sandboxes= "), s
	})
	return st
}

// unitProp reads one property of a unit.
func unitProp(t *testing.T, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(Systemctl(t, "show", "-p", prop, "--value", unit))
}

func kubeletHealthy(t *testing.T) {
	t.Helper()
	Poll(t, "kubelet healthy", HangGuard, func() (bool, string) {
		_, err := get(KubeletURL + "/healthz")
		return err == nil, fmt.Sprint(err)
	})
}

// guardCalls is how many calls cri-guard has relayed (its metrics).
func guardCalls(t *testing.T) float64 {
	t.Helper()
	b, err := get(MetricsURL + "/metrics")
	if err != nil {
		return -1
	}
	return Metric(string(b), "cri_guard_requests_total", nil)
}

// kubeletThroughGuard waits until cri-guard relays the kubelet's calls
// (nothing else calls it meanwhile: the probes of pkgPod make calls every
// second).
func kubeletThroughGuard(t *testing.T) {
	t.Helper()
	first := guardCalls(t)
	Poll(t, "the kubelet's calls relayed by cri-guard", HangGuard, func() (bool, string) {
		n := guardCalls(t)
		return first >= 0 && n >= first+10, fmt.Sprintf("cri_guard_requests_total %v -> %v", first, n)
	})
}

// leftovers lists the paths on the node whose name contains cri-guard,
// outside the test's own share and the journal (/lib is /usr/lib on
// trixie).
func leftovers(t *testing.T) []string {
	t.Helper()
	var left []string
	for _, root := range []string{"/etc", "/usr", "/var/lib", "/run", "/opt", "/srv"} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			if fi.IsDir() && (p == "/var/lib/containerd" || p == "/run/containerd" || p == "/var/lib/kubelet/pods") {
				return filepath.SkipDir
			}
			// run.sh's own marker of how it installed cri-guard.
			if p == "/run/cri-guard-installed-by" {
				return nil
			}
			if strings.Contains(filepath.Base(p), "cri-guard") {
				left = append(left, p)
			}
			return nil
		})
	}
	sort.Strings(left)
	return left
}

// load calls cri-guard's socket from a loop of crictl processes, each a
// new connection, until stopped, counting failures.
type load struct {
	stop       chan struct{}
	wg         sync.WaitGroup
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
}

func startLoad(workers int) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if out, err := Crictl("ps", "-q"); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, strings.TrimSpace(out))
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

func (l *load) finish() (ok, failed int64, errs []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.errs
}

// kubeletCallErrors are the lines of the kubelet's log that show a call to
// the runtime failing.
func kubeletCallErrors(t *testing.T, j *Journal) []string {
	t.Helper()
	var bad []string
	for _, l := range strings.Split(j.Text(t), "\n") {
		switch {
		case strings.Contains(l, "code = Unimplemented"):
			// containerd 1.7 lacks some newer methods; not a failed call.
		case strings.Contains(l, "rpc error"), strings.Contains(l, "code = Unavailable"),
			strings.Contains(l, "Probe failed"), strings.Contains(l, "connection refused"),
			strings.Contains(l, "ContainerRuntimeDown"), strings.Contains(l, "PLEG is not healthy"):
			bad = append(bad, l)
		}
	}
	return bad
}

func dpkgStatus(name string) string {
	out, _ := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", name).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// TestPackage is the .deb's life on a node whose kubelet runs pods, in
// order: remove is refused while the kubelet uses cri-guard (the drop-in,
// then the KubeletConfiguration fragment); after `kubelet-dropin remove`
// the kubelet talks to containerd and remove and purge leave nothing but
// what the README says; a fresh install by docs/provisioning.md's
// cloud-init script restarts nothing; an upgrade to a newer build under
// load fails no call. Through all of it the pod's containers keep their
// IDs and restart counts. At the end the node is as run.sh left it: the
// package installed (the newer build) and the kubelet through its drop-in.
func TestPackage(t *testing.T) {
	debs, _ := filepath.Glob(filepath.Join(pkgDir, "cri-guard_*_amd64.deb"))
	nexts, _ := filepath.Glob(filepath.Join(pkgNextDir, "cri-guard_*_amd64.deb"))
	if len(debs) == 0 {
		t.Skip("cri-guard was installed by make install, not from a .deb (make package, then make test-node)")
	}
	if len(debs) != 1 || len(nexts) != 1 {
		t.Fatalf("want one .deb in %s and one in %s, have %q and %q", pkgDir, pkgNextDir, debs, nexts)
	}
	deb, next := debs[0], nexts[0]
	t0 := time.Now()
	// done logs the end of a step with the time since the start (for the
	// reader: no check depends on it).
	done := func(step string) { t.Logf("[%s] step %s done", time.Since(t0).Round(100*time.Millisecond), step) }
	origConfig, err := os.ReadFile(GuardConfig)
	if err != nil {
		t.Fatal(err)
	}
	if st := dpkgStatus("cri-guard"); !strings.HasPrefix(st, "ii ") {
		t.Fatalf("cri-guard not installed from the .deb at boot: %q", st)
	}
	if ep := kubeletEndpoint(t); ep != GuardEndpoint {
		t.Fatalf("the kubelet's endpoint is %q, want cri-guard's (run.sh: cri-guard kubelet-dropin install)", ep)
	}

	WriteStaticPod(t, pkgPod("pkg", true))
	want := waitRunning(t, "pkg", HangGuard)
	t.Logf("pod: %s", want)

	// 1. Remove is refused while the kubelet's drop-in is in place.
	out, err := Run("dpkg", "-r", "cri-guard")
	if err == nil || !strings.Contains(out, "refusing to remove cri-guard") || !strings.Contains(out, "10-cri-guard.conf") {
		t.Fatalf("dpkg -r with the kubelet drop-in active: err %v\n%s", err, out)
	}
	// dpkg keeps the package installed ("ri": selected for removal,
	// installed, no error flag).
	if st := dpkgStatus("cri-guard"); len(st) < 3 || st[1:3] != "i " {
		t.Fatalf("after the refused remove: %q", st)
	}
	if s := unitProp(t, "cri-guard.service", "ActiveState"); s != "active" {
		t.Fatalf("after the refused remove cri-guard.service is %s", s)
	}
	t.Logf("dpkg -r refused: %s", strings.TrimSpace(out))
	done("1 (remove refused: drop-in)")

	// 2. docs/provisioning.md's KubeletConfiguration fragment instead of
	// the drop-in: `kubelet-dropin remove` takes the drop-in out, restarts
	// the kubelet and reports the file still pointing it at cri-guard; the
	// kubelet, without the flag, talks through cri-guard; remove is refused.
	origKubelet, err := os.ReadFile(kubeletConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubeletConfig, append(append([]byte{}, origKubelet...), kubeletFragment...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(kubeletConfig, origKubelet, 0o644) })
	// Whatever happens below, leave the node as run.sh made it: the package
	// installed, the kubelet through its drop-in, the config as it was.
	t.Cleanup(func() { restoreNode(t, deb, origConfig, origKubelet) })
	pid0 := unitProp(t, "kubelet.service", "MainPID")
	out, err = Run("cri-guard", "kubelet-dropin", "remove")
	if err == nil || !strings.Contains(out, "the kubelet is still pointed at cri-guard:\n  "+kubeletConfig+": containerRuntimeEndpoint: unix:///run/cri-guard/cri-guard.sock") {
		t.Fatalf("kubelet-dropin remove with the fragment in the kubelet's config: err %v\n%s", err, out)
	}
	if pid := unitProp(t, "kubelet.service", "MainPID"); pid == pid0 {
		t.Fatalf("kubelet-dropin remove did not restart the kubelet (MainPID %s)", pid)
	}
	kubeletHealthy(t)
	if ep := kubeletEndpoint(t); ep != "" {
		t.Fatalf("the kubelet still has --container-runtime-endpoint=%s", ep)
	}
	kubeletThroughGuard(t)
	waitPodState(t, "pkg", want, "after the kubelet's restart onto containerRuntimeEndpoint")
	out, err = Run("dpkg", "-r", "cri-guard")
	if err == nil || !strings.Contains(out, kubeletConfig+": containerRuntimeEndpoint") {
		t.Fatalf("dpkg -r with containerRuntimeEndpoint in the kubelet's config: err %v\n%s", err, out)
	}
	t.Log("KubeletConfiguration fragment: the kubelet talks through cri-guard without the drop-in; dpkg -r refused")
	done("2 (KubeletConfiguration fragment)")

	// 3. Undo it: the kubelet talks to containerd; cri-guard relays nothing.
	if err := os.WriteFile(kubeletConfig, origKubelet, 0o644); err != nil {
		t.Fatal(err)
	}
	Systemctl(t, "restart", "kubelet.service")
	kubeletHealthy(t)
	waitPodState(t, "pkg", want, "after the kubelet's restart onto containerd")
	if out, err := Run("cri-guard", "kubelet-dropin", "status"); err == nil || !strings.Contains(out, "nothing points the kubelet at cri-guard") {
		t.Fatalf("kubelet-dropin status: %v\n%s", err, out)
	}
	c0 := guardCalls(t)
	if c0 < 0 {
		t.Fatal("cri-guard's metrics do not answer (metricsListen: 127.0.0.1:9464, run.sh)")
	}
	time.Sleep(5 * time.Second) // the probes call the runtime every second
	if c1 := guardCalls(t); c1 != c0 {
		t.Fatalf("cri-guard relayed %v calls after the kubelet was pointed back at containerd", c1-c0)
	}
	kubeletPID := unitProp(t, "kubelet.service", "MainPID")
	done("3 (kubelet back on containerd)")

	// 4. Remove: both units stop; the config stays; the kubelet and the pod
	// are untouched.
	out = MustRun(t, "dpkg", "-r", "cri-guard")
	t.Logf("dpkg -r:\n%s", out)
	for _, u := range []string{"cri-guard.service", "cri-guard.socket"} {
		if s := unitProp(t, u, "ActiveState"); s != "inactive" {
			t.Errorf("after dpkg -r %s is %s", u, s)
		}
	}
	if _, err := os.Stat("/usr/bin/cri-guard"); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r /usr/bin/cri-guard: %v", err)
	}
	if _, err := os.Stat(GuardConfig); err != nil {
		t.Errorf("dpkg -r removed the config: %v", err)
	}
	t.Logf("left after remove: %q", leftovers(t))
	done("4 (remove)")

	// 5. Purge: nothing of cri-guard is left; the kubelet starts a new pod
	// through containerd.
	MustRun(t, "dpkg", "-P", "cri-guard")
	if left := leftovers(t); len(left) > 0 {
		t.Errorf("after dpkg -P, left on the node: %q", left)
	}
	if st := dpkgStatus("cri-guard"); strings.HasPrefix(st, "ii") || strings.HasPrefix(st, "rc") {
		t.Errorf("dpkg still knows cri-guard: %q", st)
	}
	WriteStaticPod(t, pkgPod("pkg2", false))
	waitRunning(t, "pkg2", 2*HangGuard)
	RemoveStaticPod(t, "pkg2")
	if pid := unitProp(t, "kubelet.service", "MainPID"); pid != kubeletPID {
		t.Errorf("remove or purge restarted the kubelet (MainPID %s -> %s)", kubeletPID, pid)
	}
	waitPodState(t, "pkg", want, "after remove and purge")
	t.Log("remove and purge: the kubelet runs pods through containerd; nothing of cri-guard left")
	done("5 (purge, new pod through containerd)")

	// 6. A fresh install on this node: cri-guard starts, the kubelet and
	// the pod are untouched, the drop-in stays inactive.
	out = MustRun(t, "dpkg", "-i", deb)
	t.Logf("dpkg -i:\n%s", out)
	for _, u := range []string{"cri-guard.service", "cri-guard.socket"} {
		if s := unitProp(t, u, "ActiveState"); s != "active" {
			t.Errorf("after dpkg -i %s is %s", u, s)
		}
		if s := unitProp(t, u, "UnitFileState"); s != "enabled" {
			t.Errorf("after dpkg -i %s is %s", u, s)
		}
	}
	if _, err := CrictlDirect("version"); err != nil {
		t.Fatal(err)
	}
	if _, err := Crictl("version"); err != nil {
		t.Fatalf("cri-guard does not answer after dpkg -i: %v", err)
	}
	if pid := unitProp(t, "kubelet.service", "MainPID"); pid != kubeletPID {
		t.Errorf("dpkg -i restarted the kubelet (MainPID %s -> %s)", kubeletPID, pid)
	}
	if ep := kubeletEndpoint(t); ep != "" {
		t.Errorf("after dpkg -i the kubelet has --container-runtime-endpoint=%s", ep)
	}
	if _, err := os.Stat("/etc/systemd/system/kubelet.service.d/10-cri-guard.conf"); !os.IsNotExist(err) {
		t.Errorf("dpkg -i put the kubelet drop-in in place: %v", err)
	}
	waitPodState(t, "pkg", want, "after a fresh install")
	done("6 (fresh install)")

	// 7. docs/provisioning.md's cloud-init script, as the shell it runs (a
	// re-run of dpkg -i, as when cloud-init runs again): audit, metrics,
	// status, the drop-in. The kubelet is restarted onto cri-guard; the pod
	// is not.
	if b, err := os.ReadFile(deb); err != nil || os.WriteFile("/var/tmp/cri-guard.deb", b, 0o644) != nil {
		t.Fatalf("copying the .deb: %v", err)
	}
	cmd := exec.Command("sh", "-c", provisionScript)
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	b, err := cmd.CombinedOutput()
	t.Logf("provisioning script:\n%s", b)
	if err != nil {
		t.Fatalf("provisioning script: %v", err)
	}
	os.Remove("/var/tmp/cri-guard.deb")
	kubeletHealthy(t)
	if ep := kubeletEndpoint(t); ep != GuardEndpoint {
		t.Fatalf("after the provisioning script the kubelet's endpoint is %q", ep)
	}
	kubeletThroughGuard(t)
	waitPodState(t, "pkg", want, "after the provisioning script")
	cfg, _ := os.ReadFile(GuardConfig)
	if !strings.Contains(string(cfg), "\nmode: audit\n") {
		t.Fatalf("the script's config has no mode: audit:\n%s", cfg)
	}
	done("7 (provisioning script)")

	// 8. Upgrade to a newer build under load: the service restarts onto
	// the new binary, the edited config is kept, and neither the kubelet
	// nor the crictl loop sees a failed call.
	v0 := dpkgStatus("cri-guard")
	guardPID := unitProp(t, "cri-guard.service", "MainPID")
	kubeletPID = unitProp(t, "kubelet.service", "MainPID")
	j := MarkJournal(t, "kubelet")
	gj := MarkJournal(t, "cri-guard")
	// One crictl loop: each call is a new process and connection, enough
	// to have calls in flight across the handover; a second loop only kept
	// both vCPUs busy under TCG and slowed the step (124 s; 83 s with one).
	l := startLoad(1)
	time.Sleep(3 * time.Second)
	out, err = Run("dpkg", "-i", next)
	time.Sleep(5 * time.Second)
	ok, failed, errs := l.finish()
	t.Logf("dpkg -i %s:\n%s", filepath.Base(next), out)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	v1 := dpkgStatus("cri-guard")
	ver := strings.TrimPrefix(v1, "ii ")
	if v1 == v0 || !strings.HasPrefix(v1, "ii ") || !strings.Contains(filepath.Base(next), "_"+ver+"_") {
		t.Errorf("after the upgrade: %q (before %q)", v1, v0)
	}
	if out := MustRun(t, "cri-guard", "version"); !strings.HasPrefix(out, "cri-guard "+ver+" ") {
		t.Errorf("cri-guard version after the upgrade: %q, want %s", out, ver)
	}
	if pid := unitProp(t, "cri-guard.service", "MainPID"); pid == guardPID || pid == "0" {
		t.Errorf("the upgrade did not restart cri-guard.service (MainPID %s -> %s)", guardPID, pid)
	}
	// The handover, not a restart: the new process took the sockets over
	// from the old one (a stop and start would close the connections and
	// fail the calls in flight).
	var took []string
	for _, l := range gj.Lines(t, "took over from the running daemon") {
		if strings.HasSuffix(l, " pid="+guardPID) {
			took = append(took, l)
		}
	}
	if len(took) != 1 {
		t.Errorf("the upgrade did not hand over from pid %s (systemctl reload); cri-guard's log:\n%s", guardPID, gj.Text(t))
	}
	if pid := unitProp(t, "kubelet.service", "MainPID"); pid != kubeletPID {
		t.Errorf("the upgrade restarted the kubelet (MainPID %s -> %s)", kubeletPID, pid)
	}
	if after, _ := os.ReadFile(GuardConfig); string(after) != string(cfg) {
		t.Errorf("the upgrade changed /etc/cri-guard/config.yaml:\n%s", after)
	}
	t.Logf("upgrade %s -> %s under load: %d crictl calls through cri-guard, %d failed", v0, v1, ok, failed)
	if failed > 0 || ok == 0 {
		t.Errorf("crictl through cri-guard during the upgrade: %d ok, %d failed: %q", ok, failed, errs)
	}
	if bad := kubeletCallErrors(t, j); len(bad) > 0 {
		t.Errorf("the kubelet logged %d failed runtime calls during the upgrade:\n%s", len(bad), strings.Join(bad, "\n"))
	}
	waitPodState(t, "pkg", want, "after the upgrade")
	done("8 (upgrade under load)")
}

// restoreNode leaves the node as run.sh made it: cri-guard installed (the
// build it has, or deb), its config as it was, the kubelet through the
// drop-in.
func restoreNode(t *testing.T, deb string, config, kubelet []byte) {
	os.WriteFile(kubeletConfig, kubelet, 0o644)
	if !strings.HasPrefix(dpkgStatus("cri-guard"), "ii ") {
		if out, err := Run("dpkg", "-i", deb); err != nil {
			t.Errorf("restoring the package: %v\n%s", err, out)
		}
	}
	os.WriteFile(GuardConfig, config, 0o644)
	Run("systemctl", "restart", "cri-guard.service")
	// (install restarts the kubelet: only when the drop-in is not there.)
	if _, err := os.Stat(dropIn); err != nil {
		Run("cri-guard", "kubelet-dropin", "install")
	}
	Poll(t, "cri-guard answering after the restore", HangGuard, func() (bool, string) {
		_, err := Crictl("version")
		return err == nil, fmt.Sprint(err)
	})
	kubeletHealthy(t)
}
