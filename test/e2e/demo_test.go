package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cri-guard/cri-guard/internal/demo"
	"github.com/cri-guard/cri-guard/internal/harness"
)

// TestDemo runs `make demo`'s program end to end and checks the lines that
// the demo exists to show, step by step.
func TestDemo(t *testing.T) {
	requireE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := os.Getenv("CRI_GUARD_BIN")
	if bin == "" {
		dir := t.TempDir()
		root, err := filepath.Abs("../..")
		if err != nil {
			t.Fatal(err)
		}
		if bin, err = harness.BuildGuard(ctx, root, dir); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	start := time.Now()
	err := demo.Run(ctx, demo.Options{Binary: bin, Out: &out})
	t.Logf("demo took %s; output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatal(err)
	}
	steps := regexp.MustCompile(`(?m)^\d\. .*\n=+\n`).Split(out.String(), -1)
	if len(steps) != 5 {
		t.Fatalf("want a preamble and 4 steps, got %d parts", len(steps))
	}
	// The incident, directly: runc's words, nothing about limits, in the
	// wrapping of the containerd version the demo ran (the same build as
	// the shared runtime's: both follow CRI_GUARD_CONTAINERD_DIR).
	rt, _ := sharedRuntime(t)
	incident := map[int][]string{
		1: {"Directly to containerd: RunPodSandbox demo/tiny\n   -> Unknown: failed to create containerd task: ", ": cannot allocate memory: unknown\n"},
		2: {"Directly to containerd: RunPodSandbox demo/tiny\n   -> Unknown: failed to start sandbox \"", "\": failed to create containerd task: ", ": cannot allocate memory\n"},
	}[rt.Major]
	if incident == nil {
		t.Fatalf("no expected incident text for containerd %s", rt.Version)
	}
	for i, want := range [][]string{
		{"Scratch directory: /tmp/cg-demo-", "the host's containerd, if any, is not used or touched"},
		append(incident,
			"Through cri-guard: the same RunPodSandbox\n   -> InvalidArgument: pod demo/tiny: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?\n",
		),
		{
			"Directly to containerd: CreateContainer, then StartContainer\n   -> ok\n   -> Unknown: ",
			"unable to set memory limit to 2000 (current usage: ",
			"Through cri-guard: CreateContainer\n   -> InvalidArgument: pod demo/app, container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?\n",
			"--mode raise: CreateContainer, then StartContainer\n   -> ok\n   -> ok\n",
			"raised to 12Mi",
			"   = 12582912 (the floor, 12Mi); the container runs\n",
		},
		{"Through cri-guard: RunPodSandbox demo/small\n   -> "},
		{
			"RunPodSandbox demo/web\n   -> ok\nCreateContainer web\n   -> ok\nStartContainer web\n   -> ok\n",
			"exec: echo hello from a container started through cri-guard\n   hello from a container started through cri-guard\n",
			"/kubepods/burstable/podweb-",
			"\nCleaned up: ",
		},
	} {
		for _, w := range want {
			if !strings.Contains(steps[i], w) {
				t.Errorf("part %d of the output lacks %q", i, w)
			}
		}
	}

	// Step 3 explains the OOM, keeps runc's words, and explain gives a verdict.
	// The kernel line the explanation cites names the pod cgroup that
	// explain found for demo/small.
	podCgroup := "<no pod cgroup in explain's output>"
	if m := regexp.MustCompile(`\n   pod cgroup: (/\S+/podsmall-\S+)\n`).FindStringSubmatch(steps[3]); m != nil {
		podCgroup = m[1]
	}
	for _, w := range []string{
		"the pod sandbox (pause container) was OOM-killed while starting (evidence: ",
		// The evidence is the call's own: counters over the call, each
		// figure with its cgroup, the kernel's line from this pod's cgroup.
		" during the call",
		"the pod cgroup's peak usage since it was created is ",
		"kernel, during the call, in the pod's cgroup: oom-kill:",
		"oom_memcg=" + podCgroup + ",",
		"; runtime error: ",
		"container init was OOM-killed (memory limit too low?)",
		"\ncri-guard explain ",
		// Found by name, though it never started: through the call the
		// running cri-guard saw fail (issue 16 item 11).
		"\n   pod demo/small (uid small-",
		"\n   RunPodSandbox calls that created no sandbox, as the running cri-guard saw them:\n     uid small-",
		"  attempt 0  failed in the runtime  1 call, from ",
		"\n       Unknown: cri-guard: pod demo/small: memory limit 1048576 bytes (1Mi): the pod sandbox (pause container) was OOM-killed while starting",
		"\n   note: never created: found through the RunPodSandbox calls the running cri-guard (pid ",
		"verdict: the pod's memory limit, 1048576 bytes (1Mi), is too small",
		"fix: set the pod's memory limit to at least 12Mi",
	} {
		if !strings.Contains(steps[3], w) {
			t.Errorf("step 3 lacks %q", w)
		}
	}
	// The scratch directory is gone.
	if m := regexp.MustCompile(`Scratch directory: (\S+) `).FindStringSubmatch(out.String()); m != nil {
		if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
			t.Errorf("scratch directory %s left behind (%v)", m[1], err)
		}
	}
}

// TestRun runs `make run`'s program: it serves until cancelled (Ctrl-C in
// make run), a kubelet client works through the socket it prints, and it
// cleans everything up when cancelled.
func TestRun(t *testing.T) {
	_, bin := sharedRuntime(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out harness.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- demo.Serve(ctx, demo.Options{Binary: bin, Out: &out}) }()

	socket := regexp.MustCompile(`cri-guard listens on (\S+)`)
	deadline := time.Now().Add(2 * time.Minute)
	var m []string
	for m = socket.FindStringSubmatch(out.String()); m == nil; m = socket.FindStringSubmatch(out.String()) {
		select {
		case err := <-done:
			t.Fatalf("make run ended early: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run never printed its socket:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "--runtime-endpoint unix://"+m[1]) {
		t.Errorf("no crictl line for %s:\n%s", m[1], out.String())
	}
	if _, err := kubelet(t, "unix://"+m[1]).Version(context.Background(), ""); err != nil {
		t.Errorf("Version through make run's cri-guard: %v", err)
	}

	cancel() // as Ctrl-C does
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("make run on Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("make run did not stop on Ctrl-C")
	}
	if !strings.Contains(out.String(), "\nCleaned up: ") {
		t.Errorf("no cleanup report:\n%s", out.String())
	}
	if sd := regexp.MustCompile(`Scratch directory: (\S+) `).FindStringSubmatch(out.String()); sd == nil {
		t.Errorf("no scratch directory printed")
	} else if _, err := os.Stat(sd[1]); !os.IsNotExist(err) {
		t.Errorf("scratch directory %s left behind (%v)", sd[1], err)
	}
}
