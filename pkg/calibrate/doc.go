// Package calibrate measures, on a real node, the smallest memory limits at
// which a pod sandbox, and optionally a container of a given image, start
// reliably, and turns the measurement into a recommended cri-guard floor.
//
// It is two parts:
//
//   - the search (Search, Recommend, Snippet): pure logic over a Probe
//     function, unit-tested against fake runtimes. The search is a binary
//     search in whole steps where a limit passes only if every one of N
//     attempts succeeds, followed by a confirmation round at the candidate,
//     so that a limit that only sometimes works is not reported.
//   - the driver (Runtime, Cgroups, CheckRuntime): I/O. It creates throwaway
//     pods as the kubelet's cgroupfs driver does (pod cgroup first, in a
//     dedicated parent, then RunPodSandbox with Linux.CgroupParent and the
//     pod's memory limit), in a namespace of its own, labels everything it
//     creates with a run id, and removes only what carries that id.
//
// It is not a benchmark and not a policy: it does not decide anything about
// real pods, never touches pods it did not create, and does not write the
// configuration; it prints a snippet for a person to paste. It supports the
// cgroupfs cgroup driver only (a runtime configured for systemd cgroups
// expects a slice name as the cgroup parent).
package calibrate
