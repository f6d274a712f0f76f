package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/guard"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// recorder is an Interceptor that keeps the bytes it is asked to forward.
type recorder struct {
	method string
	mu     sync.Mutex
	got    [][]byte
}

func (r *recorder) Method() string { return r.method }
func (r *recorder) Intercept(ctx context.Context, in []byte, forward proxy.Forward) ([]byte, error) {
	r.mu.Lock()
	r.got = append(r.got, append([]byte(nil), in...))
	r.mu.Unlock()
	return forward(ctx, in)
}

// serveProxy runs p on a fresh unix socket and returns its endpoint.
func serveProxy(t *testing.T, p proxy.Core) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cg-pt-")
	if err != nil {
		t.Fatal(err)
	}
	ep := "unix://" + filepath.Join(dir, "s.sock")
	l, err := proxy.Listen(ep, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	t.Cleanup(func() { p.Close(); os.RemoveAll(dir) })
	return ep
}

type rawCodec struct{}

func (rawCodec) Name() string                  { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}

// TestHealthyPodIsForwardedByteIdentical puts cri-guard's guard (in
// process) in front of a recorder in front of containerd, sends a healthy
// RunPodSandbox as raw bytes (with labels and annotations, whose encoding
// order a re-encoding would change, and a field from a newer kubelet), and
// checks that the runtime side saw exactly those bytes and the pod runs.
func TestHealthyPodIsForwardedByteIdentical(t *testing.T) {
	for _, core := range []string{proxy.ForwardingGRPC, proxy.ForwardingFrames} {
		t.Run(core, func(t *testing.T) { testHealthyPodIsForwardedByteIdentical(t, core) })
	}
}

func testHealthyPodIsForwardedByteIdentical(t *testing.T, core string) {
	rt, _ := sharedRuntime(t)
	rec := &recorder{method: runtimeapi.RuntimeService_RunPodSandbox_FullMethodName}
	inner, err := proxy.NewCore(core, rt.Endpoint, proxy.WithInterceptors(rec))
	if err != nil {
		t.Fatal(err)
	}
	recEP := serveProxy(t, inner)

	cfg, err := config.Resolve(config.File{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(guard.Options{Policy: &cfg.Policy})
	if err != nil {
		t.Fatal(err)
	}
	outer, err := proxy.NewCore(core, recEP, proxy.WithInterceptors(g.Interceptors()...))
	if err != nil {
		t.Fatal(err)
	}
	g.SetRuntime(runtimeapi.NewRuntimeServiceClient(outer.Conn()))
	guardEP := serveProxy(t, outer)

	u := uid(t)
	parent, err := rt.CreatePodCgroup(u, 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	pod := podConfig("healthy-"+u, u, parent, 256<<20)
	for i := 0; i < 8; i++ {
		pod.Labels["extra-"+strings.Repeat("x", i)] = "v"
	}
	body, err := proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		t.Fatal(err)
	}
	body = append(body, 0xba, 0x3e, 0x03, 'n', 'e', 'w') // field 999, a newer kubelet's

	conn, err := grpc.NewClient(guardEP, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var out []byte
	if err := conn.Invoke(context.Background(), runtimeapi.RuntimeService_RunPodSandbox_FullMethodName, &body, &out, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	var resp runtimeapi.RunPodSandboxResponse
	if err := proto.Unmarshal(out, &resp); err != nil || resp.PodSandboxId == "" {
		t.Fatalf("reply %q: %v", out, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		rt.CRI.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId})
		rt.CRI.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	rec.mu.Lock()
	got := rec.got
	rec.mu.Unlock()
	if len(got) != 1 || !bytes.Equal(got[0], body) {
		t.Fatalf("the runtime side got %d requests; the first differs from the kubelet's bytes", len(got))
	}

	// The pod is real: a container runs in it and answers an exec.
	rs := kubelet(t, guardEP)
	ctx := context.Background()
	id, err := rs.CreateContainer(ctx, resp.PodSandboxId, containerConfig(rt, "app", 64<<20), pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := rs.ExecSync(ctx, id, []string{"echo", "hello from a real pod"}, 0)
	if err != nil || string(stdout) != "hello from a real pod\n" {
		t.Fatalf("exec: %q, %v", stdout, err)
	}
}
