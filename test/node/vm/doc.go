// Package vm holds the node scenarios: Go tests that run inside the node VM
// booted by package node (`make test-node`), as root, against the node's
// own systemd, containerd 1.7 (systemd cgroup driver), kubelet and
// cri-guard. They are skipped unless CRI_GUARD_IN_VM=1, which only the VM's
// run.sh sets.
//
// Each scenario is a TestXxx in a file of its own. It asserts on what the
// kubelet itself reports: its log (Journal) and the pod status it computes
// (Pods, the kubelet's /pods endpoint; no API server is needed), and on
// what the node shows (containerd through crictl, cgroup files, cri-guard's
// metrics and `cri-guard status`). node_test.go has the helpers; a
// scenario leaves the node as it found it (static pods removed and gone,
// cri-guard's config restored), because all scenarios share one boot.
//
// TestMain waits until the node is ready (kubelet healthy, the runtime
// answering through cri-guard) before any scenario runs. Every wait is a
// poll with a generous deadline that only guards against a hang: the VM
// may run under TCG on a busy host.
package vm
