package harness

import (
	"fmt"
	"path"

	"github.com/cri-guard/cri-guard/pkg/podcgroup"
)

// CreatePodCgroup creates the pod cgroup <CgroupRoot>/kubepods/burstable/pod<uid>
// the way the kubelet's cgroupfs driver does (package podcgroup): on cgroup
// v1 the directory in every hierarchy with memory.limit_in_bytes, on v2 the
// directory with memory.max; memoryLimit -1 means unlimited.
//
// It returns the parent to put in PodSandboxConfig.Linux.CgroupParent;
// containerd (cgroupfs driver) then places the sandbox and its containers
// in <parent>/<container id>. Close removes the whole tree.
func (r *Runtime) CreatePodCgroup(uid string, memoryLimit int64) (parent string, err error) {
	c, err := podcgroup.Detect(path.Join(r.CgroupRoot, "kubepods", "burstable"))
	if err != nil {
		return "", fmt.Errorf("create pod cgroup: %w", err)
	}
	return c.Create(uid, memoryLimit)
}
