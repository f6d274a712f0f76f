package guard

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/oom"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// oomRuntime adds the verbose container statuses containerd gives: the
// OCI spec with the container's cgroup and limit.
type oomRuntime struct {
	fakeRuntime
	containers map[string]*runtimeapi.ContainerStatusResponse
}

func (r oomRuntime) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	c, ok := r.containers[req.ContainerId]
	if !ok || !req.Verbose {
		return nil, status.Error(codes.NotFound, "no container")
	}
	return c, nil
}

// containerdStatus is a verbose ContainerStatus reply as containerd 1.6
// gives it.
func containerdStatus(id, name, cgroup string, limit int64) *runtimeapi.ContainerStatusResponse {
	return &runtimeapi.ContainerStatusResponse{
		Status: &runtimeapi.ContainerStatus{Id: id, Metadata: &runtimeapi.ContainerMetadata{Name: name}},
		Info: map[string]string{"info": `{"sandboxID":"sb1","runtimeSpec":{"linux":{"cgroupsPath":"` + cgroup + `","resources":{"memory":{"limit":` +
			strconvI(limit) + `}}}}}`},
	}
}

func strconvI(n int64) string { return strconv.FormatInt(n, 10) }

// kernelLog stands in for /dev/kmsg: a window opened before a call sees
// only what is logged after it.
type kernelLog struct {
	mu      sync.Mutex
	records []string
	asked   []string
}

func (k *kernelLog) log(line string) {
	k.mu.Lock()
	k.records = append(k.records, "6,1,2,-;"+line)
	k.mu.Unlock()
}

type kernelLogWindow struct {
	k    *kernelLog
	from int
}

func (w kernelLogWindow) OOMLines(memcg string, max int) []string {
	w.k.mu.Lock()
	defer w.k.mu.Unlock()
	w.k.asked = append(w.k.asked, memcg)
	var out []string
	for _, r := range w.k.records[w.from:] {
		if l, ok := oom.MatchRecord(r, memcg); ok {
			out = append(out, l)
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

func (kernelLogWindow) Close() {}

// fakeKernel replaces the kernel log for one test.
func fakeKernel(t *testing.T) *kernelLog {
	t.Helper()
	k := &kernelLog{}
	old := openKernelWindow
	openKernelWindow = func() kernelWindow {
		k.mu.Lock()
		defer k.mu.Unlock()
		return kernelLogWindow{k: k, from: len(k.records)}
	}
	t.Cleanup(func() { openKernelWindow = old })
	return k
}

const podKill = "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task_memcg=/kubepods/pod-1mi,task=runc:[2:INIT],pid=7"

func newOOMGuard(t *testing.T) (*Guard, *fakeFacts, *kernelLog) {
	t.Helper()
	ff := &fakeFacts{cgroups: map[string]facts.Memory{
		"/kubepods/pod-1mi":    {Version: 1, Limit: 1 << 20, Peak: 1 << 20, Failcnt: 4, OOMKills: 2},
		"/kubepods/pod-1mi/c1": {Version: 1, Limit: 16 << 20, Peak: 16 << 20, OOMKills: 1},
		"/kubepods/pod-big":    {Version: 1, Limit: 1 << 30, Peak: 10 << 20},
	}}
	g, err := New(Options{
		Policy: &policy.Config{Mode: policy.ModeReject, Floors: policy.Floors{Sandbox: 512 << 10, Container: 12 << 20}},
		Facts:  ff,
		Runtime: oomRuntime{containers: map[string]*runtimeapi.ContainerStatusResponse{
			"c1": containerdStatus("c1", "app", "/kubepods/pod-1mi/c1", 16<<20),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g, ff, fakeKernel(t)
}

const stopped24 = `failed to start sandbox "0f1e": failed to start sandbox container task "0f1e": cannot start a stopped process`

const runcOOM = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: container init was OOM-killed (memory limit too low?): unknown"

func TestRunPodSandboxExplainsOOM(t *testing.T) {
	for name, tc := range map[string]struct {
		parent string
		limit  int64
		err    error
		kill   bool   // the call OOM-kills a process
		want   string // "" = the runtime's error untouched
	}{
		"oom at start": {
			parent: "/kubepods/pod-1mi", limit: 1 << 20, err: status.Error(codes.Unknown, runcOOM), kill: true,
			want: "cri-guard: pod team-a/web: memory limit 1048576 bytes (1Mi): the pod sandbox (pause container) was OOM-killed while starting (evidence: the pod cgroup's oom_kill counter went from 2 to 3 during the call, the pod cgroup's peak usage since it was created is 1048576 bytes (1Mi), kernel, during the call, in the pod's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task_memcg=/kubepods/pod-1mi,task=runc:[2:INIT],pid=7); fix: set the memory limit to at least 12Mi; runtime error: " + runcOOM,
		},
		"containerd 2.4: cannot start a stopped process, with the kill of the call": {
			parent: "/kubepods/pod-1mi", limit: 1792 << 10, err: status.Error(codes.Unknown, stopped24), kill: true,
			want: "cri-guard: pod team-a/web: memory limit 1048576 bytes (1Mi) (the pod cgroup's; the pod's Linux.Resources says 1835008 bytes (1792Ki)): the pod sandbox (pause container) was OOM-killed after the runtime created it and before it could start (evidence: the pod cgroup's oom_kill counter went from 2 to 3 during the call, the pod cgroup's peak usage since it was created is 1048576 bytes (1Mi), kernel, during the call, in the pod's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task_memcg=/kubepods/pod-1mi,task=runc:[2:INIT],pid=7); fix: set the memory limit to at least 12Mi; runtime error: " + stopped24,
		},
		"containerd 2.4: cannot start a stopped process, no OOM in the call": {
			parent: "/kubepods/pod-1mi", limit: 1 << 20, err: status.Error(codes.Unknown, stopped24),
		},
		"pattern, no evidence": {
			parent: "/kubepods/pod-big", limit: 1 << 30, err: status.Error(codes.Unknown, runcOOM),
		},
		"other error": {
			parent: "/kubepods/pod-1mi", limit: 1 << 20, err: status.Error(codes.Unknown, "image not found"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			g, ff, k := newOOMGuard(t)
			var explained []string
			g.explained = func(f string) { explained = append(explained, f) }
			req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a"},
				Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: tc.parent, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: tc.limit}},
			}}
			_, err := g.RunPodSandbox(context.Background(), req, func(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
				if r != req {
					t.Error("request changed")
				}
				if tc.kill {
					m := ff.cgroups[tc.parent]
					m.OOMKills++
					ff.cgroups[tc.parent] = m
					k.log(podKill)
				}
				return nil, tc.err
			})
			want := tc.want
			if want == "" {
				want = status.Convert(tc.err).Message()
			}
			if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != want {
				t.Errorf("got %v %q\nwant %q", st.Code(), st.Message(), want)
			}
			if n := len(explained); (n == 1) != (tc.want != "") || n > 1 {
				t.Errorf("Explained was called for %v", explained)
			}
		})
	}
}

// Issue 16 item 5: with the systemd driver on cgroup v2, runc's scope unit
// fails; in audit mode the pod reaches the runtime, and the failure comes
// back explained from memory.events read before and after the call.
func TestRunPodSandboxSystemdScopeFailedInAudit(t *testing.T) {
	const slice = "kubepods-burstable-podu5.slice"
	const unitErr = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to apply cgroup configuration: unable to start unit \"cri-containerd-abc.scope\" (properties [{Name:Description Value:\"libcontainer container abc\"}]): error creating systemd unit `cri-containerd-abc.scope`: got `failed`: unknown"
	for name, tc := range map[string]struct {
		oom  bool
		want string
	}{
		"memory.events oom rose": {
			oom:  true,
			want: "cri-guard: pod team-a/tiny: memory limit 2000 bytes: systemd could not start the cgroup scope unit of the pod sandbox (pause container): the process moved into it was OOM-killed (evidence: the pod cgroup's memory.events oom went from 0 to 2 during the call, the pod cgroup hit its limit 36 times during the call (memory.events max 0 to 36)); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi); runtime error: " + unitErr,
		},
		"no OOM during the call: untouched": {},
	} {
		t.Run(name, func(t *testing.T) {
			ff := &fakeFacts{cgroups: map[string]facts.Memory{slice: {Version: 2, Limit: 0}}}
			var decisions []policy.Decision
			g, err := New(Options{
				Policy: &policy.Config{Mode: policy.ModeAudit, Floors: policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}},
				Facts:  ff, Runtime: fakeRuntime{},
				Record: func(_ policy.Request, d policy.Decision) { decisions = append(decisions, d) },
			})
			if err != nil {
				t.Fatal(err)
			}
			fakeKernel(t)
			req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "tiny", Namespace: "team-a"},
				Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: slice, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}},
			}}
			calls := 0
			_, err = g.RunPodSandbox(context.Background(), req, func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
				calls++
				if tc.oom {
					ff.cgroups[slice] = facts.Memory{Version: 2, Limit: 0, Failcnt: 36, OOMEvents: 2}
				}
				return nil, status.Error(codes.Unknown, unitErr)
			})
			want := tc.want
			if want == "" {
				want = unitErr
			}
			if st := status.Convert(err); calls != 1 || st.Code() != codes.Unknown || st.Message() != want {
				t.Errorf("%d calls, got %v %q\nwant %q", calls, st.Code(), st.Message(), want)
			}
			if len(decisions) != 1 || decisions[0].Action != policy.Audit {
				t.Errorf("decisions %+v", decisions)
			}
		})
	}
}

func TestStartContainerExplainsOOM(t *testing.T) {
	g, _, k := newOOMGuard(t)
	_, err := g.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: "c1"},
		func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
			k.log("oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task_memcg=/kubepods/pod-1mi/c1,task=runc:[2:INIT],pid=9")
			return nil, status.Error(codes.Unknown, runcOOM)
		})
	want := "cri-guard: pod team-a/web: memory limit 1048576 bytes (1Mi) (the pod cgroup's; the container's own is 16777216 bytes (16Mi)): container app was OOM-killed while starting (evidence: the container cgroup's oom_kill counter is 1, the container cgroup's peak usage is 16777216 bytes (16Mi), kernel, during the call, in the container's cgroup: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task_memcg=/kubepods/pod-1mi/c1,task=runc:[2:INIT],pid=9); fix: set the memory limit to at least 12Mi; runtime error: " + runcOOM
	if st := status.Convert(err); st.Code() != codes.Unknown || st.Message() != want {
		t.Errorf("got %v %q\nwant %q", st.Code(), st.Message(), want)
	}
	// An unknown container: the error passes untouched.
	_, err = g.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: "c2"},
		func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
			return nil, status.Error(codes.Unknown, runcOOM)
		})
	if st := status.Convert(err); st.Message() != runcOOM {
		t.Errorf("unknown container: %q", st.Message())
	}
}

// Issue 16 item 6: container tiny2 fails to start in a pod where hog was
// OOM-killed seconds before. Neither hog's kernel line (before the call,
// or during it in hog's own cgroup) nor the pod's lifetime peak and
// counters, which are hog's, may be cited for tiny2.
func TestStartContainerEvidenceBelongsToTheCall(t *testing.T) {
	const pod = "/kubepods/pod-256"
	hogKill := "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=" + pod + "/hog,task_memcg=" + pod + "/hog,task=sh,pid=5"
	tinyKill := "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=" + pod + "/tiny2,task_memcg=" + pod + "/tiny2,task=runc:[2:INIT],pid=6"
	for name, tc := range map[string]struct {
		during []string
		want   string
	}{
		"hog's kill before the call, tiny2's during it": {
			during: []string{tinyKill},
			want:   "cri-guard: pod team-a/web: memory limit 2000 bytes: container tiny2 was OOM-killed while starting (evidence: kernel, during the call, in the container's cgroup: " + oom.ShortKernelLine(tinyKill) + "); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi); runtime error: " + runcOOM,
		},
		"hog killed again during the call, in its own cgroup": {
			during: []string{hogKill},
			want:   "cri-guard: pod team-a/web: memory limit 2000 bytes: container tiny2 was OOM-killed while starting; fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi); runtime error: " + runcOOM,
		},
	} {
		t.Run(name, func(t *testing.T) {
			ff := &fakeFacts{cgroups: map[string]facts.Memory{
				pod:          {Version: 1, Limit: 256 << 20, Peak: 250 << 20, Failcnt: 90, OOMKills: 1},
				pod + "/hog": {Version: 1, Limit: 16 << 20, Peak: 16 << 20, OOMKills: 1},
			}}
			g, err := New(Options{
				Policy: &policy.Config{Mode: policy.ModeAudit, Floors: policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}},
				Facts:  ff,
				Runtime: oomRuntime{containers: map[string]*runtimeapi.ContainerStatusResponse{
					"tiny2": containerdStatus("tiny2", "tiny2", pod+"/tiny2", 2000),
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			k := fakeKernel(t)
			k.log(hogKill)
			_, err = g.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: "tiny2"},
				func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
					for _, l := range tc.during {
						k.log(l)
					}
					return nil, status.Error(codes.Unknown, runcOOM)
				})
			if st := status.Convert(err); st.Message() != tc.want {
				t.Errorf("got  %q\nwant %q", st.Message(), tc.want)
			}
		})
	}
}

func TestContainerStatusOOMKilled(t *testing.T) {
	g, _, _ := newOOMGuard(t)
	running := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", State: runtimeapi.ContainerState_CONTAINER_RUNNING}}
	got, err := g.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: "c1"},
		func(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
			return running, nil
		})
	if err != nil || got != running {
		t.Errorf("a running container's reply was not passed as is: %v", err)
	}
	killed := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", State: runtimeapi.ContainerState_CONTAINER_EXITED, Reason: "OOMKilled", ExitCode: 137}}
	got, err = g.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: "c1"},
		func(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
			return killed, nil
		})
	want := "cri-guard: pod team-a/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), its cgroup's peak usage is 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 2; fix: raise the memory limit above 16Mi or make the program use less memory"
	if err != nil || got == killed || got.GetStatus().GetMessage() != want || got.GetStatus().GetReason() != "OOMKilled" || got.GetStatus().GetExitCode() != 137 {
		t.Errorf("got %v %q\nwant %q", err, got.GetStatus().GetMessage(), want)
	}
	if killed.Status.Message != "" {
		t.Error("the runtime's reply was changed in place")
	}
}

// dockerdRuntime answers as cri-dockerd 0.4.3 in front of Docker 20.10.24
// does: the verbose info is only {pid, sandboxID}, no runtimeSpec, and the
// status has no resources; the sandbox's info does not name its cgroup.
type dockerdRuntime struct{ fakeRuntime }

func (dockerdRuntime) PodSandboxStatus(_ context.Context, r *runtimeapi.PodSandboxStatusRequest, _ ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	if r.PodSandboxId != "sb1" {
		return nil, status.Error(codes.NotFound, "no sandbox")
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a", Uid: "ud1"},
	}, Info: map[string]string{"info": `{"pid":4100}`}}, nil
}

func (dockerdRuntime) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	if r.ContainerId != "cd1" {
		return nil, status.Error(codes.NotFound, "no container")
	}
	return &runtimeapi.ContainerStatusResponse{
		Status: &runtimeapi.ContainerStatus{Id: "cd1", Metadata: &runtimeapi.ContainerMetadata{Name: "hog"}, Reason: "OOMKilled", ExitCode: 137},
		Info:   map[string]string{"info": `{"pid":4242,"sandboxID":"sb1"}`},
	}, nil
}

// writeV1 writes a cgroup v1 memory cgroup's files under root.
func writeV1(t *testing.T, root, cg, limit, peak, oomKill string) {
	t.Helper()
	d := filepath.Join(root, "memory", cg)
	for f, v := range map[string]string{
		"memory.stat": "cache 0\nrss 0\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill " + oomKill + "\n",
		"memory.usage_in_bytes": "0\n", "memory.max_usage_in_bytes": peak + "\n", "memory.failcnt": "3\n", "memory.limit_in_bytes": limit + "\n",
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 16 item 2: a runtime that does not say the container's limit
// (cri-dockerd) must not make cri-guard say "no limit": the container's
// own cgroup says, or the limit is unknown.
func TestContainerStatusOOMKilledRuntimeSilent(t *testing.T) {
	for name, tc := range map[string]struct {
		containerCgroup bool
		want            string
	}{
		"the container's cgroup says 16Mi": {
			containerCgroup: true,
			want:            "cri-guard: pod team-a/web: container hog was OOM-killed: its cgroup's memory limit is 16777216 bytes (16Mi), its cgroup's peak usage is 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit above 16Mi or make the program use less memory",
		},
		"the container's cgroup is gone": {
			want: "cri-guard: pod team-a/web: container hog was OOM-killed: its own memory limit is unknown (the runtime does not say, and its cgroup could not be read), and the pod's limit is 268435456 bytes (256Mi), the pod cgroup's peak usage since it was created is 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 1; fix: raise the memory limit or make the program use less memory",
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeV1(t, root, "kubepods/podud1", "268435456", "16777216", "1")
			if tc.containerCgroup {
				writeV1(t, root, "kubepods/podud1/cd1", "16777216", "16777216", "1")
			}
			g, err := New(Options{Policy: &policy.Config{Mode: policy.ModeReject}, Facts: facts.Reader{Root: root}, Runtime: dockerdRuntime{}})
			if err != nil {
				t.Fatal(err)
			}
			killed := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "cd1", Reason: "OOMKilled", ExitCode: 137}}
			got, err := g.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: "cd1"},
				func(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
					return killed, nil
				})
			if err != nil || got.GetStatus().GetMessage() != tc.want {
				t.Errorf("got %v\n%q\nwant\n%q", err, got.GetStatus().GetMessage(), tc.want)
			}
		})
	}
}

// Issue 16 item 11: the status of a container whose start failed for a
// memory reason carries cri-guard's explanation, so the kubelet's
// lastState shows it and not only runc's text.
func TestContainerStatusStartError(t *testing.T) {
	const update = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896): unknown"
	startErr := func(reason, msg string) *runtimeapi.ContainerStatusResponse {
		return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", State: runtimeapi.ContainerState_CONTAINER_EXITED, Reason: reason, Message: msg, ExitCode: 128}}
	}
	explained := "cri-guard: pod team-a/web: memory limit 1048576 bytes (1Mi) (the pod cgroup's; the container's own is 16777216 bytes (16Mi)): container app was OOM-killed while starting (evidence: the container cgroup's oom_kill counter is 1, the container cgroup's peak usage is 16777216 bytes (16Mi)); fix: set the memory limit to at least 12Mi"
	for name, tc := range map[string]struct {
		started bool // StartContainer went through cri-guard and was explained
		reply   *runtimeapi.ContainerStatusResponse
		want    string // "" = the reply untouched
	}{
		"StartError after an explained start": {
			started: true, reply: startErr("StartError", runcOOM),
			want: explained + "; runtime error: " + runcOOM,
		},
		"StartError, cri-guard restarted since: explained from the node": {
			reply: startErr("StartError", runcOOM),
			want:  explained + "; runtime error: " + runcOOM,
		},
		"ContainerCannotRun (Docker), limit below usage": {
			reply: startErr("ContainerCannotRun", update),
			want:  "cri-guard: pod team-a/web: the runtime could not set the memory limit of container app to 2000 bytes: it already uses 221184 bytes (216Ki) (its cgroup's peak usage, as the runtime read it: 2256896 bytes (2204Ki)) (evidence: the container cgroup's oom_kill counter is 1, the container cgroup's peak usage is 16777216 bytes (16Mi)); fix: a memory quantity without a unit is bytes, did you mean 2000Mi? (at least 12Mi); runtime error: " + update,
		},
		"StartError, not a memory failure": {
			reply: startErr("StartError", "exec: \"nosuch\": executable file not found in $PATH"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			g, _, _ := newOOMGuard(t)
			if tc.started {
				g.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: "c1"},
					func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
						return nil, status.Error(codes.Unknown, runcOOM)
					})
			}
			got, err := g.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: "c1"},
				func(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
					return tc.reply, nil
				})
			want := tc.want
			if want == "" {
				want = tc.reply.Status.Message
			}
			if err != nil || got.GetStatus().GetMessage() != want || got.GetStatus().GetReason() != tc.reply.Status.Reason {
				t.Errorf("got %v %q\n%q\nwant\n%q", err, got.GetStatus().GetReason(), got.GetStatus().GetMessage(), want)
			}
		})
	}
}

// The registered ContainerStatus interceptor decodes only replies that can
// be OOMKilled or failed-start ones: others pass as they came, even bytes
// that would not decode, and the runtime is asked once.
func TestContainerStatusInterceptorDecodesOnlyOOMKilled(t *testing.T) {
	g, _, _ := newOOMGuard(t)
	var ic proxy.Interceptor
	for _, i := range g.Interceptors() {
		if i.Method() == runtimeapi.RuntimeService_ContainerStatus_FullMethodName {
			ic = i
		}
	}
	req, _ := proto.Marshal(&runtimeapi.ContainerStatusRequest{ContainerId: "c1"})
	killed, _ := proto.Marshal(&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", Reason: "OOMKilled", ExitCode: 137}})
	startErr, _ := proto.Marshal(&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", Reason: "StartError", Message: runcOOM, ExitCode: 128}})
	for name, tc := range map[string]struct {
		reply    []byte
		enriched string
	}{
		"running, as it came":          {reply: []byte{0x0a, 0x02, 0x0a, 0x00}},
		"undecodable, still untouched": {reply: []byte{0xff, 0xff, 0xff}},
		"OOMKilled, explained":         {reply: killed, enriched: "cri-guard: pod team-a/web: container app was OOM-killed"},
		"StartError, explained":        {reply: startErr, enriched: "cri-guard: pod team-a/web: memory limit 1048576 bytes (1Mi) (the pod cgroup's; the container's own is 16777216 bytes (16Mi)): container app was OOM-killed while starting"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := ic.(proxy.ReplyFilter); !ok || (tc.enriched != "") != hasAny(ic, tc.reply) {
				t.Errorf("the frame core's filter does not pass this reply (ReplyFilter %v)", ok)
			}
			calls := 0
			out, err := ic.Intercept(context.Background(), req, func(context.Context, []byte) ([]byte, error) {
				calls++
				return tc.reply, nil
			})
			if err != nil || calls != 1 {
				t.Fatalf("err %v, %d calls to the runtime", err, calls)
			}
			if tc.enriched == "" {
				if !bytes.Equal(out, tc.reply) {
					t.Errorf("reply changed: %x", out)
				}
				return
			}
			var resp runtimeapi.ContainerStatusResponse
			if err := proto.Unmarshal(out, &resp); err != nil || !strings.HasPrefix(resp.GetStatus().GetMessage(), tc.enriched) {
				t.Errorf("got %q, %v", resp.GetStatus().GetMessage(), err)
			}
		})
	}
}

// hasAny says whether the frame core would hand reply to ic's Intercept.
func hasAny(ic proxy.Interceptor, reply []byte) bool {
	n, ok := ic.(interface{ Needles() [][]byte })
	if !ok {
		return bytes.Contains(reply, ic.(proxy.ReplyFilter).Needle())
	}
	for _, b := range n.Needles() {
		if bytes.Contains(reply, b) {
			return true
		}
	}
	return false
}

// With the systemd driver the spec's cgroupsPath is "slice:prefix:id": the
// container's own cgroup is found from it, and the kernel line of the call
// in that cgroup is cited as the container's.
func TestStartContainerSystemdCgroupsPath(t *testing.T) {
	const scope = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu9.slice/cri-containerd-c9.scope"
	kill := "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=" + scope + ",task_memcg=" + scope + ",task=runc:[2:INIT],pid=3"
	g, err := New(Options{
		Policy: &policy.Config{Mode: policy.ModeAudit, Floors: policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}},
		Facts:  &fakeFacts{cgroups: map[string]facts.Memory{}},
		Runtime: oomRuntime{containers: map[string]*runtimeapi.ContainerStatusResponse{
			"c9": containerdStatus("c9", "app", "kubepods-burstable-podu9.slice:cri-containerd:c9", 64<<20),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	k := fakeKernel(t)
	_, err = g.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: "c9"},
		func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
			k.log(kill)
			return nil, status.Error(codes.Unknown, runcOOM)
		})
	want := "cri-guard: pod team-a/web: memory limit 67108864 bytes (64Mi): container app was OOM-killed while starting (evidence: kernel, during the call, in the container's cgroup: " + oom.ShortKernelLine(kill) + "); fix: raise the memory limit; runtime error: " + runcOOM
	if st := status.Convert(err); st.Message() != want {
		t.Errorf("got  %q\nwant %q", st.Message(), want)
	}
}
