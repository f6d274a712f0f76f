package guard

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzInterceptors feeds arbitrary bytes as the request body of every
// intercepted method. The guard must never panic, never read a cgroup
// outside the root, and either refuse with InvalidArgument or pass the call
// on. The first byte picks the method and whether the runtime fails.
func FuzzInterceptors(f *testing.F) {
	seeds := []proto.Message{
		&runtimeapi.RunPodSandboxRequest{Config: podWith(&runtimeapi.PodSandboxMetadata{Name: "p"}, "/kubepods/pod-tiny", memory(2000))},
		&runtimeapi.RunPodSandboxRequest{Config: podWith(nil, "kubepods-burstable-pod1.slice", nil)},
		&runtimeapi.RunPodSandboxRequest{Config: podWith(nil, "/a/../b", memory(-5))},
		&runtimeapi.CreateContainerRequest{Config: containerWith(2000), SandboxConfig: podWith(nil, "/kubepods/pod-big", nil)},
		&runtimeapi.UpdateContainerResourcesRequest{ContainerId: "c", Linux: memory(1)},
		&runtimeapi.UpdatePodSandboxResourcesRequest{Resources: memory(2000), Overhead: memory(-1)},
	}
	for i, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(i), b)
		f.Add(byte(i+128), b)
	}
	f.Add(byte(0), []byte{0xff})
	ics, rec := hostileGuard(f)
	var methods []string
	for m := range ics {
		methods = append(methods, m)
	}
	// Map iteration order is random; make the first byte mean the same
	// method in every run.
	sortStrings(methods)
	f.Fuzz(func(t *testing.T, sel byte, body []byte) {
		m := methods[int(sel&0x7f)%len(methods)]
		runtimeFails := sel&0x80 != 0
		forwarded := 0
		forward := func(_ context.Context, _ []byte) ([]byte, error) {
			forwarded++
			if runtimeFails {
				return nil, status.Error(codes.Unknown, "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: container init was OOM-killed (memory limit too low?): unknown")
			}
			return nil, nil
		}
		_, err := ics[m].Intercept(context.Background(), body, forward)
		if len(rec.escaped) > 0 {
			t.Fatalf("%s: read outside the cgroup root for %q", m, rec.escaped)
		}
		if err == nil {
			if forwarded == 0 {
				t.Fatalf("%s: success without reaching the runtime", m)
			}
			return
		}
		st, ok := status.FromError(err)
		if !ok {
			t.Fatalf("%s: error without a gRPC status: %v", m, err)
		}
		switch {
		case forwarded == 0 && st.Code() == codes.InvalidArgument && strings.TrimSpace(st.Message()) != "":
			// Refused before the runtime: undecodable, bad cgroup parent
			// or below the floor.
		case forwarded > 0 && runtimeFails:
			// The runtime's error, possibly explained.
		default:
			t.Fatalf("%s: forwarded %d times, runtime fails %v, got %v", m, forwarded, runtimeFails, err)
		}
	})
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
