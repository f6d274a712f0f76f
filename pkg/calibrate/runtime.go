package calibrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cri-guard/cri-guard/pkg/podcgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	// Namespace is the Kubernetes namespace of every calibration pod.
	Namespace = "cri-guard-calibrate"
	// RunLabel carries the run id on every calibration pod and container;
	// cleanup removes exactly what carries its own run's id.
	RunLabel = "cri-guard.io/calibrate-run"
	// DefaultParent is the cgroup parent of the calibration pod cgroups.
	DefaultParent = "/cri-guard-calibrate"

	callTimeout = 2 * time.Minute
)

// NewRunID returns a short random id for one calibration run.
func NewRunID() string {
	b := make([]byte, 4)
	rand.Read(b) //nolint:errcheck // never fails on Linux
	return hex.EncodeToString(b)
}

// Runtime drives throwaway pods on a CRI runtime. Its probes are the
// Probe functions of a Search; Cleanup removes whatever they left.
type Runtime struct {
	RS      runtimeapi.RuntimeServiceClient
	IS      runtimeapi.ImageServiceClient
	Handler string             // runtime handler ("" for the default)
	Cgroups *podcgroup.Cgroups // where pod cgroups are created
	RunID   string             // from NewRunID
	// Settle is how long a started sandbox or container must keep
	// running before it counts as started.
	Settle time.Duration

	mu      sync.Mutex
	seq     int
	logDir  string
	pulled  string // an image this run pulled, removed by Cleanup
	started int    // sandboxes and containers started, for the report
}

// Started is the number of sandboxes and containers the probes started.
func (r *Runtime) Started() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

func (r *Runtime) next(kind string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	return fmt.Sprintf("%s-%s-%d", r.RunID, kind, r.seq)
}

// fatal tells a runtime failure that is not about the limit: the search
// must stop rather than count it as a failed start.
func fatal(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Unimplemented,
		codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// reason shortens a runtime's error to the part that says what failed.
func reason(err error) string {
	msg := status.Convert(err).Message()
	for _, cut := range []string{"OCI runtime create failed: ", "OCI runtime start failed: "} {
		if i := strings.LastIndex(msg, cut); i >= 0 {
			msg = msg[i+len(cut):]
		}
	}
	return strings.TrimSpace(msg)
}

func (r *Runtime) podConfig(uid, parent string, limit int64) *runtimeapi.PodSandboxConfig {
	name := "calibrate-" + uid
	labels := map[string]string{
		RunLabel:                      r.RunID,
		"io.kubernetes.pod.name":      name,
		"io.kubernetes.pod.namespace": Namespace,
		"io.kubernetes.pod.uid":       uid,
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:    &runtimeapi.PodSandboxMetadata{Name: name, Namespace: Namespace, Uid: uid},
		Labels:      labels,
		Annotations: map[string]string{"kubernetes.io/config.source": "cri-guard-calibrate"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: parent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	if limit > 0 {
		cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}
	}
	return cfg
}

// runPod creates the pod cgroup and runs a sandbox in it. remove undoes
// whatever was created, with a context of its own; it is never nil.
func (r *Runtime) runPod(ctx context.Context, kind string, limit int64, logDir string) (id string, cfg *runtimeapi.PodSandboxConfig, out Outcome, remove func() error, err error) {
	uid := r.next(kind)
	remove = func() error { return r.Cgroups.Remove(uid) }
	parent, err := r.Cgroups.Create(uid, limit)
	if err != nil {
		return "", nil, out, remove, err
	}
	cfg = r.podConfig(uid, parent, limit)
	cfg.LogDirectory = logDir
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := r.RS.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: r.Handler})
	if err != nil {
		if fatal(ctx, err) {
			return "", nil, out, remove, fmt.Errorf("RunPodSandbox: %w", err)
		}
		return "", nil, Outcome{Reason: reason(err)}, remove, nil
	}
	id = resp.GetPodSandboxId()
	remove = func() error {
		return errors.Join(r.removeSandbox(id), r.Cgroups.Remove(uid))
	}
	r.mu.Lock()
	r.started++
	r.mu.Unlock()
	return id, cfg, Outcome{OK: true}, remove, nil
}

// settle waits Settle, or until ctx ends.
func (r *Runtime) settle(ctx context.Context) error {
	t := time.NewTimer(r.Settle)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SandboxProbe starts one pod whose pod cgroup has limit and reports
// whether its sandbox started and was still ready after Settle.
func (r *Runtime) SandboxProbe(ctx context.Context, limit int64) (_ Outcome, err error) {
	id, _, out, remove, err := r.runPod(ctx, "pod", limit, "")
	defer func() {
		if rerr := remove(); rerr != nil && err == nil {
			err = fmt.Errorf("clean up after an attempt: %w", rerr)
		}
	}()
	if err != nil || !out.OK {
		return out, err
	}
	if err := r.settle(ctx); err != nil {
		return out, err
	}
	st, err := r.RS.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
	if err != nil {
		return out, fmt.Errorf("PodSandboxStatus: %w", err)
	}
	if s := st.GetStatus().GetState(); s != runtimeapi.PodSandboxState_SANDBOX_READY {
		return Outcome{Reason: fmt.Sprintf("sandbox %s after %s", s, r.Settle)}, nil
	}
	return out, nil
}

// ContainerPod is one roomy pod in which container limits are probed.
type ContainerPod struct {
	r      *Runtime
	id     string
	cfg    *runtimeapi.PodSandboxConfig
	image  string
	remove func() error
}

// StartContainerPod pulls image if the runtime lacks it (Cleanup removes
// an image pulled here), and starts a pod with podLimit for ContainerProbe.
func (r *Runtime) StartContainerPod(ctx context.Context, image string, podLimit int64) (*ContainerPod, error) {
	if err := r.ensureImage(ctx, image); err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.logDir == "" {
		d, err := os.MkdirTemp("", "cri-guard-calibrate-"+r.RunID+"-")
		if err != nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("log directory: %w", err)
		}
		r.logDir = d
	}
	logDir := r.logDir
	r.mu.Unlock()
	id, cfg, out, remove, err := r.runPod(ctx, "ctr", podLimit, logDir)
	if err == nil && !out.OK {
		err = fmt.Errorf("a pod with a limit of %d bytes does not start: %s", podLimit, out.Reason)
	}
	if err != nil {
		if rerr := remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, fmt.Errorf("start the pod for containers: %w", err)
	}
	return &ContainerPod{r: r, id: id, cfg: cfg, image: image, remove: remove}, nil
}

// Remove removes the pod and its cgroup.
func (p *ContainerPod) Remove() error { return p.remove() }

// Probe starts one container (the image running `sleep 3600`) with limit
// and reports whether it started and was still running after Settle.
func (p *ContainerPod) Probe(ctx context.Context, limit int64) (_ Outcome, err error) {
	r := p.r
	name := r.next("c")
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := r.RS.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.id,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: name},
			Image:    &runtimeapi.ImageSpec{Image: p.image},
			Command:  []string{"sleep", "3600"},
			LogPath:  name + ".log",
			Labels:   map[string]string{RunLabel: r.RunID},
			Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit}},
		},
		SandboxConfig: p.cfg,
	})
	if err != nil {
		if fatal(ctx, err) {
			return Outcome{}, fmt.Errorf("CreateContainer: %w", err)
		}
		return Outcome{Reason: reason(err)}, nil
	}
	id := resp.GetContainerId()
	defer func() {
		if rerr := r.removeContainer(id); rerr != nil && err == nil {
			err = fmt.Errorf("clean up after an attempt: %w", rerr)
		}
	}()
	if _, err := r.RS.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		if fatal(ctx, err) {
			return Outcome{}, fmt.Errorf("StartContainer: %w", err)
		}
		return Outcome{Reason: reason(err)}, nil
	}
	r.mu.Lock()
	r.started++
	r.mu.Unlock()
	if err := r.settle(ctx); err != nil {
		return Outcome{}, err
	}
	st, err := r.RS.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return Outcome{}, fmt.Errorf("ContainerStatus: %w", err)
	}
	if s := st.GetStatus(); s.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return Outcome{Reason: fmt.Sprintf("container %s after %s (exit code %d, %s)", s.GetState(), r.Settle, s.GetExitCode(), s.GetReason())}, nil
	}
	return Outcome{OK: true}, nil
}

func (r *Runtime) ensureImage(ctx context.Context, image string) error {
	st, err := r.IS.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
	if err != nil {
		return fmt.Errorf("image %s: %w", image, err)
	}
	if st.GetImage() != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if _, err := r.IS.PullImage(cctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}}); err != nil {
		return fmt.Errorf("pull %s: %w", image, err)
	}
	r.mu.Lock()
	r.pulled = image
	r.mu.Unlock()
	return nil
}

// cleanupContext is a fresh context for removing things: the run's may
// have been cancelled, which is when cleaning up matters most.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

func (r *Runtime) removeContainer(id string) error {
	ctx, cancel := cleanupContext()
	defer cancel()
	r.RS.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 0}) //nolint:errcheck // Remove says
	if _, err := r.RS.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

func (r *Runtime) removeSandbox(id string) error {
	ctx, cancel := cleanupContext()
	defer cancel()
	var errs []error
	if _, err := r.RS.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil && status.Code(err) != codes.NotFound {
		errs = append(errs, fmt.Errorf("stop sandbox %s: %w", id, err))
	}
	if _, err := r.RS.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil && status.Code(err) != codes.NotFound {
		errs = append(errs, fmt.Errorf("remove sandbox %s: %w", id, err))
	}
	return errors.Join(errs...)
}

// Cleanup removes everything this run created that is still there: the
// sandboxes (and their containers) labelled with RunID, the pod cgroups
// named after RunID, the calibration parent if it is empty, the log
// directory, and an image the run pulled. It uses a context of its own.
func (r *Runtime) Cleanup() error {
	ctx, cancel := cleanupContext()
	defer cancel()
	var errs []error
	ctrs, err := r.RS.ListContainers(ctx, &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{RunLabel: r.RunID}},
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("list containers: %w", err))
	}
	for _, c := range ctrs.GetContainers() {
		errs = append(errs, r.removeContainer(c.GetId()))
	}
	pods, err := r.RS.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{RunLabel: r.RunID}},
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("list sandboxes: %w", err))
	}
	for _, p := range pods.GetItems() {
		if p.GetMetadata().GetNamespace() == Namespace { // belt and braces
			errs = append(errs, r.removeSandbox(p.GetId()))
		}
	}
	if r.Cgroups != nil {
		for _, h := range r.Cgroups.Hierarchies() {
			m, _ := filepath.Glob(filepath.Join(h, r.Cgroups.Parent, "pod"+r.RunID+"-*"))
			for _, d := range m {
				errs = append(errs, r.Cgroups.Remove(strings.TrimPrefix(filepath.Base(d), "pod")))
			}
		}
		errs = append(errs, r.Cgroups.RemoveParent())
	}
	r.mu.Lock()
	logDir, pulled := r.logDir, r.pulled
	r.mu.Unlock()
	if logDir != "" {
		errs = append(errs, os.RemoveAll(logDir))
	}
	if pulled != "" {
		if _, err := r.IS.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: pulled}}); err != nil {
			errs = append(errs, fmt.Errorf("remove the image pulled for calibration, %s: %w", pulled, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}
