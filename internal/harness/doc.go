// Package harness runs a real, throw-away CRI runtime for tests.
//
// It starts a private containerd (CRI plugin, runc v2 shim, cgroupfs driver,
// optional CNI bridge network) in a scratch directory, serves the images it
// needs from an in-process loopback OCI registry, and tears every trace of
// it down again: processes, mounts, network namespaces, the bridge link and
// cgroups. It is shared by cri-guard's end-to-end tests, the demo program,
// benchmarks and critest runs.
//
// The package is organised one concern per file:
//
//   - packages.go:   checking for (and apt-installing) the Debian packages used.
//   - image.go:      building OCI images in pure Go, and OCI layout archives.
//   - images.go:     the two standard images, pause and busybox.
//   - registry.go:   a read-only loopback OCI distribution registry.
//   - containerd.go: starting a private containerd and its configuration.
//   - containerd2.go: choosing the containerd build (Debian's 1.6 from PATH,
//     or a directory such as 2.4.2 from tools/containerd2.sh), and the
//     configuration layout containerd 2.x reads (version 3).
//   - cleanup.go:    tearing it down again and checking nothing is left.
//   - cgroup.go:     kubelet-style pod cgroups.
//   - cri.go:        dialing a CRI endpoint.
//   - guard.go:      building and running the cri-guard binary in front of it.
//
// What it is not: it is not a kubelet, not a general container engine
// wrapper, and not meant for production. It needs root, Linux, containerd
// 1.6+ (2.x from the directory in Options.ContainerdDir or
// $CRI_GUARD_CONTAINERD_DIR), runc, the CNI plugins in /usr/lib/cni and
// busybox-static (see EnsurePackages). It never uses or touches a system containerd
// (/run/containerd/containerd.sock, /var/lib/containerd), and it only sends
// network traffic over loopback or inside network namespaces it created.
//
// Typical use in a test (as root):
//
//	if err := harness.EnsurePackages(ctx, os.Stderr); err != nil { ... }
//	rt, err := harness.Start(ctx, harness.Options{Dir: dir})
//	if err != nil { ... }
//	t.Cleanup(func() { _ = rt.Close() })
//	parent, _ := rt.CreatePodCgroup(uid, 64<<20) // PodSandboxConfig.Linux.CgroupParent
//	rt.CRI.Runtime.RunPodSandbox(ctx, ...)       // or dial rt.Endpoint yourself
//	g, _ := harness.StartGuard(ctx, harness.GuardOptions{Binary: bin, Upstream: rt.Endpoint, Dir: dir2})
//	defer g.Stop()                               // g.Endpoint serves CRI through cri-guard
//
// Images are pulled by their usual names (PauseRef, BusyboxRef, or any ref
// of Options.Images): containerd's registry configuration sends every
// mirrored host (DefaultMirrorHosts) to the loopback registry, so nothing
// leaves the machine.
//
// There is no package-level mutable state: everything belongs to a Runtime,
// Registry or Guard value, so several can coexist in one process.
package harness
