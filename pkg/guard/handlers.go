package guard

import (
	"context"
	"fmt"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/attempts"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

type (
	runPodSandboxNext    = func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error)
	createContainerNext  = func(context.Context, *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error)
	updateContainerNext  = func(context.Context, *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error)
	updatePodSandboxNext = func(context.Context, *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error)
)

// RunPodSandbox refuses a pod whose memory limit is below the sandbox floor
// before anything is created. A call that creates no sandbox is kept in
// the attempts store, after the call: a pod that never started is known
// to the node by its uid alone.
func (g *Guard) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next runPodSandboxNext) (*runtimeapi.RunPodSandboxResponse, error) {
	resp, outcome, err := g.runPodSandbox(ctx, req, next)
	if err != nil {
		g.noteAttempt(req, outcome, err)
	}
	return resp, err
}

func (g *Guard) runPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest, next runPodSandboxNext) (*runtimeapi.RunPodSandboxResponse, attempts.Outcome, error) {
	pol := g.policy.Load()
	cfg := req.GetConfig()
	pod := podOf(cfg, req.GetRuntimeHandler())
	parent := cfg.GetLinux().GetCgroupParent()
	pf, err := g.readPod(parent)
	if err != nil {
		return nil, attempts.Refused, badCgroupParent(pod, parent, err)
	}
	in := policy.Request{
		Method:    policy.RunPodSandbox,
		Pod:       pod,
		PodLimit:  cfg.GetLinux().GetResources().GetMemoryLimitInBytes(),
		Overhead:  cfg.GetLinux().GetOverhead().GetMemoryLimitInBytes(),
		PodCgroup: pf.limit,
	}
	if d := g.decide(ctx, pol, in); d.Action == policy.Reject {
		return nil, attempts.Refused, refuse(d)
	}
	resp, err := g.explainRunPodSandbox(req, next, pf)(ctx, req)
	return resp, attempts.Failed, err
}

// configSource is the annotation by which the kubelet marks a static pod
// ("file" or "http"; "api" for the others).
const configSource = "kubernetes.io/config.source"

// noteAttempt keeps what the kubelet was told about a RunPodSandbox call
// that created no sandbox.
func (g *Guard) noteAttempt(req *runtimeapi.RunPodSandboxRequest, outcome attempts.Outcome, err error) {
	if g.attempts == nil {
		return
	}
	md := req.GetConfig().GetMetadata()
	st := status.Convert(err)
	g.attempts.Add(attempts.Attempt{Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid(), Attempt: md.GetAttempt(),
		CgroupParent: req.GetConfig().GetLinux().GetCgroupParent(), ConfigSource: req.GetConfig().GetAnnotations()[configSource],
		Outcome: outcome, Code: st.Code().String(), Message: st.Message()})
}

// CreateContainer checks the container's memory limit against the container
// floor, and refuses it or raises it to the floor.
func (g *Guard) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest, next createContainerNext) (*runtimeapi.CreateContainerResponse, error) {
	pol := g.policy.Load()
	sb := req.GetSandboxConfig()
	pod := podOf(sb, "")
	parent := sb.GetLinux().GetCgroupParent()
	pf, err := g.readPod(parent)
	if err != nil {
		return nil, badCgroupParent(pod, parent, err)
	}
	next = g.explainCreateContainer(req, next, pf)
	limit := req.GetConfig().GetLinux().GetResources().GetMemoryLimitInBytes()
	if !below(pol, limit, false) {
		return next(ctx, req)
	}
	if len(pol.Handlers) > 0 {
		if info, _, err := g.sandbox(ctx, req.GetPodSandboxId()); err != nil {
			g.log.Warn("cannot find the pod's runtime handler; using the default floors", "error", err)
		} else {
			pod.RuntimeHandler = info.RuntimeHandler
		}
	}
	in := policy.Request{
		Method:         policy.CreateContainer,
		Pod:            pod,
		Container:      req.GetConfig().GetMetadata().GetName(),
		PodLimit:       sb.GetLinux().GetResources().GetMemoryLimitInBytes(),
		ContainerLimit: limit,
		PodCgroup:      pf.limit,
	}
	switch d := g.decide(ctx, pol, in); d.Action {
	case policy.Reject:
		return nil, refuse(d)
	case policy.Raise:
		r := proto.Clone(req).(*runtimeapi.CreateContainerRequest)
		raise(r.GetConfig().GetLinux().GetResources(), d.Limit)
		return next(ctx, r)
	}
	return next(ctx, req)
}

// UpdateContainerResources applies the container floor to a resize.
func (g *Guard) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest, next updateContainerNext) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	next = explainByContainer(g, req.GetContainerId(), req.GetLinux().GetMemoryLimitInBytes(), next)
	pol := g.policy.Load()
	limit := req.GetLinux().GetMemoryLimitInBytes()
	if !below(pol, limit, false) {
		return next(ctx, req)
	}
	in := policy.Request{Method: policy.UpdateContainerResources, ContainerLimit: limit,
		PodCgroup: policy.Memory{State: policy.Unknown, Why: "not read on resize"}}
	if pod, name, err := g.containerInfo(ctx, req.GetContainerId()); err != nil {
		g.log.Warn("cannot find the container's pod; deciding without it", "container", req.GetContainerId(), "error", err)
		in.Container = req.GetContainerId()
	} else {
		in.Pod, in.Container = pod, name
	}
	switch d := g.decide(ctx, pol, in); d.Action {
	case policy.Reject:
		return nil, refuse(d)
	case policy.Raise:
		r := proto.Clone(req).(*runtimeapi.UpdateContainerResourcesRequest)
		raise(r.GetLinux(), d.Limit)
		return next(ctx, r)
	}
	return next(ctx, req)
}

// UpdatePodSandboxResources applies the sandbox floor to a pod resize.
func (g *Guard) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest, next updatePodSandboxNext) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	next = g.explainUpdatePodSandbox(req, next)
	pol := g.policy.Load()
	limit := req.GetResources().GetMemoryLimitInBytes()
	if !below(pol, limit, true) {
		return next(ctx, req)
	}
	in := policy.Request{Method: policy.UpdatePodSandboxResources, PodLimit: limit,
		Overhead: req.GetOverhead().GetMemoryLimitInBytes()}
	if pod, _, err := g.sandbox(ctx, req.GetPodSandboxId()); err != nil {
		g.log.Warn("cannot find the pod; deciding without its name", "sandbox", req.GetPodSandboxId(), "error", err)
		in.Pod.Name = req.GetPodSandboxId()
	} else {
		in.Pod = pod
	}
	if d := g.decide(ctx, pol, in); d.Action == policy.Reject {
		return nil, refuse(d)
	}
	return next(ctx, req)
}

// raise sets a container's memory limit, and its memory+swap limit where
// one is set below it: runc refuses memory+swap below memory.
func raise(r *runtimeapi.LinuxContainerResources, limit int64) {
	r.MemoryLimitInBytes = limit
	if r.MemorySwapLimitInBytes > 0 && r.MemorySwapLimitInBytes < limit {
		r.MemorySwapLimitInBytes = limit
	}
}

// containerInfo finds a container's pod and name through the runtime.
func (g *Guard) containerInfo(ctx context.Context, id string) (policy.Pod, string, error) {
	if g.runtime == nil {
		return policy.Pod{}, "", fmt.Errorf("no runtime client for lookups")
	}
	resp, err := g.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil {
		return policy.Pod{}, "", fmt.Errorf("container %s: %w", id, err)
	}
	if len(resp.GetContainers()) != 1 {
		return policy.Pod{}, "", fmt.Errorf("container %s: the runtime lists %d containers with that id", id, len(resp.GetContainers()))
	}
	c := resp.GetContainers()[0]
	pod, _, err := g.sandbox(ctx, c.GetPodSandboxId())
	return pod, c.GetMetadata().GetName(), err
}
