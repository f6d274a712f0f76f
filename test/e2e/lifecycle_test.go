package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"go.opentelemetry.io/otel/trace/noop"
)

// crictlPath finds bin/crictl (make tools builds it).
func crictlPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CRICTL"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../bin/crictl")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("crictl: %v (run make tools)", err)
	}
	return p
}

// TestLifecycleWithCrictl runs the whole pod lifecycle with crictl through
// cri-guard: runp, create, start, exec, logs, stop, rm.
func TestLifecycleWithCrictl(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	crictl := crictlPath(t)
	dir := t.TempDir()
	u := uid(t)
	parent, err := rt.CreatePodCgroup(u, 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	pod := write("pod.json", map[string]any{
		"metadata":      map[string]any{"name": "crictl-" + u, "namespace": "e2e", "uid": u},
		"log_directory": filepath.Join(dir, "logs"),
		"linux": map[string]any{
			"cgroup_parent":    parent,
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
		},
	})
	ctr := write("ctr.json", map[string]any{
		"metadata": map[string]any{"name": "app"},
		"image":    map[string]any{"image": rt.BusyboxRef},
		"command":  []string{"sh", "-c", "echo started in a real container; sleep 3600"},
		"log_path": "app.log",
		"linux":    map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 64 << 20}},
	})
	run := func(args ...string) string {
		t.Helper()
		full := append([]string{"--runtime-endpoint", g.Endpoint, "--image-endpoint", g.Endpoint, "--timeout", "30s"}, args...)
		var stderr strings.Builder
		cmd := exec.Command(crictl, full...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("crictl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	sb := run("runp", pod)
	c := run("create", sb, ctr, pod)
	run("start", c)
	if got := run("exec", c, "echo", "exec through cri-guard"); got != "exec through cri-guard" {
		t.Errorf("exec: %q", got)
	}
	deadline := time.Now().Add(time.Minute) // a hang guard
	for !strings.Contains(run("logs", c), "started in a real container") {
		if time.Now().After(deadline) {
			t.Fatalf("logs never showed the container's output: %q", run("logs", c))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := run("inspect", "-o", "go-template", "--template", "{{.status.state}}", c); got != "CONTAINER_RUNNING" {
		t.Errorf("state %q", got)
	}
	run("stop", c)
	run("rm", c)
	run("stopp", sb)
	run("rmp", sb)
	if got := sandboxesOf(t, rt, u); len(got) != 0 {
		t.Errorf("%d sandboxes left", len(got))
	}
}

// TestLifecycleWithKubeletClient drives the lifecycle with the kubelet's own
// client, and checks the answers the kubelet depends on.
func TestLifecycleWithKubeletClient(t *testing.T) {
	rt, bin := sharedRuntime(t)
	g := startGuard(t, rt, bin)
	ctx := context.Background()
	rs := kubelet(t, g.Endpoint)
	is, err := remote.NewRemoteImageService(ctx, g.Endpoint, 10*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		t.Fatal(err)
	}

	// Image service: pull, status, list.
	ref, err := is.PullImage(ctx, &runtimeapi.ImageSpec{Image: rt.BusyboxRef}, nil, nil)
	if err != nil || ref == "" {
		t.Fatalf("PullImage: %q, %v", ref, err)
	}
	st, err := is.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: rt.BusyboxRef}, false)
	if err != nil || st.GetImage() == nil {
		t.Fatalf("ImageStatus: %v, %v", st, err)
	}
	imgs, err := is.ListImages(ctx, nil)
	if err != nil || len(imgs) < 2 {
		t.Fatalf("ListImages: %d, %v", len(imgs), err)
	}

	// containerd 1.6 has no container events (1.7 added them): the
	// stream's answer, whatever it is, must be the same through cri-guard.
	// (The events themselves, on containerd 2.x: TestContainerEventsRelayed.)
	// Both at once: a live stream takes the whole eventsWait.
	direct := make(chan string, 1)
	go func() { direct <- eventsAnswerClass(eventsAnswer(rt.CRI.Runtime)) }()
	p := eventsAnswerClass(eventsAnswer(g.CRI.Runtime))
	if d := <-direct; d != p {
		t.Errorf("GetContainerEvents: direct %s, through cri-guard %s", d, p)
	}

	sb, cfg := runningPod(t, rt, rs, 256<<20)
	id, err := rs.CreateContainer(ctx, sb, containerConfig(rt, "app", 64<<20), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	out, _, err := rs.ExecSync(ctx, id, []string{"cat", "/proc/self/cgroup"}, 10*time.Second)
	if err != nil || !strings.Contains(string(out), cfg.Linux.CgroupParent) {
		t.Errorf("exec: %q, %v", out, err)
	}
	list, err := rs.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: sb})
	if err != nil || len(list) != 1 || list[0].Id != id {
		t.Errorf("ListContainers: %v, %v", list, err)
	}
	if _, err := rs.ContainerStats(ctx, id); err != nil {
		t.Errorf("ContainerStats: %v", err)
	}
	if err := rs.StopContainer(ctx, id, 5); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := rs.StopPodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemovePodSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}

	// Errors reach the kubelet as the runtime gave them.
	for name, call := range map[string]func(runtimeapi.RuntimeServiceClient) error{
		"ContainerStatus of a removed container": func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
			return err
		},
		"PodSandboxStatus of a removed pod": func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb})
			return err
		},
		"StartContainer of nothing": func(c runtimeapi.RuntimeServiceClient) error {
			_, err := c.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: "does-not-exist"})
			return err
		},
	} {
		direct, proxied := status.Convert(call(rt.CRI.Runtime)), status.Convert(call(g.CRI.Runtime))
		if direct.Code() == codes.OK || direct.Code() != proxied.Code() || direct.Message() != proxied.Message() {
			t.Errorf("%s: direct %v %q, through cri-guard %v %q", name, direct.Code(), direct.Message(), proxied.Code(), proxied.Message())
		}
	}
}
