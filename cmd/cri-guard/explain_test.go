package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/attempts"
)

const tinyRefusal = "pod kube-system/tiny-node1: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"

// dockerdLike answers as cri-dockerd 0.4.3 does: no cgroup parent in the
// sandbox's verbose info, and container info of only {pid, sandboxID},
// with no resources in the status. Its one pod is a static pod.
type dockerdLike struct {
	runtimeapi.RuntimeServiceClient
}

func (dockerdLike) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest, ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{Items: []*runtimeapi.PodSandbox{{
		Id: "sb1234567890abcdef", State: runtimeapi.PodSandboxState_SANDBOX_READY,
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: "etcd-node1", Namespace: "kube-system", Uid: "3f0c"},
		Annotations: map[string]string{"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": "3f0c"},
	}}}, nil
}

func (dockerdLike) PodSandboxStatus(context.Context, *runtimeapi.PodSandboxStatusRequest, ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	return &runtimeapi.PodSandboxStatusResponse{Status: &runtimeapi.PodSandboxStatus{Id: "sb1234567890abcdef"}}, nil
}

func (dockerdLike) ListContainers(_ context.Context, r *runtimeapi.ListContainersRequest, _ ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error) {
	return &runtimeapi.ListContainersResponse{Containers: []*runtimeapi.Container{
		{Id: "hog1", PodSandboxId: "sb1234567890abcdef", Metadata: &runtimeapi.ContainerMetadata{Name: "hog"}, State: runtimeapi.ContainerState_CONTAINER_EXITED},
		{Id: "gone1", PodSandboxId: "sb1234567890abcdef", Metadata: &runtimeapi.ContainerMetadata{Name: "gone"}, State: runtimeapi.ContainerState_CONTAINER_EXITED},
	}}, nil
}

func (dockerdLike) ContainerStatus(_ context.Context, r *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	switch r.ContainerId {
	case "hog1", "gone1":
	default:
		return nil, status.Error(codes.NotFound, "no such container")
	}
	return &runtimeapi.ContainerStatusResponse{
		Status: &runtimeapi.ContainerStatus{Id: r.ContainerId, Reason: "OOMKilled", ExitCode: 137},
		Info:   map[string]string{"info": `{"pid":0,"sandboxID":"sb1234567890abcdef"}`},
	}, nil
}

func writeCgroupV1(t *testing.T, root, cg, limit, oomKill string) {
	t.Helper()
	d := filepath.Join(root, "memory", cg)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{
		"memory.stat": "cache 0\nrss 0\n", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill " + oomKill + "\n",
		"memory.usage_in_bytes": "0\n", "memory.max_usage_in_bytes": "0\n", "memory.failcnt": "0\n", "memory.limit_in_bytes": limit + "\n",
	} {
		if err := os.WriteFile(filepath.Join(d, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Issue 16 items 2 and 11: explain in front of a cri-dockerd-like runtime
// reads a container's limit from its cgroup or says it is unknown, sums
// the containers' oom_kill counters on cgroup v1, and says what a static
// pod's uids are; a uid it cannot find gets the mirror pod's hint.
func TestExplainWith(t *testing.T) {
	root := t.TempDir()
	writeCgroupV1(t, root, "kubepods/pod3f0c", "268435456", "0")
	writeCgroupV1(t, root, "kubepods/pod3f0c/hog1", "16777216", "4")
	old := kernelOOMLines
	kernelOOMLines = func(string, int) []string { return nil }
	t.Cleanup(func() { kernelOOMLines = old })

	// What the running cri-guard saw: a static pod that never started.
	writeCgroupV1(t, root, "kubepods/burstable/pod9a1e", "0", "0")
	seen := time.Date(2026, 12, 1, 19, 40, 0, 0, time.UTC)
	tiny := attempts.Attempt{Namespace: "kube-system", Name: "tiny-node1", UID: "9a1e", Attempt: 2, CgroupParent: "/kubepods/burstable/pod9a1e",
		ConfigSource: "file", Outcome: attempts.Refused, Code: "InvalidArgument", Message: tinyRefusal, First: seen, Last: seen.Add(20 * time.Second), Calls: 3}
	again := tiny
	again.UID, again.Calls = "77aa", 1
	daemon := func(pod string) daemonAnswer {
		a := daemonAnswer{pid: 4242, kept: "the last 256 pods, each for 1h0m0s after its latest call, until the daemon restarts"}
		switch pod {
		case "kube-system/tiny-node1":
			a.attempts = []attempts.Attempt{tiny, again}
		case "9a1e":
			a.attempts = []attempts.Attempt{tiny}
		}
		return a
	}
	down := func(string) daemonAnswer {
		return daemonAnswer{err: errors.New("no daemon answers on /run/cri-guard/cri-guard.sock.ctl")}
	}

	for name, tc := range map[string]struct {
		pod    string
		ask    func(string) daemonAnswer
		want   []string
		absent string
		err    string
	}{
		"never started, by namespace/name: what the daemon saw, with the cgroup's uid": {
			pod: "kube-system/tiny-node1", ask: daemon,
			want: []string{
				"pod kube-system/tiny-node1 (uid 9a1e)\nsandboxes: 0\n",
				"RunPodSandbox calls that created no sandbox, as the running cri-guard saw them:\n" +
					"  uid 9a1e  attempt 2  refused by cri-guard  3 calls, from 2026-12-01 19:40:00 UTC to 2026-12-01 19:40:20 UTC  cgroup parent /kubepods/burstable/pod9a1e\n" +
					"    InvalidArgument: " + tinyRefusal + "\n",
				"pod cgroup: /kubepods/burstable/pod9a1e\n  limit 0 bytes,",
				"note: never created: found through the RunPodSandbox calls the running cri-guard (pid 4242) saw; the uid here, 9a1e, is the one the kubelet sent and the pod's cgroup is named after\n",
				"note: a static pod (kubernetes.io/config.source file): kubectl shows its mirror pod's uid, which differs from 9a1e\n",
				"note: the running cri-guard also saw RunPodSandbox calls of kube-system/tiny-node1 with uid 77aa fail (a pod of that name deleted and created again); cri-guard explain 77aa shows them\n",
				"verdict: no pod sandbox exists: cri-guard refused its RunPodSandbox (3 calls, the last at 2026-12-01 19:40:20 UTC): InvalidArgument: " + tinyRefusal + "\n",
			},
		},
		"never started, by uid: the daemon names it": {
			pod: "9a1e", ask: daemon,
			want: []string{
				"pod kube-system/tiny-node1 (uid 9a1e)\n",
				"  uid 9a1e  attempt 2  refused by cri-guard  3 calls,",
				"verdict: no pod sandbox exists: cri-guard refused its RunPodSandbox (3 calls,",
			},
		},
		"config source of a tool, not a static pod: no mirror note": {
			pod: "kube-system/tool-made", ask: func(string) daemonAnswer {
				a := tiny
				a.Name, a.UID, a.ConfigSource = "tool-made", "7c7c", "demo"
				return daemonAnswer{pid: 4242, attempts: []attempts.Attempt{a}}
			},
			want:   []string{"pod kube-system/tool-made (uid 7c7c)\n"},
			absent: "mirror",
		},
		"a uid the daemon did not see": {
			pod: "5b5b", ask: daemon,
			want: []string{
				"pod <never created> (uid 5b5b)\n",
				"note: the running cri-guard (pid 4242) saw no RunPodSandbox call of 5b5b fail; it keeps the last 256 pods, each for 1h0m0s after its latest call, until the daemon restarts\n",
				"verdict: no sandbox and no cgroup found for this pod\n",
			},
		},
		"a uid, no daemon: unknown, not none": {
			pod: "5b5b", ask: down,
			want: []string{
				"note: the running cri-guard could not be asked which RunPodSandbox calls it saw fail (no daemon answers on /run/cri-guard/cri-guard.sock.ctl), so whether any did is unknown\n",
			},
		},
		"a name with no sandbox, no daemon": {
			pod: "kube-system/tiny-node1", ask: down,
			err: "no sandbox of pod kube-system/tiny-node1, and the running cri-guard could not be asked which RunPodSandbox calls it saw fail (no daemon answers on /run/cri-guard/cri-guard.sock.ctl), so whether any did is unknown: if RunPodSandbox never succeeded, give the pod's uid (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.uid}'); for a static pod, kubectl shows the mirror pod's uid, which is not the uid in the pod's cgroup name: take the one in its kubernetes.io/config.mirror annotation (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.annotations.kubernetes\\.io/config\\.mirror}'), or give namespace/name",
		},
		"by namespace/name": {
			pod: "kube-system/etcd-node1", ask: daemon,
			want: []string{
				"  hog1  hog  attempt 0  CONTAINER_EXITED  reason OOMKilled  exit code 137  limit 16777216 bytes (16Mi) (its cgroup's; the runtime does not say)\n",
				"  gone1  gone  attempt 0  CONTAINER_EXITED  reason OOMKilled  exit code 137  limit unknown (the runtime does not say, and its cgroup could not be read)\n",
				"  (cgroup v1: the pod cgroup's oom_kill counts kills in the pod cgroup itself, not in its containers' cgroups; those count 4, of the containers whose cgroups still exist)\n",
				"note: a static pod (kubernetes.io/config.source file): its uid here, 3f0c, is the one in its cgroup's name; kubectl shows its mirror pod's uid, which differs\n",
				"verdict: container hog, gone was OOM-killed (the containers' cgroups count 4 oom-kills)\n",
			},
		},
		"the mirror pod's uid": {
			pod: "9d1e-mirror", ask: daemon,
			want: []string{
				"pod <never created> (uid 9d1e-mirror)\n",
				"note: no sandbox and no cgroup has uid 9d1e-mirror; for a static pod, kubectl shows the mirror pod's uid, which is not the uid in the pod's cgroup name: take the one in its kubernetes.io/config.mirror annotation (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.annotations.kubernetes\\.io/config\\.mirror}'), or give namespace/name\n",
				"verdict: no sandbox and no cgroup found for this pod\n",
			},
		},
		"a name with no sandbox, that the daemon did not see": {
			pod: "kube-system/apiserver-node1", ask: daemon,
			err: "no sandbox of pod kube-system/apiserver-node1, and the running cri-guard (pid 4242) saw no RunPodSandbox call of kube-system/apiserver-node1 fail; it keeps the last 256 pods, each for 1h0m0s after its latest call, until the daemon restarts: if RunPodSandbox never succeeded, give the pod's uid (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.uid}'); for a static pod, kubectl shows the mirror pod's uid, which is not the uid in the pod's cgroup name: take the one in its kubernetes.io/config.mirror annotation (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.annotations.kubernetes\\.io/config\\.mirror}'), or give namespace/name",
		},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := explainWith(context.Background(), dockerdLike{}, root, "/", tc.pod, tc.ask)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got %v\nwant %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out := r.Text()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q in\n%s", w, out)
				}
			}
			if tc.absent != "" && strings.Contains(out, tc.absent) {
				t.Errorf("%q in\n%s", tc.absent, out)
			}
		})
	}
}
