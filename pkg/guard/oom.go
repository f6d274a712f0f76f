package guard

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"strings"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/oom"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// This file explains memory failures on the way back: a runtime error that
// matches a memory family (package oom) and that the node's evidence
// supports is rewritten into a sentence naming the pod, its limit, what
// happened, the evidence and the fix, followed by the runtime's text
// unchanged. The status code is kept. Anything else passes untouched.

type startContainerNext = func(context.Context, *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error)
type containerStatusNext = func(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error)

// kernelLines reads the kernel's oom-kill lines for a cgroup.
var kernelLines = oom.KernelOOMLines

// onError runs next and hands a failure to explain.
func onError[Req, Resp any](next func(context.Context, Req) (Resp, error), explain func(context.Context, error) error) func(context.Context, Req) (Resp, error) {
	return func(ctx context.Context, r Req) (Resp, error) {
		resp, err := next(ctx, r)
		if err != nil {
			return resp, explain(ctx, err)
		}
		return resp, nil
	}
}

// classify reports whether err is a gRPC status whose message matches a
// memory family.
func classify(err error) (*status.Status, oom.Match, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return nil, oom.Match{}, false
	}
	m := oom.Classify(st.Message())
	return st, m, m.Family != oom.None
}

// explain rewrites err when it is a memory failure that the evidence
// supports. parent is the pod's cgroup parent; container, when not empty,
// the container's own cgroup.
func (g *Guard) explain(ctx context.Context, err error, s oom.Subject, parent, container string, before, failBefore int64) error {
	st, m, ok := classify(err)
	if !ok {
		return err
	}
	return g.explainMatch(ctx, st, m, s, parent, container, before, failBefore)
}

func (g *Guard) explainMatch(ctx context.Context, st *status.Status, m oom.Match, s oom.Subject, parent, container string, before, failBefore int64) error {
	ev := oom.Evidence{Pod: oom.ReadCgroup(g.facts, parent), OOMBefore: before, FailBefore: failBefore}
	if container != "" {
		if c := oom.ReadCgroup(g.facts, container); c.Read {
			ev.Container = &c
		}
	}
	if ev.Pod.Path != "" {
		ev.Kernel = kernelLines(ev.Pod.Path, 3)
	}
	msg, ok := oom.Explain(s, m, ev)
	if !ok {
		g.log.Info("runtime error looks like a memory failure but the node shows no evidence; passing it on",
			"pod", s.Pod, "container", s.Container, "family", string(m.Family), "cgroup", ev.Pod.Path, "error", st.Message())
		return st.Err()
	}
	if g.explained != nil {
		g.explained(string(m.Family))
	}
	g.log.Warn("memory failure explained", "pod", s.Pod, "container", s.Container, "family", string(m.Family), "explanation", msg)
	p := st.Proto()
	p.Message = oom.Wrap(msg, st.Message())
	return status.FromProto(p).Err()
}

func podName(p policy.Pod) string {
	if p.Namespace == "" && p.Name == "" {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

// explainRunPodSandbox wraps next of RunPodSandbox.
func (g *Guard) explainRunPodSandbox(req *runtimeapi.RunPodSandboxRequest, next runPodSandboxNext, pf podFacts) runPodSandboxNext {
	cfg := req.GetConfig()
	parent := cfg.GetLinux().GetCgroupParent()
	return onError(next, func(ctx context.Context, err error) error {
		pod := podOf(cfg, req.GetRuntimeHandler())
		s := oom.Subject{Pod: podName(pod), Limit: cfg.GetLinux().GetResources().GetMemoryLimitInBytes(),
			Floor: g.policy.Load().FloorsFor(req.GetRuntimeHandler()).Sandbox}
		return g.explain(ctx, err, s, parent, "", pf.oomKills, pf.failcnt)
	})
}

// explainCreateContainer wraps next of CreateContainer.
func (g *Guard) explainCreateContainer(req *runtimeapi.CreateContainerRequest, next createContainerNext, pf podFacts) createContainerNext {
	sb := req.GetSandboxConfig()
	parent := sb.GetLinux().GetCgroupParent()
	return onError(next, func(ctx context.Context, err error) error {
		limit := req.GetConfig().GetLinux().GetResources().GetMemoryLimitInBytes()
		if limit <= 0 {
			limit = sb.GetLinux().GetResources().GetMemoryLimitInBytes()
		}
		s := oom.Subject{Pod: podName(podOf(sb, "")), Container: req.GetConfig().GetMetadata().GetName(),
			Limit: limit, Floor: g.policy.Load().Floors.Container}
		return g.explain(ctx, err, s, parent, "", pf.oomKills, pf.failcnt)
	})
}

// explainByContainer wraps next of a call that names only a container:
// the pod and cgroups are looked up only when the error matches a family.
func explainByContainer[Req, Resp any](g *Guard, id string, limit int64, next func(context.Context, Req) (Resp, error)) func(context.Context, Req) (Resp, error) {
	return onError(next, func(ctx context.Context, err error) error {
		st, m, ok := classify(err)
		if !ok {
			return err
		}
		c, lerr := g.container(ctx, id)
		if lerr != nil {
			g.log.Warn("cannot find the container of a memory failure; passing the error on", "container", id, "error", lerr)
			return err
		}
		s := oom.Subject{Pod: podName(c.pod), Container: c.name, Limit: limit, Floor: g.policy.Load().Floors.Container}
		if s.Limit <= 0 {
			s.Limit = c.limit
		}
		return g.explainMatch(ctx, st, m, s, c.podParent, c.cgroup, -1, -1)
	})
}

// explainUpdatePodSandbox wraps next of UpdatePodSandboxResources.
func (g *Guard) explainUpdatePodSandbox(req *runtimeapi.UpdatePodSandboxResourcesRequest, next updatePodSandboxNext) updatePodSandboxNext {
	return onError(next, func(ctx context.Context, err error) error {
		st, m, ok := classify(err)
		if !ok {
			return err
		}
		pod, parent, lerr := g.sandbox(ctx, req.GetPodSandboxId())
		if lerr != nil {
			g.log.Warn("cannot find the pod of a memory failure; passing the error on", "sandbox", req.GetPodSandboxId(), "error", lerr)
			return err
		}
		s := oom.Subject{Pod: podName(pod), Limit: req.GetResources().GetMemoryLimitInBytes(),
			Floor: g.policy.Load().FloorsFor(pod.RuntimeHandler).Sandbox}
		return g.explainMatch(ctx, st, m, s, parent, "", -1, -1)
	})
}

// StartContainer explains a start that failed for lack of memory.
func (g *Guard) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest, next startContainerNext) (*runtimeapi.StartContainerResponse, error) {
	return explainByContainer(g, req.GetContainerId(), 0, next)(ctx, req)
}

// oomKilledReason is the container status reason of an OOM kill.
const oomKilledReason = "OOMKilled"

// onlyIfReplyHas runs a typed interceptor only for replies whose bytes
// contain needle. ContainerStatus is called for every container again and
// again; its reason travels as plain bytes, so the few replies that can be
// OOMKilled ones are decoded, and the others pass as they came, undecoded.
type onlyIfReplyHas struct {
	needle []byte
	typed  proxy.Interceptor
}

func (o onlyIfReplyHas) Method() string { return o.typed.Method() }

// Needle makes it a proxy.ReplyFilter: the frame-level core relays the
// calls whose reply lacks the needle without running Intercept.
func (o onlyIfReplyHas) Needle() []byte { return o.needle }

func (o onlyIfReplyHas) Intercept(ctx context.Context, req []byte, forward proxy.Forward) ([]byte, error) {
	out, err := forward(ctx, req)
	if err != nil || !bytes.Contains(out, o.needle) {
		return out, err
	}
	return o.typed.Intercept(ctx, req, func(context.Context, []byte) ([]byte, error) { return out, nil })
}

// ContainerStatus adds to the status of a container that was OOM-killed
// its memory limit, its peak usage and its pod's limit. Every other reply
// keeps the runtime's bytes.
func (g *Guard) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest, next containerStatusNext) (*runtimeapi.ContainerStatusResponse, error) {
	resp, err := next(ctx, req)
	if err != nil || resp.GetStatus().GetReason() != oomKilledReason {
		return resp, err
	}
	if strings.HasPrefix(resp.GetStatus().GetMessage(), "cri-guard: ") {
		return resp, nil
	}
	id := resp.GetStatus().GetId()
	if id == "" {
		id = req.GetContainerId()
	}
	c, lerr := g.containerFrom(ctx, id, resp)
	if lerr != nil {
		g.log.Warn("cannot find the pod of an OOM-killed container", "container", id, "error", lerr)
		return resp, nil
	}
	var cg *oom.Cgroup
	if c.cgroup != "" {
		if r := oom.ReadCgroup(g.facts, c.cgroup); r.Read {
			cg = &r
		}
	}
	pod := oom.ReadCgroup(g.facts, c.podParent)
	msg := oom.OOMKilled(oom.Subject{Pod: podName(c.pod), Container: c.name}, c.limit, cg, pod)
	if orig := resp.GetStatus().GetMessage(); orig != "" {
		msg += "; runtime message: " + orig
	}
	out := proto.Clone(resp).(*runtimeapi.ContainerStatusResponse)
	out.Status.Message = msg
	return out, nil
}

// containerFacts is what the runtime says about a container.
type containerFacts struct {
	name      string
	pod       policy.Pod
	limit     int64  // the container's memory limit; 0 none
	cgroup    string // the container's cgroup path, relative to the hierarchy
	podParent string // the pod's cgroup
}

func (g *Guard) container(ctx context.Context, id string) (containerFacts, error) {
	return g.containerFrom(ctx, id, nil)
}

// containerFrom finds a container's pod and cgroups, from the verbose status
// the runtime gives (asked for when have is not verbose).
func (g *Guard) containerFrom(ctx context.Context, id string, have *runtimeapi.ContainerStatusResponse) (containerFacts, error) {
	if g.runtime == nil {
		return containerFacts{}, fmt.Errorf("no runtime client for lookups")
	}
	resp := have
	if resp.GetInfo()["info"] == "" {
		r, err := g.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
		if err != nil {
			return containerFacts{}, fmt.Errorf("container %s: %w", id, err)
		}
		resp = r
	}
	c := containerFacts{name: resp.GetStatus().GetMetadata().GetName()}
	c.limit = resp.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes()
	info, err := oom.ParseContainerInfo(resp.GetInfo())
	if err != nil {
		g.log.Debug("cannot read the runtime's verbose container info", "container", id, "error", err)
	}
	if c.limit <= 0 {
		c.limit = info.MemoryLimit
	}
	if p := info.CgroupsPath; strings.HasPrefix(p, "/") {
		c.cgroup, c.podParent = p, path.Dir(p) // cgroupfs driver: <pod>/<id>
	}
	sandboxID := info.SandboxID
	if sandboxID == "" {
		l, err := g.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
		if err != nil || len(l.GetContainers()) != 1 {
			return c, fmt.Errorf("container %s: no sandbox found (%v)", id, err)
		}
		sandboxID = l.GetContainers()[0].GetPodSandboxId()
	}
	pod, parent, err := g.sandbox(ctx, sandboxID)
	if err != nil {
		return c, err
	}
	c.pod = pod
	if c.podParent == "" {
		c.podParent = parent
		if p := oom.ContainerCgroup(parent, id); p != "" && c.cgroup == "" {
			c.cgroup = p
		}
	}
	return c, nil
}
