package main

import (
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestProcCPUAgreesWithRusage: what the bench reads for the binary agrees
// with what the child relays report of themselves, on this process.
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
	r0, p0 := rusage(), proc()
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			}
		})
	}
	wg.Wait()
	r, p := rusage()-r0, proc()-p0
	t.Logf("getrusage %d µs, /proc %d µs", r, p)
	if r < 200_000 {
		t.Fatalf("burnt only %d µs", r)
	}
	if d := p - r; d < -r/20 || d > r/20 {
		t.Fatalf("/proc says %d µs, getrusage %d µs: more than 5%% apart", p, r)
	}
	// Finer than clock ticks (10 ms): a relay spends about 100 ms in a
	// round of a cell.
	var seen []int64
	for range 5 {
		for end := time.Now().Add(3 * time.Millisecond); time.Now().Before(end); {
		}
		us := proc()
		if us%10_000 != 0 {
			return
		}
		seen = append(seen, us)
	}
	t.Fatalf("CPU times %v µs: all whole clock ticks", seen)
}

func TestRoundsFor(t *testing.T) {
	defer func(r int) { rounds = r }(rounds)
	rounds = 24
	sleep := func(d time.Duration) func(context.Context) error {
		return func(context.Context) error { time.Sleep(d); return nil }
	}
	for name, tc := range map[string]struct {
		dur  time.Duration
		op   func(context.Context) error
		want int
	}{
		"fast calls get every round":         {2 * time.Second, sleep(0), 24},
		"20 ms calls in 1.1 s: 5 rounds":     {1100 * time.Millisecond, sleep(20 * time.Millisecond), 5},
		"calls longer than the cell: 1":      {100 * time.Millisecond, sleep(60 * time.Millisecond), 1},
		"failing calls: every round, as set": {2 * time.Second, func(context.Context) error { return errors.New("down") }, 24},
	} {
		t.Run(name, func(t *testing.T) {
			if got := roundsFor(1, tc.dur, tc.op); got != tc.want {
				t.Fatalf("roundsFor = %d, want %d", got, tc.want)
			}
		})
	}
}
