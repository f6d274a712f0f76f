package oom

import (
	"testing"
	"time"

	"github.com/cri-guard/cri-guard/pkg/attempts"
)

var (
	t0          = time.Date(2026, 12, 1, 19, 40, 0, 0, time.UTC)
	tinyRefusal = "pod kube-system/tiny-node1: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"
	refusedTiny = attempts.Attempt{Namespace: "kube-system", Name: "tiny-node1", UID: "9a1e", Attempt: 2, CgroupParent: "/kubepods/burstable/pod9a1e",
		Outcome: attempts.Refused, Code: "InvalidArgument", Message: tinyRefusal, First: t0, Last: t0.Add(20 * time.Second), Calls: 3}
)

func TestJudge(t *testing.T) {
	tiny := &Cgroup{Path: "/k/pod1", Read: true, Limit: 1 << 20, OOMKills: 4}
	big := &Cgroup{Path: "/k/pod1", Read: true, Limit: 256 << 20, OOMKills: 1}
	for name, tc := range map[string]struct {
		r            Report
		verdict, fix string
	}{
		"never created": {
			r:       Report{Cgroup: tiny},
			verdict: "the pod's memory limit, 1048576 bytes (1Mi), is too small to start a container (runc and the pause process need a few MiB); no pod sandbox exists: RunPodSandbox keeps failing (the pod cgroup's oom_kill counter is 4)",
			fix:     "set the pod's memory limit to at least 12Mi",
		},
		"bytes": {
			r:       Report{Cgroup: &Cgroup{Read: true, Limit: 0}, Sandboxes: []Sandbox{{State: "SANDBOX_NOTREADY"}}},
			verdict: "the pod's memory limit, 0 bytes, is too small to start a container (runc and the pause process need a few MiB); its sandbox is not ready",
			fix:     "a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi",
		},
		"never created, refused by cri-guard: what the kubelet was told, over the rounded cgroup": {
			r:       Report{Cgroup: &Cgroup{Read: true, Limit: 0}, Attempts: []attempts.Attempt{refusedTiny}},
			verdict: "no pod sandbox exists: cri-guard refused its RunPodSandbox (3 calls, the last at 2026-12-01 19:40:20 UTC): InvalidArgument: " + tinyRefusal,
		},
		"never created, failed in the runtime": {
			r:       Report{Attempts: []attempts.Attempt{{Outcome: attempts.Failed, Code: "Unknown", Message: "failed to pull image", Calls: 1, Last: t0}}},
			verdict: "no pod sandbox exists: the runtime failed its RunPodSandbox (1 call, the last at 2026-12-01 19:40:00 UTC): Unknown: failed to pull image",
		},
		"never created, failed in the runtime at a tiny limit: the cgroup's evidence decides": {
			r:       Report{Cgroup: tiny, Attempts: []attempts.Attempt{{Outcome: attempts.Failed, Code: "Unknown", Message: "cri-guard: ... OOM-killed while starting", Calls: 1, Last: t0}}},
			verdict: "the pod's memory limit, 1048576 bytes (1Mi), is too small to start a container (runc and the pause process need a few MiB); no pod sandbox exists: RunPodSandbox keeps failing (the pod cgroup's oom_kill counter is 4)",
			fix:     "set the pod's memory limit to at least 12Mi",
		},
		"a sandbox exists: earlier failures do not decide": {
			r:       Report{Cgroup: &Cgroup{Read: true, Limit: 256 << 20}, Sandboxes: []Sandbox{{State: "SANDBOX_READY"}}, Attempts: []attempts.Attempt{refusedTiny}},
			verdict: "no sign of memory trouble: no OOM kill in the pod cgroup and no container OOMKilled",
		},
		"container killed": {
			r:       Report{Cgroup: big, Kernel: []string{"a", "b"}, Sandboxes: []Sandbox{{State: "SANDBOX_READY"}}, Containers: []Container{{Name: "app", Reason: "OOMKilled"}, {Name: "app", Reason: "OOMKilled"}}},
			verdict: "container app was OOM-killed (the pod cgroup's oom_kill counter is 1; the kernel logged 2 oom-kills in this pod's cgroups)",
			fix:     "raise the memory limit of app above its peak usage, or make it use less memory",
		},
		"cgroup v1: the containers' cgroups count the kills, the pod's does not": {
			r: Report{Cgroup: &Cgroup{Read: true, Version: 1, Limit: 256 << 20}, Kernel: []string{"a", "b", "c", "d"},
				Containers: []Container{{Name: "app", Cgroup: &Cgroup{Read: true, Version: 1, OOMKills: 3}}, {Name: "side", Cgroup: &Cgroup{Read: true, Version: 1, OOMKills: 1}}}},
			verdict: "processes in the pod were OOM-killed (the containers' cgroups count 4 oom-kills; the kernel logged 4 oom-kills in this pod's cgroups)",
			fix:     "raise the memory limit of the container that uses the most memory",
		},
		"kernel only (cgroup v1 counts kills in the child)": {
			r:       Report{Cgroup: &Cgroup{Read: true, Limit: 256 << 20}, Kernel: []string{"a"}},
			verdict: "processes in the pod were OOM-killed (the kernel logged 1 oom-kill in this pod's cgroups)",
			fix:     "raise the memory limit of the container that uses the most memory",
		},
		"healthy": {
			r:       Report{Cgroup: &Cgroup{Read: true, Limit: 256 << 20}, Sandboxes: []Sandbox{{State: "SANDBOX_READY"}}, Containers: []Container{{Name: "app", State: "CONTAINER_RUNNING"}}},
			verdict: "no sign of memory trouble: no OOM kill in the pod cgroup and no container OOMKilled",
		},
		"nothing": {
			r:       Report{},
			verdict: "no sandbox and no cgroup found for this pod",
		},
	} {
		t.Run(name, func(t *testing.T) {
			tc.r.Judge()
			if tc.r.Verdict != tc.verdict || tc.r.Fix != tc.fix {
				t.Errorf("got\n%q\n%q\nwant\n%q\n%q", tc.r.Verdict, tc.r.Fix, tc.verdict, tc.fix)
			}
		})
	}
}

// Issue 16 items 2 and 11: the text says which oom_kill counter is which
// on cgroup v1, a limit the runtime does not give is read from the
// container's cgroup or said to be unknown, and notes are printed.
func TestReportText(t *testing.T) {
	r := Report{Namespace: "kube-system", Name: "etcd-node1", UID: "3f0c",
		Sandboxes: []Sandbox{{ID: "0123456789abcdef", State: "SANDBOX_READY"}},
		Containers: []Container{
			{ID: "c1", Name: "hog", State: "CONTAINER_EXITED", Reason: "OOMKilled", ExitCode: 137, Limit: Limit{Known: true, Bytes: 16 << 20, From: "cgroup"},
				Cgroup: &Cgroup{Read: true, Version: 1, Limit: 16 << 20, Peak: 16 << 20, OOMKills: 4}},
			{ID: "c2", Name: "gone", State: "CONTAINER_EXITED"},
			{ID: "c3", Name: "free", State: "CONTAINER_RUNNING", Limit: Limit{Known: true, From: "runtime"}},
		},
		Cgroup: &Cgroup{Path: "/kubepods/pod3f0c", Read: true, Version: 1, Limit: 256 << 20, Peak: 20 << 20},
		Kernel: []string{"oom-kill:a", "oom-kill:b", "oom-kill:c", "oom-kill:d"},
		Notes:  []string{"a static pod (kubernetes.io/config.source file): its uid here, 3f0c, is the one in its cgroup's name; kubectl shows its mirror pod's uid, which differs"},
	}
	r.Judge()
	want := `pod kube-system/etcd-node1 (uid 3f0c)
sandboxes: 1
  0123456789abc  attempt 0  SANDBOX_READY
containers: 3
  c1  hog  attempt 0  CONTAINER_EXITED  reason OOMKilled  exit code 137  limit 16777216 bytes (16Mi) (its cgroup's; the runtime does not say)
    cgroup limit 16777216 bytes (16Mi), usage 0 bytes, peak 16777216 bytes (16Mi), failcnt 0, oom_kill 4
  c2  gone  attempt 0  CONTAINER_EXITED  limit unknown (the runtime does not say, and its cgroup could not be read)
  c3  free  attempt 0  CONTAINER_RUNNING  no limit of its own
pod cgroup: /kubepods/pod3f0c
  limit 268435456 bytes (256Mi), usage 0 bytes, peak 20971520 bytes (20Mi), failcnt 0, oom_kill 0
  (cgroup v1: the pod cgroup's oom_kill counts kills in the pod cgroup itself, not in its containers' cgroups; those count 4, of the containers whose cgroups still exist)
kernel:
  oom-kill:a
  oom-kill:b
  oom-kill:c
  oom-kill:d
note: a static pod (kubernetes.io/config.source file): its uid here, 3f0c, is the one in its cgroup's name; kubectl shows its mirror pod's uid, which differs
verdict: container hog was OOM-killed (the containers' cgroups count 4 oom-kills; the kernel logged 4 oom-kills in this pod's cgroups)
fix: raise the memory limit of hog above its peak usage, or make it use less memory
`
	if got := r.Text(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// Issue 16 item 11: a pod that never started, found by name through what
// the running cri-guard saw: the uid it prints is the one in the cgroup's
// name.
func TestReportTextNeverStarted(t *testing.T) {
	r := Report{Namespace: "kube-system", Name: "tiny-node1", UID: "9a1e", Sandboxes: []Sandbox{}, Containers: []Container{},
		Attempts: []attempts.Attempt{refusedTiny},
		Cgroup:   &Cgroup{Path: "/kubepods/burstable/pod9a1e", Read: true, Version: 1, Limit: 0}}
	r.Judge()
	want := `pod kube-system/tiny-node1 (uid 9a1e)
sandboxes: 0
RunPodSandbox calls that created no sandbox, as the running cri-guard saw them:
  uid 9a1e  attempt 2  refused by cri-guard  3 calls, from 2026-12-01 19:40:00 UTC to 2026-12-01 19:40:20 UTC  cgroup parent /kubepods/burstable/pod9a1e
    InvalidArgument: ` + tinyRefusal + `
containers: 0
pod cgroup: /kubepods/burstable/pod9a1e
  limit 0 bytes, usage 0 bytes, peak 0 bytes, failcnt 0, oom_kill 0
  (cgroup v1: the pod cgroup's oom_kill counts kills in the pod cgroup itself, not in its containers' cgroups; those count 0, of the containers whose cgroups still exist)
kernel: no oom-kill line for this pod in the kernel log (or the log is not readable)
verdict: no pod sandbox exists: cri-guard refused its RunPodSandbox (3 calls, the last at 2026-12-01 19:40:20 UTC): InvalidArgument: ` + tinyRefusal + `
`
	if got := r.Text(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
