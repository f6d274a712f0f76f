package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The test binary doubles as a stand-in cri-guard for the StartGuard tests:
// with HARNESS_FAKE_GUARD=1 it serves CRI Version on --listen.
func TestMain(m *testing.M) {
	if os.Getenv("HARNESS_FAKE_GUARD") == "1" {
		os.Exit(fakeGuard(os.Args[1:]))
	}
	os.Exit(m.Run())
}

type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	upstream string
}

func (f *fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake-guard", RuntimeVersion: f.upstream, RuntimeApiVersion: "v1"}, nil
}

func fakeGuard(args []string) int {
	if len(args) < 5 || args[0] != "serve" || args[1] != "--listen" || args[3] != "--upstream" {
		fmt.Fprintf(os.Stderr, "fake guard: bad args %q\n", args)
		return 2
	}
	if os.Getenv("HARNESS_FAKE_GUARD_FAIL") == "1" {
		fmt.Fprintln(os.Stderr, "fake guard: boom")
		return 3
	}
	ln, err := net.Listen("unix", strings.TrimPrefix(args[2], "unix://"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, &fakeRuntime{upstream: args[4]})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		srv.GracefulStop()
	}()
	fmt.Fprintf(os.Stderr, "fake guard: serving %s extra=%q\n", args[2], args[5:])
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestStartGuardStandIn(t *testing.T) {
	t.Setenv("HARNESS_FAKE_GUARD", "1")
	t.Setenv("CRI_GUARD_ARGS", "--forwarding frames")
	dir, err := os.MkdirTemp("", "cg-guard-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := StartGuard(ctx, GuardOptions{
		Binary: os.Args[0], Upstream: "unix:///nowhere.sock", Dir: dir, Args: []string{"--extra"},
	})
	if err != nil {
		t.Fatalf("StartGuard: %v", err)
	}
	defer g.Stop()
	v, err := g.CRI.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "fake-guard" || v.RuntimeVersion != "unix:///nowhere.sock" {
		t.Errorf("Version through guard: %v %v", v, err)
	}
	if g.Endpoint != "unix://"+dir+"/cri-guard.sock" {
		t.Errorf("Endpoint %q", g.Endpoint)
	}
	if err := g.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !strings.Contains(g.Logs(), `extra=["--extra" "--forwarding" "frames"]`) {
		t.Errorf("Logs() = %q, want the process output", g.Logs())
	}
	if alive(g.Cmd.Process.Pid) {
		t.Error("guard process alive after Stop")
	}
}

func TestStartGuardFailureIncludesOutput(t *testing.T) {
	t.Setenv("HARNESS_FAKE_GUARD", "1")
	t.Setenv("HARNESS_FAKE_GUARD_FAIL", "1")
	dir := t.TempDir()
	_, err := StartGuard(context.Background(), GuardOptions{Binary: os.Args[0], Upstream: "unix:///x", Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("StartGuard error = %v, want one including the output", err)
	}
	// It noticed the exit, rather than waiting out its start timeout (which
	// says "deadline exceeded"); no wall-clock figure, so load cannot move it.
	if !strings.Contains(err.Error(), "server process exited") {
		t.Errorf("StartGuard did not notice the exit: %v", err)
	}
}
