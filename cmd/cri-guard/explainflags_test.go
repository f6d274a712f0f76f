package main_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// onePod is a runtime with one pod sandbox and no containers.
type onePod struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

var theSandbox = &runtimeapi.PodSandbox{
	Id:       "0123456789abcdef",
	Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "team-a", Name: "web", Uid: "uid-1"},
	State:    runtimeapi.PodSandboxState_SANDBOX_READY,
}

func (onePod) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{Items: []*runtimeapi.PodSandbox{theSandbox}}, nil
}

func (onePod) PodSandboxStatus(context.Context, *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: theSandbox.Id, Metadata: theSandbox.Metadata}}, nil
}

func (onePod) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return &runtimeapi.ListContainersResponse{}, nil
}

// TestExplainFlagsAnywhere: explain takes its flags before or after the
// pod, as crictl and kubectl do.
func TestExplainFlagsAnywhere(t *testing.T) {
	bin := binary(t)
	dir := shortDir(t)
	sock := filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, onePod{})
	go s.Serve(l) //nolint:errcheck
	defer s.Stop()
	ep := "unix://" + sock
	root := t.TempDir() // no cgroups: the report comes from the runtime alone
	os.MkdirAll(filepath.Join(root, "memory"), 0o755)

	for name, args := range map[string][]string{
		"flags first":  {"--runtime-endpoint", ep, "--cgroup-root", root, "--json", "team-a/web"},
		"flags last":   {"team-a/web", "--runtime-endpoint", ep, "--cgroup-root", root, "--json"},
		"flags around": {"--json", "team-a/web", "--runtime-endpoint=" + ep, "--cgroup-root", root},
		"after --":     {"--runtime-endpoint", ep, "--cgroup-root", root, "--json", "--", "team-a/web"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(bin, append([]string{"explain"}, args...)...).Output()
			if err != nil {
				t.Fatalf("explain %q: %v\n%s%s", args, err, out, stderrOf(err))
			}
			var r struct {
				Namespace, Name, UID string
				Sandboxes            []struct{ ID string }
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if r.Namespace != "team-a" || r.Name != "web" || r.UID != "uid-1" || len(r.Sandboxes) != 1 || r.Sandboxes[0].ID != theSandbox.Id {
				t.Errorf("report %+v, want team-a/web uid-1 with sandbox %s", r, theSandbox.Id)
			}
		})
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"two pods":     {[]string{"a/b", "--runtime-endpoint", ep, "c/d"}, "cri-guard: usage: cri-guard explain [flags] POD [flags] (a pod uid, namespace/name, or sandbox id)\n"},
		"no pod":       {[]string{"--runtime-endpoint", ep}, "cri-guard: usage: cri-guard explain [flags] POD [flags] (a pod uid, namespace/name, or sandbox id)\n"},
		"unknown flag": {[]string{"a/b", "--nope"}, "cri-guard: usage: flag provided but not defined: -nope\n"},
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"explain"}, tc.args...)...)
			out, err := cmd.Output()
			if err == nil {
				t.Fatalf("explain %q succeeded:\n%s", tc.args, out)
			}
			// The flag package prints its own usage first; the last line is
			// the error.
			got := stderrOf(err)
			if i := strings.LastIndex(strings.TrimSuffix(got, "\n"), "\n"); i >= 0 {
				got = got[i+1:]
			}
			if got != tc.want {
				t.Errorf("explain %q: stderr ends %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
