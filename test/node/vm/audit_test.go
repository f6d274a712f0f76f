package vm

import (
	"fmt"
	"strings"
	"testing"
)

// TestAuditModeExplainsScopeFailure is step 1 of the README's rollout on
// this node: in mode: audit cri-guard lets a 2000-byte pod through (and
// counts it), so the runtime's own error comes back. On cgroup v2 with the
// systemd driver that error is runc's `unable to start unit
// "cri-containerd-<id>.scope" ... got 'failed'`; cri-guard must explain it
// with the cgroup's memory.events evidence and keep the runtime's text
// after "runtime error: ". The kubelet logs what it got.
func TestAuditModeExplainsScopeFailure(t *testing.T) {
	SetGuardConfig(t, "mode: audit")
	labels := map[string]string{"action": "audit", "namespace": "default"}
	before := Metric(Metrics(t), "cri_guard_policy_decisions_total", labels)
	log := MarkJournal(t, "kubelet")
	WriteStaticPod(t, StaticPod("audit2k", sleeper("app", "2000")))

	var failed []string
	Poll(t, "a failed attempt of default/audit2k-node in the kubelet log", HangGuard, func() (bool, string) {
		failed = nil
		for _, l := range log.Lines(t, `pod="default/audit2k-node"`) {
			if strings.Contains(l, "rpc error") {
				failed = append(failed, l)
			}
		}
		return len(failed) > 0, fmt.Sprintf("%d lines", len(failed))
	})
	l := failed[0]
	t.Logf("kubelet: %s", l)
	for _, want := range []string{
		"cri-guard: pod default/audit2k-node",
		"memory.events",
		"runtime error: ",
		`unable to start unit \"cri-containerd-`,
	} {
		if !strings.Contains(l, want) {
			t.Errorf("the kubelet's error lacks %q", want)
		}
	}
	if got := Metric(Metrics(t), "cri_guard_policy_decisions_total", labels); got <= before {
		t.Errorf("cri_guard_policy_decisions_total{action=audit} = %v, was %v: the audit was not counted", got, before)
	}
}
