package vm

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// upgradeCRIError matches kubelet error lines about the runtime.
var upgradeCRIError = regexp.MustCompile(`^E\d{4} .*(rpc error|[Rr]untime|PodSandbox|ImageFsInfo|[Ee]viction|PLEG|GetContainerEvents)`)

// podContainers returns name -> "id restarts" of the pod's containers.
func podContainers(pod *corev1.Pod) map[string]string {
	m := map[string]string{}
	for _, cs := range pod.Status.ContainerStatuses {
		m[cs.Name] = fmt.Sprintf("%s restarts=%d", cs.ContainerID, cs.RestartCount)
	}
	return m
}

// mainPID is cri-guard.service's main process as systemd sees it.
func mainPID(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(Systemctl(t, "show", "-p", "MainPID", "--value", "cri-guard.service"))
}

// TestReloadAndUpgradeUnderKubelet (issue 17) uses the unit's ExecReload
// under a running kubelet with a running pod, on a real systemd:
//   - a refused config makes `systemctl reload cri-guard` fail, and the
//     daemon keeps serving with its last good config;
//   - after the binary is replaced as a package does (a new file renamed
//     over the old), `systemctl reload cri-guard` hands over to it: systemd
//     follows the new main PID, the kubelet logs no CRI error, the pod
//     keeps its containers.
func TestReloadAndUpgradeUnderKubelet(t *testing.T) {
	WriteStaticPod(t, StaticPod("upgrade", corev1.Container{Name: "app", Command: []string{"sleep", "100000"}, Resources: MemoryLimit("64Mi")}))
	before := podContainers(WaitRunning(t, "upgrade"))

	// A refused config.
	orig, err := os.ReadFile(GuardConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(GuardConfig, orig, 0o644) })
	if err := os.WriteFile(GuardConfig, append(append([]byte{}, orig...), "\nmode: block\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := mainPID(t)
	out, err := Run("systemctl", "reload", "cri-guard.service")
	if err == nil {
		t.Errorf("systemctl reload with a refused config succeeded:\n%s", out)
	}
	st, _ := Run("systemctl", "status", "--no-pager", "-n", "5", "cri-guard.service")
	t.Logf("systemctl reload with mode: block: %v\n%s", err, st)
	if !strings.Contains(st, `must be reject, raise or audit`) {
		t.Errorf("systemctl status does not show why the reload failed:\n%s", st)
	}
	if got := mainPID(t); got != pid {
		t.Errorf("main PID %s after a refused reload, was %s", got, pid)
	}
	if _, err := Crictl("version"); err != nil {
		t.Errorf("cri-guard after a refused reload: %v", err)
	}
	if err := os.WriteFile(GuardConfig, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	Systemctl(t, "reload", "cri-guard.service")

	// The upgrade: the same binary as a new file, as dpkg installs one.
	exe, err := os.Readlink("/proc/" + pid + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	MustRun(t, "cp", "-p", exe, exe+".dpkg-new")
	if err := os.Rename(exe+".dpkg-new", exe); err != nil {
		t.Fatal(err)
	}
	log := MarkJournal(t, "kubelet")
	guardLog := MarkJournal(t, "cri-guard")
	t0 := time.Now()
	Systemctl(t, "reload", "cri-guard.service")
	took := time.Since(t0)
	newPID := mainPID(t)
	if newPID == pid || newPID == "0" {
		t.Errorf("main PID %s after the upgrade, was %s: systemd did not follow the handover", newPID, pid)
	}
	oldGone := func() (bool, string) {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		return err != nil || strings.Contains(string(b), ") Z "), string(b)
	}
	defer func() {
		// An old process that does not exit: its goroutines say why
		// (Go prints them on SIGQUIT, to the journal).
		if gone, _ := oldGone(); gone || !t.Failed() {
			return
		}
		if n, err := strconv.Atoi(pid); err == nil && syscall.Kill(n, syscall.SIGQUIT) == nil {
			time.Sleep(2 * time.Second)
			t.Logf("old process %s after SIGQUIT:\n%s", pid, guardLog.Text(t))
		}
	}()
	Poll(t, "the old process gone", HangGuard, oldGone)
	active := strings.TrimSpace(Systemctl(t, "show", "-p", "ActiveState", "--value", "cri-guard.service"))
	if active != "active" {
		t.Errorf("cri-guard.service is %s after the upgrade", active)
	}
	Poll(t, "kubelet relisting through the new cri-guard", HangGuard, func() (bool, string) {
		_, err := Crictl("pods")
		return err == nil, fmt.Sprint(err)
	})
	after := podContainers(WaitRunning(t, "upgrade"))
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("containers before the upgrade %v, after %v", before, after)
	}
	var errs []string
	for _, l := range strings.Split(log.Text(t), "\n") {
		if upgradeCRIError.MatchString(l) {
			errs = append(errs, l)
		}
	}
	t.Logf("upgrade by systemctl reload: took %s, main PID %s -> %s, kubelet CRI errors: %d\ncri-guard log:\n%s",
		took.Round(time.Millisecond), pid, newPID, len(errs), guardLog.Text(t))
	for _, e := range errs {
		t.Errorf("kubelet CRI error during the upgrade: %s", e)
	}
}
