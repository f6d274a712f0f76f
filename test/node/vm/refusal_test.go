package vm

import (
	"fmt"
	"strings"
	"testing"
)

// TestRefusalQuotesTheCgroupLimit: a refusal quotes the limit the decision
// used (issue 15: the decision used the pod slice, the message the
// request's Linux.Resources). A kubelet sizes the pod slice and the
// sandbox's Linux.Resources from the same pod limits, so on a real node the
// two differ by the kernel's rounding: a pod of 2000 bytes gets a slice
// whose memory.max reads 0. With the sandbox floor at 1Ki the 2000 bytes
// asked are above it and the slice's 0 is below: cri-guard refuses on the
// slice and must say so, not that 2000 bytes are below 1Ki.
func TestRefusalQuotesTheCgroupLimit(t *testing.T) {
	SetGuardConfig(t, "sandboxMinMemory: 1Ki")
	log := MarkJournal(t, "kubelet")
	WriteStaticPod(t, StaticPod("rounded", sleeper("app", "2000")))

	var failed []string
	Poll(t, "a refused CreatePodSandbox of default/rounded-node in the kubelet log", HangGuard, func() (bool, string) {
		failed = log.Lines(t, `"CreatePodSandbox for pod failed"`, `pod="default/rounded-node"`)
		return len(failed) > 0, fmt.Sprintf("%d lines", len(failed))
	})
	l := failed[0]
	t.Logf("kubelet: %s", l)

	p := FindPod(t, "rounded")
	if p == nil {
		t.Fatal("the kubelet does not report default/rounded-node on /pods")
	}
	slice := PodCgroup(t, p)
	if got := CgroupFile(t, slice, "memory.max"); got != "0" {
		t.Fatalf("%s/memory.max = %q, want 0 (2000 bytes rounded down to whole pages): this scenario's premise does not hold", slice, got)
	}
	want := "pod default/rounded-node: memory limit 0 bytes (the pod cgroup's limit: the kernel rounds limits down to whole pages, so the 2000 bytes the pod asked for read back as 0 bytes) is below the 1Ki minimum needed to start the pod sandbox"
	if !strings.Contains(l, want) {
		t.Errorf("the kubelet's error lacks\n%s", want)
	}
	if strings.Contains(l, "memory limit 2000 bytes is below the 1Ki minimum") {
		t.Errorf("the refusal quotes the 2000 bytes asked, which are above the 1Ki floor, not the slice's 0 bytes that the decision used")
	}
}
