// Package e2e tests cri-guard against a real containerd, started by
// internal/harness in a scratch directory. The tests run as root with
// CRI_GUARD_E2E=1 (make test sets it); without it they skip.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// shared is one containerd for the tests of this package that do not need
// their own.
var shared struct {
	once sync.Once
	dir  string
	rt   *harness.Runtime
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.rt != nil {
		if err := shared.rt.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing the shared runtime:", err)
			code = 1
		}
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("cg-calibrate-e2e-%d", os.Getpid())))
	os.Exit(code)
}

// requireE2E skips unless the real-runtime tests were asked for. When they
// were, a missing prerequisite fails the test instead.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("CRI_GUARD_E2E") != "1" {
		t.Skip("real-runtime test: set CRI_GUARD_E2E=1 and run as root (make test does)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("CRI_GUARD_E2E=1 needs root")
	}
}

// sharedRuntime returns the package's containerd and the cri-guard binary.
func sharedRuntime(t *testing.T) (*harness.Runtime, string) {
	t.Helper()
	requireE2E(t)
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if shared.err = harness.EnsurePackages(ctx, os.Stderr); shared.err != nil {
			return
		}
		shared.dir, shared.err = os.MkdirTemp("/tmp", "cg-e2e-")
		if shared.err != nil {
			return
		}
		if shared.bin = os.Getenv("CRI_GUARD_BIN"); shared.bin == "" {
			root, err := filepath.Abs("../..")
			if err != nil {
				shared.err = err
				return
			}
			if shared.bin, shared.err = harness.BuildGuard(ctx, root, shared.dir); shared.err != nil {
				return
			}
		}
		shared.rt, shared.err = harness.Start(ctx, harness.Options{Dir: filepath.Join(shared.dir, "c"), DisableCNI: true})
	})
	if shared.err != nil {
		t.Fatalf("real runtime: %v", shared.err)
	}
	return shared.rt, shared.bin
}

// startGuard runs the cri-guard binary in front of rt.
func startGuard(t *testing.T, rt *harness.Runtime, bin string, args ...string) *harness.Guard {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cg-guard-")
	if err != nil {
		t.Fatal(err)
	}
	g, err := harness.StartGuard(context.Background(), harness.GuardOptions{Binary: bin, Upstream: rt.Endpoint, Dir: dir, Args: args})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Stop(); err != nil {
			t.Errorf("stopping cri-guard: %v", err)
		}
		if t.Failed() {
			t.Logf("cri-guard output:\n%s", g.Logs())
		}
		os.RemoveAll(dir)
	})
	return g
}

// kubelet connects to endpoint the way the kubelet does.
func kubelet(t *testing.T, endpoint string) internalapi.RuntimeService {
	t.Helper()
	rs, err := remote.NewRemoteRuntimeService(context.Background(), endpoint, 10*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// podConfig is a host-network pod in the pod cgroup parent, as the kubelet
// sends it. podLimit < 0 leaves Linux.Resources unset, as kubelets before
// 1.23 do.
func podConfig(name, uid, parent string, podLimit int64) *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: uid},
		LogDirectory: filepath.Join(shared.dir, "logs", uid), // removed by TestMain
		Labels:       map[string]string{"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "e2e", "io.kubernetes.pod.uid": uid},
		Annotations:  map[string]string{"kubernetes.io/config.source": "e2e"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	if podLimit >= 0 {
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: podLimit}
	}
	return cfg
}

// containerConfig runs busybox sleep with a memory limit (0: none).
func containerConfig(rt *harness.Runtime, name string, limit int64) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: rt.BusyboxRef},
		Command:  []string{"sleep", "3600"},
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}},
	}
}

// uid returns a pod uid unique to this test run.
func uid(t *testing.T) string {
	return fmt.Sprintf("%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-", " ", "-").Replace(t.Name())), time.Now().UnixNano()%1e6)
}

// sandboxesOf lists the sandboxes, directly at the runtime, of a pod uid.
func sandboxesOf(t *testing.T, rt *harness.Runtime, podUID string) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := rt.CRI.Runtime.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": podUID}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetItems()
}

// runningPod starts a healthy pod through rs and removes it at cleanup.
func runningPod(t *testing.T, rt *harness.Runtime, rs internalapi.RuntimeService, limit int64) (id string, cfg *runtimeapi.PodSandboxConfig) {
	t.Helper()
	u := uid(t)
	parent, err := rt.CreatePodCgroup(u, limit)
	if err != nil {
		t.Fatal(err)
	}
	cfg = podConfig("pod-"+u, u, parent, limit)
	id, err = rs.RunPodSandbox(context.Background(), cfg, "")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		rt.CRI.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		rt.CRI.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	})
	return id, cfg
}
