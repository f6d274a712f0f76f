// Package demo replays, against a real but throw-away containerd, the
// incident cri-guard exists for and what cri-guard does about it. It backs
// `make demo` and `make run` (cmd/cri-guard-demo) and the end-to-end test
// that keeps the demo honest.
//
// Run prints four steps, each under a heading:
//
//  1. the incident: a pod with memory limit "2000" (bytes), created the
//     way the kubelet creates it, sent directly to containerd and then
//     through cri-guard;
//  2. a container with memory limit 2000 in a healthy pod: directly, through
//     cri-guard, and through cri-guard in raise mode;
//  3. an out-of-memory failure at start that gets past a lowered floor,
//     and `cri-guard explain` on it;
//  4. a healthy pod through cri-guard, with exec into its container.
//
// Serve starts the same runtime and a cri-guard in front of it, prints the
// socket and a crictl command line, and waits until its context is done.
//
// Everything runs in a scratch directory under /tmp through
// internal/harness: a private containerd with its own socket, state and
// cgroup root. The host's containerd, if any, is not used or touched. Every
// process, mount and cgroup is removed on return, including on error and
// on cancellation (Ctrl-C).
package demo
