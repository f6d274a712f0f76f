package facts

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup1"
	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// DefaultRoot is where cgroup hierarchies are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// v1Unlimited is the smallest value that cgroup v1 reports for "no limit":
// PAGE_COUNTER_MAX pages, which is near 2^63 on every architecture.
const v1Unlimited = uint64(1) << 62

// Memory is what a cgroup says about memory.
type Memory struct {
	// Path is the cgroup's directory.
	Path string
	// Version is the cgroup version, 1 or 2.
	Version int
	// Unlimited is true when no limit is set; Limit is then 0.
	Unlimited bool
	// Limit is the limit in bytes. The kernel rounds it down to whole
	// pages, so a limit of 2000 reads back as 0.
	Limit int64
	// Usage and Peak are the current and highest usage in bytes. Peak is 0
	// when the kernel does not report it (cgroup v2 before Linux 5.19).
	Usage, Peak uint64
	// Failcnt counts how often the limit was hit (v1 memory.failcnt, v2
	// memory.events "max").
	Failcnt uint64
	// OOMKills counts processes killed by the OOM killer in this cgroup and
	// below (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).
	OOMKills uint64
	// OOMEvents counts how often the cgroup could not keep its limit and
	// invoked the OOM killer, whether or not it killed (v2 memory.events
	// "oom"); 0 on v1, which has no such counter.
	OOMEvents uint64
}

// Reader reads memory facts under a cgroup root.
type Reader struct {
	// Root is where the hierarchies are mounted; DefaultRoot when empty.
	Root string
}

func (r Reader) root() string {
	if r.Root == "" {
		return DefaultRoot
	}
	return r.Root
}

// Version says which cgroup version holds the memory controller: 1 when a
// v1 memory hierarchy is mounted (also on hybrid hosts), 2 when the unified
// hierarchy lists it.
func (r Reader) Version() (int, error) {
	if fi, err := os.Stat(filepath.Join(r.root(), "memory")); err == nil && fi.IsDir() {
		return 1, nil
	}
	b, err := os.ReadFile(filepath.Join(r.root(), "cgroup.controllers"))
	if err == nil && containsWord(string(b), "memory") {
		return 2, nil
	}
	return 0, fmt.Errorf("%w under %s", ErrNoMemoryController, r.root())
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// Memory reads the memory facts of the cgroup that CgroupParent names.
func (r Reader) Memory(cgroupParent string) (Memory, error) {
	rel, err := ResolveParent(cgroupParent)
	if err != nil {
		return Memory{}, err
	}
	v, err := r.Version()
	if err != nil {
		return Memory{}, err
	}
	if v == 1 {
		return r.memoryV1(rel)
	}
	return r.memoryV2(rel)
}

func (r Reader) memoryV1(rel string) (Memory, error) {
	ctl := cgroup1.NewMemory(r.root(), cgroup1.OptionalSwap(), cgroup1.IgnoreModules("memsw", "kmem", "kmem.tcp"))
	m := Memory{Path: ctl.Path(rel), Version: 1}
	var st v1stats.Metrics
	if err := ctl.Stat(rel, &st); err != nil {
		return m, fmt.Errorf("read cgroup v1 memory of %s: %w", m.Path, err)
	}
	u := st.Memory.GetUsage()
	if u.GetLimit() >= v1Unlimited {
		m.Unlimited = true
	} else {
		m.Limit = int64(u.GetLimit())
	}
	m.Usage, m.Peak, m.Failcnt = u.GetUsage(), u.GetMax(), u.GetFailcnt()
	m.OOMKills = st.MemoryOomControl.GetOomKill()
	return m, nil
}

func (r Reader) memoryV2(rel string) (Memory, error) {
	m := Memory{Path: filepath.Join(r.root(), rel), Version: 2}
	// cgroups/v3 reads an unreadable memory.max as 0, which would look like
	// a limit of 0 bytes. Make sure the file is there first.
	if _, err := os.Stat(filepath.Join(m.Path, "memory.max")); err != nil {
		return m, fmt.Errorf("read cgroup v2 memory of %s: %w", m.Path, err)
	}
	mgr, err := cgroup2.Load(rel, cgroup2.WithMountpoint(r.root()))
	if err != nil {
		return m, fmt.Errorf("load cgroup v2 %s: %w", m.Path, err)
	}
	st, err := mgr.StatFiltered(cgroup2.StatMemory | cgroup2.StatMemoryEvents)
	if err != nil {
		return m, fmt.Errorf("read cgroup v2 memory of %s: %w", m.Path, err)
	}
	if st.Memory == nil {
		return m, fmt.Errorf("read cgroup v2 memory of %s: %w", m.Path, errors.New("no memory statistics"))
	}
	if lim := st.Memory.GetUsageLimit(); lim == math.MaxUint64 || lim >= v1Unlimited {
		m.Unlimited = true
	} else {
		m.Limit = int64(lim)
	}
	m.Usage, m.Peak = st.Memory.GetUsage(), st.Memory.GetMaxUsage()
	m.Failcnt = st.MemoryEvents.GetMax()
	m.OOMKills = st.MemoryEvents.GetOomKill()
	m.OOMEvents = st.MemoryEvents.GetOom()
	return m, nil
}
