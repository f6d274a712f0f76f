package guard

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/attempts"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// Issue 16 item 11: a RunPodSandbox call that creates no sandbox is kept,
// with what the kubelet was told, for `cri-guard explain` of a pod that
// never started; a call that creates one is not.
func TestRunPodSandboxAttemptsKept(t *testing.T) {
	const mean2000 = "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"
	for name, tc := range map[string]struct {
		mode     policy.Mode
		parent   string
		limit    int64
		upstream error // what the runtime answers
		want     []attempts.Attempt
	}{
		"refused by the policy": {mode: policy.ModeReject, parent: "/kubepods/pod-tiny", limit: 2000,
			want: []attempts.Attempt{{Outcome: attempts.Refused, Code: "InvalidArgument", Message: mean2000}}},
		"refused: cgroup parent": {mode: policy.ModeReject, parent: "/kubepods/../../etc", limit: 64 << 20,
			want: []attempts.Attempt{{Outcome: attempts.Refused, Code: "InvalidArgument", Message: `cri-guard: pod team-a/web: cgroup parent "/kubepods/../../etc" refused: cgroup path leaves the cgroup root: "/kubepods/../../etc"`}}},
		"failed in the runtime (audit)": {mode: policy.ModeAudit, parent: "/kubepods/pod-big", limit: 2000,
			upstream: status.Error(codes.Unknown, "failed to pull image"),
			want:     []attempts.Attempt{{Outcome: attempts.Failed, Code: "Unknown", Message: "failed to pull image"}}},
		"created: nothing kept": {mode: policy.ModeReject, parent: "/kubepods/pod-big", limit: 64 << 20},
	} {
		t.Run(name, func(t *testing.T) {
			g, _ := newTestGuard(t, tc.mode)
			store := attempts.New(0, 0)
			g.attempts = store
			req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
				Metadata:    &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "team-a", Uid: "u1", Attempt: 3},
				Annotations: map[string]string{"kubernetes.io/config.source": "file"},
				Linux:       &runtimeapi.LinuxPodSandboxConfig{CgroupParent: tc.parent, Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: tc.limit}},
			}}
			_, err := g.RunPodSandbox(context.Background(), req, func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
				if tc.upstream != nil {
					return nil, tc.upstream
				}
				return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"}, nil
			})
			got := store.Find("team-a/web")
			if len(got) != len(tc.want) {
				t.Fatalf("kept %+v, want %d (call error: %v)", got, len(tc.want), err)
			}
			for i, w := range tc.want {
				w.Namespace, w.Name, w.UID, w.Attempt, w.CgroupParent, w.ConfigSource, w.Calls = "team-a", "web", "u1", 3, tc.parent, "file", 1
				w.First, w.Last = got[i].First, got[i].Last
				if got[i] != w {
					t.Errorf("kept\n%+v\nwant\n%+v", got[i], w)
				}
				if st := status.Convert(err); st.Message() != w.Message {
					t.Errorf("the kubelet was told %q, the store says %q", st.Message(), w.Message)
				}
			}
		})
	}
}
