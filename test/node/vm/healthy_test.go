package vm

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestHealthyPod: a 64Mi pod runs through cri-guard, under systemd scopes
// of the systemd cgroup driver with its limit in memory.max; `crictl logs`
// and `crictl exec` through cri-guard's socket work (streaming through the
// relay), and cri-guard counted the kubelet's calls.
func TestHealthyPod(t *testing.T) {
	calls := Metric(Metrics(t), "cri_guard_requests_total", map[string]string{"method": "/runtime.v1.RuntimeService/RunPodSandbox", "code": "OK"})
	WriteStaticPod(t, StaticPod("healthy", corev1.Container{
		Name:      "app",
		Command:   []string{"sh", "-c", "echo hello from healthy; exec sleep 100000"},
		Resources: MemoryLimit("64Mi"),
	}))
	pod := WaitRunning(t, "healthy")
	id := ContainerID(t, pod, "app")

	scope := ContainerCgroup(t, pod, id)
	if got := CgroupFile(t, scope, "memory.max"); got != "67108864" {
		t.Errorf("%s/memory.max = %s, want 67108864", scope, got)
	}
	if got := Metric(Metrics(t), "cri_guard_requests_total", map[string]string{"method": "/runtime.v1.RuntimeService/RunPodSandbox", "code": "OK"}); got < calls+1 {
		t.Errorf("cri_guard_requests_total{RunPodSandbox,OK} = %v, was %v before: the kubelet's sandbox did not go through cri-guard", got, calls)
	}

	var logs string
	Poll(t, "crictl logs through cri-guard", HangGuard, func() (bool, string) {
		out, err := Crictl("logs", id)
		logs = out
		return err == nil && strings.Contains(out, "hello from healthy"), out + errString(err)
	})
	// Inside, the container's cgroup namespace makes its scope the root:
	// /sys/fs/cgroup/memory.max is the container's limit.
	out, err := Crictl("exec", id, "sh", "-c", "echo exec says $((6*7)); cat /sys/fs/cgroup/memory.max")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "exec says 42\n67108864") {
		t.Errorf("crictl exec through cri-guard said %q, want \"exec says 42\" and the limit 67108864", out)
	}
	t.Logf("logs %q, exec %q", strings.TrimSpace(logs), strings.TrimSpace(out))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " " + err.Error()
}
