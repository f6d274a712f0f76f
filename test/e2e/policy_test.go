package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// wantRefusal checks that err is the refusal the kubelet should see.
func wantRefusal(t *testing.T, err error, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || st.Message() != msg {
		t.Fatalf("got %v %q\nwant InvalidArgument %q", st.Code(), st.Message(), msg)
	}
}

func TestPodSandboxBelowFloor(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()

	for name, tc := range map[string]struct {
		podLimit int64 // -1: Linux.Resources unset
		want     string
	}{
		"kubelet 1.23 and later": {
			podLimit: 2000,
			want:     "pod e2e/%s: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?",
		},
		"older kubelets send no Linux.Resources": {
			podLimit: -1,
			want:     "pod e2e/%s: memory limit 0 bytes (the pod cgroup's limit; the kernel rounds limits below one page down to 0) is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi",
		},
	} {
		t.Run(name, func(t *testing.T) {
			u := uid(t)
			parent, err := rt.CreatePodCgroup(u, 2000)
			if err != nil {
				t.Fatal(err)
			}
			cfg := podConfig("tiny-"+u, u, parent, tc.podLimit)
			_, err = rs.RunPodSandbox(ctx, cfg, "")
			wantRefusal(t, err, strings.Replace(tc.want, "%s", cfg.Metadata.Name, 1))
			if got := sandboxesOf(t, rt, u); len(got) != 0 {
				t.Errorf("the refused pod left %d sandboxes upstream", len(got))
			}
		})
	}

	// Without cri-guard, the same pod fails at runc with a cryptic error
	// (this is the incident; the demo shows it in full).
	t.Run("direct to containerd", func(t *testing.T) {
		u := uid(t)
		parent, err := rt.CreatePodCgroup(u, 2000)
		if err != nil {
			t.Fatal(err)
		}
		id, err := kubelet(t, rt.Endpoint).RunPodSandbox(ctx, podConfig("tiny-"+u, u, parent, 2000), "")
		if err == nil {
			rt.CRI.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
			rt.CRI.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
			t.Fatal("a 2000-byte pod started directly; the premise of cri-guard is gone on this node")
		}
		t.Logf("containerd says: %v", err)
		if msg := status.Convert(err).Message(); strings.Contains(msg, "memory limit") || strings.Contains(msg, "cri-guard") {
			t.Errorf("the direct error already explains itself: %s", msg)
		}
	})
}

func TestContainerBelowFloor(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()
	sb, cfg := runningPod(t, rt, rs, 256<<20)

	_, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "app", 2000), cfg)
	wantRefusal(t, err, "pod e2e/"+cfg.Metadata.Name+", container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?")

	// A healthy container passes, and a resize to 2000 bytes is refused.
	id, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "app", 64<<20), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	err = rs.UpdateContainerResources(ctx, id, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}})
	wantRefusal(t, err, "pod e2e/"+cfg.Metadata.Name+", container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?")

	// Directly, runc answers with its own words.
	err = kubelet(t, rt.Endpoint).UpdateContainerResources(ctx, id, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}})
	if err == nil || !strings.Contains(err.Error(), "unable to set memory limit to 2000") {
		t.Errorf("direct update: %v", err)
	}
	st, err := rs.ContainerStatus(ctx, id, false)
	if err != nil || st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("after the refused resize the container is %v, %v", st.GetStatus().GetState(), err)
	}
}

func TestRaiseMode(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin, "--mode", "raise")
	rs := kubelet(t, g.Endpoint)
	ctx := context.Background()
	sb, cfg := runningPod(t, rt, rs, 256<<20)

	id, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "app", 2000), cfg)
	if err != nil {
		t.Fatalf("raise mode refused the container: %v", err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		t.Fatalf("the raised container did not start: %v", err)
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cfg.Linux.CgroupParent, id, "memory.limit_in_bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := strconv.Atoi(strings.TrimSpace(string(b))); got != 12<<20 {
		t.Errorf("container cgroup limit %d, want the floor %d", got, 12<<20)
	}
	if !g.WaitLog("raised to 12Mi", time.Minute) {
		t.Errorf("no log line for the raise:\n%s", g.Logs())
	}

	// A pod below the floor cannot be raised into: it is refused.
	u := uid(t)
	parent, err := rt.CreatePodCgroup(u, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rs.RunPodSandbox(ctx, podConfig("small-"+u, u, parent, 8<<20), "")
	wantRefusal(t, err, "pod e2e/small-"+u+": memory limit 8388608 bytes (8Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi")
}

// A pod resize below the floor is refused by cri-guard before the runtime
// sees it (containerd 1.6 itself does not implement the method).
func TestPodResizeBelowFloor(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	sb, cfg := runningPod(t, rt, kubelet(t, g.Endpoint), 256<<20)
	req := &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: sb, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}}
	_, err := g.CRI.Runtime.UpdatePodSandboxResources(context.Background(), req)
	wantRefusal(t, err, "pod e2e/"+cfg.Metadata.Name+": memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?")

	// A resize above the floor goes through: the runtime's own answer.
	req.Resources.MemoryLimitInBytes = 512 << 20
	_, direct := rt.CRI.Runtime.UpdatePodSandboxResources(context.Background(), req)
	_, proxied := g.CRI.Runtime.UpdatePodSandboxResources(context.Background(), req)
	if status.Code(direct) != status.Code(proxied) || status.Convert(direct).Message() != status.Convert(proxied).Message() {
		t.Errorf("a resize above the floor: direct %v, through cri-guard %v", direct, proxied)
	}
}
