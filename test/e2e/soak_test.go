package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

const (
	soakConcurrency = 32
	// After the load, the binary must come back to within these of its
	// baseline. Go returns freed memory to the kernel lazily (the
	// scavenger), so RSS gets a fixed allowance rather than a ratio.
	soakThreadTolerance = 8
	soakRSSTolerance    = 48 << 20
	// soakCallTimeout is every call's deadline: the kubelet's own
	// (runtimeRequestTimeout), so that a call counts as failed only when
	// the kubelet would have given up on it, not when a busy machine made
	// it slow.
	soakCallTimeout = 2 * time.Minute
)

// procStatus reads Threads and VmRSS (bytes) of pid.
func procStatus(t *testing.T, pid int) (threads int, rss int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "Threads":
			threads = int(n)
		case "VmRSS":
			rss = n << 10
		}
	}
	return threads, rss
}

// TestSoak runs 32 concurrent callers through the cri-guard binary for
// CRI_GUARD_SOAK (default 30s; make soak runs 5m): lists, statuses, pods
// created and removed, and 2000-byte pods that the policy refuses. No call
// may fail unexpectedly, and the process's threads and RSS must come back to
// their baseline afterwards.
func TestSoak(t *testing.T) {
	rt, bin := sharedRuntime(t)
	d := 30 * time.Second
	if s := os.Getenv("CRI_GUARD_SOAK"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("CRI_GUARD_SOAK=%q: %v", s, err)
		}
	}
	g := startGuard(t, rt, bin)
	pid := g.Cmd.Process.Pid
	c, err := harness.DialCRI(g.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	// A pod that lives through the soak, for status calls.
	rs := kubelet(t, g.Endpoint)
	steady, _ := runningPod(t, rt, rs, 64<<20)
	prefix := uid(t)

	// Warm up every kind of call once, then take the baseline.
	if _, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	baseThreads, baseRSS := procStatus(t, pid)

	var (
		calls, refused atomic.Int64
		podsMade       atomic.Int64
		mu             sync.Mutex
		unexpected     []string
		wg             sync.WaitGroup
	)
	fail := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(unexpected) < 20 {
			unexpected = append(unexpected, fmt.Sprintf("%s: %v", what, err))
		} else if len(unexpected) == 20 {
			unexpected = append(unexpected, "...")
		}
	}
	call := func(timeout time.Duration, what string, f func(context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		calls.Add(1)
		err := f(cctx)
		if err != nil {
			fail(what, err)
		}
		return err
	}
	end := time.Now().Add(d)
	var peakThreads int
	var peakRSS int64
	for w := 0; w < soakConcurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				switch w % 8 {
				case 0: // a pod created, looked at and removed
					u := fmt.Sprintf("%s-w%d-%d", prefix, w, i)
					parent, err := rt.CreatePodCgroup(u, 64<<20)
					if err != nil {
						fail("pod cgroup", err)
						return
					}
					var id string
					if call(soakCallTimeout, "RunPodSandbox", func(ctx context.Context) error {
						resp, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig("soak-"+u, u, parent, 64<<20)})
						id = resp.GetPodSandboxId()
						return err
					}) != nil {
						continue
					}
					podsMade.Add(1)
					call(soakCallTimeout, "PodSandboxStatus", func(ctx context.Context) error {
						_, err := c.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
						return err
					})
					call(soakCallTimeout, "StopPodSandbox", func(ctx context.Context) error {
						_, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
						return err
					})
					call(soakCallTimeout, "RemovePodSandbox", func(ctx context.Context) error {
						_, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
						return err
					})
				case 1: // a 2000-byte pod, refused by the policy
					u := fmt.Sprintf("%s-tiny-w%d-%d", prefix, w, i)
					name := "tiny-" + u
					cctx, cancel := context.WithTimeout(ctx, soakCallTimeout)
					calls.Add(1)
					_, err := c.Runtime.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(name, u, "", 2000)})
					cancel()
					want := "pod e2e/" + name + ": memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"
					if st := status.Convert(err); st.Code() != codes.InvalidArgument || st.Message() != want {
						fail("2000-byte RunPodSandbox", err)
					} else {
						refused.Add(1)
					}
					time.Sleep(10 * time.Millisecond)
				default: // the kubelet's steady traffic
					switch i % 5 {
					case 0:
						call(soakCallTimeout, "ListPodSandbox", func(ctx context.Context) error {
							_, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
							return err
						})
					case 1:
						call(soakCallTimeout, "ListContainers", func(ctx context.Context) error {
							_, err := c.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
							return err
						})
					case 2:
						call(soakCallTimeout, "PodSandboxStatus", func(ctx context.Context) error {
							_, err := c.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: steady, Verbose: true})
							return err
						})
					case 3:
						call(soakCallTimeout, "Version", func(ctx context.Context) error {
							_, err := c.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
							return err
						})
					case 4:
						call(soakCallTimeout, "ImageStatus", func(ctx context.Context) error {
							_, err := c.Image.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: rt.BusyboxRef}})
							return err
						})
					}
				}
			}
		}(w)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		case <-time.After(500 * time.Millisecond):
			th, r := procStatus(t, pid)
			peakThreads, peakRSS = max(peakThreads, th), max(peakRSS, r)
		}
	}

	t.Logf("%s at concurrency %d: %d calls, %d pods created and removed, %d refused as 2000-byte pods",
		d, soakConcurrency, calls.Load(), podsMade.Load(), refused.Load())
	if len(unexpected) > 0 {
		t.Errorf("unexpected errors:\n%s", strings.Join(unexpected, "\n"))
	}
	if podsMade.Load() == 0 || refused.Load() == 0 {
		t.Errorf("the soak did not exercise both created and refused pods")
	}

	// Back to baseline, within the tolerance.
	var th int
	var r int64
	for settle := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		th, r = procStatus(t, pid)
		if (th <= baseThreads+soakThreadTolerance && r <= baseRSS+soakRSSTolerance) || time.Now().After(settle) {
			break
		}
	}
	t.Logf("cri-guard pid %d: threads %d -> peak %d -> %d; RSS %d MiB -> peak %d MiB -> %d MiB",
		pid, baseThreads, peakThreads, th, baseRSS>>20, peakRSS>>20, r>>20)
	if th > baseThreads+soakThreadTolerance {
		t.Errorf("threads %d after the soak, baseline %d (tolerance %d)", th, baseThreads, soakThreadTolerance)
	}
	if r > baseRSS+soakRSSTolerance {
		t.Errorf("RSS %d MiB after the soak, baseline %d MiB (tolerance %d MiB)", r>>20, baseRSS>>20, soakRSSTolerance>>20)
	}
	resp, err := rt.CRI.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range resp.GetItems() {
		if strings.HasPrefix(sb.GetMetadata().GetUid(), prefix+"-") {
			t.Errorf("sandbox %s of the soak was left behind", sb.GetId())
		}
	}
	select {
	case <-g.Exited():
		t.Fatalf("cri-guard exited:\n%s", g.Logs())
	default:
	}
}
