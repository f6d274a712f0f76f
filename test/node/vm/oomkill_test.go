package vm

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestOOMKilledWhileRunning: a container with a 32Mi limit that runs, then
// allocates 64Mi, is OOM-killed by the kernel. The pod status the kubelet
// computes has lastState.terminated with reason OOMKilled and cri-guard's
// explanation as its message (the limit, the peak, the pod cgroup's
// oom_kill counter), and the pod's cgroup v2 memory.events agrees.
func TestOOMKilledWhileRunning(t *testing.T) {
	WriteStaticPod(t, StaticPod("oomer", corev1.Container{
		Name:      "hog",
		Command:   []string{"sh", "-c", "echo running; sleep 2; exec dd if=/dev/zero of=/dev/null bs=64M count=1"},
		Resources: MemoryLimit("32Mi"),
	}))
	var term *corev1.ContainerStateTerminated
	var pod *corev1.Pod
	Poll(t, "hog's lastState terminated OOMKilled", HangGuard, func() (bool, string) {
		pod = FindPod(t, "oomer")
		if pod == nil || len(pod.Status.ContainerStatuses) != 1 {
			return false, "no status yet"
		}
		cs := pod.Status.ContainerStatuses[0]
		term = cs.LastTerminationState.Terminated
		return term != nil, fmt.Sprintf("%+v", cs)
	})
	t.Logf("lastState.terminated: reason %s, exit %d, message %q", term.Reason, term.ExitCode, term.Message)
	if term.Reason != "OOMKilled" {
		t.Errorf("reason %q, want OOMKilled", term.Reason)
	}
	for _, want := range []string{
		"cri-guard: pod default/oomer-node: container hog was OOM-killed: its memory limit is 33554432 bytes (32Mi)",
		"peak usage ",
		"oom_kill counter is ",
		"fix: raise the memory limit above 32Mi",
	} {
		if !strings.Contains(term.Message, want) {
			t.Errorf("message lacks %q:\n%s", want, term.Message)
		}
	}
	// The node's own evidence: cgroup v2 counts the kill in the pod's
	// memory.events (hierarchical), and the limit is in the pod slice.
	cg := PodCgroup(t, pod)
	if n := CgroupKey(t, cg, "memory.events", "oom_kill"); n < 1 {
		t.Errorf("%s/memory.events oom_kill = %d, want >= 1", cg, n)
	}
	t.Logf("%s: memory.max %s, memory.events %q", cg, CgroupFile(t, cg, "memory.max"), CgroupFile(t, cg, "memory.events"))
}
