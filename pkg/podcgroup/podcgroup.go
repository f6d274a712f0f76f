package podcgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cgroups creates and removes pod cgroups below a dedicated parent, the way
// the kubelet's cgroupfs driver creates pod cgroups: on cgroup v1 the
// directory in every hierarchy (cpuset.cpus and cpuset.mems copied from the
// parent, as the cpuset controller requires before a task may join) and
// memory.limit_in_bytes; on cgroup v2 the directory in the unified
// hierarchy, the memory controller enabled along the path, and memory.max.
type Cgroups struct {
	// Parent is where pod cgroups go, e.g. "/cri-guard-calibrate".
	Parent string
	// V2 is the unified hierarchy's mount point on a cgroup v2 host.
	V2 string
	// V1 are the v1 hierarchies' mount points; Memory the memory one.
	V1     []string
	Memory string
	// Unified is, on a hybrid host, the v2 hierarchy mounted beside the v1
	// ones (/sys/fs/cgroup/unified). The kubelet creates nothing there,
	// but runc mirrors the container's cgroup path into it and removes
	// only the leaf, so the pod directories it leaves are removed from it
	// too.
	Unified string
}

// Detect reads /proc/self/mountinfo.
func Detect(parent string) (*Cgroups, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	defer f.Close()
	c, err := parseMountInfo(bufio.NewScanner(f), parent)
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	return c, nil
}

// parseMountInfo finds the cgroup hierarchies in mountinfo lines.
func parseMountInfo(sc *bufio.Scanner, parent string) (*Cgroups, error) {
	if !path.IsAbs(parent) || path.Clean(parent) != parent || parent == "/" {
		return nil, fmt.Errorf("cgroup parent %q: want a clean absolute path below the root", parent)
	}
	c := &Cgroups{Parent: parent}
	seen := map[string]bool{}
	var v2 []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i := 6; i+3 < len(fields); i++ {
			if fields[i] != "-" {
				continue
			}
			mp := unescape(fields[4])
			if seen[mp] {
				break
			}
			switch fields[i+1] {
			case "cgroup2":
				seen[mp] = true
				v2 = append(v2, mp)
			case "cgroup":
				seen[mp] = true
				c.V1 = append(c.V1, mp)
				for _, o := range strings.Split(fields[i+3], ",") {
					if o == "memory" && c.Memory == "" {
						c.Memory = mp
					}
				}
			}
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Strings(c.V1)
	switch {
	case len(c.V1) > 0 && c.Memory == "":
		return nil, errors.New("cgroup v1 without a memory hierarchy")
	case len(c.V1) > 0:
		// v1 or hybrid: the kubelet uses the v1 hierarchies.
		if len(v2) > 0 {
			c.Unified = v2[0]
		}
	case len(v2) > 0:
		c.V2 = v2[0]
	default:
		return nil, errors.New("no cgroup filesystem mounted")
	}
	return c, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Version is "v1" or "v2".
func (c *Cgroups) Version() string {
	if c.V2 != "" {
		return "v2"
	}
	return "v1"
}

// hierarchies are the mount points a pod cgroup is created in.
func (c *Cgroups) hierarchies() []string {
	if c.V2 != "" {
		return []string{c.V2}
	}
	return c.V1
}

// Hierarchies are the mount points from which pod cgroups are
// removed: those they are created in, and the hybrid unified one.
func (c *Cgroups) Hierarchies() []string {
	h := append([]string{}, c.hierarchies()...)
	if c.Unified != "" {
		h = append(h, c.Unified)
	}
	return h
}

// PodParent is the cgroup parent of pod uid, as given to RunPodSandbox.
func (c *Cgroups) PodParent(uid string) string {
	return path.Join(c.Parent, "pod"+uid)
}

// Create creates the pod cgroup of uid with a memory limit (-1: none) and
// returns its cgroup parent. On error it removes what it created.
func (c *Cgroups) Create(uid string, limit int64) (_ string, err error) {
	if uid == "" || strings.ContainsAny(uid, "/\x00") || uid == "." || uid == ".." {
		return "", fmt.Errorf("create pod cgroup: invalid pod uid %q", uid)
	}
	if limit == 0 || limit < -1 {
		return "", fmt.Errorf("create pod cgroup: invalid memory limit %d", limit)
	}
	rel := c.PodParent(uid)
	defer func() {
		if err != nil {
			c.Remove(uid) //nolint:errcheck // the creation error says more
			err = fmt.Errorf("create pod cgroup %s: %w", rel, err)
		}
	}()
	if c.V2 != "" {
		dir := filepath.Join(c.V2, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		if limit > 0 {
			// memory.max exists only where the parent enables memory.
			for p := c.V2; p != dir; {
				next := filepath.Join(p, strings.SplitN(strings.TrimPrefix(dir, p+"/"), "/", 2)[0])
				if err := writeFile(p, "cgroup.subtree_control", "+memory"); err != nil {
					return "", err
				}
				p = next
			}
			if err := writeFile(dir, "memory.max", strconv.FormatInt(limit, 10)); err != nil {
				return "", err
			}
		}
		return rel, nil
	}
	for _, h := range c.V1 {
		if err := mkdirCgroup(h, rel); err != nil {
			return "", err
		}
	}
	if limit > 0 {
		if err := writeFile(filepath.Join(c.Memory, rel), "memory.limit_in_bytes", strconv.FormatInt(limit, 10)); err != nil {
			return "", err
		}
	}
	return rel, nil
}

// mkdirCgroup creates rel under hierarchy h one level at a time,
// initialising cpuset.cpus and cpuset.mems from the parent where present.
func mkdirCgroup(h, rel string) error {
	cur := h
	for _, elem := range strings.Split(strings.Trim(rel, "/"), "/") {
		parent := cur
		cur = filepath.Join(cur, elem)
		if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			own, err := os.ReadFile(filepath.Join(cur, f))
			if err != nil || strings.TrimSpace(string(own)) != "" {
				continue // not a cpuset hierarchy, or already set
			}
			val, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return err
			}
			if err := writeFile(cur, f, strings.TrimSpace(string(val))); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeFile(dir, file, val string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0o644); err != nil {
		return fmt.Errorf("write %s=%s: %w", filepath.Join(dir, file), val, err)
	}
	return nil
}

// Remove removes the pod cgroup of uid, and what the runtime left below
// it, from every hierarchy. A cgroup that still holds processes is not
// removed: it is an error.
func (c *Cgroups) Remove(uid string) error {
	if uid == "" || strings.ContainsAny(uid, "/\x00") || uid == "." || uid == ".." {
		return fmt.Errorf("remove pod cgroup: invalid pod uid %q", uid)
	}
	var errs []error
	for _, h := range c.Hierarchies() {
		if err := removeTree(filepath.Join(h, c.PodParent(uid))); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveParent removes the parent where it is empty; one still used
// by another caller stays.
func (c *Cgroups) RemoveParent() error {
	var errs []error
	for _, h := range c.Hierarchies() {
		err := rmdirRetry(filepath.Join(h, c.Parent))
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EBUSY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists pod cgroups below the parent, in every hierarchy.
func (c *Cgroups) Leftovers() []string {
	var out []string
	for _, h := range c.Hierarchies() {
		m, _ := filepath.Glob(filepath.Join(h, c.Parent, "pod*"))
		out = append(out, m...)
	}
	return out
}

// removeTree removes dir and the cgroups below it, deepest first.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := rmdirRetry(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// rmdirRetry retries EBUSY for a moment: a cgroup whose last task has just
// exited can be busy briefly.
func rmdirRetry(dir string) error {
	var err error
	for i := 0; i < 40; i++ {
		if err = syscall.Rmdir(dir); err == nil {
			return nil
		}
		if err == syscall.ENOENT {
			return fs.ErrNotExist
		}
		if err != syscall.EBUSY {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
