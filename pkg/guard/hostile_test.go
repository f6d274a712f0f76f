package guard

import (
	"bytes"
	"context"
	"errors"
	"math"
	"path"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// hostileRoot stands for the cgroup root: no path that a request names may
// resolve outside it.
const hostileRoot = "/sys/fs/cgroup"

// pathRecorder is a MemoryReader that resolves parents as facts.Reader does
// and records every path it would read, without reading anything.
type pathRecorder struct {
	mu      sync.Mutex
	read    []string // cgroup directories that would have been read
	escaped []string // parents that resolved outside the root
	limits  map[string]int64
}

func (r *pathRecorder) Memory(parent string) (facts.Memory, error) {
	rel, err := facts.ResolveParent(parent)
	if err != nil {
		return facts.Memory{}, err
	}
	dir := path.Join(hostileRoot, rel)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.read = append(r.read, dir)
	if dir != hostileRoot && !strings.HasPrefix(dir, hostileRoot+"/") {
		r.escaped = append(r.escaped, parent)
	}
	if l, ok := r.limits[rel]; ok {
		return facts.Memory{Path: dir, Version: 2, Limit: l}, nil
	}
	return facts.Memory{}, errors.New("no such cgroup")
}

// hostileGuard is a Guard with the default floors (12Mi), failing open, with
// no runtime client (lookups fail), as in the worst case.
func hostileGuard(t testing.TB) (map[string]proxy.Interceptor, *pathRecorder) {
	t.Helper()
	rec := &pathRecorder{limits: map[string]int64{"/kubepods/pod-tiny": 0, "/kubepods/pod-big": 1 << 30}}
	g, err := New(Options{Policy: &policy.Config{Mode: policy.ModeReject, Floors: policy.Floors{Sandbox: 12 << 20, Container: 12 << 20}}, Facts: rec})
	if err != nil {
		t.Fatal(err)
	}
	ics := map[string]proxy.Interceptor{}
	for _, ic := range g.Interceptors() {
		ics[ic.Method()] = ic
	}
	return ics, rec
}

// okForward answers every call with an empty reply and keeps what it was
// sent.
type okForward struct {
	calls int
	body  []byte
}

func (f *okForward) forward(_ context.Context, b []byte) ([]byte, error) {
	f.calls++
	f.body = append([]byte(nil), b...)
	return nil, nil
}

const (
	runPod    = runtimeapi.RuntimeService_RunPodSandbox_FullMethodName
	create    = runtimeapi.RuntimeService_CreateContainer_FullMethodName
	updateCtr = runtimeapi.RuntimeService_UpdateContainerResources_FullMethodName
	updatePod = runtimeapi.RuntimeService_UpdatePodSandboxResources_FullMethodName
)

func podWith(md *runtimeapi.PodSandboxMetadata, parent string, res *runtimeapi.LinuxContainerResources) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Metadata: md, Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: parent, Resources: res}}
}

func memory(b int64) *runtimeapi.LinuxContainerResources {
	return &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: b}
}

func containerWith(b int64) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{Resources: memory(b)}}
}

// TestOddRequests: requests that a kubelet would not send, or only a buggy
// one, get a clear InvalidArgument or pass unchanged. docs/hostile-input.md
// is this table in prose.
func TestOddRequests(t *testing.T) {
	md := &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"}
	long := "/kubepods/" + strings.Repeat("a", 5000)
	const (
		pass      = ""
		below2000 = "memory limit 2000 bytes is below the 12Mi minimum needed to start "
		mean2000  = "; a memory quantity without a unit is bytes, did you mean 2000Mi?"
	)
	for name, tc := range map[string]struct {
		method string
		req    proto.Message
		want   string // InvalidArgument with this message; pass: forwarded unchanged
	}{
		"RunPodSandbox: empty request":                 {runPod, &runtimeapi.RunPodSandboxRequest{}, pass},
		"RunPodSandbox: nil Linux":                     {runPod, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: md}}, pass},
		"RunPodSandbox: nil Resources, cgroup unknown": {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "/kubepods/pod-gone", nil)}, pass},
		"RunPodSandbox: nil Resources, cgroup 0":       {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "/kubepods/pod-tiny", nil)}, "pod ns/p: memory limit 0 bytes (the pod cgroup's limit; the kernel rounds limits below one page down to 0) is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi"},
		"RunPodSandbox: negative limit":                {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "", memory(-1))}, pass},
		"RunPodSandbox: most negative limit":           {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "", memory(math.MinInt64))}, pass},
		"RunPodSandbox: huge limit":                    {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "", memory(math.MaxInt64))}, pass},
		"RunPodSandbox: 2000 bytes":                    {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "", memory(2000))}, "pod ns/p: " + below2000 + "the pod sandbox" + mean2000},
		"RunPodSandbox: 2000 bytes, empty metadata":    {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(nil, "", memory(2000))}, "pod <unnamed>/<unnamed>: " + below2000 + "the pod sandbox" + mean2000},
		"RunPodSandbox: cgroup parent with ..":         {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "/kubepods/../../etc", nil)}, `cri-guard: pod ns/p: cgroup parent "/kubepods/../../etc" refused: cgroup path leaves the cgroup root: "/kubepods/../../etc"`},
		"RunPodSandbox: relative ..":                   {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "../x", nil)}, `cri-guard: pod ns/p: cgroup parent "../x" refused: cgroup path leaves the cgroup root: "../x"`},
		"RunPodSandbox: cgroupfs mount path with ..":   {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "/sys/fs/cgroup/memory/../../../etc", nil)}, `cri-guard: pod ns/p: cgroup parent "/sys/fs/cgroup/memory/../../../etc" refused: cgroup path leaves the cgroup root: "/sys/fs/cgroup/memory/../../../etc"`},
		"RunPodSandbox: NUL byte":                      {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "/kubepods/a\x00b", nil)}, `cri-guard: pod ns/p: cgroup parent "/kubepods/a\x00b" refused: malformed cgroup path: "/kubepods/a\x00b" has a NUL byte`},
		"RunPodSandbox: slice with an empty part":      {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "kubepods--pod.slice", nil)}, `cri-guard: pod ns/p: cgroup parent "kubepods--pod.slice" refused: malformed cgroup path: "kubepods--pod.slice" has an empty component`},
		// Absolute tricks stay under the root: /etc/passwd is read as the
		// cgroup <root>/etc/passwd, which does not exist: limit unknown.
		"RunPodSandbox: /etc/passwd":              {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "/etc/passwd", nil)}, pass},
		"RunPodSandbox: doubled and dot slashes":  {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "//kubepods/./pod-tiny//", nil)}, "pod ns/p: memory limit 0 bytes (the pod cgroup's limit; the kernel rounds limits below one page down to 0) is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi"},
		"RunPodSandbox: .. inside a slice name":   {runPod, &runtimeapi.RunPodSandboxRequest{Config: podWith(md, "kubepods-..-x.slice", nil)}, pass},
		"CreateContainer: empty request":          {create, &runtimeapi.CreateContainerRequest{}, pass},
		"CreateContainer: nil Linux":              {create, &runtimeapi.CreateContainerRequest{Config: &runtimeapi.ContainerConfig{}}, pass},
		"CreateContainer: negative limit":         {create, &runtimeapi.CreateContainerRequest{Config: containerWith(-1)}, pass},
		"CreateContainer: huge limit":             {create, &runtimeapi.CreateContainerRequest{Config: containerWith(math.MaxInt64)}, pass},
		"CreateContainer: 2000 bytes, no sandbox": {create, &runtimeapi.CreateContainerRequest{Config: containerWith(2000)}, "pod <unnamed>/<unnamed>, container <unnamed>: " + below2000 + "a container" + mean2000},
		"CreateContainer: 2000 bytes, parent ..":  {create, &runtimeapi.CreateContainerRequest{Config: containerWith(2000), SandboxConfig: podWith(md, "a/../../b", nil)}, `cri-guard: pod ns/p: cgroup parent "a/../../b" refused: cgroup path leaves the cgroup root: "a/../../b"`},
		// The parent is read on every CreateContainer (for the OOM counters), and refused as on RunPodSandbox.
		"CreateContainer: 1Gi, parent ..":                  {create, &runtimeapi.CreateContainerRequest{Config: containerWith(1 << 30), SandboxConfig: podWith(md, "a/../../b", nil)}, `cri-guard: pod ns/p: cgroup parent "a/../../b" refused: cgroup path leaves the cgroup root: "a/../../b"`},
		"UpdateContainerResources: empty request":          {updateCtr, &runtimeapi.UpdateContainerResourcesRequest{}, pass},
		"UpdateContainerResources: negative limit":         {updateCtr, &runtimeapi.UpdateContainerResourcesRequest{Linux: memory(-1)}, pass},
		"UpdateContainerResources: 2000 bytes, unknown id": {updateCtr, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: "nope", Linux: memory(2000)}, "pod <unnamed>/<unnamed>, container nope: " + below2000 + "a container" + mean2000},
		"UpdatePodSandboxResources: empty request":         {updatePod, &runtimeapi.UpdatePodSandboxResourcesRequest{}, pass},
		"UpdatePodSandboxResources: negative limit":        {updatePod, &runtimeapi.UpdatePodSandboxResourcesRequest{Resources: memory(-1)}, pass},
		"UpdatePodSandboxResources: huge limit":            {updatePod, &runtimeapi.UpdatePodSandboxResourcesRequest{Resources: memory(math.MaxInt64)}, pass},
		"UpdatePodSandboxResources: 2000 bytes":            {updatePod, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: "sb", Resources: memory(2000)}, "pod <unnamed>/sb: " + below2000 + "the pod sandbox" + mean2000},
	} {
		t.Run(name, func(t *testing.T) {
			ics, rec := hostileGuard(t)
			in, err := proto.Marshal(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var f okForward
			_, err = ics[tc.method].Intercept(context.Background(), in, f.forward)
			if tc.want == pass {
				if err != nil {
					t.Fatalf("got %v, want the call passed on", err)
				}
				if f.calls != 1 || !bytes.Equal(f.body, in) {
					t.Fatalf("forwarded %d times, changed=%v; want once, unchanged", f.calls, !bytes.Equal(f.body, in))
				}
			} else {
				st := status.Convert(err)
				if st.Code() != codes.InvalidArgument || st.Message() != tc.want {
					t.Fatalf("got %v %q\nwant InvalidArgument %q", st.Code(), st.Message(), tc.want)
				}
				if f.calls != 0 {
					t.Fatal("a refused call reached the runtime")
				}
			}
			if len(rec.escaped) > 0 {
				t.Fatalf("read outside the cgroup root for %q", rec.escaped)
			}
		})
	}

	t.Run("RunPodSandbox: very long cgroup parent", func(t *testing.T) {
		ics, rec := hostileGuard(t)
		in, _ := proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: podWith(md, long, nil)})
		var f okForward
		_, err := ics[runPod].Intercept(context.Background(), in, f.forward)
		st := status.Convert(err)
		if want := "malformed cgroup path: 5010 bytes long"; st.Code() != codes.InvalidArgument || !strings.HasSuffix(st.Message(), want) {
			t.Fatalf("got %v %.100q..., want InvalidArgument ending %q", st.Code(), st.Message(), want)
		}
		if f.calls != 0 || len(rec.read) != 0 {
			t.Fatalf("forwarded %d times, read %q", f.calls, rec.read)
		}
	})
	t.Run("garbage bytes", func(t *testing.T) {
		ics, _ := hostileGuard(t)
		for _, m := range []string{runPod, create, updateCtr, updatePod} {
			var f okForward
			_, err := ics[m].Intercept(context.Background(), []byte{0xff, 0xff, 0xff}, f.forward)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "cri-guard: cannot decode "+m+" request: ") {
				t.Errorf("%s: got %v %q, want InvalidArgument cri-guard: cannot decode ...", m, st.Code(), st.Message())
			}
			if f.calls != 0 {
				t.Errorf("%s: undecodable request forwarded", m)
			}
		}
	})
}
