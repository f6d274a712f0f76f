package guard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path"
	"strings"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/facts"
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

// kernelWindow gives the kernel's oom-kill lines logged during a call;
// *oom.KernelWindow is one.
type kernelWindow interface {
	OOMLines(memcg string, max int) []string
	Close()
}

// openKernelWindow opens a window on the kernel log before a call is
// forwarded. A nil *oom.KernelWindow (no readable log) gives no lines.
var openKernelWindow = func() kernelWindow { return oom.OpenKernelWindow() }

// onError runs next and hands a failure to explain, with the kernel log
// lines written while next ran.
func onError[Req, Resp any](next func(context.Context, Req) (Resp, error), explain func(context.Context, error, kernelWindow) error) func(context.Context, Req) (Resp, error) {
	return func(ctx context.Context, r Req) (Resp, error) {
		kw := openKernelWindow()
		defer kw.Close()
		resp, err := next(ctx, r)
		if err != nil {
			return resp, explain(ctx, err, kw)
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

// callFacts is what explaining one failed call needs besides the error:
// the pod's cgroup parent, the container's own cgroup when known, the pod
// counters read before the call, and the kernel lines of the call.
type callFacts struct {
	parent, container string
	before            podFacts
	kernel            kernelWindow
}

// explain rewrites err when it is a memory failure that the evidence
// supports.
func (g *Guard) explain(ctx context.Context, err error, s oom.Subject, cf callFacts) error {
	st, m, ok := classify(err)
	if !ok {
		return err
	}
	return g.explainMatch(ctx, st, m, s, cf)
}

// evidence reads what the node shows after a failed call.
func (g *Guard) evidence(cf callFacts) oom.Evidence {
	ev := oom.NoEvidence()
	ev.Pod = oom.ReadCgroup(g.facts, cf.parent)
	ev.OOMBefore, ev.FailBefore, ev.OOMEventsBefore = cf.before.oomKills, cf.before.failcnt, cf.before.oomEvents
	if cf.container != "" {
		if c := oom.ReadCgroup(g.facts, cf.container); c.Read {
			ev.Container = &c
		}
	}
	if cf.kernel != nil {
		// The container's own cgroup when it is known, even when it is gone:
		// a kill elsewhere in the pod is not this container's.
		if p, err := facts.ResolveParent(cf.container); cf.container != "" && err == nil {
			ev.Kernel, ev.KernelScope = cf.kernel.OOMLines(p, 3), oom.ScopeContainer
		} else if ev.Pod.Path != "" {
			ev.Kernel, ev.KernelScope = cf.kernel.OOMLines(ev.Pod.Path, 3), oom.ScopePod
		}
	}
	return ev
}

func (g *Guard) explainMatch(ctx context.Context, st *status.Status, m oom.Match, s oom.Subject, cf callFacts) error {
	ev := g.evidence(cf)
	msg, ok := oom.Explain(s, m, ev)
	if !ok {
		g.log.Info("runtime error looks like a memory failure but the node shows no evidence; passing it on",
			"pod", s.Pod, "container", s.Container, "family", string(m.Family), "cgroup", ev.Pod.Path, "error", st.Message())
		return st.Err()
	}
	if g.explained != nil {
		g.explained(string(m.Family))
	}
	g.events.note(ctx, slog.LevelWarn, eventKey{msg: "memory failure explained", pod: s.Pod, container: s.Container, what: string(m.Family)},
		"pod", s.Pod, "container", s.Container, "family", string(m.Family), "explanation", msg)
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
	return onError(next, func(ctx context.Context, err error, kw kernelWindow) error {
		pod := podOf(cfg, req.GetRuntimeHandler())
		s := oom.Subject{Pod: podName(pod), Limit: cfg.GetLinux().GetResources().GetMemoryLimitInBytes(),
			Floor: g.policy.Load().FloorsFor(req.GetRuntimeHandler()).Sandbox}
		return g.explain(ctx, err, s, callFacts{parent: parent, before: pf, kernel: kw})
	})
}

// explainCreateContainer wraps next of CreateContainer.
func (g *Guard) explainCreateContainer(req *runtimeapi.CreateContainerRequest, next createContainerNext, pf podFacts) createContainerNext {
	sb := req.GetSandboxConfig()
	parent := sb.GetLinux().GetCgroupParent()
	return onError(next, func(ctx context.Context, err error, kw kernelWindow) error {
		limit := req.GetConfig().GetLinux().GetResources().GetMemoryLimitInBytes()
		if limit <= 0 {
			limit = sb.GetLinux().GetResources().GetMemoryLimitInBytes()
		}
		s := oom.Subject{Pod: podName(podOf(sb, "")), Container: req.GetConfig().GetMetadata().GetName(),
			Limit: limit, Floor: g.policy.Load().Floors.Container}
		return g.explain(ctx, err, s, callFacts{parent: parent, before: pf, kernel: kw})
	})
}

// explainByContainer wraps next of a call that names only a container:
// the pod and cgroups are looked up only when the error matches a family.
func explainByContainer[Req, Resp any](g *Guard, id string, limit int64, next func(context.Context, Req) (Resp, error)) func(context.Context, Req) (Resp, error) {
	return onError(next, func(ctx context.Context, err error, kw kernelWindow) error {
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
			s.Limit = c.limit.Bytes
		}
		return g.explainMatch(ctx, st, m, s, callFacts{parent: c.podParent, container: c.cgroup, before: unread, kernel: kw})
	})
}

// explainUpdatePodSandbox wraps next of UpdatePodSandboxResources.
func (g *Guard) explainUpdatePodSandbox(req *runtimeapi.UpdatePodSandboxResourcesRequest, next updatePodSandboxNext) updatePodSandboxNext {
	return onError(next, func(ctx context.Context, err error, kw kernelWindow) error {
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
		return g.explainMatch(ctx, st, m, s, callFacts{parent: parent, before: unread, kernel: kw})
	})
}

// StartContainer explains a start that failed for lack of memory, and
// keeps the explanation for the container's status (see ContainerStatus).
func (g *Guard) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest, next startContainerNext) (*runtimeapi.StartContainerResponse, error) {
	resp, err := explainByContainer(g, req.GetContainerId(), 0, next)(ctx, req)
	if msg := status.Convert(err).Message(); err != nil && strings.HasPrefix(msg, "cri-guard: ") {
		if i := strings.Index(msg, oom.Separator); i > 0 {
			g.startErrors.put(req.GetContainerId(), msg[:i])
		}
	}
	return resp, err
}

// Container status reasons that cri-guard explains: an OOM kill, and a
// start that failed (containerd's StartError, Docker's
// ContainerCannotRun), when its message is a memory failure.
const (
	oomKilledReason  = "OOMKilled"
	startErrorReason = "StartError"
	cannotRunReason  = "ContainerCannotRun"
)

// statusNeedles are the reasons whose replies ContainerStatus decodes.
var statusNeedles = [][]byte{[]byte(oomKilledReason), []byte(startErrorReason), []byte(cannotRunReason)}

// onlyIfReplyHas runs a typed interceptor only for replies whose bytes
// contain one of needles. ContainerStatus is called for every container
// again and again; its reason travels as plain bytes, so the few replies
// that can be OOMKilled or failed-start ones are decoded, and the others
// pass as they came, undecoded.
type onlyIfReplyHas struct {
	needles [][]byte
	typed   proxy.Interceptor
}

func (o onlyIfReplyHas) Method() string { return o.typed.Method() }

// Needle and Needles make it a proxy.ReplyFilter: the frame-level core
// relays the calls whose reply has none of the needles without running
// Intercept.
func (o onlyIfReplyHas) Needle() []byte { return o.needles[0] }

func (o onlyIfReplyHas) Needles() [][]byte { return o.needles }

func (o onlyIfReplyHas) has(b []byte) bool {
	for _, n := range o.needles {
		if bytes.Contains(b, n) {
			return true
		}
	}
	return false
}

func (o onlyIfReplyHas) Intercept(ctx context.Context, req []byte, forward proxy.Forward) ([]byte, error) {
	out, err := forward(ctx, req)
	if err != nil || !o.has(out) {
		return out, err
	}
	return o.typed.Intercept(ctx, req, func(context.Context, []byte) ([]byte, error) { return out, nil })
}

// ContainerStatus adds to the status of a container that was OOM-killed
// its memory limit, its peak usage and its pod's limit; and to that of a
// container whose start failed for lack of memory, the explanation its
// StartContainer got, so that the kubelet's lastState shows it too. Every
// other reply keeps the runtime's bytes.
func (g *Guard) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest, next containerStatusNext) (*runtimeapi.ContainerStatusResponse, error) {
	resp, err := next(ctx, req)
	if err != nil || strings.HasPrefix(resp.GetStatus().GetMessage(), "cri-guard: ") {
		return resp, err
	}
	id := resp.GetStatus().GetId()
	if id == "" {
		id = req.GetContainerId()
	}
	var msg string
	switch resp.GetStatus().GetReason() {
	case oomKilledReason:
		msg = g.oomKilledMessage(ctx, id, resp)
	case startErrorReason, cannotRunReason:
		msg = g.startErrorMessage(ctx, id, resp)
	}
	if msg == "" {
		return resp, nil
	}
	g.statusRewritten(ctx, id, resp.GetStatus(), msg)
	out := proto.Clone(resp).(*runtimeapi.ContainerStatusResponse)
	out.Status.Message = msg
	return out, nil
}

// statusRewritten counts a rewritten container status and logs it, once
// per distinct message (the kubelet asks for a container's status on every
// pod sync).
func (g *Guard) statusRewritten(ctx context.Context, id string, st *runtimeapi.ContainerStatus, msg string) {
	reason := st.GetReason()
	if g.rewrote != nil {
		g.rewrote(reason)
	}
	ns, pod := st.GetLabels()["io.kubernetes.pod.namespace"], st.GetLabels()["io.kubernetes.pod.name"]
	name := st.GetMetadata().GetName()
	g.events.note(ctx, slog.LevelInfo, eventKey{msg: "container status rewritten", pod: ns + "/" + pod, container: id, what: reason, text: msg},
		"namespace", ns, "pod", pod, "container", name, "id", id, "reason", reason, "message", msg)
}

func (g *Guard) oomKilledMessage(ctx context.Context, id string, resp *runtimeapi.ContainerStatusResponse) string {
	c, lerr := g.containerFrom(ctx, id, resp)
	if lerr != nil {
		g.log.Warn("cannot find the pod of an OOM-killed container", "container", id, "error", lerr)
		return ""
	}
	pod := oom.ReadCgroup(g.facts, c.podParent)
	msg := oom.OOMKilled(oom.Subject{Pod: podName(c.pod), Container: c.name}, c.limit, c.cg, pod)
	if orig := resp.GetStatus().GetMessage(); orig != "" {
		msg += "; runtime message: " + orig
	}
	return msg
}

// startErrorMessage explains the status of a container whose start failed
// with a memory failure: with the explanation its StartContainer call got,
// where cri-guard saw it, else from what the node shows now (its own
// cgroup's counters, the limit), never from the pod's past.
func (g *Guard) startErrorMessage(ctx context.Context, id string, resp *runtimeapi.ContainerStatusResponse) string {
	orig := resp.GetStatus().GetMessage()
	m := oom.Classify(orig)
	if m.Family == oom.None {
		return ""
	}
	if e, ok := g.startErrors.get(id); ok {
		return oom.Wrap(e, orig)
	}
	c, lerr := g.containerFrom(ctx, id, resp)
	if lerr != nil {
		g.log.Warn("cannot find the pod of a container whose start failed", "container", id, "error", lerr)
		return ""
	}
	s := oom.Subject{Pod: podName(c.pod), Container: c.name, Limit: c.limit.Bytes, Floor: g.policy.Load().Floors.Container}
	ev := g.evidence(callFacts{parent: c.podParent, container: c.cgroup, before: unread})
	e, ok := oom.Explain(s, m, ev)
	if !ok {
		return ""
	}
	return oom.Wrap(e, orig)
}

// containerFacts is what the runtime and the node say about a container.
type containerFacts struct {
	name      string
	pod       policy.Pod
	limit     oom.Limit   // the container's memory limit, as far as known
	cg        *oom.Cgroup // the container's cgroup, when read
	cgroup    string      // the container's cgroup path, relative to the hierarchy
	podParent string      // the pod's cgroup
}

func (g *Guard) container(ctx context.Context, id string) (containerFacts, error) {
	return g.containerFrom(ctx, id, nil)
}

// containerFrom finds a container's pod and cgroups, from the verbose status
// the runtime gives (asked for when have is not verbose), and its memory
// limit: the runtime's word, else its own cgroup's, else unknown.
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
	info, err := oom.ParseContainerInfo(resp.GetInfo())
	if err != nil {
		g.log.Debug("cannot read the runtime's verbose container info", "container", id, "error", err)
	}
	if p := info.CgroupsPath; strings.HasPrefix(p, "/") {
		c.cgroup, c.podParent = p, path.Dir(p) // cgroupfs driver: <pod>/<id>
	} else if p, ok := oom.SystemdCgroup(p); ok {
		c.cgroup, c.podParent = p, path.Dir(p) // systemd driver: <pod slice>/<prefix>-<id>.scope
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
	if c.cgroup != "" {
		if r := oom.ReadCgroup(g.facts, c.cgroup); r.Read {
			c.cg = &r
		}
	}
	c.limit = oom.ResolveLimit(resp.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes(), info, c.cg)
	return c, nil
}
