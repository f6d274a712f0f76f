package lint

import (
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

// Call is one CRI call that carries a memory limit, as the kubelet makes it.
type Call struct {
	Request policy.Request
	// Path is where the value the call carries is set in the pod spec,
	// relative to it ("containers[0].resources.limits.memory"); empty when
	// no single field sets it.
	Path string
}

// Calls returns the calls that the kubelet of Kubernetes 1.34 (with its
// default feature gates: PodLevelResources on) makes to start the pod, in
// the order it makes them: RunPodSandbox, then CreateContainer for each init
// container, each container and each ephemeral container. pod names the pod
// in the requests; its Kind, if any, names the object in messages.
//
// The numbers follow the kubelet: the sandbox's memory limit is
// PodLimits(pod, ExcludeOverhead) (kuberuntime calculateSandboxResources),
// the pod cgroup's is PodLimits with the overhead, set only when every
// container declares a memory limit or the pod does (cm
// ResourceConfigForPod), and rounded down to whole pages by the kernel; a
// container's is its own limit, or the pod-level one when it has none and
// the pod sets pod-level resources (kuberuntime getMemoryLimit).
// PodLimits is component-helpers' sum of the containers and restartable
// init containers (sidecars), or the largest init container plus the
// sidecars started before it, whichever is more.
func Calls(pod policy.Pod, spec *corev1.PodSpec) []Call {
	limit, declared := podLimits(spec)
	overhead := memOf(spec.Overhead)
	hint := limit.Value()
	var cgroup policy.Memory
	switch {
	case !declared:
		cgroup = policy.Memory{State: policy.Unlimited}
	default:
		withOverhead := limit.DeepCopy()
		if !withOverhead.IsZero() {
			withOverhead.Add(overhead)
		}
		cgroup = policy.Memory{State: policy.Limited, Bytes: withOverhead.Value() / policy.PageSize * policy.PageSize}
	}
	sandboxPath := ""
	if podLevelMemory(spec) {
		sandboxPath = "resources.limits.memory"
	}
	calls := []Call{{Request: policy.Request{
		Method: policy.RunPodSandbox, Pod: pod, PodLimit: hint, Overhead: overhead.Value(), PodCgroup: cgroup,
	}, Path: sandboxPath}}
	// The sandbox's finding is located at the pod-level limit, else at
	// the first container's limit, else at the first init container's.
	firstIsInit := false
	add := func(list string, i int, c *corev1.Container) {
		v, path := containerLimit(spec, c)
		if path == "" {
			path = list + "[" + strconv.Itoa(i) + "]." + "resources.limits.memory"
		}
		calls = append(calls, Call{Request: policy.Request{
			Method: policy.CreateContainer, Pod: pod, Container: c.Name, PodLimit: hint,
			Overhead: overhead.Value(), ContainerLimit: v, PodCgroup: cgroup,
		}, Path: path})
		if v > 0 && (sandboxPath == "" || list == "containers" && firstIsInit) {
			calls[0].Path, sandboxPath = path, path
			firstIsInit = list == "initContainers"
		}
	}
	for i := range spec.InitContainers {
		add("initContainers", i, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		add("containers", i, &spec.Containers[i])
	}
	for i := range spec.EphemeralContainers {
		c := corev1.Container(spec.EphemeralContainers[i].EphemeralContainerCommon)
		add("ephemeralContainers", i, &c)
	}
	return calls
}

// memOf returns a list's memory, zero when absent.
func memOf(l corev1.ResourceList) resource.Quantity {
	if q, ok := l[corev1.ResourceMemory]; ok {
		return q.DeepCopy()
	}
	return resource.Quantity{}
}

func sidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// podLevelSet is component-helpers' IsPodLevelResourcesSet.
func podLevelSet(spec *corev1.PodSpec) bool {
	if spec.Resources == nil {
		return false
	}
	for _, l := range []corev1.ResourceList{spec.Resources.Requests, spec.Resources.Limits} {
		for name := range l {
			if name == corev1.ResourceCPU || name == corev1.ResourceMemory || strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix) {
				return true
			}
		}
	}
	return false
}

func podLevelMemory(spec *corev1.PodSpec) bool {
	if !podLevelSet(spec) {
		return false
	}
	_, ok := spec.Resources.Limits[corev1.ResourceMemory]
	return ok
}

// podLimits is PodLimits(pod, ExcludeOverhead)'s memory, and whether
// ResourceConfigForPod declares a memory limit for the pod cgroup.
func podLimits(spec *corev1.PodSpec) (resource.Quantity, bool) {
	// A pod without containers (the API refuses one) is BestEffort: no
	// limit.
	declared := len(spec.Containers) > 0
	var sum resource.Quantity
	for i := range spec.Containers {
		q := memOf(spec.Containers[i].Resources.Limits)
		if q.IsZero() {
			declared = false
		}
		sum.Add(q)
	}
	var sidecars, initMax resource.Quantity
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		q := memOf(c.Resources.Limits)
		var use resource.Quantity
		if sidecar(c) {
			sum.Add(q)
			sidecars.Add(q)
			use = sidecars.DeepCopy()
		} else {
			use = q
			use.Add(sidecars)
		}
		if use.IsZero() {
			declared = false
		}
		if use.Cmp(initMax) > 0 {
			initMax = use
		}
	}
	if initMax.Cmp(sum) > 0 {
		sum = initMax
	}
	if podLevelMemory(spec) {
		sum = memOf(spec.Resources.Limits)
		if !sum.IsZero() {
			declared = true
		}
	}
	return sum, declared
}

// containerLimit is the limit the kubelet gives a container, and the path of
// the pod-level limit when that is where it comes from.
func containerLimit(spec *corev1.PodSpec, c *corev1.Container) (int64, string) {
	q := memOf(c.Resources.Limits)
	if q.IsZero() && podLevelSet(spec) {
		pl := memOf(spec.Resources.Limits)
		return pl.Value(), "resources.limits.memory"
	}
	return q.Value(), ""
}
