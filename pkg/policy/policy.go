package policy

import (
	"fmt"
	"strings"
)

// Mode says what happens to a container whose memory limit is below the
// floor.
type Mode string

const (
	// ModeReject refuses the call. It is the default.
	ModeReject Mode = "reject"
	// ModeRaise sets the container's limit to the floor, never above the
	// pod's own limit. A pod sandbox cannot be raised: cri-guard does not
	// write cgroups, so a pod below the floor is refused.
	ModeRaise Mode = "raise"
	// ModeAudit forwards the call unchanged; the decision is logged and
	// counted.
	ModeAudit Mode = "audit"
)

// SkipAnnotation exempts a pod when set to "true".
const SkipAnnotation = "cri-guard.io/skip"

// Floors are the smallest memory limits, in bytes, with which a pod sandbox
// and a container can start. Zero means no floor.
type Floors struct {
	Sandbox   int64
	Container int64
}

// Config is the node's policy.
type Config struct {
	Mode   Mode
	Floors Floors
	// Handlers overrides Floors per runtime handler; a zero field keeps the
	// default.
	Handlers map[string]Floors
	// ExemptNamespaces are never checked.
	ExemptNamespaces []string
	// FailClosed refuses calls whose pod limit cannot be known. By default
	// they pass.
	FailClosed bool
}

// Method is one of the intercepted CRI methods.
type Method string

const (
	RunPodSandbox             Method = "RunPodSandbox"
	UpdatePodSandboxResources Method = "UpdatePodSandboxResources"
	CreateContainer           Method = "CreateContainer"
	UpdateContainerResources  Method = "UpdateContainerResources"
)

// Pod identifies the pod a call is about.
type Pod struct {
	Namespace, Name, UID string
	RuntimeHandler       string
	Labels, Annotations  map[string]string
	// Kind names the object that carries the pod's spec, for messages
	// about a manifest checked before it runs ("Deployment" says
	// "deployment team-a/web"); empty on the node, where it is a pod.
	Kind string
}

// LimitState says what is known of a memory limit.
type LimitState int

const (
	// Unknown: the limit could not be read.
	Unknown LimitState = iota
	// Unlimited: no limit is set.
	Unlimited
	// Limited: the limit is Memory.Bytes, which may be 0.
	Limited
)

// Memory is a memory limit as the node holds it.
type Memory struct {
	State LimitState
	Bytes int64
	// Why is set when State is Unknown: what went wrong reading it.
	Why string
}

// Request is one intercepted call, with its facts.
type Request struct {
	Method    Method
	Pod       Pod
	Container string // CreateContainer and UpdateContainerResources
	// PodLimit is the pod-level memory limit that the call asks for
	// (PodSandboxConfig.Linux.Resources, UpdatePodSandboxResources); 0 when
	// the kubelet did not say. It is a hint.
	PodLimit int64
	// Overhead is the pod overhead (RuntimeClass) that the kubelet
	// reported, a hint. The kubelet sizes the pod cgroup to PodLimit plus
	// Overhead.
	Overhead int64
	// ContainerLimit is the container's memory limit in the request; 0
	// when unset.
	ContainerLimit int64
	// PodCgroup is the pod cgroup's limit as the node holds it: the truth.
	PodCgroup Memory
}

// Action is what to do with a call.
type Action string

const (
	Allow  Action = "allow"
	Reject Action = "reject"
	Raise  Action = "raise"
	Audit  Action = "audit"
)

// Reason says why, in a word fit for a metric label.
type Reason string

const (
	ReasonWithinFloor      Reason = "within-floor"
	ReasonNoLimit          Reason = "no-limit"
	ReasonExempt           Reason = "exempt"
	ReasonLimitUnknown     Reason = "limit-unknown"
	ReasonNegativeLimit    Reason = "negative-limit"
	ReasonSandboxBelow     Reason = "sandbox-below-floor"
	ReasonContainerBelow   Reason = "container-below-floor"
	ReasonPodBelowForRaise Reason = "pod-below-floor"
)

// Decision is the outcome for one call.
type Decision struct {
	Action Action
	Reason Reason
	// Floor is the floor that applied, in bytes.
	Floor int64
	// Limit is the container's new limit when Action is Raise.
	Limit int64
	// Message is for the person who owns the pod; empty on a plain Allow.
	Message string
}

// FloorsFor returns the floors for a runtime handler.
func (c *Config) FloorsFor(handler string) Floors {
	f := c.Floors
	if h, ok := c.Handlers[handler]; ok {
		if h.Sandbox != 0 {
			f.Sandbox = h.Sandbox
		}
		if h.Container != 0 {
			f.Container = h.Container
		}
	}
	return f
}

func (c *Config) exempt(p Pod) bool {
	if strings.EqualFold(p.Annotations[SkipAnnotation], "true") {
		return true
	}
	for _, ns := range c.ExemptNamespaces {
		if ns == p.Namespace {
			return true
		}
	}
	return false
}

// Decide applies the policy to one call.
func (c *Config) Decide(r Request) Decision {
	if c.exempt(r.Pod) {
		return Decision{Action: Allow, Reason: ReasonExempt}
	}
	floors := c.FloorsFor(r.Pod.RuntimeHandler)
	switch r.Method {
	case CreateContainer, UpdateContainerResources:
		return c.decideContainer(r, floors.Container)
	default:
		return c.decidePod(r, floors.Sandbox)
	}
}

// PageSize is the page size the kernel rounds a memory limit down to. The
// policy is pure, so it does not ask the host; a host with bigger pages
// gets both values named where they differ.
const PageSize = 4 * KiB

// podLimit is the pod's limit: the cgroup where it can be read, else the
// request's hints, sized as the kubelet sizes the pod cgroup (the pod's
// limits plus its overhead). fromCgroup says which.
func podLimit(r Request) (lim Memory, fromCgroup bool) {
	hinted := Memory{State: Limited, Bytes: r.PodLimit + max(r.Overhead, 0)}
	if r.Method == UpdatePodSandboxResources && r.PodLimit > 0 {
		// The request is the limit the pod is being resized to.
		return hinted, false
	}
	if r.PodCgroup.State != Unknown {
		return r.PodCgroup, true
	}
	if r.PodLimit > 0 {
		return hinted, false
	}
	return r.PodCgroup, true
}

func (c *Config) decidePod(r Request, floor int64) Decision {
	lim, fromCgroup := podLimit(r)
	switch {
	case lim.State == Unlimited:
		return Decision{Action: Allow, Reason: ReasonNoLimit, Floor: floor}
	case lim.State == Unknown && c.FailClosed:
		return Decision{Action: Reject, Reason: ReasonLimitUnknown, Floor: floor,
			Message: fmt.Sprintf("%s: cri-guard cannot read the pod's memory limit (%s) and is set to fail closed; ask the node's administrator", podName(r), lim.Why)}
	case lim.State == Unknown:
		return Decision{Action: Allow, Reason: ReasonLimitUnknown, Floor: floor}
	case floor == 0 || lim.Bytes >= floor:
		return Decision{Action: Allow, Reason: ReasonWithinFloor, Floor: floor}
	}
	text, used := podLimitText(r, lim.Bytes, fromCgroup, floor)
	msg := fmt.Sprintf("%s: memory limit %s is below the %s minimum needed to start the pod sandbox%s",
		podName(r), text, Size(floor), advice(used, floor))
	d := Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: floor, Message: msg}
	if c.Mode == ModeAudit {
		d.Action = Audit
	}
	return d
}

// podLimitText says the pod limit b that the decision used, and returns
// the value the advice is about. The request's own value is quoted when it
// is the same limit as the cgroup's (up to the kernel's rounding down to
// whole pages) and below the floor too, since that is what the pod's owner
// wrote; where the two differ, or only the cgroup's is below the floor,
// both are named.
func podLimitText(r Request, b int64, fromCgroup bool, floor int64) (string, int64) {
	hinted := r.PodLimit + max(r.Overhead, 0)
	withOverhead := func() string {
		if r.Overhead > 0 {
			return Bytes(hinted) + " (" + Bytes(r.PodLimit) + OverheadPlus + Bytes(r.Overhead) + OverheadOf
		}
		return Bytes(r.PodLimit)
	}
	switch {
	case !fromCgroup:
		return withOverhead(), r.PodLimit
	case r.PodLimit <= 0:
		return limitText(b, true), b
	case hinted&^(PageSize-1) == b && hinted < floor:
		return withOverhead(), r.PodLimit
	case hinted&^(PageSize-1) == b:
		return Bytes(b) + RoundedSo + withOverhead() + RoundedReadBack + Bytes(b) + ")", b
	}
	return limitText(b, false) + CgroupSays + withOverhead() + ")", b
}

func (c *Config) decideContainer(r Request, floor int64) Decision {
	v := r.ContainerLimit
	switch {
	case v < 0:
		// runc reads -1 as "no limit"; the runtime validates the rest.
		return Decision{Action: Allow, Reason: ReasonNegativeLimit, Floor: floor}
	case v == 0:
		return Decision{Action: Allow, Reason: ReasonNoLimit, Floor: floor}
	case floor == 0 || v >= floor:
		return Decision{Action: Allow, Reason: ReasonWithinFloor, Floor: floor}
	}
	who := fmt.Sprintf("%s, container %s", podName(r), orUnknown(r.Container))
	below := fmt.Sprintf("%s: memory limit %s is below the %s minimum needed to start a container",
		who, Bytes(v), Size(floor))
	switch c.Mode {
	case ModeAudit:
		return Decision{Action: Audit, Reason: ReasonContainerBelow, Floor: floor, Message: below + advice(v, floor)}
	case ModeRaise:
		pod, _ := podLimit(r)
		if pod.State == Limited && pod.Bytes < floor {
			return Decision{Action: Reject, Reason: ReasonPodBelowForRaise, Floor: floor,
				Message: fmt.Sprintf("%s, and cannot be raised because the pod's own memory limit is %s%s",
					below, Bytes(pod.Bytes), advice(v, floor))}
		}
		return Decision{Action: Raise, Reason: ReasonContainerBelow, Floor: floor, Limit: floor,
			Message: fmt.Sprintf("%s; raised to %s", below, Size(floor))}
	default:
		return Decision{Action: Reject, Reason: ReasonContainerBelow, Floor: floor, Message: below + advice(v, floor)}
	}
}

func podName(r Request) string {
	kind := "pod"
	if r.Pod.Kind != "" {
		kind = strings.ToLower(r.Pod.Kind)
	}
	return kind + " " + orUnknown(r.Pod.Namespace) + "/" + orUnknown(r.Pod.Name)
}

func orUnknown(s string) string {
	if s == "" {
		return "<unnamed>"
	}
	return s
}

// limitText says a limit; fromCgroup marks a value read back from the pod
// cgroup, which the kernel has rounded down to whole pages.
func limitText(b int64, fromCgroup bool) string {
	if fromCgroup && b < PageSize {
		return Bytes(b) + CgroupRounded
	}
	return Bytes(b)
}

// advice suggests a fix for a limit below the floor, but only a plausible
// one.
func advice(b, floor int64) string {
	switch {
	case b == 1:
		// 500m of memory is half a byte: the kubelet rounds it up to 1.
		return AdviceMilli
	case b < MiB && b*MiB >= floor:
		return fmt.Sprintf("%s%dMi?", AdviceNoUnitPrefix, b)
	case b < MiB:
		// Never less than a page: the kernel reads a smaller limit as 0.
		return AdviceNoUnitGive + Size(max(floor, PageSize))
	default:
		return AdviceAtLeast + Size(floor)
	}
}

// The words that messages are made of, exported for the admission policy,
// which says them too (package admission); TestCasesAdmission holds the
// two to the same text.
const (
	// AdviceMilli follows a limit of 1 byte.
	AdviceMilli = `; the "m" suffix means thousandths, so a limit such as 500m is half a byte (rounded up to 1 byte): did you mean Mi, as in 500Mi?`
	// AdviceNoUnitPrefix, the limit and "Mi?" follow a limit below 1Mi
	// that would pass in Mi.
	AdviceNoUnitPrefix = "; a memory quantity without a unit is bytes, did you mean "
	// AdviceNoUnitGive and the floor (at least a page) follow any other
	// limit below 1Mi.
	AdviceNoUnitGive = "; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least "
	// AdviceAtLeast and the floor follow a limit of 1Mi or more.
	AdviceAtLeast = "; set the memory limit to at least "
	// CgroupRounded follows a pod limit read back from a pod cgroup below
	// one page.
	CgroupRounded = " (the pod cgroup's limit; the kernel rounds limits below one page down to 0)"
	// A limit with overhead: hinted (limit OverheadPlus overhead OverheadOf
	OverheadPlus = " plus "
	OverheadOf   = " of pod overhead)"
	// The cgroup's limit b when the pod's was rounded down: b RoundedSo
	// asked RoundedReadBack b ")".
	RoundedSo       = " (the pod cgroup's limit: the kernel rounds limits down to whole pages, so the "
	RoundedReadBack = " the pod asked for read back as "
	// The cgroup's limit when Linux.Resources says another: b CgroupSays
	// asked ")".
	CgroupSays = " (the pod cgroup's limit; the pod's Linux.Resources says "
)
