package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// This file reads host state from /proc: processes, mounts and cgroup
// hierarchies.

type procInfo struct {
	pid, ppid int
	state     byte
	cmdline   []string
	cwd       string
}

// listProcs returns every process visible in /proc. Processes that vanish
// while being read are skipped.
func listProcs() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var procs []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, ok := procStat(pid)
		if !ok {
			continue
		}
		p := procInfo{pid: pid, ppid: ppid, state: state}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			p.cmdline = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
		p.cwd, _ = os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		procs = append(procs, p)
	}
	return procs
}

// procStat returns the state and parent PID from /proc/PID/stat.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) S ppid ...": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, false
	}
	fields := strings.Fields(string(b[i+2:]))
	if len(fields) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(fields[1])
	return fields[0][0], ppid, true
}

// alive reports whether pid exists and is not a zombie. (kill -0 is no
// liveness test here: PID 1 may never reap zombies.)
func alive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X' && state != 'x'
}

// ancestors returns the PIDs of the current process and its ancestors.
func ancestors() map[int]bool {
	set := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !set[pid]; {
		set[pid] = true
		_, ppid, ok := procStat(pid)
		if !ok {
			break
		}
		pid = ppid
	}
	return set
}

type mountInfo struct {
	mountPoint string
	fsType     string
}

func readMountInfo() []mountInfo {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		m := mountInfo{mountPoint: unescapeMountPath(fields[4])}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				m.fsType = fields[i+1]
				break
			}
		}
		mounts = append(mounts, m)
	}
	return mounts
}

// unescapeMountPath decodes the octal escapes (\040 etc.) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder returns the mount points under dir (not dir itself),
// deepest first.
func mountsUnder(dir string) []string {
	prefix := filepath.Clean(dir) + "/"
	var out []string
	for _, m := range readMountInfo() {
		if strings.HasPrefix(m.mountPoint, prefix) {
			out = append(out, m.mountPoint)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Count(out[i], "/") > strings.Count(out[j], "/")
	})
	return out
}

// unmountUnder unmounts everything mounted under dir, deepest first, with
// a lazy unmount as fallback, until nothing is left.
func unmountUnder(dir string) error {
	var lastErrs []error
	for pass := 0; pass < 10; pass++ {
		mounts := mountsUnder(dir)
		if len(mounts) == 0 {
			return nil
		}
		lastErrs = nil
		for _, m := range mounts {
			if err := unmount(m); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				lastErrs = append(lastErrs, err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := mountsUnder(dir); len(left) > 0 {
		return errors.Join(append(lastErrs, fmt.Errorf("still mounted: %v", left))...)
	}
	return nil
}

// unmount unmounts p, falling back to a lazy unmount when it is busy.
func unmount(p string) error {
	err := unix.Unmount(p, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return err
	}
	if lerr := unix.Unmount(p, unix.MNT_DETACH); lerr != nil {
		return fmt.Errorf("unmount %s: %w (lazy: %v)", p, err, lerr)
	}
	return nil
}

// cgroupHierarchies returns the mount points of every cgroup (v1) and
// cgroup2 filesystem, e.g. /sys/fs/cgroup/memory and /sys/fs/cgroup/unified.
func cgroupHierarchies() []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range readMountInfo() {
		if (m.fsType == "cgroup" || m.fsType == "cgroup2") && !seen[m.mountPoint] {
			seen[m.mountPoint] = true
			out = append(out, m.mountPoint)
		}
	}
	sort.Strings(out)
	return out
}
