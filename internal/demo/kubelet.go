package demo

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/trace/noop"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/klog/v2"
)

// kubelet connects to endpoint with the kubelet's own CRI client.
func kubelet(ctx context.Context, endpoint string) (internalapi.RuntimeService, error) {
	rs, err := remote.NewRemoteRuntimeService(ctx, endpoint, 10*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		return nil, fmt.Errorf("demo: connect to %s: %w", endpoint, err)
	}
	return rs, nil
}

var quietOnce sync.Once

// quietKubeletClient stops the kubelet's CRI client from logging each
// failed call to stderr: the demo prints the errors itself.
func quietKubeletClient() {
	quietOnce.Do(func() {
		klog.SetLogger(logr.Discard())
	})
}

// podConfig is a host-network pod in the pod cgroup parent, as the kubelet
// (1.23 and later) sends it. Container logs go to logDir.
func podConfig(name, uid, parent, logDir string, limit int64) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		LogDirectory: logDir,
		Labels:       map[string]string{"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid},
		Annotations:  map[string]string{"kubernetes.io/config.source": "demo"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
			Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit},
		},
	}
}

// containerConfig runs busybox sleep with a memory limit.
func containerConfig(image, name string, limit int64) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Command:  []string{"sleep", "3600"},
		LogPath:  name + ".log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}},
	}
}
