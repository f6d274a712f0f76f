package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/calibrate"
	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/podcgroup"
	"github.com/cri-guard/cri-guard/pkg/policy"
)

// calibrateReport is the output of calibrate, also as --json.
type calibrateReport struct {
	Endpoint       string            `json:"endpoint"`
	Runtime        string            `json:"runtime"`
	RuntimeVersion string            `json:"runtimeVersion"`
	RuntimeHandler string            `json:"runtimeHandler"`
	CgroupVersion  string            `json:"cgroupVersion"`
	Min            int64             `json:"min"`
	Max            int64             `json:"max"`
	Step           int64             `json:"step"`
	Attempts       int               `json:"attempts"`
	Confirm        int               `json:"confirm"`
	Sandbox        *calibrate.Result `json:"sandbox"`
	Image          string            `json:"image,omitempty"`
	ContainerPod   int64             `json:"containerPodMemory,omitempty"`
	Container      *calibrate.Result `json:"container,omitempty"`
	Margin         int               `json:"margin"`
	SandboxFloor   int64             `json:"sandboxMinMemory"`
	ContainerFloor int64             `json:"containerMinMemory,omitempty"`
	Snippet        string            `json:"snippet"`
	Started        int               `json:"started"`
	Seconds        float64           `json:"seconds"`
}

func calibrateCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("calibrate", flag.ContinueOnError)
	var (
		upstream = fs.String("upstream", config.Defaults.Upstream, "the runtime's socket (never cri-guard's)")
		handler  = fs.String("runtime-handler", "", "runtime handler to calibrate (default: the runtime's default)")
		image    = fs.String("with-container", "", "also find the smallest container limit for this image (pulled if missing, and then removed)")
		attempts = fs.Int("attempts", 3, "starts per step; all must succeed")
		confirm  = fs.Int("confirm", -1, "more starts at the candidate threshold before it is accepted; -1: twice --attempts")
		minS     = fs.String("min", "256Ki", "lower bound of the search")
		maxS     = fs.String("max", "64Mi", "upper bound of the search")
		stepS    = fs.String("step", "512Ki", "resolution of the search")
		podS     = fs.String("container-pod-memory", "256Mi", "memory limit of the pod that holds the probed containers")
		parent   = fs.String("cgroup-parent", calibrate.DefaultParent, "cgroup under which calibration pod cgroups are created (cgroupfs driver)")
		settle   = fs.Duration("settle", 300*time.Millisecond, "how long a start must keep running to count")
		asJSON   = fs.Bool("json", false, "print the report as JSON")
		force    = fs.Bool("force", false, "run even against a socket that looks like cri-guard rather than a runtime")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: cri-guard calibrate [flags]\n\n"+
			"Measures the smallest pod and container memory limits that start on this node,\n"+
			"with throwaway pods in namespace %s, and prints recommended floors.\n\nflags:\n", calibrate.Namespace)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var q [4]int64
	for i, s := range []struct{ name, v string }{{"min", *minS}, {"max", *maxS}, {"step", *stepS}, {"container-pod-memory", *podS}} {
		b, err := policy.ParseQuantity(s.v)
		if err != nil {
			return fmt.Errorf("%w: --%s: %v", errUsage, s.name, err)
		}
		q[i] = b
	}
	if *confirm < 0 {
		*confirm = 2 * *attempts
	}
	search := calibrate.Search{Min: q[0], Max: q[1], Step: q[2], Attempts: *attempts, Confirm: *confirm}
	if err := search.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	start := time.Now()
	conn, err := calibrate.Dial(*upstream)
	if err != nil {
		return fmt.Errorf("%w: --upstream: %v", errUsage, err)
	}
	defer conn.Close()
	rs, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	v, err := calibrate.CheckRuntime(ctx, *upstream, rs)
	if errors.Is(err, calibrate.ErrNotRuntime) && *force {
		fmt.Fprintf(os.Stderr, "warning: %v; going on (--force)\n", err)
	} else if errors.Is(err, calibrate.ErrNotRuntime) {
		return fmt.Errorf("%w (--force to run anyway)", err)
	} else if err != nil {
		return err
	}
	cg, err := podcgroup.Detect(*parent)
	if err != nil {
		return err
	}
	rt := &calibrate.Runtime{RS: rs, IS: is, Handler: *handler, Cgroups: cg, RunID: calibrate.NewRunID(), Settle: *settle}
	rep := &calibrateReport{
		Endpoint: *upstream, Runtime: v.GetRuntimeName(), RuntimeVersion: v.GetRuntimeVersion(), RuntimeHandler: *handler,
		CgroupVersion: cg.Version(), Min: search.Min, Max: search.Max, Step: search.Step, Attempts: search.Attempts,
		Confirm: search.Confirm, Margin: calibrate.Margin, Image: *image,
	}
	progress := func(kind string, p calibrate.Probe) calibrate.Probe {
		return func(ctx context.Context, limit int64) (calibrate.Outcome, error) {
			out, err := p(ctx, limit)
			if err == nil {
				res := "started"
				if !out.OK {
					res = "failed: " + out.Reason
				}
				fmt.Fprintf(os.Stderr, "calibrate: %s at %s: %s\n", kind, policy.Quantity(limit), res)
			}
			return out, err
		}
	}
	fmt.Fprintf(os.Stderr, "calibrate: run %s against %s %s at %s (handler %q, cgroup %s), pods in namespace %s\n",
		rt.RunID, rep.Runtime, rep.RuntimeVersion, *upstream, *handler, cg.Version(), calibrate.Namespace)

	err = func() (err error) {
		defer func() {
			if cerr := rt.Cleanup(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}()
		sres, err := search.Run(ctx, progress("pod", rt.SandboxProbe))
		if err != nil {
			return fmt.Errorf("sandbox search: %w", err)
		}
		rep.Sandbox = &sres
		if *image == "" {
			return nil
		}
		rep.ContainerPod = q[3]
		pod, err := rt.StartContainerPod(ctx, *image, q[3])
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, pod.Remove()) }()
		cres, err := search.Run(ctx, progress("container", pod.Probe))
		if err != nil {
			return fmt.Errorf("container search: %w", err)
		}
		rep.Container = &cres
		return nil
	}()
	if err != nil {
		return err
	}
	rep.SandboxFloor = calibrate.Recommend(rep.Sandbox.Threshold)
	if rep.Container != nil {
		rep.ContainerFloor = calibrate.Recommend(rep.Container.Threshold)
	}
	rep.Snippet = calibrate.Snippet(*handler, rep.SandboxFloor, rep.ContainerFloor)
	rep.Started = rt.Started()
	rep.Seconds = time.Since(start).Round(100 * time.Millisecond).Seconds()
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printCalibration(os.Stdout, rep)
	return nil
}

func printCalibration(w io.Writer, r *calibrateReport) {
	h := r.RuntimeHandler
	if h == "" {
		h = "default"
	}
	fmt.Fprintf(w, "runtime:   %s %s at %s, handler %s, cgroup %s\n", r.Runtime, r.RuntimeVersion, r.Endpoint, h, r.CgroupVersion)
	fmt.Fprintf(w, "search:    %s..%s in steps of %s; a limit passes when %d starts in a row succeed, the threshold after %d more\n\n",
		policy.Quantity(r.Min), policy.Quantity(r.Max), policy.Quantity(r.Step), r.Attempts, r.Confirm)
	section := func(title string, res *calibrate.Result) {
		fmt.Fprintf(w, "%s\n", title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  limit\tstarts\tresult")
		for _, s := range res.Steps {
			what := "ok"
			if !s.Passed() {
				what = "failed: " + s.Reason
			}
			if s.Confirm {
				what += " (confirmation)"
			}
			fmt.Fprintf(tw, "  %s\t%d/%d\t%s\n", policy.Quantity(s.Limit), s.Attempts-s.Failures, s.Attempts, what)
		}
		tw.Flush()
		fmt.Fprintf(w, "  threshold: %s", policy.Bytes(res.Threshold))
		switch {
		case res.AtMin:
			fmt.Fprintf(w, " (the lower bound: the real threshold may be lower)\n")
		case res.Failed > 0:
			fmt.Fprintf(w, "; %s failed: %s\n", policy.Bytes(res.Failed), res.Reason)
		default:
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
	section("pod sandbox (pod cgroup memory limit):", r.Sandbox)
	if r.Container != nil {
		section(fmt.Sprintf("container %s running sleep 3600 (container memory limit, in a pod limited to %s):", r.Image, policy.Quantity(r.ContainerPod)), r.Container)
	}
	fmt.Fprintf(w, "recommended floors (%dx the threshold, rounded up to a whole MiB):\n", r.Margin)
	fmt.Fprintf(w, "  sandboxMinMemory:   %s\n", policy.Quantity(r.SandboxFloor))
	if r.ContainerFloor > 0 {
		fmt.Fprintf(w, "  containerMinMemory: %s\n", policy.Quantity(r.ContainerFloor))
	}
	fmt.Fprintf(w, "\nconfiguration snippet for cri-guard:\n\n%s\n", indent(r.Snippet, "    "))
	fmt.Fprintf(w, "%d sandboxes and containers started in %.1fs; all removed, with their cgroups.\n", r.Started, r.Seconds)
}

func indent(s, by string) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	return by + strings.Join(lines, by) + "\n"
}
