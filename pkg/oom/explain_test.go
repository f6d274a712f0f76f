package oom

import (
	"testing"
)

func TestExplain(t *testing.T) {
	initOOM := Classify("container init was OOM-killed (memory limit too low?)")
	mkdir := Classify("unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/x/abc: cannot allocate memory")
	died := Classify("read init-p: connection reset by peer")
	update := Classify("unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896)")
	stopped := Classify(`failed to start sandbox container for pod "g3m1": Error response from daemon: cannot start a stopped process: unknown`)
	unit := Classify("unable to apply cgroup configuration: unable to start unit \"cri-containerd-abc.scope\" (properties []): error creating systemd unit `cri-containerd-abc.scope`: got `failed`")
	crioFloor := Classify("set memory limit 2000 too low; should be at least 12582912 bytes")
	crioUsage := Classify("memory validation failed: cannot decrease memory limit to 4194304 bytes: current usage is 9961472 bytes")
	docker := Classify("Error response from daemon: Minimum memory limit allowed is 6MB")
	big := Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 512 << 20, Peak: 100 << 20}
	kill := "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task=runc:[2:INIT],pid=1,uid=0"
	with := func(f func(*Evidence)) Evidence { e := NoEvidence(); f(&e); return e }
	for name, tc := range map[string]struct {
		s    Subject
		m    Match
		e    Evidence
		want string // "" = no claim
	}{
		"counter rose": {
			s: Subject{Pod: "e2e/web", Limit: 1 << 20, Floor: 12 << 20},
			m: initOOM,
			e: Evidence{Pod: Cgroup{Path: "/kubepods/pod1", Read: true, Version: 1, Limit: 1 << 20, Failcnt: 9, Peak: 1 << 20, OOMKills: 3}, OOMBefore: 2, FailBefore: 5, OOMEventsBefore: -1,
				Kernel: []string{kill}, KernelScope: ScopePod},
			want: "cri-guard: pod e2e/web: memory limit 1048576 bytes (1Mi): the pod sandbox (pause container) was OOM-killed while starting (evidence: the pod cgroup's oom_kill counter went from 2 to 3 during the call, the pod cgroup hit its limit 4 times during the call (failcnt 5 to 9), the pod cgroup's peak usage since it was created is 1048576 bytes (1Mi), kernel, during the call, in the pod's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task=runc:[2:INIT],pid=1); fix: set the memory limit to at least 12Mi",
		},
		"tiny limit, no counter": {
			s:    Subject{Pod: "e2e/web", Limit: 2000},
			m:    mkdir,
			e:    with(func(e *Evidence) { e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 0}; e.OOMBefore = 0 }),
			want: "cri-guard: pod e2e/web: memory limit 2000 bytes: the runtime could not create the cgroup of the pod sandbox (pause container): the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi)",
		},
		"tiny limit, floor lowered to a byte: the fix is still what a runtime needs": {
			s:    Subject{Pod: "e2e/web", Limit: 2000, Floor: 1},
			m:    mkdir,
			e:    with(func(e *Evidence) { e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 0}; e.OOMBefore = 0 }),
			want: "cri-guard: pod e2e/web: memory limit 2000 bytes: the runtime could not create the cgroup of the pod sandbox (pause container): the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi)",
		},
		"tiny limit whose Mi would still be below the floor: no hint": {
			s:    Subject{Pod: "e2e/web", Limit: 5, Floor: 12 << 20},
			m:    mkdir,
			e:    with(func(e *Evidence) { e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 0}; e.OOMBefore = 0 }),
			want: "cri-guard: pod e2e/web: memory limit 5 bytes: the runtime could not create the cgroup of the pod sandbox (pause container): the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory); fix: a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi",
		},
		"no limit asked, the pod cgroup's is tiny: no hint from a rounded value": {
			s:    Subject{Pod: "e2e/web"},
			m:    mkdir,
			e:    with(func(e *Evidence) { e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 4096}; e.OOMBefore = 0 }),
			want: "cri-guard: pod e2e/web: memory limit 4096 bytes (4Ki) (the pod cgroup's): the runtime could not create the cgroup of the pod sandbox (pause container): the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory); fix: a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi",
		},
		"the pod cgroup and the request differ: both named, the cgroup's used": {
			s:    Subject{Pod: "e2e/web", Limit: 64 << 20},
			m:    mkdir,
			e:    with(func(e *Evidence) { e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 0}; e.OOMBefore = 0 }),
			want: "cri-guard: pod e2e/web: memory limit 0 bytes (the pod cgroup's; the pod's Linux.Resources says 67108864 bytes (64Mi)): the runtime could not create the cgroup of the pod sandbox (pause container): the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory); fix: a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi",
		},
		"the pod's lifetime counter is no proof for this call": {
			s: Subject{Pod: "e2e/web", Container: "app"},
			m: died,
			e: with(func(e *Evidence) {
				e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 64 << 20, Peak: 64 << 20, OOMKills: 1}
			}),
		},
		"container, kernel line of its own cgroup during the call": {
			s: Subject{Pod: "e2e/web", Container: "app"},
			m: died,
			e: with(func(e *Evidence) {
				e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 64 << 20, Peak: 64 << 20, OOMKills: 1, Failcnt: 3}
				e.Container = &Cgroup{Path: "/kubepods/pod1/c1", Read: true, Unlimited: true, Peak: 40 << 20}
				e.Kernel, e.KernelScope = []string{"oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/c1,task=app,pid=9"}, ScopeContainer
			}),
			want: "cri-guard: pod e2e/web: memory limit 67108864 bytes (64Mi) (the pod cgroup's): container app died while starting, for lack of memory (evidence: the container cgroup's peak usage is 41943040 bytes (40Mi), kernel, during the call, in the container's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/c1,task=app,pid=9); fix: raise the memory limit above the container cgroup's peak usage, to at least 50Mi",
		},
		"update below usage: the unit hint, never below the floor": {
			s:    Subject{Pod: "e2e/web", Container: "app", Limit: 2000, Floor: 12 << 20},
			m:    update,
			e:    NoEvidence(),
			want: "cri-guard: pod e2e/web: the runtime could not set the memory limit of container app to 2000 bytes: it already uses 221184 bytes (216Ki) (its cgroup's peak usage, as the runtime read it: 2256896 bytes (2204Ki)); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi)",
		},
		"cri-o resize below usage, above a MiB": {
			s:    Subject{Pod: "e2e/web", Container: "app", Limit: 4 << 20, Floor: 4 << 20},
			m:    crioUsage,
			e:    NoEvidence(),
			want: "cri-guard: pod e2e/web: the runtime could not set the memory limit of container app to 4194304 bytes (4Mi): it already uses 9961472 bytes (9728Ki); fix: keep the memory limit above what the container uses, at least 10Mi",
		},
		"cri-o's own floor": {
			s:    Subject{Pod: "e2e/web", Container: "app", Limit: 2000, Floor: 8 << 20},
			m:    crioFloor,
			e:    NoEvidence(),
			want: "cri-guard: pod e2e/web: the runtime refuses the memory limit 2000 bytes for container app: its own minimum is 12582912 bytes (12Mi); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi)",
		},
		"docker's own minimum, with the floor above it": {
			s:    Subject{Pod: "e2e/web", Container: "app", Limit: 4 << 20, Floor: 12 << 20},
			m:    docker,
			e:    NoEvidence(),
			want: "cri-guard: pod e2e/web: the runtime refuses the memory limit 4194304 bytes (4Mi) for container app: its own minimum is 6291456 bytes (6Mi); fix: set the memory limit to at least 12Mi",
		},
		"stopped before start, with the kernel line of the call": {
			s: Subject{Pod: "e2e/g3m1", Limit: 3 << 20, Floor: 12 << 20},
			m: stopped,
			e: with(func(e *Evidence) {
				e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Version: 1, Limit: 3 << 20, Failcnt: 111}
				e.OOMBefore, e.FailBefore = 0, 0
				e.Kernel, e.KernelScope = []string{kill}, ScopePod
			}),
			want: "cri-guard: pod e2e/g3m1: memory limit 3145728 bytes (3Mi): the pod sandbox (pause container) was OOM-killed after the runtime created it and before it could start (evidence: the pod cgroup hit its limit 111 times during the call (failcnt 0 to 111), kernel, during the call, in the pod's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod1,task=runc:[2:INIT],pid=1); fix: set the memory limit to at least 12Mi",
		},
		"stopped before start, small limit but no OOM in the call": {
			s: Subject{Pod: "e2e/g3m1", Limit: 3 << 20},
			m: stopped,
			e: with(func(e *Evidence) {
				e.Pod = Cgroup{Path: "/kubepods/pod1", Read: true, Limit: 3 << 20, OOMKills: 4}
				e.OOMBefore = 4
			}),
		},
		"systemd scope failed, cgroup v2 memory.events": {
			s: Subject{Pod: "e2e/tiny", Limit: 2000, Floor: 12 << 20},
			m: unit,
			e: with(func(e *Evidence) {
				e.Pod = Cgroup{Path: "/kubepods.slice/kubepods-pod1.slice", Read: true, Version: 2, Limit: 0, Failcnt: 36, OOMEvents: 2}
				e.OOMBefore, e.FailBefore, e.OOMEventsBefore = 0, 0, 0
			}),
			want: "cri-guard: pod e2e/tiny: memory limit 2000 bytes: systemd could not start the cgroup scope unit of the pod sandbox (pause container): the process moved into it was OOM-killed (evidence: the pod cgroup's memory.events oom went from 0 to 2 during the call, the pod cgroup hit its limit 36 times during the call (memory.events max 0 to 36)); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi)",
		},
		"systemd scope failed, no OOM": {
			s: Subject{Pod: "e2e/tiny", Limit: 2000},
			m: unit,
			e: with(func(e *Evidence) {
				e.Pod = Cgroup{Path: "/kubepods.slice/kubepods-pod1.slice", Read: true, Version: 2, Limit: 0}
				e.OOMBefore, e.FailBefore, e.OOMEventsBefore = 0, 0, 0
			}),
		},
		"pattern without evidence": {
			s: Subject{Pod: "e2e/web"},
			m: died,
			e: with(func(e *Evidence) { e.Pod = big; e.OOMBefore = 0 }),
		},
		"mkdir enomem with a big limit is not ours": {
			s: Subject{Pod: "e2e/web", Limit: 512 << 20},
			m: mkdir,
			e: with(func(e *Evidence) { e.Pod = big; e.OOMBefore = 0 }),
		},
		"unreadable cgroup, no limit": {
			s: Subject{Pod: "e2e/web"},
			m: initOOM,
			e: with(func(e *Evidence) { e.Pod = Cgroup{Error: "gone"} }),
		},
		"no family": {
			s: Subject{Pod: "e2e/web", Limit: 2000},
			m: Match{},
			e: NoEvidence(),
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
		limit     Limit
		container *Cgroup
		pod       Cgroup
		want      string
	}{
		"own limit, cgroup gone": {
			limit: Limit{Known: true, Bytes: 16 << 20, From: "runtime"}, pod: pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), the pod cgroup's peak usage since it was created is 20971520 bytes (20Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit above 16Mi or make the program use less memory",
		},
		"own limit, cgroup there": {
			limit: Limit{Known: true, Bytes: 16 << 20, From: "runtime"}, container: &Cgroup{Read: true, Peak: 16 << 20}, pod: pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), its cgroup's peak usage is 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit above 16Mi or make the program use less memory",
		},
		"unlimited container": {
			limit: Limit{Known: true, From: "runtime"}, pod: pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: it has no memory limit of its own, and the pod's limit is 268435456 bytes (256Mi), the pod cgroup's peak usage since it was created is 20971520 bytes (20Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit or make the program use less memory",
		},
		"runtime silent (cri-dockerd), the cgroup says": {
			limit: Limit{Known: true, Bytes: 16 << 20, From: "cgroup"}, container: &Cgroup{Read: true, Limit: 16 << 20, Peak: 16 << 20}, pod: pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: its cgroup's memory limit is 16777216 bytes (16Mi), its cgroup's peak usage is 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit above 16Mi or make the program use less memory",
		},
		"runtime silent, cgroup gone: unknown, never none": {
			pod:  pod,
			want: "cri-guard: pod e2e/web: container app was OOM-killed: its own memory limit is unknown (the runtime does not say, and its cgroup could not be read), and the pod's limit is 268435456 bytes (256Mi), the pod cgroup's peak usage since it was created is 20971520 bytes (20Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit or make the program use less memory",
		},
	} {
		t.Run(name, func(t *testing.T) {
			if got := OOMKilled(Subject{Pod: "e2e/web", Container: "app"}, tc.limit, tc.container, tc.pod); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
