package guard

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// oomRuntime adds the verbose container status containerd gives.
type oomRuntime struct{ fakeRuntime }

func (oomRuntime) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	if r.ContainerId != "c1" || !r.Verbose {
		return nil, status.Error(codes.NotFound, "no container")
	}
	return &runtimeapi.ContainerStatusResponse{
		Status: &runtimeapi.ContainerStatus{Id: "c1", Metadata: &runtimeapi.ContainerMetadata{Name: "app"}},
		Info:   map[string]string{"info": `{"sandboxID":"sb1","runtimeSpec":{"linux":{"cgroupsPath":"/kubepods/pod-1mi/c1","resources":{"memory":{"limit":16777216}}}}}`},
	}, nil
}

func newOOMGuard(t *testing.T) (*Guard, *fakeFacts) {
	t.Helper()
	ff := &fakeFacts{cgroups: map[string]facts.Memory{
		"/kubepods/pod-1mi":    {Limit: 1 << 20, Peak: 1 << 20, Failcnt: 4, OOMKills: 2},
		"/kubepods/pod-1mi/c1": {Limit: 16 << 20, Peak: 16 << 20, OOMKills: 1},
		"/kubepods/pod-big":    {Limit: 1 << 30, Peak: 10 << 20},
	}}
	g, err := New(Options{
		Policy:  &policy.Config{Mode: policy.ModeReject, Floors: policy.Floors{Sandbox: 512 << 10, Container: 12 << 20}},
		Facts:   ff,
		Runtime: oomRuntime{},
	})
	if err != nil {
		t.Fatal(err)
	}
	old := kernelLines
	kernelLines = func(memcg string, max int) []string {
		if memcg == "/kubepods/pod-1mi" {
			return []string{"oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task=runc:[2:INIT]"}
		}
		return nil
	}
	t.Cleanup(func() { kernelLines = old })
	return g, ff
}

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
			want: "cri-guard: pod team-a/web: memory limit 1048576 bytes (1Mi): the pod sandbox (pause container) was OOM-killed while starting (evidence: the pod cgroup's oom_kill counter went from 2 to 3 during the call, failcnt 4, peak usage 1048576 bytes (1Mi), kernel: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task=runc:[2:INIT]); fix: set the memory limit to at least 12Mi; runtime error: " + runcOOM,
		},
		"pattern, no evidence": {
			parent: "/kubepods/pod-big", limit: 1 << 30, err: status.Error(codes.Unknown, runcOOM),
		},
		"other error": {
			parent: "/kubepods/pod-1mi", limit: 1 << 20, err: status.Error(codes.Unknown, "image not found"),
		},
	} {
		t.Run(name, func(t *testing.T) {
			g, ff := newOOMGuard(t)
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

func TestStartContainerExplainsOOM(t *testing.T) {
	g, _ := newOOMGuard(t)
	_, err := g.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: "c1"},
		func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
			return nil, status.Error(codes.Unknown, runcOOM)
		})
	want := "cri-guard: pod team-a/web: memory limit 16777216 bytes (16Mi): container app was OOM-killed while starting (evidence: the pod cgroup's oom_kill counter is 2, failcnt 4, peak usage 1048576 bytes (1Mi), the container cgroup's oom_kill counter is 1, container peak usage 16777216 bytes (16Mi), kernel: oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/pod-1mi,task=runc:[2:INIT]); fix: raise the memory limit above the peak usage, to at least 20Mi; runtime error: " + runcOOM
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

func TestContainerStatusOOMKilled(t *testing.T) {
	g, _ := newOOMGuard(t)
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
	want := "cri-guard: pod team-a/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), peak usage 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 2; fix: raise the memory limit above 16Mi or make the program use less memory"
	if err != nil || got == killed || got.GetStatus().GetMessage() != want || got.GetStatus().GetReason() != "OOMKilled" || got.GetStatus().GetExitCode() != 137 {
		t.Errorf("got %v %q\nwant %q", err, got.GetStatus().GetMessage(), want)
	}
	if killed.Status.Message != "" {
		t.Error("the runtime's reply was changed in place")
	}
}

// The registered ContainerStatus interceptor decodes only replies that can
// be OOMKilled ones: others pass as they came, even bytes that would not
// decode, and the runtime is asked once.
func TestContainerStatusInterceptorDecodesOnlyOOMKilled(t *testing.T) {
	g, _ := newOOMGuard(t)
	var ic proxy.Interceptor
	for _, i := range g.Interceptors() {
		if i.Method() == runtimeapi.RuntimeService_ContainerStatus_FullMethodName {
			ic = i
		}
	}
	req, _ := proto.Marshal(&runtimeapi.ContainerStatusRequest{ContainerId: "c1"})
	killed, _ := proto.Marshal(&runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", Reason: "OOMKilled", ExitCode: 137}})
	for name, tc := range map[string]struct {
		reply    []byte
		enriched bool
	}{
		"running, as it came":          {reply: []byte{0x0a, 0x02, 0x0a, 0x00}},
		"undecodable, still untouched": {reply: []byte{0xff, 0xff, 0xff}},
		"OOMKilled, explained":         {reply: killed, enriched: true},
	} {
		t.Run(name, func(t *testing.T) {
			calls := 0
			out, err := ic.Intercept(context.Background(), req, func(context.Context, []byte) ([]byte, error) {
				calls++
				return tc.reply, nil
			})
			if err != nil || calls != 1 {
				t.Fatalf("err %v, %d calls to the runtime", err, calls)
			}
			if !tc.enriched {
				if !bytes.Equal(out, tc.reply) {
					t.Errorf("reply changed: %x", out)
				}
				return
			}
			var resp runtimeapi.ContainerStatusResponse
			if err := proto.Unmarshal(out, &resp); err != nil || !strings.HasPrefix(resp.GetStatus().GetMessage(), "cri-guard: pod team-a/web: container app was OOM-killed") {
				t.Errorf("got %q, %v", resp.GetStatus().GetMessage(), err)
			}
		})
	}
}
