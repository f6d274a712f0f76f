package oom

import (
	"fmt"
	"strings"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

// SmallLimit is the limit below which a failure of a starting container is
// taken to be for lack of memory even without an OOM count: runc's and
// crun's init processes alone need a few MiB, and mkdir of a memory cgroup
// fails under a limit of a page or so.
const SmallLimit = 8 * policy.MiB

// DefaultFloor is the smallest limit Explain suggests when the caller has no
// policy floor to offer.
const DefaultFloor = 12 * policy.MiB

// Separator comes between the explanation and the runtime's own error text.
const Separator = "; runtime error: "

// Subject names what the call was about.
type Subject struct {
	// Pod is "namespace/name"; empty when unknown.
	Pod string
	// Container is the container's name; empty for the pod sandbox.
	Container string
	// Limit is the limit the request asked for (0: none or unknown). The
	// kernel rounds small limits down to whole pages, so the cgroup may
	// show less.
	Limit int64
	// Floor is the smallest limit to suggest; DefaultFloor when 0.
	Floor int64
}

func (s Subject) what() string {
	if s.Container == "" {
		return "the pod sandbox (pause container)"
	}
	return "container " + s.Container
}

func (s Subject) pod() string {
	if s.Pod == "" {
		return "pod <unknown>"
	}
	return "pod " + s.Pod
}

// limit is the limit to name: the requested one, else the pod cgroup's.
func (s Subject) limit(e Evidence) (int64, bool) {
	if s.Limit > 0 {
		return s.Limit, true
	}
	if e.Pod.Read && !e.Pod.Unlimited {
		return e.Pod.Limit, true
	}
	return 0, false
}

// Claimed says whether the evidence supports blaming memory for m.
func Claimed(s Subject, m Match, e Evidence) bool {
	if m.Family == None {
		return false
	}
	if m.Family == LimitBelowUsage && m.Limit >= 0 && m.Usage > m.Limit {
		return true // the runtime measured it
	}
	if e.oomRose() || len(e.Kernel) > 0 || e.counterText() != "" {
		return true
	}
	if e.Container != nil && e.Container.Read && e.Container.OOMKills > 0 {
		return true
	}
	if l, ok := s.limit(e); ok && l < SmallLimit {
		return true
	}
	return false
}

// Explain returns the one-line explanation of a failed call whose runtime
// error matched m, and true; or "", false when the evidence does not
// support a claim, and the runtime's error should go back untouched.
func Explain(s Subject, m Match, e Evidence) (string, bool) {
	if !Claimed(s, m, e) {
		return "", false
	}
	var b strings.Builder
	b.WriteString("cri-guard: " + s.pod() + ": ")
	limit, known := s.limit(e)
	if known && m.Family != LimitBelowUsage {
		fmt.Fprintf(&b, "memory limit %s: ", policy.Bytes(limit))
	}
	switch m.Family {
	case InitOOMKilled:
		b.WriteString(s.what() + " was OOM-killed while starting")
	case ExecOOMKilled:
		b.WriteString("a process started in " + s.what() + " was OOM-killed")
	case CgroupNoMemory:
		b.WriteString("the runtime could not create the cgroup of " + s.what() + ": the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory)")
	case LimitBelowUsage:
		fmt.Fprintf(&b, "the runtime could not set the memory limit of %s to %s: it already uses %s", s.what(), policy.Bytes(m.Limit), policy.Bytes(m.Usage))
		if m.Peak > 0 {
			fmt.Fprintf(&b, " (peak %s)", policy.Bytes(m.Peak))
		}
	case InitDied:
		b.WriteString(s.what() + " died while starting, for lack of memory")
	}
	if ev := evidenceText(m, e); ev != "" {
		b.WriteString(" (evidence: " + ev + ")")
	}
	b.WriteString("; fix: " + fix(s, m, e, limit, known))
	return b.String(), true
}

// Wrap joins an explanation and the runtime's error text.
func Wrap(explanation, runtimeError string) string {
	return explanation + Separator + runtimeError
}

func evidenceText(m Match, e Evidence) string {
	var parts []string
	if t := e.counterText(); t != "" {
		parts = append(parts, t)
	}
	if t := e.failText(); t != "" {
		parts = append(parts, t)
	} else if e.Pod.Read {
		if e.Pod.Failcnt > 0 {
			parts = append(parts, fmt.Sprintf("failcnt %d", e.Pod.Failcnt))
		}
	}
	if e.Pod.Read && e.Pod.Peak > 0 {
		parts = append(parts, "peak usage "+policy.Bytes(int64(e.Pod.Peak)))
	}
	if c := e.Container; c != nil && c.Read {
		if c.OOMKills > 0 {
			parts = append(parts, fmt.Sprintf("the container cgroup's oom_kill counter is %d", c.OOMKills))
		}
		if c.Peak > 0 {
			parts = append(parts, "container peak usage "+policy.Bytes(int64(c.Peak)))
		}
	}
	if len(e.Kernel) > 0 {
		parts = append(parts, "kernel: "+ShortKernelLine(e.Kernel[len(e.Kernel)-1]))
	}
	return strings.Join(parts, ", ")
}

func fix(s Subject, m Match, e Evidence, limit int64, known bool) string {
	floor := s.Floor
	if floor <= 0 {
		floor = DefaultFloor
	}
	if m.Family == LimitBelowUsage {
		want := m.Usage
		if m.Peak > want {
			want = m.Peak
		}
		return "keep the memory limit above what the container uses, at least " + policy.Quantity(roundUpMiB(want))
	}
	switch {
	case !known:
		return "set the memory limit to at least " + policy.Quantity(floor)
	case limit < policy.MiB:
		return "a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least " + policy.Quantity(floor)
	case limit < floor:
		return "set the memory limit to at least " + policy.Quantity(floor)
	case limit < SmallLimit:
		// The floor was lowered below what a runtime needs to start.
		return "set the memory limit to at least " + policy.Quantity(max(floor, DefaultFloor))
	}
	peak := int64(e.Pod.Peak)
	if e.Container != nil && int64(e.Container.Peak) > peak {
		peak = int64(e.Container.Peak)
	}
	if peak > 0 {
		return "raise the memory limit above the peak usage, to at least " + policy.Quantity(roundUpMiB(peak+peak/4))
	}
	return "raise the memory limit"
}

func roundUpMiB(b int64) int64 {
	return (b + policy.MiB - 1) / policy.MiB * policy.MiB
}

// OOMKilled returns the message for a container that the kernel killed for
// memory, from what is known: the container's limit (0: unlimited or
// unknown), its cgroup (nil when gone), and its pod's cgroup.
func OOMKilled(s Subject, containerLimit int64, container *Cgroup, pod Cgroup) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cri-guard: %s: container %s was OOM-killed", s.pod(), orUnknown(s.Container))
	switch {
	case containerLimit > 0:
		fmt.Fprintf(&b, ": its memory limit is %s", policy.Bytes(containerLimit))
	case pod.Read && !pod.Unlimited:
		fmt.Fprintf(&b, ": it has no memory limit of its own, and the pod's limit is %s", policy.Bytes(pod.Limit))
	default:
		b.WriteString(": it has no memory limit of its own")
	}
	var peak int64
	switch {
	case container != nil && container.Read && container.Peak > 0:
		peak = int64(container.Peak)
		fmt.Fprintf(&b, ", peak usage %s", policy.Bytes(peak))
	case pod.Read && pod.Peak > 0:
		peak = int64(pod.Peak)
		fmt.Fprintf(&b, ", the pod's peak usage %s", policy.Bytes(peak))
	}
	if pod.Read && pod.OOMKills > 0 {
		fmt.Fprintf(&b, ", the pod cgroup's oom_kill counter is %d", pod.OOMKills)
	}
	b.WriteString("; fix: raise the memory limit")
	if containerLimit > 0 {
		fmt.Fprintf(&b, " above %s", policy.Quantity(containerLimit))
	}
	b.WriteString(" or make the program use less memory")
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}
