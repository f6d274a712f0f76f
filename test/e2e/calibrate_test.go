package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
	"github.com/cri-guard/cri-guard/pkg/calibrate"
	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/podcgroup"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// calibration is the part of `cri-guard calibrate --json` the test reads.
type calibration struct {
	Runtime        string            `json:"runtime"`
	Step           int64             `json:"step"`
	Sandbox        *calibrate.Result `json:"sandbox"`
	Container      *calibrate.Result `json:"container"`
	SandboxFloor   int64             `json:"sandboxMinMemory"`
	ContainerFloor int64             `json:"containerMinMemory"`
	Snippet        string            `json:"snippet"`
	Seconds        float64           `json:"seconds"`
}

// calibrationParent is a cgroup parent of this test process's own, so that
// "nothing left" is about this test alone.
func calibrationParent() string {
	return fmt.Sprintf("/cri-guard-calibrate-e2e-%d", os.Getpid())
}

// calibrationTmp is the TMPDIR of the calibrations this test process runs,
// where they put their log directories; like calibrationParent, it keeps
// "nothing left" about this test alone when other runs share the machine.
func calibrationTmp(t *testing.T) string {
	t.Helper()
	d := filepath.Join(os.TempDir(), fmt.Sprintf("cg-calibrate-e2e-%d", os.Getpid()))
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// calibrateCmd is `cri-guard calibrate args...` with this test's TMPDIR.
func calibrateCmd(ctx context.Context, t *testing.T, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, append([]string{"calibrate"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+calibrationTmp(t))
	return cmd
}

func runCalibrate(t *testing.T, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := calibrateCmd(ctx, t, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// requireNothingLeft fails if a calibration pod, container or cgroup is
// still there.
func requireNothingLeft(t *testing.T, rt *harness.Runtime, parent string) {
	t.Helper()
	ctx := context.Background()
	pods, err := rt.CRI.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.GetItems() {
		if p.GetMetadata().GetNamespace() == calibrate.Namespace {
			t.Errorf("sandbox left in %s: %s (%s)", calibrate.Namespace, p.GetMetadata().GetName(), p.GetId())
		}
	}
	ctrs, err := rt.CRI.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ctrs.GetContainers() {
		if c.GetLabels()[calibrate.RunLabel] != "" {
			t.Errorf("container left: %s (%s)", c.GetMetadata().GetName(), c.GetId())
		}
	}
	cg, err := podcgroup.Detect(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range cg.Hierarchies() {
		if _, err := os.Stat(filepath.Join(h, parent)); err == nil {
			t.Errorf("calibration cgroup left: %s", filepath.Join(h, parent))
		}
	}
	if m, _ := filepath.Glob(filepath.Join(calibrationTmp(t), "cri-guard-calibrate-*")); len(m) > 0 {
		t.Errorf("log directories left: %v", m)
	}
}

func TestCalibrate(t *testing.T) {
	rt, bin := sharedRuntime(t)
	parent := calibrationParent()
	const step = 512 * policy.KiB // the default
	args := []string{"--upstream", rt.Endpoint, "--cgroup-parent", parent, "--json"}

	var runs []calibration
	for i, extra := range [][]string{{"--with-container", rt.BusyboxRef}, nil} {
		stdout, stderr, err := runCalibrate(t, bin, append(args, extra...)...)
		if err != nil {
			t.Fatalf("run %d: %v\nstderr:\n%s", i+1, err, stderr)
		}
		var c calibration
		if err := json.Unmarshal([]byte(stdout), &c); err != nil {
			t.Fatalf("run %d: output is not the JSON report: %v\n%s", i+1, err, stdout)
		}
		t.Logf("run %d: sandbox threshold %s (failed at %s: %s), floor %s, %.1fs",
			i+1, policy.Bytes(c.Sandbox.Threshold), policy.Bytes(c.Sandbox.Failed), c.Sandbox.Reason, policy.Quantity(c.SandboxFloor), c.Seconds)
		requireNothingLeft(t, rt, parent)
		runs = append(runs, c)
	}

	for i, c := range runs {
		if c.Sandbox == nil || c.Sandbox.Threshold < policy.MiB || c.Sandbox.Threshold > 8*policy.MiB || c.Sandbox.AtMin {
			t.Errorf("run %d: sandbox threshold %+v is not between 1 MiB and 8 MiB", i+1, c.Sandbox)
		}
		if c.Step != step {
			t.Errorf("run %d: step %d, want %d", i+1, c.Step, step)
		}
		// The snippet is a configuration cri-guard accepts, with the
		// recommended floors.
		f := filepath.Join(t.TempDir(), "cri-guard.yaml")
		if err := os.WriteFile(f, []byte(c.Snippet), 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := config.Load(f)
		if err != nil {
			t.Fatalf("run %d: snippet %q: %v", i+1, c.Snippet, err)
		}
		cfg, err := config.Resolve(file)
		if err != nil {
			t.Fatalf("run %d: snippet %q: %v", i+1, c.Snippet, err)
		}
		if got := cfg.Policy.Floors.Sandbox; got != c.SandboxFloor || got != calibrate.Recommend(c.Sandbox.Threshold) {
			t.Errorf("run %d: snippet sandbox floor %d, report says %d", i+1, got, c.SandboxFloor)
		}
	}
	if d := runs[0].Sandbox.Threshold - runs[1].Sandbox.Threshold; d > step || d < -step {
		t.Errorf("the runs disagree by more than one step: %d and %d", runs[0].Sandbox.Threshold, runs[1].Sandbox.Threshold)
	}
	if c := runs[0].Container; c == nil || c.Threshold <= 0 || c.Threshold > 64*policy.MiB || runs[0].ContainerFloor != calibrate.Recommend(c.Threshold) {
		t.Errorf("container result %+v, floor %d", c, runs[0].ContainerFloor)
	} else {
		t.Logf("container threshold %s (failed at %s: %s), floor %s", policy.Bytes(c.Threshold), policy.Bytes(c.Failed), c.Reason, policy.Quantity(runs[0].ContainerFloor))
	}
	if runs[1].Container != nil {
		t.Errorf("run without --with-container reported a container result")
	}
}

// calibrate refuses cri-guard's socket: it relays Version, so the runtime
// name alone would not tell.
func TestCalibrateRefusesGuardSocket(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	parent := calibrationParent()
	_, stderr, err := runCalibrate(t, bin, "--upstream", g.Endpoint, "--cgroup-parent", parent)
	if err == nil {
		t.Fatalf("calibrate ran against cri-guard's socket:\n%s", stderr)
	}
	for _, want := range []string{"not a container runtime", "served by cri-guard", "calibrate against its upstream, " + rt.Endpoint, "--force"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
	requireNothingLeft(t, rt, parent)

	// --force goes on, warning; a one-point search above cri-guard's
	// default floor is enough to see it run through the proxy.
	stdout, stderr, err := runCalibrate(t, bin, "--upstream", g.Endpoint, "--cgroup-parent", parent, "--force",
		"--min", "16Mi", "--max", "16Mi", "--attempts", "1", "--confirm", "0", "--json")
	if err != nil {
		t.Fatalf("calibrate --force: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "warning: ") || !strings.Contains(stderr, "going on (--force)") {
		t.Errorf("calibrate --force did not warn:\n%s", stderr)
	}
	var c calibration
	if err := json.Unmarshal([]byte(stdout), &c); err != nil || c.Sandbox == nil || c.Sandbox.Threshold != 16*policy.MiB {
		t.Errorf("calibrate --force report: %v\n%s", err, stdout)
	}
	requireNothingLeft(t, rt, parent)
}

// An interrupted calibration removes what it created.
func TestCalibrateInterrupted(t *testing.T) {
	rt, bin := sharedRuntime(t)
	parent := calibrationParent()
	cmd := calibrateCmd(context.Background(), t, bin, "--upstream", rt.Endpoint, "--cgroup-parent", parent, "--with-container", rt.BusyboxRef)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	seen := 0
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "calibrate: pod at ") {
			if seen++; seen == 4 { // mid-search, with pods coming and going
				break
			}
		}
	}
	if seen < 4 {
		cmd.Wait()
		t.Fatalf("calibrate ended before it was interrupted:\n%s", log.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for sc.Scan() { // read to the end before Wait, as StderrPipe requires
			log.WriteString(sc.Text() + "\n")
		}
		done <- cmd.Wait()
	}()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("calibrate did not stop within 2 minutes of SIGINT")
	}
	if err == nil {
		t.Errorf("interrupted calibrate exited 0")
	}
	requireNothingLeft(t, rt, parent)
	if t.Failed() {
		t.Logf("calibrate stderr:\n%s", log.String())
	}
}
