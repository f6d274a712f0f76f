package oom

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ContainerInfo is what a runtime's verbose ContainerStatus info (the
// "info" key, as containerd writes it) says of a container's memory.
type ContainerInfo struct {
	SandboxID string
	// CgroupsPath is the container's cgroup as the OCI spec names it; an
	// absolute path with the cgroupfs driver.
	CgroupsPath string
	// Spec is true when the info holds the container's OCI spec. Only
	// then does MemoryLimit say anything: the spec's memory limit, 0 when
	// the spec sets none. cri-dockerd's info is {pid, sandboxID}: no spec,
	// and nothing said about the limit.
	Spec        bool
	MemoryLimit int64
}

// ParseContainerInfo reads the verbose info of a ContainerStatus reply. A
// runtime that gives no info (CRI-O) yields the zero ContainerInfo.
func ParseContainerInfo(info map[string]string) (ContainerInfo, error) {
	var v struct {
		SandboxID   string      `json:"sandboxID"`
		RuntimeSpec *specs.Spec `json:"runtimeSpec"`
	}
	s := info["info"]
	if s == "" {
		return ContainerInfo{}, nil
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return ContainerInfo{}, fmt.Errorf("container info: %w", err)
	}
	out := ContainerInfo{SandboxID: v.SandboxID}
	if v.RuntimeSpec == nil || v.RuntimeSpec.Linux == nil {
		return out, nil
	}
	linux := v.RuntimeSpec.Linux
	out.Spec, out.CgroupsPath = true, linux.CgroupsPath
	if r := linux.Resources; r != nil && r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		out.MemoryLimit = *r.Memory.Limit // -1 and 0 are "no limit" to runc
	}
	return out, nil
}

// Limit is a container's memory limit as far as it is known. "Unknown" is
// never "none".
type Limit struct {
	// Known is false when neither the runtime nor the container's cgroup
	// says.
	Known bool `json:"known"`
	// Bytes is the limit; 0 when there is none.
	Bytes int64 `json:"bytes"`
	// From says who said it: "runtime" or "cgroup".
	From string `json:"from,omitempty"`
}

// ResolveLimit finds a container's limit: the runtime's status (when it
// gives a positive limit), else the OCI spec in its verbose info, else the
// container's own cgroup (cg, nil or unread when gone), else unknown.
func ResolveLimit(statusLimit int64, info ContainerInfo, cg *Cgroup) Limit {
	switch {
	case statusLimit > 0:
		return Limit{Known: true, Bytes: statusLimit, From: "runtime"}
	case info.Spec:
		return Limit{Known: true, Bytes: info.MemoryLimit, From: "runtime"}
	case cg != nil && cg.Read && cg.Unlimited:
		return Limit{Known: true, From: "cgroup"}
	case cg != nil && cg.Read:
		return Limit{Known: true, Bytes: cg.Limit, From: "cgroup"}
	}
	return Limit{}
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
