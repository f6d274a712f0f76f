package guard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/attempts"
	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/oom"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// MemoryReader reads a pod cgroup's memory facts; facts.Reader is one.
type MemoryReader interface {
	Memory(cgroupParent string) (facts.Memory, error)
}

// Recorder is told about every decision that is not a plain allow. It must
// not block.
type Recorder func(in policy.Request, d policy.Decision)

// Guard holds what the interceptors share. Its policy can be swapped at any
// time (SetPolicy); a call in flight keeps the policy it started with.
type Guard struct {
	policy    atomic.Pointer[policy.Config]
	facts     MemoryReader
	runtime   runtimeapi.RuntimeServiceClient
	log       *slog.Logger
	record    Recorder
	explained func(family string)
	rewrote   func(reason string)
	// events logs each distinct event once and summarises repeats.
	events *events
	// startErrors keeps the explanations of failed StartContainer calls
	// for the status of the container.
	startErrors *recent
	// attempts keeps the RunPodSandbox calls that created no sandbox.
	attempts *attempts.Store
}

// Options configure a Guard.
type Options struct {
	Policy *policy.Config
	Facts  MemoryReader
	// Runtime is used to find the pod of a container on
	// UpdateContainerResources, and the runtime handler of a pod. It may
	// be set later with SetRuntime, but before the first call.
	Runtime runtimeapi.RuntimeServiceClient
	Logger  *slog.Logger
	Record  Recorder
	// Explained is told the family (package oom) of every runtime error
	// that was rewritten into an explanation. It must not block.
	Explained func(family string)
	// Rewrote is told the reason (OOMKilled, StartError, ...) of every
	// container status whose message was rewritten. It must not block.
	Rewrote func(reason string)
	// Attempts, if not nil, is told every RunPodSandbox call that created
	// no sandbox (refused here or failed in the runtime), for
	// `cri-guard explain` of a pod that never started.
	Attempts *attempts.Store
}

// New returns a Guard.
func New(o Options) (*Guard, error) {
	if o.Policy == nil {
		return nil, errors.New("guard: no policy")
	}
	if o.Facts == nil {
		o.Facts = facts.Reader{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	g := &Guard{facts: o.Facts, runtime: o.Runtime, log: o.Logger, record: o.Record, explained: o.Explained,
		rewrote: o.Rewrote, events: newEvents(o.Logger), startErrors: newRecent(recentStartErrors),
		attempts: o.Attempts}
	g.policy.Store(o.Policy)
	return g, nil
}

// SetPolicy replaces the policy; the next call uses it.
func (g *Guard) SetPolicy(p *policy.Config) { g.policy.Store(p) }

// Policy is the policy in force.
func (g *Guard) Policy() *policy.Config { return g.policy.Load() }

// SetRuntime sets the client used for lookups.
func (g *Guard) SetRuntime(rs runtimeapi.RuntimeServiceClient) { g.runtime = rs }

// Interceptors returns the handlers to register with the proxy.
func (g *Guard) Interceptors() []proxy.Interceptor {
	return []proxy.Interceptor{
		proxy.Unary(runtimeapi.RuntimeService_RunPodSandbox_FullMethodName, g.RunPodSandbox),
		proxy.Unary(runtimeapi.RuntimeService_CreateContainer_FullMethodName, g.CreateContainer),
		proxy.Unary(runtimeapi.RuntimeService_UpdateContainerResources_FullMethodName, g.UpdateContainerResources),
		proxy.Unary(runtimeapi.RuntimeService_UpdatePodSandboxResources_FullMethodName, g.UpdatePodSandboxResources),
		proxy.Unary(runtimeapi.RuntimeService_StartContainer_FullMethodName, g.StartContainer),
		onlyIfReplyHas{
			needles: statusNeedles,
			typed:   proxy.Unary(runtimeapi.RuntimeService_ContainerStatus_FullMethodName, g.ContainerStatus),
		},
	}
}

// decide asks the policy and reports what it said.
func (g *Guard) decide(ctx context.Context, pol *policy.Config, in policy.Request) policy.Decision {
	d := pol.Decide(in)
	if d.Action == policy.Allow && d.Reason != policy.ReasonLimitUnknown {
		return d
	}
	level := slog.LevelInfo
	if d.Action == policy.Allow {
		level = slog.LevelWarn // failing open
	}
	// Logged once per distinct decision (the kubelet retries a refused
	// pod every few seconds), then summarised; Record counts every one.
	key := eventKey{msg: "policy decision", pod: in.Pod.Namespace + "/" + in.Pod.Name, container: in.Container,
		what: string(d.Action), text: d.Message}
	g.events.note(ctx, level, key,
		"method", string(in.Method), "namespace", in.Pod.Namespace, "pod", in.Pod.Name, "uid", in.Pod.UID,
		"container", in.Container, "action", string(d.Action), "reason", string(d.Reason),
		"limit", limitOf(in), "floor", d.Floor, "message", d.Message, "facts", in.PodCgroup.Why)
	if g.record != nil {
		g.record(in, d)
	}
	return d
}

func limitOf(in policy.Request) int64 {
	switch in.Method {
	case policy.CreateContainer, policy.UpdateContainerResources:
		return in.ContainerLimit
	}
	if in.PodCgroup.State == policy.Limited {
		return in.PodCgroup.Bytes
	}
	return in.PodLimit
}

// refuse is the error the kubelet sees for a rejected call. InvalidArgument:
// the same request can never succeed on this node; the pod spec must
// change.
func refuse(d policy.Decision) error {
	return status.Error(codes.InvalidArgument, d.Message)
}

// podFacts is what one read of the pod cgroup gives: its limit, for the
// policy, and its OOM counters (-1 when unknown), for explaining a failure
// of the call that follows.
type podFacts struct {
	limit                        policy.Memory
	oomKills, failcnt, oomEvents int64
}

// unread is podFacts not read before the call: its counters are unknown.
var unread = podFacts{oomKills: -1, failcnt: -1, oomEvents: -1}

// readPod reads the pod cgroup once per call. A path that tries to leave
// the cgroup root is an error for the caller; anything else that goes wrong
// makes the limit Unknown.
func (g *Guard) readPod(parent string) (podFacts, error) {
	pf := unread
	if parent == "" {
		pf.limit = policy.Memory{State: policy.Unknown, Why: "the request names no cgroup parent"}
		return pf, nil
	}
	m, err := g.facts.Memory(parent)
	switch {
	case errors.Is(err, facts.ErrEscape), errors.Is(err, facts.ErrBadPath):
		return podFacts{}, err
	case err != nil:
		pf.limit = policy.Memory{State: policy.Unknown, Why: err.Error()}
		return pf, nil
	case m.Unlimited:
		pf.limit = policy.Memory{State: policy.Unlimited}
	default:
		pf.limit = policy.Memory{State: policy.Limited, Bytes: m.Limit}
	}
	pf.oomKills, pf.failcnt = int64(m.OOMKills), int64(m.Failcnt)
	if m.Version == 2 {
		pf.oomEvents = int64(m.OOMEvents) // v1 has no such counter
	}
	return pf, nil
}

func podOf(cfg *runtimeapi.PodSandboxConfig, handler string) policy.Pod {
	md := cfg.GetMetadata()
	return policy.Pod{
		Namespace:      md.GetNamespace(),
		Name:           md.GetName(),
		UID:            md.GetUid(),
		RuntimeHandler: handler,
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
	}
}

func badCgroupParent(pod policy.Pod, parent string, err error) error {
	return status.Errorf(codes.InvalidArgument, "cri-guard: pod %s/%s: cgroup parent %q refused: %v", pod.Namespace, pod.Name, parent, err)
}

// below reports whether a set limit is under the largest floor of pol, the
// cheap test that spares a lookup for every ordinary call.
func below(pol *policy.Config, limit int64, sandbox bool) bool {
	if limit <= 0 {
		return false
	}
	max := pol.Floors.Container
	if sandbox {
		max = pol.Floors.Sandbox
	}
	for _, f := range pol.Handlers {
		v := f.Container
		if sandbox {
			v = f.Sandbox
		}
		if v > max {
			max = v
		}
	}
	return limit < max
}

// sandbox asks the runtime for a pod: its identity, handler, labels and
// annotations, and its cgroup parent (from the runtime's verbose status, or
// found in the cgroup tree by the pod's uid; "" when neither says).
func (g *Guard) sandbox(ctx context.Context, id string) (policy.Pod, string, error) {
	if g.runtime == nil {
		return policy.Pod{}, "", errors.New("no runtime client for lookups")
	}
	resp, err := g.runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return policy.Pod{}, "", fmt.Errorf("pod sandbox %s: %w", id, err)
	}
	st := resp.GetStatus()
	md := st.GetMetadata()
	pod := policy.Pod{
		Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid(),
		RuntimeHandler: st.GetRuntimeHandler(), Labels: st.GetLabels(), Annotations: st.GetAnnotations(),
	}
	parent, err := oom.ParseSandboxCgroupParent(resp.GetInfo())
	if err != nil {
		g.log.Debug("cannot read the runtime's verbose sandbox info", "sandbox", id, "error", err)
	}
	if parent == "" && pod.UID != "" {
		root := facts.DefaultRoot
		if r, ok := g.facts.(facts.Reader); ok && r.Root != "" {
			root = r.Root
		}
		if found, err := oom.FindPodCgroups(root, "", pod.UID); err == nil && len(found) == 1 {
			parent = found[0]
		}
	}
	return pod, parent, nil
}
