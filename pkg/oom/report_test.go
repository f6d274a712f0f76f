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
