package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/attempts"
	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/oom"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// explain tells why a pod cannot start or keeps dying, from the runtime,
// the pod's cgroup and the kernel log.
func explain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	endpoint := fs.String("runtime-endpoint", "unix:///run/containerd/containerd.sock", "the runtime's CRI endpoint")
	root := fs.String("cgroup-root", facts.DefaultRoot, "where cgroups are mounted")
	within := fs.String("cgroup-search", "/", "where to search the memory hierarchy for the pod's cgroup (e.g. /kubepods)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the runtime")
	listen := fs.String("listen", config.Defaults.Listen, "the socket the running cri-guard serves; its control socket (the path plus .ctl) is asked for the pod's RunPodSandbox calls that created no sandbox")
	pods, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(pods) != 1 {
		return fmt.Errorf("%w: cri-guard explain [flags] POD [flags] (a pod uid, namespace/name, or sandbox id)", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ask := func(pod string) daemonAnswer { return askDaemon(ctx, *listen, pod) }
	r, err := explainPod(ctx, *endpoint, *root, *within, pods[0], ask)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Print(r.Text())
	return nil
}

// kernelOOMLines reads the kernel's oom-kill lines for a cgroup.
var kernelOOMLines = oom.KernelOOMLines

// daemonAnswer is what the running cri-guard said about a pod's
// RunPodSandbox calls that created no sandbox, or why it could not say.
type daemonAnswer struct {
	attempts []attempts.Attempt
	kept     string
	pid      int
	err      error
}

// askDaemon asks the daemon serving listen, over its control socket.
func askDaemon(ctx context.Context, listen, pod string) daemonAnswer {
	p, err := proxy.SocketPath(listen)
	if err != nil {
		return daemonAnswer{err: err}
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	rep, err := askAttempts(p+".ctl", pod, deadline)
	if err != nil {
		return daemonAnswer{err: err}
	}
	return daemonAnswer{attempts: rep.Attempts, kept: rep.Kept, pid: rep.PID}
}

// note says what the daemon's answer means when it named no call: unknown
// is not "none".
func (a daemonAnswer) note(pod string) string {
	if a.err != nil {
		return "the running cri-guard could not be asked which RunPodSandbox calls it saw fail (" + a.err.Error() + "), so whether any did is unknown"
	}
	return fmt.Sprintf("the running cri-guard (pid %d) saw no RunPodSandbox call of %s fail; it keeps %s", a.pid, pod, a.kept)
}

func explainPod(ctx context.Context, endpoint, root, within, pod string, ask func(string) daemonAnswer) (*oom.Report, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("runtime %s: %w", endpoint, err)
	}
	defer conn.Close()
	r, err := explainWith(ctx, runtimeapi.NewRuntimeServiceClient(conn), root, within, pod, ask)
	if err != nil {
		return nil, fmt.Errorf("runtime %s: %w", endpoint, err)
	}
	return r, nil
}

// Static pods: the kubelet names a static pod's uid after its manifest's
// hash; the API server's mirror pod has another uid, and carries the
// static one in an annotation.
const (
	configSourceAnnotation = "kubernetes.io/config.source"
	mirrorHint             = "for a static pod, kubectl shows the mirror pod's uid, which is not the uid in the pod's cgroup name: " +
		`take the one in its kubernetes.io/config.mirror annotation (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.annotations.kubernetes\.io/config\.mirror}'), or give namespace/name`
)

// staticSource says whether a kubelet config source is a static pod's: a
// manifest file or URL ("api" is the API server's; tools such as the demo
// set names of their own).
func staticSource(src string) bool { return src == "file" || src == "http" }

// explainWith builds the report of one pod from a runtime client, the
// cgroup tree under root, the kernel log and what ask learns from the
// running cri-guard: a pod that never started is known by name only to it.
func explainWith(ctx context.Context, rs runtimeapi.RuntimeServiceClient, root, within, pod string, ask func(string) daemonAnswer) (*oom.Report, error) {
	list, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("list pod sandboxes: %w", err)
	}
	r := &oom.Report{Sandboxes: []oom.Sandbox{}, Containers: []oom.Container{}}
	var sandboxes []*runtimeapi.PodSandbox
	for _, s := range list.GetItems() {
		md := s.GetMetadata()
		if s.GetId() == pod || (len(pod) >= 6 && strings.HasPrefix(s.GetId(), pod)) || md.GetUid() == pod || md.GetNamespace()+"/"+md.GetName() == pod {
			sandboxes = append(sandboxes, s)
		}
	}
	sort.Slice(sandboxes, func(i, j int) bool { return sandboxes[i].GetCreatedAt() < sandboxes[j].GetCreatedAt() })
	saw := ask(pod)
	switch {
	case len(sandboxes) > 0:
		md := sandboxes[len(sandboxes)-1].GetMetadata()
		r.Namespace, r.Name, r.UID = md.GetNamespace(), md.GetName(), md.GetUid()
	case len(saw.attempts) > 0:
		// Never created, but cri-guard saw the calls: the uid they carry
		// is the one in the pod cgroup's name.
		a := saw.attempts[0]
		r.Namespace, r.Name, r.UID = a.Namespace, a.Name, a.UID
		r.Notes = append(r.Notes, fmt.Sprintf("never created: found through the RunPodSandbox calls the running cri-guard (pid %d) saw; the uid here, %s, is the one the kubelet sent and the pod's cgroup is named after", saw.pid, a.UID))
		if src := a.ConfigSource; staticSource(src) {
			r.Notes = append(r.Notes, fmt.Sprintf("a static pod (%s %s): kubectl shows its mirror pod's uid, which differs from %s", configSourceAnnotation, src, a.UID))
		}
	case strings.Contains(pod, "/"):
		return nil, fmt.Errorf("no sandbox of pod %s, and %s: if RunPodSandbox never succeeded, give the pod's uid (kubectl get pod -n NAMESPACE NAME -o jsonpath='{.metadata.uid}'); %s", pod, saw.note(pod), mirrorHint)
	default:
		r.UID = pod // never created: only its cgroup may exist
	}
	for _, a := range saw.attempts {
		if a.UID == r.UID {
			r.Attempts = append(r.Attempts, a)
		} else if a.Namespace == r.Namespace && a.Name == r.Name {
			r.Notes = append(r.Notes, fmt.Sprintf("the running cri-guard also saw RunPodSandbox calls of %s/%s with uid %s fail (a pod of that name deleted and created again); cri-guard explain %s shows them", a.Namespace, a.Name, a.UID, a.UID))
		}
	}
	reader := facts.Reader{Root: root}
	parent := ""
	if n := len(sandboxes); n > 0 {
		if src := sandboxes[n-1].GetAnnotations()[configSourceAnnotation]; staticSource(src) {
			r.Notes = append(r.Notes, fmt.Sprintf("a static pod (%s %s): its uid here, %s, is the one in its cgroup's name; kubectl shows its mirror pod's uid, which differs", configSourceAnnotation, src, r.UID))
		}
	}
	for _, s := range sandboxes {
		r.Sandboxes = append(r.Sandboxes, oom.Sandbox{ID: s.GetId(), Attempt: s.GetMetadata().GetAttempt(), State: s.GetState().String()})
		if p := sandboxParent(ctx, rs, s.GetId()); p != "" {
			parent = p
		}
	}
	if parent == "" && r.UID != "" {
		found, err := oom.FindPodCgroups(root, within, r.UID)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cri-guard explain: %v\n", err)
		}
		if len(found) > 1 {
			fmt.Fprintf(os.Stderr, "cri-guard explain: %d cgroups for pod %s, using %s: %s\n", len(found), r.UID, found[0], strings.Join(found, " "))
		}
		if len(found) > 0 {
			parent = found[0]
		}
	}
	for _, s := range sandboxes {
		cs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: s.GetId()}})
		if err != nil {
			return nil, fmt.Errorf("list containers of sandbox %s: %w", s.GetId(), err)
		}
		for _, c := range cs.GetContainers() {
			r.Containers = append(r.Containers, describeContainer(ctx, rs, reader, parent, c))
		}
	}
	if parent != "" {
		c := oom.ReadCgroup(reader, parent)
		r.Cgroup = &c
		r.Kernel = kernelOOMLines(c.Path, 10)
	}
	if len(sandboxes) == 0 && len(r.Attempts) == 0 {
		r.Notes = append(r.Notes, saw.note(pod))
	}
	if len(sandboxes) == 0 && parent == "" && len(r.Attempts) == 0 {
		r.Notes = append(r.Notes, "no sandbox and no cgroup has uid "+pod+"; "+mirrorHint)
	}
	r.Judge()
	return r, nil
}

// sandboxParent reads the pod's cgroup parent from the runtime's verbose
// status (containerd's info.config.linux.cgroup_parent).
func sandboxParent(ctx context.Context, rs runtimeapi.RuntimeServiceClient, id string) string {
	st, err := rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return ""
	}
	parent, _ := oom.ParseSandboxCgroupParent(st.GetInfo()) // "" is handled by the caller
	return parent
}

func describeContainer(ctx context.Context, rs runtimeapi.RuntimeServiceClient, reader facts.Reader, parent string, c *runtimeapi.Container) oom.Container {
	out := oom.Container{ID: c.GetId(), Name: c.GetMetadata().GetName(), Attempt: c.GetMetadata().GetAttempt(), State: c.GetState().String()}
	st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId(), Verbose: true})
	if err != nil {
		out.Message = err.Error()
		return out
	}
	out.Reason, out.Message, out.ExitCode = st.GetStatus().GetReason(), st.GetStatus().GetMessage(), st.GetStatus().GetExitCode()
	info, _ := oom.ParseContainerInfo(st.GetInfo()) // fields stay empty
	cg := info.CgroupsPath
	if p, ok := oom.SystemdCgroup(cg); ok {
		cg = p
	} else if !strings.HasPrefix(cg, "/") {
		cg = oom.ContainerCgroup(parent, c.GetId())
	}
	if cg != "" {
		if m := oom.ReadCgroup(reader, path.Clean(cg)); m.Read {
			out.Cgroup = &m
		}
	}
	// The runtime's word, else the container's own cgroup's; unknown is
	// never "none" (cri-dockerd gives neither spec nor resources).
	out.Limit = oom.ResolveLimit(st.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes(), info, out.Cgroup)
	return out
}
