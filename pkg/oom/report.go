package oom

import (
	"fmt"
	"strings"

	"github.com/cri-guard/cri-guard/pkg/attempts"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// Report is what `cri-guard explain` found about one pod, and its JSON
// output.
type Report struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid"`
	// Sandboxes are the pod's sandboxes, one per attempt.
	Sandboxes []Sandbox `json:"sandboxes"`
	// Containers are the containers of all the sandboxes.
	Containers []Container `json:"containers"`
	// Attempts are the pod's RunPodSandbox calls that created no sandbox,
	// as the running cri-guard saw them, newest first; empty when it was
	// not asked or saw none (Notes say which).
	Attempts []attempts.Attempt `json:"failedRunPodSandbox,omitempty"`
	// Cgroup is the pod cgroup; nil when none was found.
	Cgroup *Cgroup `json:"cgroup,omitempty"`
	// Kernel holds the kernel's oom-kill lines for the pod cgroup.
	Kernel []string `json:"kernel,omitempty"`
	// Notes say what a reader could get wrong, such as a static pod's two
	// uids.
	Notes []string `json:"notes,omitempty"`
	// Verdict says what happened; Fix what to change. Judge sets them.
	Verdict string `json:"verdict"`
	Fix     string `json:"fix,omitempty"`
}

// Sandbox is one pod sandbox.
type Sandbox struct {
	ID      string `json:"id"`
	Attempt uint32 `json:"attempt"`
	State   string `json:"state"`
}

// Container is one container of the pod.
type Container struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Attempt  uint32  `json:"attempt"`
	State    string  `json:"state"`
	Reason   string  `json:"reason,omitempty"`
	Message  string  `json:"message,omitempty"`
	ExitCode int32   `json:"exitCode"`
	Limit    Limit   `json:"limit"`
	Cgroup   *Cgroup `json:"cgroup,omitempty"`
}

// containerKills sums the oom_kill counters of the containers' cgroups
// that still exist. On cgroup v1 the pod cgroup's own counter does not
// count kills in them.
func (r *Report) containerKills() uint64 {
	var n uint64
	for _, c := range r.Containers {
		if c.Cgroup != nil && c.Cgroup.Read {
			n += c.Cgroup.OOMKills
		}
	}
	return n
}

// v1 says whether the pod cgroup is a cgroup v1 one.
func (r *Report) v1() bool { return r.Cgroup != nil && r.Cgroup.Read && r.Cgroup.Version == 1 }

// Judge sets the report's verdict and fix from what it holds.
func (r *Report) Judge() {
	pod := r.Cgroup
	limited := pod != nil && pod.Read && !pod.Unlimited
	var killed []string
	for _, c := range r.Containers {
		if c.Reason == "OOMKilled" {
			killed = append(killed, c.Name)
		}
	}
	ready := false
	for _, s := range r.Sandboxes {
		if s.State == "SANDBOX_READY" {
			ready = true
		}
	}
	switch {
	case len(r.Sandboxes) == 0 && len(r.Attempts) > 0 && r.Attempts[0].Outcome == attempts.Refused:
		// cri-guard's refusal is the cause, and what the kubelet was told
		// names the limit asked for, which the pod cgroup, rounded down by
		// the kernel, may no longer show.
		r.Verdict = r.attemptVerdict()
	case limited && pod.Limit < SmallLimit:
		what := "no pod sandbox exists: RunPodSandbox keeps failing"
		if len(r.Sandboxes) > 0 && !ready {
			what = "its sandbox is not ready"
		} else if ready {
			what = "its containers cannot start"
		}
		r.Verdict = fmt.Sprintf("the pod's memory limit, %s, is too small to start a container (runc and the pause process need a few MiB); %s%s",
			policy.Bytes(pod.Limit), what, r.evidence())
		if pod.Limit < policy.MiB {
			r.Fix = "a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least " + policy.Quantity(DefaultFloor)
		} else {
			r.Fix = "set the pod's memory limit to at least " + policy.Quantity(DefaultFloor)
		}
	case len(r.Sandboxes) == 0 && len(r.Attempts) > 0:
		// The runtime failed it, and the pod cgroup does not show why.
		r.Verdict = r.attemptVerdict()
	case len(killed) > 0:
		r.Verdict = fmt.Sprintf("container %s was OOM-killed%s", strings.Join(dedup(killed), ", "), r.evidence())
		r.Fix = "raise the memory limit of " + strings.Join(dedup(killed), ", ") + " above its peak usage, or make it use less memory"
	case (pod != nil && pod.Read && pod.OOMKills > 0) || len(r.Kernel) > 0 || r.containerKills() > 0:
		r.Verdict = fmt.Sprintf("processes in the pod were OOM-killed%s", r.evidence())
		r.Fix = "raise the memory limit of the container that uses the most memory"
	case pod == nil && len(r.Sandboxes) == 0:
		r.Verdict = "no sandbox and no cgroup found for this pod"
	default:
		r.Verdict = "no sign of memory trouble: no OOM kill in the pod cgroup and no container OOMKilled"
	}
}

// attemptVerdict says how the newest RunPodSandbox call of a pod that
// never started ended.
func (r *Report) attemptVerdict() string {
	a := r.Attempts[0]
	who := "the runtime failed"
	if a.Outcome == attempts.Refused {
		who = "cri-guard refused"
	}
	return fmt.Sprintf("no pod sandbox exists: %s its RunPodSandbox (%s, the last at %s): %s: %s",
		who, calls(a.Calls), a.Last.UTC().Format(timeFormat), a.Code, a.Message)
}

// evidence says what shows OOM kills: the counter and the kernel's lines.
func (r *Report) evidence() string {
	var parts []string
	if c := r.Cgroup; c != nil && c.Read && c.OOMKills > 0 {
		parts = append(parts, fmt.Sprintf("the pod cgroup's oom_kill counter is %d", c.OOMKills))
	}
	if n := r.containerKills(); n > 0 {
		parts = append(parts, fmt.Sprintf("the containers' cgroups count %d oom-kills", n))
	}
	if n := len(r.Kernel); n == 1 {
		parts = append(parts, "the kernel logged 1 oom-kill in this pod's cgroups")
	} else if n > 1 {
		parts = append(parts, fmt.Sprintf("the kernel logged %d oom-kills in this pod's cgroups", n))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

func dedup(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// Text writes the report for a person.
func (r *Report) Text() string {
	var b strings.Builder
	name := r.Namespace + "/" + r.Name
	if r.Name == "" {
		name = "<never created>"
	}
	fmt.Fprintf(&b, "pod %s (uid %s)\n", name, r.UID)
	fmt.Fprintf(&b, "sandboxes: %d\n", len(r.Sandboxes))
	for _, s := range r.Sandboxes {
		fmt.Fprintf(&b, "  %s  attempt %d  %s\n", short(s.ID), s.Attempt, s.State)
	}
	if len(r.Attempts) > 0 {
		b.WriteString("RunPodSandbox calls that created no sandbox, as the running cri-guard saw them:\n")
		for _, a := range r.Attempts {
			what := "failed in the runtime"
			if a.Outcome == attempts.Refused {
				what = "refused by cri-guard"
			}
			fmt.Fprintf(&b, "  uid %s  attempt %d  %s  %s, from %s to %s", a.UID, a.Attempt, what, calls(a.Calls),
				a.First.UTC().Format(timeFormat), a.Last.UTC().Format(timeFormat))
			if a.CgroupParent != "" {
				fmt.Fprintf(&b, "  cgroup parent %s", a.CgroupParent)
			}
			fmt.Fprintf(&b, "\n    %s: %s\n", a.Code, a.Message)
		}
	}
	fmt.Fprintf(&b, "containers: %d\n", len(r.Containers))
	for _, c := range r.Containers {
		fmt.Fprintf(&b, "  %s  %s  attempt %d  %s", short(c.ID), c.Name, c.Attempt, c.State)
		if c.Reason != "" {
			fmt.Fprintf(&b, "  reason %s  exit code %d", c.Reason, c.ExitCode)
		}
		switch l := c.Limit; {
		case l.Known && l.Bytes > 0 && l.From == "cgroup":
			fmt.Fprintf(&b, "  limit %s (its cgroup's; the runtime does not say)", policy.Bytes(l.Bytes))
		case l.Known && l.Bytes > 0:
			fmt.Fprintf(&b, "  limit %s", policy.Bytes(l.Bytes))
		case l.Known:
			b.WriteString("  no limit of its own")
		default:
			b.WriteString("  limit unknown (the runtime does not say, and its cgroup could not be read)")
		}
		b.WriteString("\n")
		if c.Cgroup != nil && c.Cgroup.Read {
			fmt.Fprintf(&b, "    cgroup %s\n", cgroupLine(c.Cgroup))
		}
	}
	switch {
	case r.Cgroup == nil:
		b.WriteString("pod cgroup: not found\n")
	case !r.Cgroup.Read:
		fmt.Fprintf(&b, "pod cgroup: %s: %s\n", r.Cgroup.Path, r.Cgroup.Error)
	default:
		fmt.Fprintf(&b, "pod cgroup: %s\n  %s\n", r.Cgroup.Path, cgroupLine(r.Cgroup))
		if r.v1() {
			fmt.Fprintf(&b, "  (cgroup v1: the pod cgroup's oom_kill counts kills in the pod cgroup itself, not in its containers' cgroups; those count %d, of the containers whose cgroups still exist)\n", r.containerKills())
		}
	}
	if len(r.Kernel) == 0 {
		b.WriteString("kernel: no oom-kill line for this pod in the kernel log (or the log is not readable)\n")
	} else {
		b.WriteString("kernel:\n")
		for _, l := range r.Kernel {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	fmt.Fprintf(&b, "verdict: %s\n", r.Verdict)
	if r.Fix != "" {
		fmt.Fprintf(&b, "fix: %s\n", r.Fix)
	}
	return b.String()
}

// timeFormat is how the report says when a call was made.
const timeFormat = "2006-01-02 15:04:05 UTC"

func calls(n int) string {
	if n == 1 {
		return "1 call"
	}
	return fmt.Sprintf("%d calls", n)
}

func cgroupLine(c *Cgroup) string {
	limit := "unlimited"
	if !c.Unlimited {
		limit = policy.Bytes(c.Limit)
	}
	return fmt.Sprintf("limit %s, usage %s, peak %s, failcnt %d, oom_kill %d",
		limit, policy.Bytes(int64(c.Usage)), policy.Bytes(int64(c.Peak)), c.Failcnt, c.OOMKills)
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}
