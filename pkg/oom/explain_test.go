package oom

import (
	"testing"
)

func TestExplain(t *testing.T) {
	initOOM := Classify("container init was OOM-killed (memory limit too low?)")
	mkdir := Classify("unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/x/abc: cannot allocate memory")
	died := Classify("read init-p: connection reset by peer")
	update := Classify("unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896)")
	big := Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 512 << 20, Peak: 100 << 20}
	for name, tc := range map[string]struct {
		s    Subject
		m    Match
		e    Evidence
		want string // "" = no claim
	}{
		"counter rose": {
			s: Subject{Pod: "e2e/web", Limit: 1 << 20, Floor: 12 << 20},
			m: initOOM,
			e: Evidence{Pod: Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 1 << 20, Failcnt: 9, Peak: 1 << 20, OOMKills: 3}, OOMBefore: 2, FailBefore: 5,
				Kernel: []string{"oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task=runc:[2:INIT],pid=1,uid=0"}},
			want: "cri-guard: pod e2e/web: memory limit 1048576 bytes (1Mi): the pod sandbox (pause container) was OOM-killed while starting (evidence: the pod cgroup's oom_kill counter went from 2 to 3 during the call, the pod cgroup hit its limit 4 times during the call (failcnt 5 to 9), peak usage 1048576 bytes (1Mi), kernel: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task=runc:[2:INIT],pid=1); fix: set the memory limit to at least 12Mi",
		},
		"tiny limit, no counter": {
			s:    Subject{Pod: "e2e/web", Limit: 2000},
			m:    mkdir,
			e:    Evidence{Pod: Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 0}, OOMBefore: 0},
			want: "cri-guard: pod e2e/web: memory limit 2000 bytes: the runtime could not create the cgroup of the pod sandbox (pause container): the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory); fix: a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi",
		},
		"container, unknown before": {
			s:    Subject{Pod: "e2e/web", Container: "app"},
			m:    died,
			e:    Evidence{Pod: Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 64 << 20, Peak: 64 << 20, OOMKills: 1}, OOMBefore: -1},
			want: "cri-guard: pod e2e/web: memory limit 67108864 bytes (64Mi): container app died while starting, for lack of memory (evidence: the pod cgroup's oom_kill counter is 1, peak usage 67108864 bytes (64Mi)); fix: raise the memory limit above the peak usage, to at least 80Mi",
		},
		"update below usage": {
			s:    Subject{Pod: "e2e/web", Container: "app", Limit: 2000},
			m:    update,
			e:    Evidence{OOMBefore: -1},
			want: "cri-guard: pod e2e/web: the runtime could not set the memory limit of container app to 2000 bytes: it already uses 221184 bytes (216Ki) (peak 2256896 bytes (2204Ki)); fix: keep the memory limit above what the container uses, at least 3Mi",
		},
		"pattern without evidence": {
			s: Subject{Pod: "e2e/web"},
			m: died,
			e: Evidence{Pod: big, OOMBefore: 0},
		},
		"mkdir enomem with a big limit is not ours": {
			s: Subject{Pod: "e2e/web", Limit: 512 << 20},
			m: mkdir,
			e: Evidence{Pod: big, OOMBefore: 0},
		},
		"unreadable cgroup, no limit": {
			s: Subject{Pod: "e2e/web"},
			m: initOOM,
			e: Evidence{Pod: Cgroup{Error: "gone"}, OOMBefore: -1},
		},
		"no family": {
			s: Subject{Pod: "e2e/web", Limit: 2000},
			m: Match{},
			e: Evidence{OOMBefore: -1},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, ok := Explain(tc.s, tc.m, tc.e)
			if ok != (tc.want != "") || got != tc.want {
				t.Errorf("Explain = %v\n%s\nwant\n%s", ok, got, tc.want)
			}
		})
	}
}

func TestWrap(t *testing.T) {
	if got := Wrap("cri-guard: x", "runc: y"); got != "cri-guard: x; runtime error: runc: y" {
		t.Errorf("Wrap = %q", got)
	}
}

func TestOOMKilled(t *testing.T) {
	pod := Cgroup{Read: true, Limit: 256 << 20, Peak: 20 << 20, OOMKills: 1}
	for name, tc := range map[string]struct {
		limit     int64
		container *Cgroup
		pod       Cgroup
		want      string
	}{
		"own limit, cgroup gone": {
			limit: 16 << 20, pod: pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), the pod's peak usage 20971520 bytes (20Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit above 16Mi or make the program use less memory",
		},
		"own limit, cgroup there": {
			limit: 16 << 20, container: &Cgroup{Read: true, Peak: 16 << 20}, pod: pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), peak usage 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit above 16Mi or make the program use less memory",
		},
		"unlimited container": {
			pod:  pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: it has no memory limit of its own, and the pod's limit is 268435456 bytes (256Mi), the pod's peak usage 20971520 bytes (20Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit or make the program use less memory",
		},
	} {
		t.Run(name, func(t *testing.T) {
			if got := OOMKilled(Subject{Pod: "e2e/web", Container: "app"}, tc.limit, tc.container, tc.pod); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
