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

// pageSize is what the kernel rounds a memory limit down to.
const pageSize = 4 * policy.KiB

// limit is the limit that bounds the subject: the requested one, or the
// pod cgroup's where that is smaller or the request gives none.
func (s Subject) limit(e Evidence) (int64, bool) {
	podLimited := e.Pod.Read && !e.Pod.Unlimited
	switch {
	case s.Limit > 0 && podLimited && e.Pod.Limit < s.Limit&^(pageSize-1):
		return e.Pod.Limit, true
	case s.Limit > 0:
		return s.Limit, true
	case podLimited:
		return e.Pod.Limit, true
	}
	return 0, false
}

// limitText names the limit that limit returned: the request's, or the pod
// cgroup's, and both where they differ by more than the kernel's rounding.
func (s Subject) limitText(e Evidence) string {
	l, _ := s.limit(e)
	switch {
	case s.Limit <= 0:
		return policy.Bytes(l) + " (the pod cgroup's)"
	case l == s.Limit:
		return policy.Bytes(l)
	case s.Container == "":
		return fmt.Sprintf("%s (the pod cgroup's; the pod's Linux.Resources says %s)", policy.Bytes(l), policy.Bytes(s.Limit))
	}
	return fmt.Sprintf("%s (the pod cgroup's; the container's own is %s)", policy.Bytes(l), policy.Bytes(s.Limit))
}

// Claimed says whether the evidence supports blaming memory for m.
func Claimed(s Subject, m Match, e Evidence) bool {
	switch {
	case m.Family == None:
		return false
	case m.Family == LimitBelowUsage && m.Limit >= 0 && m.Usage > m.Limit:
		return true // the runtime measured it
	case m.Family == BelowRuntimeMinimum:
		return true // the runtime said so
	case e.duringCall():
		return true
	case m.Family.needsEvidence():
		return false
	}
	l, ok := s.limit(e)
	return ok && l < SmallLimit
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
	if known && m.Family != LimitBelowUsage && m.Family != BelowRuntimeMinimum {
		fmt.Fprintf(&b, "memory limit %s: ", s.limitText(e))
	}
	switch m.Family {
	case InitOOMKilled:
		b.WriteString(s.what() + " was OOM-killed while starting")
	case ExecOOMKilled:
		b.WriteString("a process started in " + s.what() + " was OOM-killed")
	case CgroupNoMemory:
		b.WriteString("the runtime could not create the cgroup of " + s.what() + ": the pod cgroup's limit leaves no memory for a new cgroup (mkdir: cannot allocate memory)")
	case CgroupUnitFailed:
		b.WriteString("systemd could not start the cgroup scope unit of " + s.what() + ": the process moved into it was OOM-killed")
	case StoppedBeforeStart:
		b.WriteString(s.what() + " was OOM-killed after the runtime created it and before it could start")
	case LimitBelowUsage:
		fmt.Fprintf(&b, "the runtime could not set the memory limit of %s to %s: it already uses %s", s.what(), policy.Bytes(m.Limit), policy.Bytes(m.Usage))
		if m.Peak > 0 {
			fmt.Fprintf(&b, " (its cgroup's peak usage, as the runtime read it: %s)", policy.Bytes(m.Peak))
		}
	case BelowRuntimeMinimum:
		asked := m.Limit
		if asked < 0 {
			asked = s.Limit
		}
		if asked > 0 {
			fmt.Fprintf(&b, "the runtime refuses the memory limit %s for %s", policy.Bytes(asked), s.what())
		} else {
			b.WriteString("the runtime refuses the memory limit of " + s.what())
		}
		if m.Min > 0 {
			fmt.Fprintf(&b, ": its own minimum is %s", policy.Bytes(m.Min))
		}
	case InitDied:
		b.WriteString(s.what() + " died while starting, for lack of memory")
	}
	if ev := evidenceText(s, e); ev != "" {
		b.WriteString(" (evidence: " + ev + ")")
	}
	b.WriteString("; fix: " + fix(s, m, e, limit, known))
	return b.String(), true
}

// Wrap joins an explanation and the runtime's error text.
func Wrap(explanation, runtimeError string) string {
	return explanation + Separator + runtimeError
}

// evidenceText names each figure with the cgroup it is from and the
// period it covers. The pod cgroup's lifetime figures are named only for
// the pod sandbox: for a container they may be another container's.
func evidenceText(s Subject, e Evidence) string {
	podPast := s.Container == ""
	var parts []string
	if t := e.counterText(podPast); t != "" {
		parts = append(parts, t)
	}
	if e.oomEventsRose() {
		parts = append(parts, fmt.Sprintf("the pod cgroup's memory.events oom went from %d to %d during the call", e.OOMEventsBefore, e.Pod.OOMEvents))
	}
	if t := e.failText(podPast); t != "" {
		parts = append(parts, t)
	}
	if podPast && e.Pod.Read && e.Pod.Peak > 0 {
		parts = append(parts, "the pod cgroup's peak usage since it was created is "+policy.Bytes(int64(e.Pod.Peak)))
	}
	if c := e.Container; c != nil && c.Read {
		if c.OOMKills > 0 {
			parts = append(parts, fmt.Sprintf("the container cgroup's oom_kill counter is %d", c.OOMKills))
		}
		if c.Peak > 0 {
			parts = append(parts, "the container cgroup's peak usage is "+policy.Bytes(int64(c.Peak)))
		}
	}
	if len(e.Kernel) > 0 {
		scope := e.KernelScope
		if scope == "" {
			scope = ScopePod
		}
		parts = append(parts, "kernel, during the call, in the "+scope+"'s cgroup: "+ShortKernelLine(e.Kernel[len(e.Kernel)-1]))
	}
	return strings.Join(parts, ", ")
}

// fix says what to change. It never suggests less than the floor in force.
func fix(s Subject, m Match, e Evidence, limit int64, known bool) string {
	floor := s.Floor
	if floor <= 0 {
		floor = DefaultFloor
	}
	switch m.Family {
	case LimitBelowUsage:
		want := max(roundUpMiB(max(m.Usage, m.Peak)), floor)
		return unitHint(m.Limit, want, "keep the memory limit above what the container uses, at least "+policy.Size(want))
	case BelowRuntimeMinimum:
		want := max(m.Min, floor)
		asked := m.Limit
		if asked < 0 {
			asked = s.Limit
		}
		return unitHint(asked, want, "set the memory limit to at least "+policy.Size(want))
	}
	switch {
	case !known:
		return "set the memory limit to at least " + policy.Size(floor)
	case limit < policy.MiB:
		// The limit asked for, in bytes, is the unit hint's clue, for the
		// pod sandbox as for a container; a cgroup's value is not (the
		// kernel rounded it). It failed for memory: never suggest less
		// than a runtime needs to start, nor less than the floor.
		want := max(floor, DefaultFloor)
		return unitHint(s.Limit, want, "a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least "+policy.Size(want))
	case limit < floor:
		return "set the memory limit to at least " + policy.Size(floor)
	case limit < SmallLimit:
		// The floor was lowered below what a runtime needs to start.
		return "set the memory limit to at least " + policy.Size(max(floor, DefaultFloor))
	}
	var whose string
	var peak int64
	switch {
	case e.containerRead():
		whose, peak = "the container cgroup's", int64(e.Container.Peak)
	case s.Container == "" && e.Pod.Read:
		whose, peak = "the pod cgroup's", int64(e.Pod.Peak)
	}
	if peak > 0 {
		return "raise the memory limit above " + whose + " peak usage, to at least " + policy.Size(max(roundUpMiB(peak+peak/4), floor))
	}
	return "raise the memory limit"
}

// unitHint is the fix for a limit asked in bytes that looks like a missing
// unit ("2000" for 2000Mi), else otherwise.
func unitHint(asked, want int64, otherwise string) string {
	switch {
	case asked > 0 && asked < policy.MiB && asked*policy.MiB >= want:
		return fmt.Sprintf("a memory quantity without a unit is bytes, did you mean %dMi? (at least %s)", asked, policy.Size(want))
	case asked > 0 && asked < policy.MiB:
		return "a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least " + policy.Size(want)
	}
	return otherwise
}

func roundUpMiB(b int64) int64 {
	return (b + policy.MiB - 1) / policy.MiB * policy.MiB
}

// OOMKilled returns the message for a container that the kernel killed for
// memory, from what is known: the container's limit (ResolveLimit), its
// cgroup (nil when gone), and its pod's cgroup.
func OOMKilled(s Subject, lim Limit, container *Cgroup, pod Cgroup) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cri-guard: %s: container %s was OOM-killed", s.pod(), orUnknown(s.Container))
	podLimit := ""
	if pod.Read && !pod.Unlimited {
		podLimit = ", and the pod's limit is " + policy.Bytes(pod.Limit)
	}
	switch {
	case lim.Known && lim.Bytes > 0 && lim.From == "cgroup":
		fmt.Fprintf(&b, ": its cgroup's memory limit is %s", policy.Bytes(lim.Bytes))
	case lim.Known && lim.Bytes > 0:
		fmt.Fprintf(&b, ": its memory limit is %s", policy.Bytes(lim.Bytes))
	case lim.Known:
		b.WriteString(": it has no memory limit of its own" + podLimit)
	default:
		b.WriteString(": its own memory limit is unknown (the runtime does not say, and its cgroup could not be read)" + podLimit)
	}
	switch {
	case container != nil && container.Read && container.Peak > 0:
		fmt.Fprintf(&b, ", its cgroup's peak usage is %s", policy.Bytes(int64(container.Peak)))
	case pod.Read && pod.Peak > 0:
		fmt.Fprintf(&b, ", the pod cgroup's peak usage since it was created is %s", policy.Bytes(int64(pod.Peak)))
	}
	if pod.Read && pod.OOMKills > 0 {
		fmt.Fprintf(&b, ", the pod cgroup's oom_kill counter is %d", pod.OOMKills)
	}
	b.WriteString("; fix: raise the memory limit")
	if lim.Known && lim.Bytes > 0 {
		fmt.Fprintf(&b, " above %s", policy.Quantity(lim.Bytes))
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
