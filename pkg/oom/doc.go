// Package oom explains memory failures of pods and containers in words an
// on-call engineer can act on.
//
// It recognises the runtime errors that a too-small memory limit produces
// (Classify), gathers the evidence that says whether memory really was the
// cause — the cgroup's limit, its oom_kill counter before and after the
// call, failcnt, peak usage, and the kernel's "oom-kill:" line from
// /dev/kmsg — and writes the explanation (Explain).
//
// No evidence, no claim: a pattern alone is never enough. Explain says
// something only when the cgroup's OOM counter went up, the kernel logged an
// OOM kill in the pod's cgroup, the limit is small (below SmallLimit), or
// the runtime's own error states the usage that the limit is below.
// Otherwise the runtime's error goes back untouched.
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
