package vm

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// sleeper is a busybox container that runs until stopped.
func sleeper(name, limit string) corev1.Container {
	c := corev1.Container{Name: name, Command: []string{"sleep", "100000"}}
	if limit != "" {
		c.Resources = MemoryLimit(limit)
	}
	return c
}

// TestIncident is the incident on a real node: a static pod with
// limits.memory "2000" (bytes, meant as 2000Mi). The kubelet logs
// cri-guard's refusal on every attempt and retries; containerd never sees
// a sandbox; the pod status the kubelet computes stays Pending with the
// container waiting in ContainerCreating (a sandbox failure has no place
// in a container status: the kubelet keeps its message for the log and
// the FailedCreatePodSandBox event); the policy metric counts each
// refusal.
func TestIncident(t *testing.T) {
	const attempts = 3
	log := MarkJournal(t, "kubelet")
	labels := map[string]string{"action": "reject", "reason": "sandbox-below-floor", "namespace": "default"}
	before := Metric(Metrics(t), "cri_guard_policy_decisions_total", labels)

	WriteStaticPod(t, StaticPod("tiny", sleeper("app", "2000")))

	want := []string{
		"pod default/tiny-node: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox",
		"did you mean 2000Mi?",
		"code = InvalidArgument",
	}
	var failed []string
	Poll(t, fmt.Sprintf("%d refused CreatePodSandbox attempts in the kubelet log", attempts), HangGuard, func() (bool, string) {
		failed = log.Lines(t, `"CreatePodSandbox for pod failed"`, `pod="default/tiny-node"`)
		return len(failed) >= attempts, fmt.Sprintf("%d attempts", len(failed))
	})
	for i, l := range failed {
		for _, w := range want {
			if !strings.Contains(l, w) {
				t.Errorf("kubelet log line %d lacks %q:\n%s", i, w, l)
			}
		}
	}
	t.Logf("kubelet: %s", failed[0])

	// The retry cadence: the kubelet keeps retrying (its pod worker backs
	// off on errors); the gaps are printed, not asserted (TCG, busy host).
	var gaps []string
	prev, _ := KlogTime(failed[0])
	for _, l := range failed[1:] {
		ts, ok := KlogTime(l)
		if !ok {
			t.Errorf("no klog time in %q", l)
			continue
		}
		gaps = append(gaps, ts.Sub(prev).Round(100*time.Millisecond).String())
		prev = ts
	}
	t.Logf("retry gaps: %s", strings.Join(gaps, " "))

	// The policy metric counted each refusal exactly once: its growth
	// equals the refusals the kubelet logged. A refusal is counted before
	// the kubelet logs it, so read the metric first and the log after, and
	// look again until the two agree (the kubelet retries every ~12 s, so
	// a quiet moment comes); a count that never agrees fails at the guard.
	Poll(t, "cri_guard_policy_decisions_total to grow by the refusals the kubelet logged", HangGuard, func() (bool, string) {
		d := Metric(Metrics(t), "cri_guard_policy_decisions_total", labels) - before
		logged := len(log.Lines(t, `"CreatePodSandbox for pod failed"`, `pod="default/tiny-node"`))
		return d == float64(logged), fmt.Sprintf("went up by %v, the kubelet logged %d refusals", d, logged)
	})

	// Nothing reached containerd.
	if out, err := CrictlDirect("pods", "-q", "--label", "io.kubernetes.pod.name=tiny-node"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("containerd has sandboxes of tiny-node: %q %v", out, err)
	}

	// The pod status the kubelet computes.
	p := FindPod(t, "tiny")
	if p == nil {
		t.Fatal("the kubelet does not report default/tiny-node on /pods")
	}
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("phase %q, want Pending", p.Status.Phase)
	}
	if len(p.Status.ContainerStatuses) != 1 {
		t.Fatalf("container statuses: %+v", p.Status.ContainerStatuses)
	}
	cs := p.Status.ContainerStatuses[0]
	if cs.ContainerID != "" || cs.State.Waiting == nil || cs.State.Waiting.Reason != "ContainerCreating" {
		t.Errorf("container status %+v, want waiting in ContainerCreating with no container ID", cs)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReadyToStartContainers && c.Status != corev1.ConditionFalse {
			t.Errorf("condition %s is %s, want False (no sandbox)", c.Type, c.Status)
		}
	}
}

// TestIncidentContainerInStatus: when the pod's own limit passes the floor
// but one container's does not, the sandbox starts and cri-guard refuses
// CreateContainer for that container. That refusal lands in the pod status
// the kubelet computes: the container waits with reason
// CreateContainerError and cri-guard's message, while its sibling runs.
func TestIncidentContainerInStatus(t *testing.T) {
	WriteStaticPod(t, StaticPod("halftiny", sleeper("big", "64Mi"), sleeper("small", "2000")))
	want := "pod default/halftiny-node, container small: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?"
	var last corev1.ContainerStatus
	Poll(t, "container small waiting with cri-guard's message, big running", HangGuard, func() (bool, string) {
		p := FindPod(t, "halftiny")
		if p == nil {
			return false, "no pod"
		}
		var small, big bool
		for _, cs := range p.Status.ContainerStatuses {
			switch cs.Name {
			case "small":
				last = cs
				small = cs.State.Waiting != nil && cs.State.Waiting.Reason == "CreateContainerError"
			case "big":
				big = cs.State.Running != nil
			}
		}
		return small && big, fmt.Sprintf("%+v", p.Status.ContainerStatuses)
	})
	if !strings.Contains(last.State.Waiting.Message, want) {
		t.Errorf("waiting message %q, want it to contain %q", last.State.Waiting.Message, want)
	}
	t.Logf("pod status of container small: %s: %s", last.State.Waiting.Reason, last.State.Waiting.Message)
}
