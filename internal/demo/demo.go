package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// Options configures Run and Serve.
type Options struct {
	// Binary is the cri-guard binary to run in front of containerd
	// (required), normally bin/cri-guard.
	Binary string
	// Out receives the demo's output (nil: os.Stdout).
	Out io.Writer
	// Log receives harness progress and cri-guard's own log (nil: discarded).
	Log io.Writer
}

// namespace is the Kubernetes namespace of the demo's pods.
const namespace = "demo"

// demo is one run: the runtime, the scratch directory and the output.
type demo struct {
	opts   Options
	out    io.Writer
	dir    string
	rt     *harness.Runtime
	direct internalapi.RuntimeService // the kubelet's client, straight to containerd
	guards []*harness.Guard
	seq    int
}

// Run starts a scratch containerd and cri-guard, replays the four steps and
// removes everything again, whether the steps succeed or not.
func Run(ctx context.Context, opts Options) (retErr error) {
	d, err := start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, d.close()) }()

	g, err := d.guard(ctx, "reject")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "cri-guard (%s) listens on %s in front of it, with the default floors (12Mi).\n", opts.Binary, g.Endpoint)
	viaGuard, err := kubelet(ctx, g.Endpoint)
	if err != nil {
		return err
	}
	for _, step := range []func(context.Context, internalapi.RuntimeService) error{d.incident, d.container, d.oomAtStart, d.healthy} {
		if err := step(ctx, viaGuard); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("demo: interrupted: %w", context.Cause(ctx))
			}
			return err
		}
	}
	return nil
}

// start prepares the scratch directory and the runtime.
func start(ctx context.Context, opts Options) (_ *demo, retErr error) {
	if opts.Binary == "" {
		return nil, errors.New("demo: Options.Binary is required")
	}
	bin, err := filepath.Abs(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("demo: cri-guard binary: %w (run `make build`)", err)
	}
	opts.Binary = bin
	d := &demo{opts: opts, out: opts.Out}
	if d.out == nil {
		d.out = os.Stdout
	}
	quietKubeletClient()
	if err := harness.EnsurePackages(ctx, d.out); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	// /tmp and a short name: the sockets live in here.
	if d.dir, err = os.MkdirTemp("/tmp", "cg-demo-"); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, d.close())
		}
	}()
	fmt.Fprintf(d.out, "Scratch directory: %s (removed on exit).\n", d.dir)
	fmt.Fprintln(d.out, "A private containerd runs there with its own socket, state and cgroups; the host's containerd, if any, is not used or touched.")
	d.rt, err = harness.Start(ctx, harness.Options{Dir: filepath.Join(d.dir, "containerd"), Log: opts.Log, DisableCNI: true})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if d.direct, err = kubelet(ctx, d.rt.Endpoint); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.out, "containerd listens on %s.\n", d.rt.Endpoint)
	return d, nil
}

// close stops every cri-guard, then the runtime, and removes the scratch
// directory. It is safe to call more than once.
func (d *demo) close() error {
	var errs []error
	for _, g := range d.guards {
		if err := g.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("%w\ncri-guard output:\n%s", err, g.Logs()))
		}
	}
	d.guards = nil
	if d.rt != nil {
		errs = append(errs, d.rt.Close())
		errs = append(errs, d.rt.VerifyClean())
		d.rt = nil
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
		if err := errors.Join(errs...); err == nil {
			fmt.Fprintf(d.out, "\nCleaned up: containerd, its shims, mounts and cgroups are gone, and %s is removed.\n", d.dir)
		}
		d.dir = ""
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("demo: cleanup: %w", err)
	}
	return nil
}

// guard starts one more cri-guard in front of the runtime, with args.
func (d *demo) guard(ctx context.Context, name string, args ...string) (*harness.Guard, error) {
	g, err := harness.StartGuard(ctx, harness.GuardOptions{
		Binary:   d.opts.Binary,
		Upstream: d.rt.Endpoint,
		Dir:      filepath.Join(d.dir, "guard-"+name),
		Args:     args,
		Log:      d.opts.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	d.guards = append(d.guards, g)
	return g, nil
}

func (d *demo) heading(n int, title string) {
	line := fmt.Sprintf("%d. %s", n, title)
	fmt.Fprintf(d.out, "\n%s\n%s\n", line, strings.Repeat("=", len(line)))
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, format+"\n", args...)
}

// result prints what a call returned: its error as the kubelet gets it.
func (d *demo) result(err error) {
	if err == nil {
		d.say("   -> ok")
		return
	}
	st := status.Convert(err)
	d.say("   -> %s: %s", st.Code(), st.Message())
}

// pod creates the pod cgroup with limit and returns the pod's config, both
// as the kubelet makes them.
func (d *demo) pod(name string, limit int64) (*runtimeapi.PodSandboxConfig, error) {
	d.seq++
	uid := fmt.Sprintf("%s-%d-%d", name, os.Getpid(), d.seq)
	parent, err := d.rt.CreatePodCgroup(uid, limit)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return podConfig(name, uid, parent, filepath.Join(d.dir, "logs", uid), limit), nil
}

// removePod stops and removes a sandbox directly at the runtime.
func (d *demo) removePod(ctx context.Context, id string) error {
	if err := d.direct.StopPodSandbox(ctx, id); err != nil {
		return fmt.Errorf("demo: stop pod %s: %w", id, err)
	}
	if err := d.direct.RemovePodSandbox(ctx, id); err != nil {
		return fmt.Errorf("demo: remove pod %s: %w", id, err)
	}
	return nil
}

// incident is step 1.
func (d *demo) incident(ctx context.Context, viaGuard internalapi.RuntimeService) error {
	d.heading(1, `The incident: a pod with resources.limits.memory: "2000"`)
	d.say(`"2000" has no unit, so it means 2000 bytes. The kubelet sizes the pod cgroup to 2000`)
	d.say(`bytes, then asks the runtime to start the pod sandbox.`)

	cfg, err := d.pod("tiny", 2000)
	if err != nil {
		return err
	}
	d.say("\nDirectly to containerd: RunPodSandbox %s/%s", namespace, cfg.Metadata.Name)
	id, err := d.direct.RunPodSandbox(ctx, cfg, "")
	if err == nil {
		return errors.Join(fmt.Errorf("demo: a 2000-byte pod started directly (sandbox %s); this node does not show the incident", id), d.removePod(ctx, id))
	}
	d.result(err)
	d.say("   The kubelet retries this for hours; the pod stays in ContainerCreating.")

	if cfg, err = d.pod("tiny", 2000); err != nil {
		return err
	}
	d.say("\nThrough cri-guard: the same RunPodSandbox")
	id, err = viaGuard.RunPodSandbox(ctx, cfg, "")
	if err == nil {
		return errors.Join(fmt.Errorf("demo: cri-guard let a 2000-byte pod through (sandbox %s)", id), d.removePod(ctx, id))
	}
	d.result(err)
	return nil
}

// container is step 2.
func (d *demo) container(ctx context.Context, viaGuard internalapi.RuntimeService) error {
	d.heading(2, `A container with memory: 2000 in a healthy pod (256Mi)`)
	cfg, err := d.pod("app", 256<<20)
	if err != nil {
		return err
	}
	sb, err := d.direct.RunPodSandbox(ctx, cfg, "")
	if err != nil {
		return fmt.Errorf("demo: start the healthy pod: %w", err)
	}
	ctr := containerConfig(d.rt.BusyboxRef, "app", 2000)

	d.say("Directly to containerd: CreateContainer, then StartContainer")
	id, err := d.direct.CreateContainer(ctx, sb, ctr, cfg)
	d.result(err)
	if err != nil {
		return fmt.Errorf("demo: direct CreateContainer was expected to pass: %w", err)
	}
	err = d.direct.StartContainer(ctx, id)
	d.result(err)
	if err == nil {
		return errors.New("demo: a container with a 2000-byte limit started directly; this node does not show the failure")
	}
	if err := d.direct.RemoveContainer(ctx, id); err != nil {
		return fmt.Errorf("demo: remove the failed container: %w", err)
	}

	d.say("\nThrough cri-guard: CreateContainer")
	id, err = viaGuard.CreateContainer(ctx, sb, ctr, cfg)
	d.result(err)
	if err == nil {
		return fmt.Errorf("demo: cri-guard let a 2000-byte container through (%s)", id)
	}

	g, err := d.guard(ctx, "raise", "--mode", "raise")
	if err != nil {
		return err
	}
	raise, err := kubelet(ctx, g.Endpoint)
	if err != nil {
		return err
	}
	d.say("\nThrough a second cri-guard with --mode raise: CreateContainer, then StartContainer")
	id, err = raise.CreateContainer(ctx, sb, ctr, cfg)
	d.result(err)
	if err != nil {
		return fmt.Errorf("demo: raise mode: %w", err)
	}
	err = raise.StartContainer(ctx, id)
	d.result(err)
	if err != nil {
		return fmt.Errorf("demo: raise mode: %w", err)
	}
	for _, l := range strings.Split(g.Logs(), "\n") {
		if strings.Contains(l, "raised") {
			d.say("   cri-guard logged: %s", strings.TrimSpace(l))
		}
	}
	limit, file, err := memoryLimit(cfg.Linux.CgroupParent, id)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	d.say("   %s", file)
	d.say("   = %s (the floor, 12Mi); the container runs", limit)
	return d.removePod(ctx, sb)
}

// oomAtStart is step 3.
func (d *demo) oomAtStart(ctx context.Context, _ internalapi.RuntimeService) error {
	d.heading(3, "An out-of-memory failure at start that gets past a lowered floor")
	g, err := d.guard(ctx, "low", "--sandbox-min-memory", "512Ki")
	if err != nil {
		return err
	}
	low, err := kubelet(ctx, g.Endpoint)
	if err != nil {
		return err
	}
	cfg, err := d.pod("small", 1<<20)
	if err != nil {
		return err
	}
	d.say("A third cri-guard runs with --sandbox-min-memory 512Ki. A pod with a 1Mi limit is above")
	d.say("that floor, so it goes through to containerd, where the sandbox cannot start in 1Mi.")
	d.say("\nThrough cri-guard: RunPodSandbox %s/%s", namespace, cfg.Metadata.Name)
	id, err := low.RunPodSandbox(ctx, cfg, "")
	if err == nil {
		d.say("   -> ok: the sandbox started in 1Mi on this node (%s)", id)
		if err := d.removePod(ctx, id); err != nil {
			return err
		}
	} else {
		d.result(err)
	}

	// The sandbox never started: the runtime does not know the pod's name,
	// the cgroup carries only its uid. explain finds it by name through the
	// call the running cri-guard saw fail (--listen: that cri-guard).
	args := []string{"explain", "--runtime-endpoint", d.rt.Endpoint, "--cgroup-search", d.rt.CgroupRoot, "--listen", g.Endpoint,
		namespace + "/" + cfg.Metadata.Name}
	d.say("\ncri-guard %s", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, d.opts.Binary, args...).CombinedOutput()
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		d.say("   %s", l)
	}
	if err != nil {
		d.say("   (%v)", err)
	}
	return nil
}

// healthy is step 4.
func (d *demo) healthy(ctx context.Context, viaGuard internalapi.RuntimeService) error {
	d.heading(4, "A healthy pod through cri-guard (pod 128Mi, container 64Mi)")
	cfg, err := d.pod("web", 128<<20)
	if err != nil {
		return err
	}
	sb, err := viaGuard.RunPodSandbox(ctx, cfg, "")
	d.say("RunPodSandbox %s/%s", namespace, cfg.Metadata.Name)
	d.result(err)
	if err != nil {
		return fmt.Errorf("demo: healthy pod: %w", err)
	}
	id, err := viaGuard.CreateContainer(ctx, sb, containerConfig(d.rt.BusyboxRef, "web", 64<<20), cfg)
	d.say("CreateContainer web")
	d.result(err)
	if err != nil {
		return fmt.Errorf("demo: healthy container: %w", err)
	}
	err = viaGuard.StartContainer(ctx, id)
	d.say("StartContainer web")
	d.result(err)
	if err != nil {
		return fmt.Errorf("demo: healthy container: %w", err)
	}
	for _, cmd := range [][]string{{"echo", "hello from a container started through cri-guard"}, {"cat", "/proc/self/cgroup"}} {
		d.say("\nexec: %s", strings.Join(cmd, " "))
		stdout, stderr, err := viaGuard.ExecSync(ctx, id, cmd, 10*time.Second)
		if err != nil {
			return fmt.Errorf("demo: exec %v: %w (stderr %q)", cmd, err, stderr)
		}
		for _, l := range strings.Split(strings.TrimRight(string(stdout), "\n"), "\n") {
			d.say("   %s", l)
		}
	}
	return d.removePod(ctx, sb)
}

// memoryLimit reads the memory limit of a container's cgroup, containerd's
// cgroupfs layout: <parent>/<container id>.
func memoryLimit(parent, id string) (limit, file string, err error) {
	for _, f := range []string{
		filepath.Join("/sys/fs/cgroup/memory", parent, id, "memory.limit_in_bytes"), // v1
		filepath.Join("/sys/fs/cgroup", parent, id, "memory.max"),                   // v2
	} {
		b, err := os.ReadFile(f)
		if err == nil {
			return strings.TrimSpace(string(b)), f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("read container memory limit: %w", err)
		}
	}
	return "", "", fmt.Errorf("read container memory limit: no cgroup for container %s under %s", id, parent)
}
