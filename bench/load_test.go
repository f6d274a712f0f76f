package main

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestProcCPUAgreesWithRusage: what the bench reads for the binary agrees
// with what the child relays report of themselves, on this process. It burns
// a fixed amount of CPU, not CPU for a fixed time: on a busy machine a
// goroutine may get a small share of a core, and the test must not depend on
// it. The wall-clock limit only guards against a hang.
func TestProcCPUAgreesWithRusage(t *testing.T) {
	rusage := func() int64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return ru.Utime.Sec*1e6 + int64(ru.Utime.Usec) + ru.Stime.Sec*1e6 + int64(ru.Stime.Usec)
	}
	proc := func() int64 {
		us, ok := procCPU(os.Getpid())
		if !ok {
			t.Fatal("no CPU time in /proc")
		}
		return us
	}
	const hang = 2 * time.Minute
	// burn spins on two goroutines until the process has spent us µs of CPU
	// more than at the start, as getrusage counts it.
	burn := func(us int64) {
		start := rusage()
		var wg sync.WaitGroup
		var done atomic.Bool
		for range 2 {
			wg.Go(func() {
				for !done.Load() {
					for range 100_000 {
					}
				}
			})
		}
		for end := time.Now().Add(hang); rusage()-start < us; {
			if time.Now().After(end) {
				done.Store(true)
				wg.Wait()
				t.Fatalf("spent only %d of %d µs of CPU in %s", rusage()-start, us, hang)
			}
			time.Sleep(time.Millisecond)
		}
		done.Store(true)
		wg.Wait()
	}
	r0, p0 := rusage(), proc()
	burn(200_000)
	r, p := rusage()-r0, proc()-p0
	t.Logf("getrusage %d µs, /proc %d µs", r, p)
	if d := p - r; d < -r/20 || d > r/20 {
		t.Fatalf("/proc says %d µs, getrusage %d µs: more than 5%% apart", p, r)
	}
	// Finer than clock ticks (10 ms): a relay spends about 100 ms in a
	// round of a cell.
	var seen []int64
	for range 5 {
		burn(3_000)
		us := proc()
		if us%10_000 != 0 {
			return
		}
		seen = append(seen, us)
	}
	t.Fatalf("CPU times %v µs: all whole clock ticks", seen)
}

// TestRoundsFor: the arithmetic on a known p50, then that roundsFor feeds
// it the p50 of a real probe. The probes are chosen so that a loaded
// machine, which only makes calls slower, cannot change the answer.
func TestRoundsFor(t *testing.T) {
	defer func(r int) { rounds = r }(rounds)
	rounds = 24
	for name, tc := range map[string]struct {
		dur, p50 time.Duration
		want     int
	}{
		"unknown p50: every round":        {2 * time.Second, 0, 24},
		"fast calls get every round":      {2 * time.Second, 10 * time.Microsecond, 24},
		"20 ms calls in 1.1 s: 5 rounds":  {1100 * time.Millisecond, 20 * time.Millisecond, 5},
		"20 ms calls in 1 s: 5 rounds":    {time.Second, 20 * time.Millisecond, 5},
		"calls longer than the cell: 1":   {100 * time.Millisecond, 60 * time.Millisecond, 1},
		"a share of exactly ten calls: 2": {400 * time.Millisecond, 20 * time.Millisecond, 2},
	} {
		t.Run(name, func(t *testing.T) {
			if got := roundsForP50(tc.dur, tc.p50); got != tc.want {
				t.Fatalf("roundsForP50(%s, %s) = %d, want %d", tc.dur, tc.p50, got, tc.want)
			}
		})
	}
	sleep := func(d time.Duration) func(context.Context) error {
		return func(context.Context) error { time.Sleep(d); return nil }
	}
	for name, tc := range map[string]struct {
		dur  time.Duration
		op   func(context.Context) error
		want int
	}{
		"calls longer than the cell: 1":      {100 * time.Millisecond, sleep(60 * time.Millisecond), 1},
		"failing calls: every round, as set": {2 * time.Second, func(context.Context) error { return errors.New("down") }, 24},
	} {
		t.Run("probe/"+name, func(t *testing.T) {
			if got := roundsFor(1, tc.dur, tc.op); got != tc.want {
				t.Fatalf("roundsFor = %d, want %d", got, tc.want)
			}
		})
	}
}
