package oom

import (
	"encoding/json"
	"fmt"
)

// ContainerInfo is what a runtime's verbose ContainerStatus info (the
// "info" key, as containerd writes it) says of a container's memory.
type ContainerInfo struct {
	SandboxID string
	// CgroupsPath is the container's cgroup as the OCI spec names it; an
	// absolute path with the cgroupfs driver.
	CgroupsPath string
	// MemoryLimit is the spec's memory limit; 0 when none.
	MemoryLimit int64
}

// ParseContainerInfo reads the verbose info of a ContainerStatus reply. A
// runtime that gives no info (CRI-O) yields the zero ContainerInfo.
func ParseContainerInfo(info map[string]string) (ContainerInfo, error) {
	var v struct {
		SandboxID   string `json:"sandboxID"`
		RuntimeSpec struct {
			Linux struct {
				CgroupsPath string `json:"cgroupsPath"`
				Resources   struct {
					Memory struct {
						Limit *int64 `json:"limit"`
					} `json:"memory"`
				} `json:"resources"`
			} `json:"linux"`
		} `json:"runtimeSpec"`
	}
	s := info["info"]
	if s == "" {
		return ContainerInfo{}, nil
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return ContainerInfo{}, fmt.Errorf("container info: %w", err)
	}
	out := ContainerInfo{SandboxID: v.SandboxID, CgroupsPath: v.RuntimeSpec.Linux.CgroupsPath}
	if l := v.RuntimeSpec.Linux.Resources.Memory.Limit; l != nil && *l > 0 {
		out.MemoryLimit = *l
	}
	return out, nil
}

// ParseSandboxCgroupParent reads the pod's cgroup parent from the verbose
// info of a PodSandboxStatus reply; "" when the runtime does not say.
func ParseSandboxCgroupParent(info map[string]string) (string, error) {
	var v struct {
		Config struct {
			Linux struct {
				CgroupParent string `json:"cgroup_parent"`
			} `json:"linux"`
		} `json:"config"`
	}
	s := info["info"]
	if s == "" {
		return "", nil
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return "", fmt.Errorf("sandbox info: %w", err)
	}
	return v.Config.Linux.CgroupParent, nil
}
