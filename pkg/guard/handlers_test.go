package guard

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// fakeFacts answers Memory from a map and remembers what it was asked.
type fakeFacts struct {
	cgroups map[string]facts.Memory
	asked   []string
}

func (f *fakeFacts) Memory(parent string) (facts.Memory, error) {
	f.asked = append(f.asked, parent)
	if _, err := facts.ResolveParent(parent); err != nil {
		return facts.Memory{}, err
	}
	m, ok := f.cgroups[parent]
	if !ok {
		return facts.Memory{}, errors.New("no such cgroup")
	}
	return m, nil
}

// fakeRuntime answers the lookups the guard makes.
type fakeRuntime struct {
	runtimeapi.RuntimeServiceClient
}

func (fakeRuntime) PodSandboxStatus(_ context.Context, r *runtimeapi.PodSandboxStatusRequest, _ ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	if r.PodSandboxId != "sb1" {
		return nil, status.Error(codes.NotFound, "no sandbox")
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{
		Metadata:       &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a", Uid: "u1"},
		RuntimeHandler: "kata",
	}}, nil
}

func (fakeRuntime) ListContainers(_ context.Context, r *runtimeapi.ListContainersRequest, _ ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error) {
	if r.GetFilter().GetId() != "c1" {
		return &runtimeapi.ListContainersResponse{}, nil
	}
	return &runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{{
		Id: "c1", PodSandboxId: "sb1", Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
	}}}, nil
}

func newTestGuard(t *testing.T, mode policy.Mode) (*Guard, *fakeFacts) {
	t.Helper()
	ff := &fakeFacts{cgroups: map[string]facts.Memory{
		"/kubepods/pod-tiny": {Limit: 0},
		"/kubepods/pod-big":  {Limit: 1 << 30},
		"/kubepods/pod-8mi":  {Limit: 8 << 20},
	}}
	g, err := New(Options{
		Policy:  &policy.Config{Mode: mode, Floors: policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}, Handlers: map[string]policy.Floors{"kata": {Container: 64 << 20}}},
		Facts:   ff,
		Runtime: fakeRuntime{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g, ff
}

// forwarded records what reached the runtime.
type forwarded[Req any] struct {
	got   Req
	calls int
}

func TestRunPodSandbox(t *testing.T) {
	for name, tc := range map[string]struct {
		parent  string
		want    string // status message; empty: forwarded
		wantFwd bool
	}{
		"tiny pod refused": {parent: "/kubepods/pod-tiny",
			want: "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		"big pod forwarded":          {parent: "/kubepods/pod-big", wantFwd: true},
		"unreadable cgroup, hint":    {parent: "/kubepods/gone", want: "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		"escape refused, not read":   {parent: "/kubepods/../../etc", want: `cri-guard: pod team-a/web: cgroup parent "/kubepods/../../etc" refused: cgroup path leaves the cgroup root: "/kubepods/../../etc"`},
		"no cgroup parent, use hint": {parent: "", want: "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
	} {
		t.Run(name, func(t *testing.T) {
			g, _ := newTestGuard(t, policy.ModeReject)
			req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
				Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a"},
				Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: tc.parent, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}},
			}}
			var fwd forwarded[*runtimeapi.RunPodSandboxRequest]
			_, err := g.RunPodSandbox(context.Background(), req, func(_ context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
				fwd.got, fwd.calls = r, fwd.calls+1
				return &runtimeapi.RunPodSandboxResponse{}, nil
			})
			if tc.wantFwd {
				if err != nil || fwd.calls != 1 || fwd.got != req {
					t.Fatalf("not forwarded unchanged: %v, %d calls", err, fwd.calls)
				}
				return
			}
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != tc.want {
				t.Fatalf("got %v %q\nwant %q", st.Code(), st.Message(), tc.want)
			}
			if fwd.calls != 0 {
				t.Fatal("a refused call reached the runtime")
			}
		})
	}
}

func TestCreateContainerRaise(t *testing.T) {
	g, _ := newTestGuard(t, policy.ModeRaise)
	req := &runtimeapi.CreateContainerRequest{
		PodSandboxId: "other",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
			Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000, MemorySwapLimitInBytes: 2000}}},
		SandboxConfig: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a"},
			Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod-big"}},
	}
	var got *runtimeapi.CreateContainerRequest
	_, err := g.CreateContainer(context.Background(), req, func(_ context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
		got = r
		return &runtimeapi.CreateContainerResponse{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res := got.GetConfig().GetLinux().GetResources()
	if got == req || res.MemoryLimitInBytes != 12<<20 || res.MemorySwapLimitInBytes != 12<<20 {
		t.Errorf("forwarded %v", res)
	}
	if req.Config.Linux.Resources.MemoryLimitInBytes != 2000 {
		t.Error("the kubelet's request was changed in place")
	}

	// In a pod below the floor, raise cannot help: refused.
	req.SandboxConfig.Linux.CgroupParent = "/kubepods/pod-8mi"
	_, err = g.CreateContainer(context.Background(), req, nil)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("got %v", err)
	}
}

func TestUpdateContainerResourcesLooksUpThePod(t *testing.T) {
	g, _ := newTestGuard(t, policy.ModeReject)
	call := func(id string, limit int64) error {
		_, err := g.UpdateContainerResources(context.Background(), &runtimeapi.UpdateContainerResourcesRequest{
			ContainerId: id, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}},
			func(context.Context, *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
				return &runtimeapi.UpdateContainerResourcesResponse{}, nil
			})
		return err
	}
	// The pod runs with the kata handler, whose container floor is 64Mi.
	err := call("c1", 32<<20)
	if st := status.Convert(err); st.Message() != "pod team-a/web, container app: memory limit 33554432 bytes (32Mi) is below the 64Mi minimum needed to start a container; set the memory limit to at least 64Mi" {
		t.Errorf("got %q", st.Message())
	}
	// Unknown container: decided without the pod, by the default floor.
	err = call("c-unknown", 2000)
	if st := status.Convert(err); st.Message() != "pod <unnamed>/<unnamed>, container c-unknown: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?" {
		t.Errorf("got %q", st.Message())
	}
	if err := call("c1", 1<<30); err != nil {
		t.Errorf("a big limit: %v", err)
	}
}

func TestUpdatePodSandboxResources(t *testing.T) {
	g, _ := newTestGuard(t, policy.ModeReject)
	_, err := g.UpdatePodSandboxResources(context.Background(), &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: "sb1", Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 3000}}, nil)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != "pod team-a/web: memory limit 3000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 3000Mi?" {
		t.Errorf("got %v %q", st.Code(), st.Message())
	}
}

func TestAuditForwardsAndRecords(t *testing.T) {
	var recorded []policy.Decision
	g, err := New(Options{
		Policy: &policy.Config{Mode: policy.ModeAudit, Floors: policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}},
		Facts:  &fakeFacts{cgroups: map[string]facts.Memory{"/p": {Limit: 0}}},
		Record: func(_ policy.Request, d policy.Decision) { recorded = append(recorded, d) },
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/p"}}}
	fwd := 0
	_, err = g.RunPodSandbox(context.Background(), req, func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
		fwd++
		return &runtimeapi.RunPodSandboxResponse{}, nil
	})
	if err != nil || fwd != 1 || len(recorded) != 1 || recorded[0].Action != policy.Audit {
		t.Errorf("err %v, forwarded %d, recorded %+v", err, fwd, recorded)
	}
}
