package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// realSuite measures against a private containerd from internal/harness.
func realSuite(rep *report, dur time.Duration, containers int, setup time.Duration) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the containerd suite needs root (or pass -real=false)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := harness.EnsurePackages(ctx, os.Stderr); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("/tmp", "cg-bench-rt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer os.RemoveAll(filepath.Join("/tmp", "cg-bench-logs"))
	rt, err := harness.Start(ctx, harness.Options{Dir: filepath.Join(dir, "c"), DisableCNI: true})
	if err != nil {
		return err
	}
	defer func() {
		if err := rt.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing containerd:", err)
		}
	}()
	made, err := makeContainers(rt, containers, setup)
	fmt.Fprintf(os.Stderr, "containerd: %d containers running\n", made)
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating containers (continuing with what exists):", err)
	}
	relays, cl, stop, err := startRelays(dir, rt.Socket, rt.CgroupRoot, true)
	if err != nil {
		return err
	}
	defer stop()
	parent, err := rt.CreatePodCgroup("bench-lifecycle", 256<<20)
	if err != nil {
		return err
	}
	var seq atomic.Int64
	wls := []workload{
		{"Version", func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error { _, err := c.rs.Version(ctx, "v1"); return err }
		}},
		{"ListPodSandbox", func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error { _, err := c.rs.ListPodSandbox(ctx, nil); return err }
		}},
		{fmt.Sprintf("ListContainers-%d", made), func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error {
				l, err := c.rs.ListContainers(ctx, nil)
				if err == nil && len(l) < made {
					err = fmt.Errorf("got %d containers, want %d", len(l), made)
				}
				return err
			}
		}},
		{"ImageStatus", func(c *clients) func(context.Context) error {
			spec := &runtimeapi.ImageSpec{Image: rt.BusyboxRef}
			return func(ctx context.Context) error {
				r, err := c.is.ImageStatus(ctx, spec, false)
				if err == nil && r.GetImage() == nil {
					err = fmt.Errorf("image %s not found", rt.BusyboxRef)
				}
				return err
			}
		}},
		{"RunPodSandbox+Stop+Remove", func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error {
				u := fmt.Sprintf("bench-lc-%d", seq.Add(1))
				id, err := c.rs.RunPodSandbox(ctx, podConfig(u, parent, 64<<20), "")
				if err != nil {
					return err
				}
				if err := c.rs.StopPodSandbox(ctx, id); err != nil {
					return err
				}
				return c.rs.RemovePodSandbox(ctx, id)
			}
		}},
	}
	for _, w := range wls {
		for _, c := range []int{1, 16} {
			for _, res := range measureAll(relays, "containerd", w.name, c, dur, func(r *relay) func(context.Context) error { return w.op(cl[r.name]) }) {
				fmt.Fprintf(os.Stderr, "containerd %-26s c=%-3d %-10s p50=%.3fms %8.0f/s\n", w.name, c, res.Relay, res.P50Ms, res.PerSec)
				rep.Results = append(rep.Results, res)
			}
		}
	}
	for _, c := range cl {
		c.conn.Close()
	}
	return nil
}

// podConfig is a host-network pod, as the kubelet sends it.
func podConfig(uid, parent string, limit int64) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: uid, Namespace: "bench", Uid: uid},
		LogDirectory: filepath.Join("/tmp", "cg-bench-logs", uid),
		Labels:       map[string]string{"io.kubernetes.pod.name": uid, "io.kubernetes.pod.namespace": "bench", "io.kubernetes.pod.uid": uid},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			Resources:    &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
}

// makeContainers starts n busybox sleep containers in pods of 50, directly
// at the runtime, within bound. It returns how many run.
func makeContainers(rt *harness.Runtime, n int, bound time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	rs := rt.CRI.Runtime
	const perPod = 50
	var made atomic.Int64
	var firstErr error
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for p := 0; p*perPod < n; p++ {
		u := fmt.Sprintf("bench-pod-%d", p)
		parent, err := rt.CreatePodCgroup(u, 2<<30)
		if err != nil {
			return int(made.Load()), err
		}
		cfg := podConfig(u, parent, 2<<30)
		sb, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return int(made.Load()), err
		}
		jobs := make(chan int)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					name := fmt.Sprintf("c%d", i)
					cc := &runtimeapi.ContainerConfig{
						Metadata: &runtimeapi.ContainerMetadata{Name: name},
						Image:    &runtimeapi.ImageSpec{Image: rt.BusyboxRef},
						// sleep as PID 1 ignores SIGTERM; this exits at once on stop.
						Command: []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"},
						LogPath: name + ".log",
					}
					r, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: cc, SandboxConfig: cfg})
					if err != nil {
						fail(err)
						continue
					}
					if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
						fail(err)
						continue
					}
					made.Add(1)
				}
			}()
		}
		for i := 0; i < perPod && p*perPod+i < n; i++ {
			select {
			case jobs <- i:
			case <-ctx.Done():
			}
		}
		close(jobs)
		wg.Wait()
		if ctx.Err() != nil {
			break
		}
	}
	return int(made.Load()), firstErr
}
