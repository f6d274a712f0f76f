package oom

import (
	"fmt"
	"path"
	"strings"

	"github.com/cri-guard/cri-guard/pkg/facts"
)

// Cgroup is what one memory cgroup said at one moment.
type Cgroup struct {
	// Path is the cgroup relative to the hierarchy root, as the kernel
	// names it in its oom-kill lines, e.g. /kubepods/burstable/pod<uid>.
	Path string `json:"path"`
	// Read is false when the cgroup could not be read; Error says why.
	Read  bool   `json:"read"`
	Error string `json:"error,omitempty"`
	// Version is the cgroup version, 1 or 2; 0 when not read.
	Version   int    `json:"version,omitempty"`
	Unlimited bool   `json:"unlimited"`
	Limit     int64  `json:"limit"`
	Usage     uint64 `json:"usage"`
	Peak      uint64 `json:"peak"`
	Failcnt   uint64 `json:"failcnt"`
	OOMKills  uint64 `json:"oomKills"`
	// OOMEvents is cgroup v2's memory.events "oom": how often the limit
	// could not be kept, whether or not a process was killed. 0 on v1.
	OOMEvents uint64 `json:"oomEvents,omitempty"`
}

// Reader reads memory cgroups; facts.Reader is one.
type Reader interface {
	Memory(cgroupParent string) (facts.Memory, error)
}

// ReadCgroup reads the cgroup that a CgroupParent (or a path relative to
// the hierarchy root) names. It never fails: an unreadable cgroup is
// returned with Read false.
func ReadCgroup(r Reader, parent string) Cgroup {
	c := Cgroup{Path: parent}
	if rel, err := facts.ResolveParent(parent); err == nil {
		c.Path = rel
	}
	if r == nil || parent == "" {
		c.Error = "no cgroup to read"
		return c
	}
	m, err := r.Memory(parent)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.Read = true
	c.Version, c.Unlimited, c.Limit = m.Version, m.Unlimited, m.Limit
	c.OOMEvents = m.OOMEvents
	c.Usage, c.Peak, c.Failcnt, c.OOMKills = m.Usage, m.Peak, m.Failcnt, m.OOMKills
	return c
}

// ContainerCgroup is the cgroup a container gets under its pod's cgroup
// with the cgroupfs driver: <parent>/<container id>.
func ContainerCgroup(podParent, containerID string) string {
	rel, err := facts.ResolveParent(podParent)
	if err != nil || containerID == "" {
		return ""
	}
	return path.Join(rel, containerID)
}

// Kernel scopes: whose cgroup the kernel lines of an Evidence were matched
// against.
const (
	ScopeContainer = "container"
	ScopePod       = "pod"
)

// SystemdCgroup turns an OCI cgroupsPath of the systemd driver,
// "<slice>:<prefix>:<name>", into the cgroup's path relative to the
// hierarchy, <expanded slice>/<prefix>-<name>.scope, as runc does; false
// for any other form.
func SystemdCgroup(cgroupsPath string) (string, bool) {
	parts := strings.Split(cgroupsPath, ":")
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" || strings.ContainsAny(parts[1]+parts[2], "/\x00") || parts[2] == ".." {
		return "", false
	}
	slice, err := facts.ExpandSlice(parts[0])
	if err != nil {
		return "", false
	}
	return path.Join(slice, parts[1]+"-"+parts[2]+".scope"), true
}

// Evidence is what the node showed around a failed call. Only what belongs
// to the call is proof: counters that went up during it, kernel lines it
// logged, and the counters of the container's own cgroup, which the call
// made. The pod cgroup's lifetime figures may be another container's, and
// are named as the pod's when they are named at all.
type Evidence struct {
	// Pod is the pod cgroup, read after the call failed.
	Pod Cgroup `json:"pod"`
	// Container is the container's own cgroup, when known and still there.
	Container *Cgroup `json:"container,omitempty"`
	// OOMBefore is the pod cgroup's oom_kill counter read before the call
	// was forwarded, or -1 when it was not read.
	OOMBefore int64 `json:"oomBefore"`
	// FailBefore is the pod cgroup's failcnt read before the call, or -1.
	FailBefore int64 `json:"failcntBefore"`
	// OOMEventsBefore is the pod cgroup's memory.events oom (cgroup v2)
	// read before the call, or -1.
	OOMEventsBefore int64 `json:"oomEventsBefore"`
	// Kernel holds the kernel's oom-kill lines logged during the call for
	// the cgroup KernelScope names.
	Kernel      []string `json:"kernel,omitempty"`
	KernelScope string   `json:"kernelScope,omitempty"`
}

// NoEvidence is an Evidence with nothing read yet.
func NoEvidence() Evidence {
	return Evidence{OOMBefore: -1, FailBefore: -1, OOMEventsBefore: -1}
}

// oomRose says whether the pod's oom_kill counter went up during the call.
func (e Evidence) oomRose() bool {
	return e.OOMBefore >= 0 && e.Pod.Read && e.Pod.OOMKills > uint64(e.OOMBefore)
}

// oomEventsRose says whether cgroup v2's memory.events oom went up during
// the call.
func (e Evidence) oomEventsRose() bool {
	return e.OOMEventsBefore >= 0 && e.Pod.Read && e.Pod.OOMEvents > uint64(e.OOMEventsBefore)
}

// containerRead says whether the container's own cgroup was read.
func (e Evidence) containerRead() bool { return e.Container != nil && e.Container.Read }

// duringCall says whether the node shows an OOM that belongs to the call.
func (e Evidence) duringCall() bool {
	return e.oomRose() || e.oomEventsRose() || len(e.Kernel) > 0 ||
		(e.containerRead() && e.Container.OOMKills > 0)
}

// counterText says what the pod's OOM counters show, or "". podPast says
// whether the pod cgroup's lifetime figures may be named: only for the pod
// sandbox, since for a container they may be another container's.
func (e Evidence) counterText(podPast bool) string {
	switch {
	case e.oomRose():
		return fmt.Sprintf("the pod cgroup's oom_kill counter went from %d to %d during the call", e.OOMBefore, e.Pod.OOMKills)
	case podPast && e.OOMBefore < 0 && e.Pod.Read && e.Pod.OOMKills > 0:
		return fmt.Sprintf("the pod cgroup's oom_kill counter is %d (since the pod started, not only this call)", e.Pod.OOMKills)
	}
	return ""
}

// failText says how often the pod cgroup hit its limit during the call, or
// "". On cgroup v1 the pod cgroup's oom_kill counter does not count kills
// in its children, so this and the kernel's line are the evidence there.
func (e Evidence) failText(podPast bool) string {
	if !e.Pod.Read {
		return ""
	}
	counter := "failcnt"
	if e.Pod.Version == 2 {
		counter = "memory.events max"
	}
	switch {
	case e.FailBefore >= 0 && e.Pod.Failcnt > uint64(e.FailBefore):
		return fmt.Sprintf("the pod cgroup hit its limit %d times during the call (%s %d to %d)", e.Pod.Failcnt-uint64(e.FailBefore), counter, e.FailBefore, e.Pod.Failcnt)
	case podPast && e.FailBefore < 0 && e.Pod.Failcnt > 0:
		return fmt.Sprintf("the pod cgroup's %s is %d (since the pod started)", counter, e.Pod.Failcnt)
	}
	return ""
}

// ShortKernelLine keeps the fields of an oom-kill line that matter to a
// person: the constraint, the cgroups and the task.
func ShortKernelLine(line string) string {
	body, ok := strings.CutPrefix(line, "oom-kill:")
	if !ok {
		return line
	}
	var keep []string
	for _, f := range strings.Split(body, ",") {
		k, _, _ := strings.Cut(f, "=")
		switch k {
		case "constraint", "oom_memcg", "task_memcg", "task", "pid":
			keep = append(keep, f)
		}
	}
	return "oom-kill:" + strings.Join(keep, ",")
}
