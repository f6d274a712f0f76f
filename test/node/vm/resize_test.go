package vm

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestResizeBelowFloorRefused: an UpdateContainerResources to 2000 bytes,
// sent with crictl through cri-guard's socket (a standalone kubelet gets no
// resizes), is refused with cri-guard's message; the container keeps
// running with its limit unchanged in memory.max, and a resize above the
// floor still goes through.
func TestResizeBelowFloorRefused(t *testing.T) {
	WriteStaticPod(t, StaticPod("resized", corev1.Container{
		Name: "app", Command: []string{"sleep", "100000"}, Resources: MemoryLimit("64Mi"),
	}))
	pod := WaitRunning(t, "resized")
	id := ContainerID(t, pod, "app")
	scope := ContainerCgroup(t, pod, id)

	out, err := Crictl("update", "--memory", "2000", id)
	if err == nil {
		t.Fatalf("crictl update --memory 2000 through cri-guard succeeded: %s", out)
	}
	want := "memory limit 2000 bytes is below the 12Mi minimum needed to start a container"
	if !strings.Contains(out, want) || !strings.Contains(out, "InvalidArgument") {
		t.Errorf("crictl update said %q, want InvalidArgument with %q", out, want)
	}
	if got := CgroupFile(t, scope, "memory.max"); got != "67108864" {
		t.Errorf("memory.max after the refused resize = %s, want 67108864", got)
	}
	if out, err := Crictl("update", "--memory", "100663296", id); err != nil {
		t.Errorf("resize to 96Mi through cri-guard: %v", err)
	} else if got := CgroupFile(t, scope, "memory.max"); got != "100663296" {
		t.Errorf("memory.max after the 96Mi resize = %s, want 100663296 (%s)", got, out)
	}
	after := FindPod(t, "resized")
	if after == nil || after.Status.ContainerStatuses[0].State.Running == nil ||
		ContainerID(t, after, "app") != id || after.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("after the resizes the kubelet reports %+v, want the same container running", after)
	}
}
