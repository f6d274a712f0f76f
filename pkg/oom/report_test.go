package oom

import "testing"

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
