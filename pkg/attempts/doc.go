// Package attempts remembers the recent RunPodSandbox calls that created
// no sandbox: those cri-guard refused and those the runtime failed.
//
// A pod that never started leaves no record of its name on the node: the
// runtime knows only the sandboxes it created, and the pod's cgroup is
// named after its uid alone. The running daemon saw the calls, so it keeps
// what they said (namespace, name, uid, attempt, cgroup parent) and what the
// kubelet was told, for `cri-guard explain` to ask over the control socket.
//
// The store is bounded: one entry per pod, at most Max pods, none older than
// TTL, messages cut to MaxMessage bytes. Its lock is held only for a map
// operation, never across a call to the runtime. A restart loses it.
package attempts
