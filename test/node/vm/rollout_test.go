package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// installedByPackage says whether cri-guard came onto this node as its
// package (run.sh), rather than from `make install`.
func installedByPackage(t *testing.T) bool {
	t.Helper()
	by, err := os.ReadFile("/run/cri-guard-installed-by")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(by)) == "package"
}

// packageDropIn is the kubelet drop-in the package ships, inactive.
const packageDropIn = "/usr/share/cri-guard/10-cri-guard.conf"

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
	waitKubelet(t)
}

// waitKubelet waits until the kubelet answers its health check.
func waitKubelet(t *testing.T) {
	t.Helper()
	Poll(t, "kubelet healthy", HangGuard, func() (bool, string) {
		_, err := get(KubeletURL + "/healthz")
		return err == nil, errString(err)
	})
}

// readmeBlocks returns the README's node-rollout shell blocks by name: each
// ```sh block right after a `<!-- node-rollout: NAME -->` line, dedented.
// The host stages README.md at /inputs/README.md.
func readmeBlocks(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/inputs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		name, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "<!-- node-rollout: ")
		if !ok {
			continue
		}
		name = strings.TrimSuffix(name, " -->")
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "```sh" {
			t.Fatalf("README.md:%d: node-rollout %s is not followed by a ```sh block", i+1, name)
		}
		indent := lines[i+1][:strings.Index(lines[i+1], "```")]
		var body []string
		for i += 2; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], indent))
		}
		if i == len(lines) {
			t.Fatalf("README.md: node-rollout %s: the block never ends", name)
		}
		blocks[name] = strings.Join(body, "\n") + "\n"
	}
	return blocks
}

// runBlock runs one of the README's blocks as written, with sh -e (a
// failing command fails the step), in dir.
func runBlock(t *testing.T, blocks map[string]string, name, dir string) string {
	t.Helper()
	script, ok := blocks[name]
	if !ok {
		t.Fatalf("README.md has no node-rollout block %q", name)
	}
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	t.Logf("README step %s:\n%s%s", name, indent(script), indent(string(out)))
	if err != nil {
		t.Fatalf("README step %s: %v", name, err)
	}
	return string(out)
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n    ") + "\n"
}

// setConfig sets a top-level key of cri-guard's config file, the edit the
// README leaves to the operator: the key's line replaced, or appended.
func setConfig(t *testing.T, key, value string) {
	t.Helper()
	b, err := os.ReadFile(GuardConfig)
	if err != nil {
		t.Fatal(err)
	}
	line := key + ": " + value
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `:.*$`)
	s := string(b)
	if re.MatchString(s) {
		s = re.ReplaceAllLiteralString(s, line)
	} else {
		s = strings.TrimSuffix(s, "\n") + "\n" + line + "\n"
	}
	if err := os.WriteFile(GuardConfig, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// debDirOf returns the directory under /inputs whose .deb is the version
// now installed (TestPackage leaves the newer build), so that the README's
// `dpkg -i cri-guard_*_amd64.deb` reinstalls what the node had.
func debDirOf(t *testing.T, version string) string {
	t.Helper()
	for _, dir := range []string{"/inputs/pkg", "/inputs/pkg-next"} {
		debs, _ := filepath.Glob(dir + "/cri-guard_*_amd64.deb")
		for _, d := range debs {
			if v, err := Run("dpkg-deb", "-f", d, "Version"); err == nil && strings.TrimSpace(v) == version {
				return dir
			}
		}
	}
	t.Fatalf("no staged .deb of cri-guard %s in /inputs/pkg or /inputs/pkg-next", version)
	return ""
}

// TestReadmeRollbackAndRollout runs the README's "Rollback" (full) and then
// its "Node rollout": the README's own shell blocks, as written, read from
// the README the host staged, with the config edits its prose asks for
// made here, on this node with a pod running throughout: the pod keeps
// its containers, the kubelet follows the drop-in, and each step's check
// (check-config, `cri-guard status`, the audit counter, the reload to
// reject) holds. A README edit that breaks the procedure fails here.
func TestReadmeRollbackAndRollout(t *testing.T) {
	if !installedByPackage(t) {
		t.Skip("the README's rollout is the package's; this node has cri-guard from make install")
	}
	blocks := readmeBlocks(t)
	baseConfig, err := os.ReadFile(GuardConfig)
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(MustRun(t, "dpkg-query", "-W", "-f", "${Version}", "cri-guard"))
	debDir := debDirOf(t, version)
	// Whatever happens below, leave the node as the next scenario expects
	// it: installed, enabled, the base config, the kubelet through cri-guard.
	t.Cleanup(func() {
		if _, err := os.Stat("/usr/bin/cri-guard"); err != nil {
			debs, _ := filepath.Glob(debDir + "/cri-guard_*_amd64.deb")
			Run("dpkg", append([]string{"-i", "--force-confold"}, debs...)...)
		}
		os.WriteFile(GuardConfig, baseConfig, 0o644)
		Run("systemctl", "daemon-reload")
		Run("systemctl", "enable", "--now", "cri-guard.socket", "cri-guard.service")
		Run("systemctl", "restart", "cri-guard.service")
		if _, err := os.Stat(dropIn); err != nil {
			Run("install", "-D", "-m", "0644", packageDropIn, dropIn)
			restartKubelet(t)
		}
	})
	WriteStaticPod(t, StaticPod("survivor", sleeper("app", "64Mi")))
	before := containers(WaitRunning(t, "survivor"))
	if got := kubeletEndpoint(t); got != GuardEndpoint {
		t.Fatalf("kubelet runs with --container-runtime-endpoint=%q, want cri-guard's %s (the drop-in)", got, GuardEndpoint)
	}

	// Rollback, full: the drop-in out (the kubelet restarts onto the
	// runtime), then the package removed.
	runBlock(t, blocks, "remove", "/")
	waitKubelet(t)
	if got := kubeletEndpoint(t); got != "" {
		t.Errorf("after the rollback the kubelet runs with --container-runtime-endpoint=%q", got)
	}
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
		t.Errorf("the rollback removed the config: %v", err)
	}

	// Rollout 1: install (the kubelet stays on the runtime); mode: audit
	// and metricsListen on the first nodes; check and apply.
	runBlock(t, blocks, "install", debDir)
	if got := kubeletEndpoint(t); got != "" {
		t.Errorf("installing the package pointed the kubelet at %q", got)
	}
	setConfig(t, "mode", "audit")
	setConfig(t, "metricsListen", "127.0.0.1:9464")
	runBlock(t, blocks, "audit", "/")
	// Rollout 2: status shows the runtime READY and answering.
	if st := runBlock(t, blocks, "status", "/"); !strings.Contains(st, "READY") {
		t.Errorf("cri-guard status after the install:\n%s", st)
	}
	// Rollout 3: the drop-in; the kubelet restarts onto cri-guard and
	// finds the same containers.
	runBlock(t, blocks, "wire", "/")
	waitKubelet(t)
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
	setConfig(t, "mode", "reject")
	runBlock(t, blocks, "reject", "/")
	log = MarkJournal(t, "kubelet")
	Poll(t, "the 2000-byte pod refused after the reload to reject", HangGuard, func() (bool, string) {
		l := log.Lines(t, `"CreatePodSandbox for pod failed"`, `pod="default/rollout2k-node"`, "below the 12Mi minimum", "InvalidArgument")
		return len(l) > 0, "not yet"
	})
	if now := Systemctl(t, "show", "-p", "MainPID", "--value", "cri-guard.service"); now != pid {
		t.Errorf("the reload restarted cri-guard: MainPID %s, then %s", strings.TrimSpace(pid), strings.TrimSpace(now))
	}
}
