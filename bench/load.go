package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// relay is one way to reach the runtime: directly or through a relay
// running in a child process.
type relay struct {
	name     string
	endpoint string // unix://...
	ctl      string // footprint socket; "" for direct
	cmd      *exec.Cmd
}

type footprint struct {
	goroutines int
	rss        int64
	peak       int64 // peak RSS since the previous sample
	cpuUs      int64
}

func (r *relay) sample() (footprint, bool) {
	if r.ctl == "" {
		if r.cmd != nil && r.cmd.Process != nil {
			return procSample(r.cmd.Process.Pid)
		}
		return footprint{}, false
	}
	c, err := net.DialTimeout("unix", r.ctl, time.Second)
	if err != nil {
		return footprint{}, false
	}
	defer c.Close()
	var f footprint
	var u, s int64
	if _, err := fmt.Fscan(bufio.NewReader(c), &f.goroutines, &f.rss, &f.peak, &u, &s); err != nil {
		return footprint{}, false
	}
	f.cpuUs = u + s
	return f, true
}

func (r *relay) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill()
			<-done
		}
	}
}

// procSample reads a process's CPU time and RSS from /proc, for relays
// that are not this program. Goroutines are unknown (-1).
func procSample(pid int) (footprint, bool) {
	cpu, ok := procCPU(pid)
	if !ok {
		return footprint{}, false
	}
	rss, peak := memory(strconv.Itoa(pid))
	return footprint{goroutines: -1, rss: rss, peak: peak, cpuUs: cpu}, true
}

// procCPU returns the CPU time of a process's threads in µs, from the
// nanoseconds each thread has run (/proc/PID/task/TID/schedstat), as
// getrusage counts them for the child relays. /proc/PID/stat counts in
// clock ticks of 10 ms, a tenth of what a relay spends in one round of a
// cell; it is the fallback. A thread that exited takes its time along; the
// Go runtime keeps its threads.
func procCPU(pid int) (int64, bool) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread is gone
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			ns = -1
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			ns = -1
			break
		}
		ns += n
	}
	if len(tasks) > 0 && ns >= 0 {
		return ns / 1e3, true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat)[i+1:])
	if len(f) < 22 {
		return 0, false
	}
	// Fields after the command: state is f[0], utime f[11], stime f[12].
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const tickUs = 1e6 / 100 // USER_HZ is 100 on Linux
	return (ut + st) * tickUs, true
}

// startBinary runs a cri-guard binary in front of upstream, as relay name.
func startBinary(name, bin, dir, upstream, cgroupRoot string) (*relay, error) {
	listen := filepath.Join(dir, name+".sock")
	os.Remove(listen)
	args := []string{"serve", "--listen", "unix://" + listen, "--upstream", "unix://" + upstream,
		"--log-level", "error", "--shutdown-timeout", "1s"}
	if cgroupRoot != "" {
		args = append(args, "--cgroup-root", cgroupRoot)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // do not outlive a killed bench
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relay{name: name, endpoint: "unix://" + listen, cmd: cmd}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", listen); err == nil {
			c.Close()
			return r, nil
		}
	}
	r.stop()
	return nil, fmt.Errorf("%s did not start", bin)
}

// startRelay runs this program as a child serving kind in front of upstream.
func startRelay(kind, dir, upstream, cgroupRoot string) (*relay, error) {
	listen := filepath.Join(dir, kind+".sock")
	ctl := filepath.Join(dir, kind+".ctl")
	os.Remove(listen)
	os.Remove(ctl)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-child", kind, "-listen", listen, "-upstream", upstream, "-ctl", ctl, "-cgroup-root", cgroupRoot)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // do not outlive a killed bench
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &relay{name: kind, endpoint: "unix://" + listen, ctl: ctl, cmd: cmd}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, ok := r.sample(); ok {
			return r, nil
		}
	}
	r.stop()
	return nil, fmt.Errorf("relay %s did not start", kind)
}

// Result is one measured cell.
type Result struct {
	Suite      string  `json:"suite"`
	Workload   string  `json:"workload"`
	Relay      string  `json:"relay"`
	Conc       int     `json:"concurrency"`
	Calls      int     `json:"calls"`
	Errors     int     `json:"errors"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	PerSec     float64 `json:"per_sec"`
	CPUUsCall  float64 `json:"relay_cpu_us_per_call"` // -1: not measured (direct)
	RSSMiB     float64 `json:"relay_peak_rss_mib_under_load"`
	Goroutines int     `json:"relay_goroutines_under_load"`
}

// rounds is how many interleaved rounds a cell is measured in.
var rounds = 3

// measureAll measures one cell for every relay. The cell's time is split in
// rounds; each round runs every relay once, starting with a different one,
// so a change in the machine's load during the cell is shared by all relays
// instead of falling on whichever ran then.
func measureAll(relays []*relay, suite, workload string, c int, dur time.Duration, op func(*relay) func(context.Context) error) []Result {
	n := roundsFor(c, dur, op(relays[0]))
	accs := make([]cell, len(relays))
	for round := range n {
		for i := range relays {
			j := (i + round) % len(relays)
			accs[j].measure(relays[j], c, dur/time.Duration(n), op(relays[j]))
		}
	}
	out := make([]Result, len(relays))
	for j, r := range relays {
		out[j] = accs[j].result(suite, workload, r.name, c)
	}
	return out
}

// roundsFor is how many rounds a cell gets: rounds, or fewer when its
// calls are slow, so that a relay's share of a round lasts at least ten
// calls (their p50 in a short probe through the first relay). More, shorter
// rounds spread a shared machine's slow drifts more evenly over the relays
// (ListPodSandbox at c=16, four runs each: throughput vs the splice
// 0.80-1.00x with 6 rounds, 0.96-1.00x with 24); a share shorter than a
// call would measure warm-ups.
func roundsFor(c int, dur time.Duration, op func(context.Context) error) int {
	lat, _, _ := drive(c, 50*time.Millisecond, op)
	if len(lat) == 0 {
		return roundsForP50(dur, 0)
	}
	slices.Sort(lat)
	return roundsForP50(dur, lat[len(lat)/2])
}

// roundsForP50 is roundsFor's arithmetic, for calls whose p50 is p50 (0:
// unknown, every round).
func roundsForP50(dur, p50 time.Duration) int {
	n := max(rounds, 1)
	if p50 > 0 {
		n = min(n, max(1, int(dur/(10*p50))))
	}
	return n
}

// cell accumulates one relay's rounds of one cell.
type cell struct {
	lat     []time.Duration
	errs    int
	elapsed time.Duration
	cpuUs   int64
	sampled bool
	rss     int64
	gor     int
}

// measure runs op from c goroutines for dur after a short warm-up.
func (a *cell) measure(r *relay, c int, dur time.Duration, op func(context.Context) error) {
	warm := max(dur/5, 30*time.Millisecond)
	drive(c, warm, op)
	before, ok := r.sample()
	var mid footprint
	var wg sync.WaitGroup
	if ok {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(dur / 2)
			mid, _ = r.sample()
		}()
	}
	lat, errs, elapsed := drive(c, dur, op)
	wg.Wait()
	after, ok2 := r.sample()
	a.lat = append(a.lat, lat...)
	a.errs += errs
	a.elapsed += elapsed
	if ok && ok2 {
		a.sampled = true
		a.cpuUs += after.cpuUs - before.cpuUs
		a.rss = max(a.rss, mid.peak, after.peak)
		a.gor = max(a.gor, mid.goroutines)
	}
}

func (a *cell) result(suite, workload, relay string, c int) Result {
	res := Result{Suite: suite, Workload: workload, Relay: relay, Conc: c, Calls: len(a.lat), Errors: a.errs, CPUUsCall: -1}
	if len(a.lat) > 0 {
		sort.Slice(a.lat, func(i, j int) bool { return a.lat[i] < a.lat[j] })
		res.P50Ms = ms(a.lat[len(a.lat)/2])
		res.P99Ms = ms(a.lat[min(len(a.lat)-1, len(a.lat)*99/100)])
		res.PerSec = float64(len(a.lat)) / a.elapsed.Seconds()
		if a.sampled {
			res.CPUUsCall = float64(a.cpuUs) / float64(len(a.lat))
		}
	}
	if a.sampled {
		res.RSSMiB = float64(a.rss) / (1 << 20)
		res.Goroutines = a.gor
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// drive calls op from c goroutines until dur has passed; each goroutine
// makes at least one call, however late a busy machine runs it.
func drive(c int, dur time.Duration, op func(context.Context) error) ([]time.Duration, int, time.Duration) {
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	start := time.Now()
	end := start.Add(dur)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			e := 0
			for first := true; first || time.Now().Before(end); first = false {
				t := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := op(ctx)
				cancel()
				if err != nil {
					e++
					if e == 1 {
						fmt.Fprintln(os.Stderr, "call error:", err)
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			all = append(all, lat...)
			errs += e
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, errs, time.Since(start)
}
