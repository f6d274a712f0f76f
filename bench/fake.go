package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// bigListID asks the fake runtime for its large sandbox list.
const bigListID = "big"

// fakeRuntime answers with canned replies and does no work.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	version *runtimeapi.VersionResponse
	empty   *runtimeapi.ListPodSandboxResponse
	big     *runtimeapi.ListPodSandboxResponse
	status  *runtimeapi.ContainerStatusResponse
}

func newFakeRuntime(entries int) *fakeRuntime {
	f := &fakeRuntime{
		version: &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "fake", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"},
		empty:   &runtimeapi.ListPodSandboxResponse{},
		big:     &runtimeapi.ListPodSandboxResponse{},
		status: &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{
			Id:        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Metadata:  &runtimeapi.ContainerMetadata{Name: "app"},
			State:     runtimeapi.ContainerState_CONTAINER_RUNNING,
			Image:     &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:1.36"},
			ImageRef:  "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Labels:    map[string]string{"io.kubernetes.pod.name": "p", "io.kubernetes.pod.namespace": "default"},
			LogPath:   "/var/log/pods/x/app/0.log",
			CreatedAt: time.Now().UnixNano(),
			StartedAt: time.Now().UnixNano(),
		}},
	}
	now := time.Now().UnixNano()
	for i := range entries {
		f.big.Items = append(f.big.Items, &runtimeapi.PodSandbox{
			Id: fmt.Sprintf("%064x", i),
			Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprintf("pod-%d", i), Uid: fmt.Sprintf("uid-%d", i),
				Namespace: "default", Attempt: 0},
			State:     runtimeapi.PodSandboxState_SANDBOX_READY,
			CreatedAt: now,
			Labels:    map[string]string{"io.kubernetes.pod.name": fmt.Sprintf("pod-%d", i), "io.kubernetes.pod.namespace": "default"},
		})
	}
	return f
}

func (f *fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return f.version, nil
}

func (f *fakeRuntime) ListPodSandbox(_ context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	if r.GetFilter().GetId() == bigListID {
		return f.big, nil
	}
	return f.empty, nil
}

func (f *fakeRuntime) ContainerStatus(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	return f.status, nil
}

// GetContainerEvents sends events as fast as the stream takes them.
func (f *fakeRuntime) GetContainerEvents(_ *runtimeapi.GetEventsRequest, s runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ev := &runtimeapi.ContainerEventResponse{
		ContainerId:        f.status.Status.Id,
		ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		CreatedAt:          time.Now().UnixNano(),
		PodSandboxStatus:   &runtimeapi.PodSandboxStatus{Id: f.status.Status.Id, State: runtimeapi.PodSandboxState_SANDBOX_READY},
	}
	for {
		if err := s.Send(ev); err != nil {
			return err
		}
	}
}

// startFake serves a fake runtime on a unix socket.
func startFake(path string, entries int) (func(), error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil { // as containerd's
		return nil, err
	}
	s := grpc.NewServer(grpc.MaxSendMsgSize(16 << 20))
	runtimeapi.RegisterRuntimeServiceServer(s, newFakeRuntime(entries))
	go s.Serve(l)
	return s.Stop, nil
}
