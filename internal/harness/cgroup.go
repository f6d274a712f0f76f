package harness

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// CreatePodCgroup creates the pod cgroup <CgroupRoot>/kubepods/burstable/pod<uid>
// the way the kubelet's cgroupfs driver does on cgroup v1: the directory in
// every v1 hierarchy (cpuset.cpus and cpuset.mems initialised from the
// parent, as the cpuset controller requires before tasks can join), and
// memory.limit_in_bytes set to memoryLimit unless it is -1 (unlimited).
// On a cgroup v2 host the directory is created in the unified hierarchy and
// memory.max is set instead.
//
// It returns the parent to put in PodSandboxConfig.Linux.CgroupParent;
// containerd (cgroupfs driver) then places the sandbox and its containers
// in <parent>/<container id>. Close removes the whole tree.
func (r *Runtime) CreatePodCgroup(uid string, memoryLimit int64) (parent string, err error) {
	if uid == "" || strings.ContainsAny(uid, "/\x00") || uid == "." || uid == ".." {
		return "", fmt.Errorf("create pod cgroup: invalid pod uid %q", uid)
	}
	if memoryLimit < -1 || memoryLimit == 0 {
		return "", fmt.Errorf("create pod cgroup: invalid memory limit %d (want > 0 or -1)", memoryLimit)
	}
	parent = path.Join(r.CgroupRoot, "kubepods", "burstable", "pod"+uid)

	if v2, ok := unifiedOnly(); ok {
		dir := filepath.Join(v2, parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("create pod cgroup: %w", err)
		}
		if memoryLimit > 0 {
			// Controllers must be enabled along the path for memory.max to exist.
			for p := v2; p != dir; {
				rel, _ := filepath.Rel(p, dir)
				next := filepath.Join(p, strings.SplitN(rel, "/", 2)[0])
				os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+memory"), 0o644) //nolint:errcheck
				p = next
			}
			if err := writeCgroupFile(dir, "memory.max", strconv.FormatInt(memoryLimit, 10)); err != nil {
				return "", fmt.Errorf("create pod cgroup: %w", err)
			}
		}
		return parent, nil
	}

	var errs []error
	for _, h := range cgroupHierarchies() {
		if filepath.Base(h) == "unified" || isCgroup2(h) {
			continue // hybrid mode: v2 hierarchy without controllers
		}
		if err := mkdirCgroup(h, parent); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("create pod cgroup: %w", err)
	}
	mem := cgroupV1Controller("memory")
	if mem == "" {
		return "", errors.New("create pod cgroup: no cgroup v1 memory controller mounted")
	}
	if memoryLimit > 0 {
		if err := writeCgroupFile(filepath.Join(mem, parent), "memory.limit_in_bytes", strconv.FormatInt(memoryLimit, 10)); err != nil {
			return "", fmt.Errorf("create pod cgroup: %w", err)
		}
	}
	return parent, nil
}

// mkdirCgroup creates rel under hierarchy h one level at a time,
// initialising cpuset.cpus and cpuset.mems from the parent where present.
func mkdirCgroup(h, rel string) error {
	cur := h
	for _, elem := range strings.Split(strings.Trim(rel, "/"), "/") {
		parent := cur
		cur = filepath.Join(cur, elem)
		if err := os.Mkdir(cur, 0o755); err != nil && !os.IsExist(err) {
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
			if err := writeCgroupFile(cur, f, strings.TrimSpace(string(val))); err != nil {
				return err
			}
		}
	}
	return nil
}

func writeCgroupFile(dir, file, val string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0o644); err != nil {
		return fmt.Errorf("write %s=%s: %w", filepath.Join(dir, file), val, err)
	}
	return nil
}

func isCgroup2(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "cgroup.controllers"))
	return err == nil
}

// unifiedOnly reports whether the host runs cgroup v2 only, and where.
func unifiedOnly() (string, bool) {
	hs := cgroupHierarchies()
	if len(hs) == 1 && isCgroup2(hs[0]) {
		return hs[0], true
	}
	return "", false
}
