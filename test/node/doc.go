// Package node proves cri-guard on a real node: a Debian trixie VM (systemd
// as PID 1, cgroup v2, containerd 1.7 with the systemd cgroup driver, runc,
// a standalone kubelet) with cri-guard installed the operator's way.
//
// TestNode (run by `make test-node`, skipped unless CRI_GUARD_NODE=1, as
// root) builds or reuses the node image (tools/vm/image.sh, cached in
// $CRI_GUARD_CACHE/vm), stages the inputs on a read-only disk made with
// mkfs.ext4 -d (cri-guard's `make install` files and its .deb, the
// kubelet, crictl, the stand-in images, the scenario binary built from ./vm
// and the node's configuration in ./guest; mounted at /inputs) and run.sh
// in a directory shared over 9p (/share, which also takes the results),
// boots the VM once under qemu with snapshot=on (every run starts from the
// same clean image), streams the
// in-VM `go test -v` output and fails when any scenario fails. It uses KVM
// when a probe boot shows that the image's kernel runs on it, otherwise
// TCG, and says which.
//
// The scenarios are the tests of package ./vm; they run inside the VM as
// root and assert on what the kubelet itself reports (its log and the pod
// status of its /pods endpoint). Files the run leaves are copied to
// bin/node/ (vm.log, console.log, journal.txt, anything the scenarios
// wrote); nothing else remains on the host.
//
// Environment: CRI_GUARD_NODE_RUN / CRI_GUARD_NODE_SKIP select scenarios
// (-test.run / -test.skip inside the VM; the default skip is ^TestBench,
// which `make bench-node` runs), CRI_GUARD_VM_ACCEL=kvm|tcg forces the
// accelerator, CRI_GUARD_KUBELET names the kubelet binary,
// CRI_GUARD_NODE_DEB a cri-guard .deb to install instead of `make install`,
// CRI_GUARD_NODE_DEB_NEXT a newer build of it for TestPackage's upgrade,
// CRI_GUARD_NODE_GUARD_BIN a cri-guard binary that replaces the installed
// one before the kubelet starts (to show a scenario failing on a build
// without its fix: the config stays as installed, and a build without the
// `reload` command gets the SIGHUP ExecReload its units had; scenarios that
// reinstall cri-guard, such as TestReadmeRollbackAndRollout, bring back the
// installed build), CRI_GUARD_NODE_TIMEOUT the hang guard of the whole VM
// run (default 40m).
package node
