// Package facts reads what the node knows about a pod's memory: the limit
// that the kubelet wrote into the pod cgroup before it called RunPodSandbox,
// and the OOM counters that tell what happened afterwards.
//
// It reads cgroup v1 and v2 through github.com/containerd/cgroups/v3, and
// understands both kubelet cgroup drivers: cgroupfs (/kubepods/burstable/pod<uid>)
// and systemd (kubepods-burstable-pod<uid>.slice). It only reads, and never
// follows a path that leaves the cgroup root.
//
// It does not decide anything; package policy does.
package facts
