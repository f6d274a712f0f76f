package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// runExplain runs `cri-guard explain` against the runtime directly.
func runExplain(t *testing.T, rt *harness.Runtime, bin, pod string) string {
	t.Helper()
	// --timeout: a hang guard, not explain's 10 s default.
	out, err := exec.Command(bin, "explain", "--runtime-endpoint", rt.Endpoint, "--cgroup-search", rt.CgroupRoot, "--timeout", "2m", pod).CombinedOutput()
	if err != nil {
		t.Fatalf("cri-guard explain %s: %v\n%s", pod, err, out)
	}
	t.Logf("cri-guard explain %s:\n%s", pod, out)
	return string(out)
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// A pod whose limit lets runc begin but not finish: the kubelet sees why.
func TestOOMAtSandboxStartExplained(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin, "--sandbox-min-memory", "512Ki")
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()

	u := uid(t)
	parent, err := rt.CreatePodCgroup(u, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cfg := podConfig("oom-"+u, u, parent, 1<<20)
	id, err := rs.RunPodSandbox(ctx, cfg, "")
	if err == nil {
		rt.CRI.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		rt.CRI.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		t.Fatal("a 1Mi pod started; this test needs one that runc cannot start")
	}
	msg := status.Convert(err).Message()
	t.Logf("the kubelet sees: %s", msg)
	wantLines(t, "the error", msg,
		"cri-guard: pod e2e/"+cfg.Metadata.Name+": memory limit 1048576 bytes (1Mi): the pod sandbox (pause container) was OOM-killed while starting (evidence: the pod cgroup hit its limit ",
		"kernel, during the call, in the pod's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg="+parent+",task_memcg="+parent+"/",
		"; fix: set the memory limit to at least 12Mi; runtime error: ",
		"container init was OOM-killed (memory limit too low?)")
	if i := strings.Index(msg, "; runtime error: "); i < 0 || !g.WaitLog("memory failure explained", time.Minute) {
		t.Errorf("no explanation logged")
	}

	out := runExplain(t, rt, bin, u)
	wantLines(t, "explain", out,
		"pod <never created> (uid "+u+")",
		"sandboxes: 0",
		"pod cgroup: "+parent+"\n  limit 1048576 bytes (1Mi), ",
		"oom-kill:constraint=CONSTRAINT_MEMCG",
		"verdict: the pod's memory limit, 1048576 bytes (1Mi), is too small to start a container (runc and the pause process need a few MiB); no pod sandbox exists: RunPodSandbox keeps failing (the kernel logged 1 oom-kill in this pod's cgroups)",
		"fix: set the pod's memory limit to at least 12Mi")
}

// An application that outgrows its limit: ContainerStatus says by how much.
func TestOOMKilledContainerExplained(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()
	sb, cfg := runningPod(t, rt, rs, 256<<20)

	hog := containerConfig(rt, "hog", 16<<20)
	hog.Command = []string{"sh", "-c", "x=$(yes | head -c 67108864); sleep 100"}
	id, err := rs.CreateContainer(ctx, sb, hog, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	var st *runtimeapi.ContainerStatusResponse
	for deadline := time.Now().Add(3 * time.Minute); ; { // a hang guard
		st, err = rs.ContainerStatus(ctx, id, false)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	s := st.GetStatus()
	t.Logf("through cri-guard: state %v reason %q exit %d message %q", s.GetState(), s.GetReason(), s.GetExitCode(), s.GetMessage())
	if s.GetReason() != "OOMKilled" {
		t.Fatalf("the hog ended with %v %q, not OOMKilled", s.GetState(), s.GetReason())
	}
	wantLines(t, "the status message", s.GetMessage(),
		"cri-guard: pod e2e/"+cfg.Metadata.Name+": container hog was OOM-killed: its memory limit is 16777216 bytes (16Mi), ",
		"peak usage ",
		"; fix: raise the memory limit above 16Mi or make the program use less memory")
	direct, err := rt.CRI.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil || direct.GetStatus().GetReason() != "OOMKilled" || strings.Contains(direct.GetStatus().GetMessage(), "cri-guard") {
		t.Errorf("direct status: %v %q %v", direct.GetStatus().GetReason(), direct.GetStatus().GetMessage(), err)
	}

	out := runExplain(t, rt, bin, "e2e/"+cfg.Metadata.Name)
	wantLines(t, "explain", out,
		"pod e2e/"+cfg.Metadata.Name+" (uid "+cfg.Metadata.Uid+")",
		"sandboxes: 1\n  "+sb[:13]+"  attempt 0  SANDBOX_READY",
		"  hog  attempt 0  CONTAINER_EXITED  reason OOMKilled  exit code 137  limit 16777216 bytes (16Mi)",
		"limit 268435456 bytes (256Mi)",
		"verdict: container hog was OOM-killed (the kernel logged 1 oom-kill in this pod's cgroups)",
		"fix: raise the memory limit of hog above its peak usage, or make it use less memory")
}

func TestExplainHealthyPod(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()
	sb, cfg := runningPod(t, rt, rs, 256<<20)
	id, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "app", 64<<20), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	out := runExplain(t, rt, bin, sb)
	wantLines(t, "explain", out,
		"pod e2e/"+cfg.Metadata.Name+" (uid "+cfg.Metadata.Uid+")",
		"  app  attempt 0  CONTAINER_RUNNING  limit 67108864 bytes (64Mi)",
		"oom_kill 0",
		"kernel: no oom-kill line for this pod",
		"verdict: no sign of memory trouble: no OOM kill in the pod cgroup and no container OOMKilled")
	if strings.Contains(out, "fix:") {
		t.Errorf("a fix for a healthy pod:\n%s", out)
	}
}

// With the container floor lowered to nothing, a 2000-byte container
// reaches runc, which fails at StartContainer and at a resize; cri-guard
// looks the container up and explains both (issue 4's StartContainer and
// UpdateContainerResources paths, on the real runtime).
func TestStartAndResizeFailuresExplained(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin, "--container-min-memory", "1")
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()
	sb, cfg := runningPod(t, rt, rs, 256<<20)
	pod := "cri-guard: pod e2e/" + cfg.Metadata.Name + ": "

	id, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "tiny", 2000), cfg)
	if err != nil {
		t.Fatalf("CreateContainer with the floor lowered: %v", err)
	}
	err = rs.StartContainer(ctx, id)
	msg := status.Convert(err).Message()
	t.Logf("StartContainer: %s", msg)
	wantLines(t, "the StartContainer error", msg,
		pod+"the runtime could not set the memory limit of container tiny to 2000 bytes: it already uses ",
		"; fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 3Mi); runtime error: ", "unable to set memory limit to 2000 (current usage: ")
	// The container's status (the kubelet's lastState) carries the same
	// explanation, not only runc's text (issue 16 item 11).
	st, err := rs.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ContainerStatus after the failed start: %q %q", st.GetStatus().GetReason(), st.GetStatus().GetMessage())
	if r := st.GetStatus().GetReason(); r != "StartError" {
		t.Errorf("status reason %q, want StartError", r)
	}
	if i := strings.Index(msg, "; runtime error: "); i > 0 {
		wantLines(t, "the status message", st.GetStatus().GetMessage(), msg[:i]+"; runtime error: ", "unable to set memory limit to 2000 (current usage: ")
	}

	app, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "app", 64<<20), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, app); err != nil {
		t.Fatal(err)
	}
	err = rs.UpdateContainerResources(ctx, app, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}})
	msg = status.Convert(err).Message()
	t.Logf("UpdateContainerResources: %s", msg)
	wantLines(t, "the UpdateContainerResources error", msg,
		pod+"the runtime could not set the memory limit of container app to 2000 bytes: it already uses ",
		"; runtime error: ", "unable to set memory limit to 2000 (current usage: ")
}
