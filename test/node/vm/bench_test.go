package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bench settings: the issue's "20 running pods, 2 minutes of the kubelet's
// steady state, 10 pod starts each way".
const (
	benchPods   = 20
	benchSteady = 2 * time.Minute
	benchStarts = 10
)

// unitCPU returns the CPU time a systemd service's cgroup has used (its
// cpu.stat usage_usec; containerd.service includes the runc shims).
func unitCPU(t *testing.T, unit string) time.Duration {
	t.Helper()
	cg := "/sys/fs/cgroup/system.slice/" + unit
	return time.Duration(CgroupKey(t, cg, "cpu.stat", "usage_usec")) * time.Microsecond
}

// unitRSS returns the VmRSS of a service's main process, in bytes.
func unitRSS(t *testing.T, unit string) int64 {
	t.Helper()
	pid := strings.TrimSpace(Systemctl(t, "show", "-p", "MainPID", "--value", unit))
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for %s (pid %s)", unit, pid)
	return 0
}

// startPods starts n static pods one after the other and returns each one's
// time from manifest written to container running, as the kubelet reports
// on /pods (polled every 250 ms), and the names of the pods it started. One
// pod started first is not counted: the first start after a boot or a
// kubelet restart pays for warming up.
func startPods(t *testing.T, prefix string, n int) ([]time.Duration, []string) {
	t.Helper()
	names := []string{prefix + "warmup"}
	WriteStaticPod(t, StaticPod(names[0], sleeper("app", "32Mi")))
	WaitRunning(t, names[0])
	var ds []time.Duration
	for i := range n {
		name := fmt.Sprintf("%s%d", prefix, i)
		names = append(names, name)
		t0 := time.Now()
		WriteStaticPod(t, StaticPod(name, sleeper("app", "32Mi")))
		WaitRunning(t, name)
		ds = append(ds, time.Since(t0))
	}
	return ds, names
}

// removePods removes the manifests of all the static pods at once, then
// waits until each is gone: the kubelet removes dead sandboxes in its
// garbage collection, once a minute, so one pod at a time would cost a
// minute each.
func removePods(t *testing.T, names []string) {
	t.Helper()
	for _, n := range names {
		os.Remove(filepath.Join(ManifestDir, n+".json"))
	}
	for _, n := range names {
		RemoveStaticPod(t, n)
	}
}

// versionField returns the field'th word (from 0) of a command's first
// output line.
func versionField(t *testing.T, field int, name string, args ...string) string {
	t.Helper()
	line, _, _ := strings.Cut(MustRun(t, name, args...), "\n")
	if f := strings.Fields(line); len(f) > field {
		return f[field]
	}
	return "?"
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestBenchNode measures cri-guard's cost on this node (`make bench-node`;
// skipped by `make test-node`): with benchPods pods running, the CPU time
// cri-guard, containerd (with its shims) and the kubelet use over
// benchSteady of the kubelet's steady state, their RSS, and the time from
// a static pod's manifest to its container running, through cri-guard and
// with the kubelet talking to containerd directly. Ratios matter, not the
// absolute figures: under TCG every figure is inflated.
func TestBenchNode(t *testing.T) {
	host, _ := os.ReadFile("/share/host.txt")
	viaGuard, started := startPods(t, "start-guard-", benchStarts)
	removePods(t, started)
	// The steady-state pods start together (their start is not measured).
	var steady []string
	for i := range benchPods {
		name := fmt.Sprintf("steady-%d", i)
		steady = append(steady, name)
		WriteStaticPod(t, StaticPod(name, sleeper("app", "32Mi")))
	}
	for _, name := range steady {
		WaitRunning(t, name)
	}
	// Let the last starts' follow-up work (status, probes of the new
	// sandboxes) pass before the window opens.
	time.Sleep(15 * time.Second)

	units := []string{"cri-guard.service", "containerd.service", "kubelet.service"}
	cpu0 := map[string]time.Duration{}
	for _, u := range units {
		cpu0[u] = unitCPU(t, u)
	}
	time.Sleep(benchSteady) // the measurement window itself, not a wait for a condition
	cpu := map[string]time.Duration{}
	rss := map[string]int64{}
	for _, u := range units {
		cpu[u] = unitCPU(t, u) - cpu0[u]
		rss[u] = unitRSS(t, u)
	}
	removePods(t, steady)

	// Direct: the kubelet without the drop-in, as after a rollback.
	saved, err := os.ReadFile(dropIn)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(dropIn)
	restartKubelet(t)
	t.Cleanup(func() {
		os.MkdirAll(filepath.Dir(dropIn), 0o755)
		os.WriteFile(dropIn, saved, 0o644)
		restartKubelet(t)
	})
	if ep := kubeletEndpoint(t); ep != "" {
		t.Fatalf("kubelet still has --container-runtime-endpoint=%s", ep)
	}
	direct, started := startPods(t, "start-direct-", benchStarts)
	removePods(t, started)

	pct := func(a, b time.Duration) string { return fmt.Sprintf("%.1f%%", 100*a.Seconds()/b.Seconds()) }
	var b strings.Builder
	fmt.Fprintf(&b, "## cri-guard on the node VM\n\n")
	fmt.Fprintf(&b, "%s. Machine: %s. Node: Debian trixie, systemd %s, cgroup v2, containerd %s (systemd driver), kubelet %s standalone.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(host)), versionField(t, 1, "systemctl", "--version"),
		versionField(t, 2, "containerd", "--version"), versionField(t, 1, "kubelet", "--version"))
	fmt.Fprintf(&b, "| %d pods, %s steady state | CPU time | CPU vs containerd | CPU vs kubelet | RSS (main process) |\n|---|---|---|---|---|\n", benchPods, benchSteady)
	for _, u := range units {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f MiB |\n", strings.TrimSuffix(u, ".service"), cpu[u].Round(time.Millisecond),
			pct(cpu[u], cpu["containerd.service"]), pct(cpu[u], cpu["kubelet.service"]), float64(rss[u])/(1<<20))
	}
	fmt.Fprintf(&b, "\nCPU time is each unit's cgroup (cpu.stat usage_usec): containerd's includes its %d runc shims.\n", benchPods)
	fmt.Fprintf(&b, "\n| pod start (manifest written -> container running), %d pods each | median | min | max |\n|---|---|---|---|\n", benchStarts)
	for _, r := range []struct {
		name string
		ds   []time.Duration
	}{{"through cri-guard", viaGuard}, {"direct to containerd", direct}} {
		s := append([]time.Duration(nil), r.ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.name, median(s).Round(10*time.Millisecond), s[0].Round(10*time.Millisecond), s[len(s)-1].Round(10*time.Millisecond))
	}
	fmt.Fprintf(&b, "\nratio of medians (through cri-guard / direct): %.2f\n", median(viaGuard).Seconds()/median(direct).Seconds())
	fmt.Print(b.String())
	if err := os.WriteFile("/share/out/bench-node.md", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
