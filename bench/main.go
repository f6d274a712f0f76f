// Command bench measures cri-guard's relay side by side with a direct
// connection, a raw unix-socket byte splice (the floor; splice-raw is the
// same splice through package sysio's raw system calls) and a naive gRPC
// relay, against a zero-work fake runtime and a real containerd. It prints
// a markdown table and writes the same results as JSON.
//
// Every relay runs in a child process (this program, re-executed), so its
// CPU time (getrusage), RSS and goroutines are measured the same way.
//
//	go run ./bench -dur 1s -json bin/bench.json        # fake runtime + containerd (root)
//	go run ./bench -dur 100ms -real=false               # smoke
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

var relayKinds = []string{"splice", "splice-raw", "naive", "cri-guard", "cri-guard-frames"}

// binary is the cri-guard binary to measure too, if any; baseBinary is
// another build to measure beside it (a change's A/B in one run).
var binary, baseBinary string

func main() {
	child := flag.String("child", "", "internal: serve this relay kind")
	listen := flag.String("listen", "", "internal: child's socket")
	upstream := flag.String("upstream", "", "internal: child's upstream socket")
	ctl := flag.String("ctl", "", "internal: child's footprint socket")
	cgroupRoot := flag.String("cgroup-root", "", "internal: cgroup root for the guard")
	dur := flag.Duration("dur", time.Second, "measuring time per cell (3x for the large list, whose calls are slow)")
	entries := flag.Int("entries", 5000, "sandboxes in the fake runtime's large list")
	real := flag.Bool("real", true, "also measure against a real containerd (root)")
	containers := flag.Int("containers", 200, "real containers to create for ListContainers")
	setup := flag.Duration("setup-timeout", 4*time.Minute, "bound on creating the real containers")
	jsonOut := flag.String("json", "bin/bench.json", "write results here as JSON")
	conc := flag.String("conc", "1,16,64", "concurrencies for the fake runtime")
	guardBin := flag.String("guard-bin", "", "also measure this cri-guard binary (`cri-guard serve`) as relay cri-guard-bin")
	baseBin := flag.String("base-bin", "", "also measure this cri-guard binary as relay cri-guard-base, to compare two builds in one run (not in the targets)")
	strict := flag.Bool("strict", false, "fail when any cell had errors or no calls (for CI)")
	only := flag.String("relays", strings.Join(relayKinds, ","), "relay kinds to measure besides direct")
	flag.IntVar(&rounds, "rounds", rounds, "interleaved rounds per cell, at most (fewer when calls are slow): each round runs every relay once, in a rotated order")
	wlFilter := flag.String("workloads", "", "measure only the fake-runtime workloads whose names contain one of these (comma-separated; the real suite is unaffected)")
	flag.Parse()
	if *child != "" {
		if err := runChild(*child, *listen, *upstream, *ctl, *cgroupRoot); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	binary, baseBinary = *guardBin, *baseBin
	if err := selectRelays(*only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	var cs []int
	for _, f := range strings.Split(*conc, ",") {
		var n int
		fmt.Sscan(f, &n)
		cs = append(cs, n)
	}
	rep := &report{Machine: machine()}
	err := fakeSuite(rep, *dur, *entries, cs, *wlFilter)
	if err == nil && *real {
		err = realSuite(rep, *dur, *containers, *setup)
	}
	rep.evaluate()
	rep.print(os.Stdout)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		_ = os.MkdirAll(filepath.Dir(*jsonOut), 0o755)
		if werr := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if err == nil && *strict {
		for _, x := range rep.Results {
			if x.Errors > 0 || x.Calls == 0 {
				err = fmt.Errorf("%s %s c=%d via %s: %d calls, %d errors", x.Suite, x.Workload, x.Conc, x.Relay, x.Calls, x.Errors)
				break
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// selected tells whether workload name passes the -workloads filter.
func selected(name, filter string) bool {
	if filter == "" {
		return true
	}
	for _, f := range strings.Split(filter, ",") {
		if f = strings.TrimSpace(f); f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

// selectRelays keeps the relay kinds named in list, in their usual order.
func selectRelays(list string) error {
	want := map[string]bool{}
	for _, k := range strings.Split(list, ",") {
		if k = strings.TrimSpace(k); k != "" {
			want[k] = true
		}
	}
	var keep []string
	for _, k := range relayKinds {
		if want[k] {
			keep = append(keep, k)
			delete(want, k)
		}
	}
	for k := range want {
		return fmt.Errorf("-relays: unknown relay %q (known: %s)", k, strings.Join(relayKinds, ", "))
	}
	relayKinds = keep
	return nil
}

func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("nproc=%d kernel=%s %s %s/%s", runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

type clients struct {
	rs   internalapi.RuntimeService
	is   internalapi.ImageManagerService
	conn *grpc.ClientConn // raw, for streams
}

func dialAll(ctx context.Context, endpoint string, image bool) (*clients, error) {
	c := &clients{}
	var err error
	if c.rs, err = remote.NewRemoteRuntimeService(ctx, endpoint, 10*time.Second, noop.NewTracerProvider(), false); err != nil {
		return nil, err
	}
	if image {
		if c.is, err = remote.NewRemoteImageService(ctx, endpoint, 10*time.Second, noop.NewTracerProvider(), false); err != nil {
			return nil, err
		}
	}
	if c.conn, err = grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, err
	}
	return c, nil
}

// startRelays returns direct plus every relay kind in front of upstream.
func startRelays(dir, upstream, cgroupRoot string, image bool) ([]*relay, map[string]*clients, func(), error) {
	rs := []*relay{{name: "direct", endpoint: "unix://" + upstream}}
	stop := func() {
		for _, r := range rs {
			r.stop()
		}
	}
	for _, k := range relayKinds {
		r, err := startRelay(k, dir, upstream, cgroupRoot)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		rs = append(rs, r)
	}
	for _, b := range []struct{ name, bin string }{{"cri-guard-bin", binary}, {"cri-guard-base", baseBinary}} {
		if b.bin == "" {
			continue
		}
		r, err := startBinary(b.name, b.bin, dir, upstream, cgroupRoot)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		rs = append(rs, r)
	}
	cl := map[string]*clients{}
	for _, r := range rs {
		c, err := dialAll(context.Background(), r.endpoint, image)
		if err != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("%s: %w", r.name, err)
		}
		cl[r.name] = c
	}
	return rs, cl, stop, nil
}

type workload struct {
	name string
	op   func(c *clients) func(context.Context) error
}

func fakeSuite(rep *report, dur time.Duration, entries int, cs []int, filter string) error {
	dir, err := os.MkdirTemp("/tmp", "cg-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	up := filepath.Join(dir, "fake.sock")
	stopFake, err := startFake(up, entries)
	if err != nil {
		return err
	}
	defer stopFake()
	relays, cl, stop, err := startRelays(dir, up, "", false)
	if err != nil {
		return err
	}
	defer stop()
	for _, r := range relays {
		if f, ok := r.sample(); ok {
			rep.Idle = append(rep.Idle, Idle{Relay: r.name, RSSMiB: float64(f.rss) / (1 << 20), Goroutines: f.goroutines})
		}
	}
	big := fmt.Sprintf("ListPodSandbox-%d", entries)
	wls := []workload{
		{"Version", func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error { _, err := c.rs.Version(ctx, "v1"); return err }
		}},
		{"ListPodSandbox-0", func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error { _, err := c.rs.ListPodSandbox(ctx, nil); return err }
		}},
		{big, func(c *clients) func(context.Context) error {
			f := &runtimeapi.PodSandboxFilter{Id: bigListID}
			return func(ctx context.Context) error {
				items, err := c.rs.ListPodSandbox(ctx, f)
				if err == nil && len(items) != entries {
					err = fmt.Errorf("got %d sandboxes, want %d", len(items), entries)
				}
				return err
			}
		}},
		{"ContainerStatus", func(c *clients) func(context.Context) error {
			return func(ctx context.Context) error { _, err := c.rs.ContainerStatus(ctx, "abc", false); return err }
		}},
	}
	for _, w := range wls {
		if !selected(w.name, filter) {
			continue
		}
		d := dur
		if w.name == big {
			// Its calls take about 20 ms, so a cell of dur holds 1/200 of
			// the calls of the others: too few for a p50 that one run can
			// compare within 10% (its target).
			d = 3 * dur
		}
		for _, c := range cs {
			for _, res := range measureAll(relays, "fake", w.name, c, d, func(r *relay) func(context.Context) error { return w.op(cl[r.name]) }) {
				fmt.Fprintf(os.Stderr, "fake %-22s c=%-3d %-10s p50=%.3fms %8.0f/s\n", w.name, c, res.Relay, res.P50Ms, res.PerSec)
				rep.Results = append(rep.Results, res)
			}
		}
	}
	// Stream throughput: one GetContainerEvents stream, events per second.
	for _, r := range relays {
		if !selected("GetContainerEvents", filter) {
			break
		}
		res := streamEvents(r, cl[r.name].conn, dur)
		fmt.Fprintf(os.Stderr, "fake GetContainerEvents %-10s %8.0f events/s\n", r.name, res.PerSec)
		rep.Results = append(rep.Results, res)
	}
	for _, c := range cl {
		c.conn.Close()
	}
	return nil
}

// Idle is a relay's footprint before any load.
type Idle struct {
	Relay      string  `json:"relay"`
	RSSMiB     float64 `json:"rss_mib"`
	Goroutines int     `json:"goroutines"`
}

// streamEvents counts the events one GetContainerEvents stream delivers in
// dur, after a short warm-up stream.
func streamEvents(r *relay, conn *grpc.ClientConn, dur time.Duration) Result {
	// run counts the events of one stream for d from its first event, so
	// that a busy machine, which may take longer than d to set the stream
	// up, still gets a count (and -strict no false "no calls"); the minute
	// only guards against a hang.
	run := func(d time.Duration) (n int, elapsed time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
		if err != nil {
			return 0, 0
		}
		var first time.Time
		for {
			if _, err := s.Recv(); err != nil {
				if n == 0 {
					return 0, 0
				}
				return n, time.Since(first)
			}
			if n++; n == 1 {
				first = time.Now()
				time.AfterFunc(d, cancel)
			}
		}
	}
	run(max(dur/5, 30*time.Millisecond))
	before, ok := r.sample()
	n, elapsed := run(dur)
	after, _ := r.sample()
	res := Result{Suite: "fake", Workload: "GetContainerEvents (events)", Relay: r.name, Conc: 1, Calls: n, CPUUsCall: -1}
	if elapsed > 0 {
		res.PerSec = float64(n) / elapsed.Seconds()
	}
	if ok && n > 0 {
		res.CPUUsCall = float64(after.cpuUs-before.cpuUs) / float64(n)
		res.RSSMiB = float64(after.peak) / (1 << 20)
		res.Goroutines = after.goroutines
	}
	return res
}
