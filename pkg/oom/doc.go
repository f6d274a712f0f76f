// Package oom explains memory failures of pods and containers in words an
// on-call engineer can act on.
//
// It recognises the runtime errors that a too-small memory limit produces
// (Classify), gathers the evidence that says whether memory really was the
// cause — the pod cgroup's limit, its oom_kill, failcnt and (cgroup v2)
// memory.events oom counters before and after the call, the container's
// own cgroup, and the kernel's "oom-kill:" lines logged in /dev/kmsg during
// the call (KernelWindow) — and writes the explanation (Explain).
//
// No evidence, no claim: a pattern alone is never enough, and the evidence
// must belong to the failing call. Explain says something only when an OOM
// counter went up during the call, the kernel logged an OOM kill during it
// in the failing container's cgroup (or, before there is one, the pod's),
// the container's own cgroup counted a kill, the limit is small (below
// SmallLimit; not enough for "cannot start a stopped process" or a failed
// systemd scope, which need an OOM of the call), or the runtime's own
// error states the usage or the minimum that the limit is below. The pod
// cgroup's lifetime figures are never proof, and are named, as the pod's,
// only for the pod sandbox. Otherwise the runtime's error goes back
// untouched.
//
// A container's limit is the runtime's word (CRI status, or the OCI spec
// in its verbose info, decoded with runtime-spec's types), else its own
// cgroup's, else unknown (ResolveLimit): unknown is never "no limit".
//
// The explanation is one line, because the kubelet puts the runtime's
// message into an event that `kubectl describe pod` shows on one line:
//
//	cri-guard: pod NS/NAME: <what happened> (evidence: <counters, kernel line>); fix: <what to change>; runtime error: <the runtime's text, unchanged>
//
// "; runtime error: " is the separator: everything after it is exactly
// what the runtime said, so searches for the runtime's text still work.
//
// The JSON form of `cri-guard explain --json` is the Report type.
//
// This package does not decide whether a call is allowed (package policy
// does), and reads cgroups only through package facts.
package oom
