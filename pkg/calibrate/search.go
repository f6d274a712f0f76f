package calibrate

import (
	"context"
	"errors"
	"fmt"
)

// Outcome is the result of one attempt to start something at a limit.
type Outcome struct {
	OK     bool
	Reason string // why it did not start, when !OK
}

// Probe makes one attempt at a memory limit. A failed start is an Outcome
// with OK false; an error aborts the search (the runtime failed in a way
// that has nothing to do with the limit, or ctx ended).
type Probe func(ctx context.Context, limit int64) (Outcome, error)

// Search is a binary search for the smallest limit, in [Min, Max] and on
// the grid Min + k*Step (Max included), at which a Probe succeeds reliably.
//
// A limit passes a round when Attempts attempts in a row succeed. The
// binary search assumes that failures do not grow with the limit. When it
// has found the smallest passing limit, that limit must pass Confirm more
// attempts; if it does not, it was near the edge where starts are flaky,
// and the search continues above it. So a reported threshold has passed
// Attempts+Confirm attempts in a row.
type Search struct {
	Min, Max, Step int64
	Attempts       int
	Confirm        int
}

// Step records one round at one limit.
type Step struct {
	Limit    int64  `json:"limit"`
	Attempts int    `json:"attempts"` // attempts made (a round stops at its first failure)
	Failures int    `json:"failures"`
	Confirm  bool   `json:"confirm,omitempty"` // a confirmation round
	Reason   string `json:"reason,omitempty"`  // the failure, if any
}

// Passed reports whether every attempt of the round succeeded.
func (s Step) Passed() bool { return s.Failures == 0 }

// Result is what a search found.
type Result struct {
	// Threshold is the smallest limit that passed its rounds, confirmation
	// included.
	Threshold int64 `json:"threshold"`
	// Failed is the largest limit below Threshold seen to fail, and Reason
	// its failure; 0 when Threshold is Min (AtMin).
	Failed int64  `json:"failed,omitempty"`
	Reason string `json:"failedReason,omitempty"`
	// AtMin says that Min itself passed: the real threshold may be lower.
	AtMin bool   `json:"atMin,omitempty"`
	Step  int64  `json:"step"`
	Steps []Step `json:"steps"`
}

// ErrNoPass means that even Max does not start reliably.
var ErrNoPass = errors.New("does not start reliably even at the upper bound")

// Validate checks the bounds and counts.
func (s Search) Validate() error {
	switch {
	case s.Min <= 0:
		return fmt.Errorf("lower bound %d: must be positive", s.Min)
	case s.Max < s.Min:
		return fmt.Errorf("upper bound %d is below the lower bound %d", s.Max, s.Min)
	case s.Step <= 0:
		return fmt.Errorf("step %d: must be positive", s.Step)
	case s.Attempts < 1:
		return fmt.Errorf("attempts %d: need at least 1", s.Attempts)
	case s.Confirm < 0:
		return fmt.Errorf("confirm %d: must not be negative", s.Confirm)
	}
	return nil
}

// Rounds is an upper bound on the number of rounds a search with no flaky
// limits makes: one at Max, the binary search, one confirmation.
func (s Search) Rounds() int {
	n, r := s.points(), 2
	for k := 1; k < n; k *= 2 {
		r++
	}
	return r
}

// points is the number of grid points: Min, Min+Step, ..., Max.
func (s Search) points() int {
	return int((s.Max-s.Min+s.Step-1)/s.Step) + 1
}

func (s Search) limit(i int) int64 {
	return min(s.Min+int64(i)*s.Step, s.Max)
}

// Run searches with probe.
func (s Search) Run(ctx context.Context, probe Probe) (Result, error) {
	res := Result{Step: s.Step}
	if err := s.Validate(); err != nil {
		return res, fmt.Errorf("calibrate: %w", err)
	}
	// round makes up to n attempts at grid point i, stopping at the first
	// failure.
	round := func(i, n int, confirm bool) (bool, error) {
		st := Step{Limit: s.limit(i), Confirm: confirm}
		defer func() { res.Steps = append(res.Steps, st) }()
		for range n {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			out, err := probe(ctx, st.Limit)
			if err != nil {
				return false, fmt.Errorf("attempt at %d bytes: %w", st.Limit, err)
			}
			st.Attempts++
			if !out.OK {
				st.Failures++
				st.Reason = out.Reason
				return false, nil
			}
		}
		return true, nil
	}
	last := s.points() - 1
	ok, err := round(last, s.Attempts, false)
	if err != nil {
		return res, err
	}
	if !ok {
		return res, s.noPass(res)
	}
	// Invariant: lo fails (-1 stands for "below Min"), hi passed its round.
	lo, hi := -1, last
	passed := map[int]bool{last: true} // points that passed a round
	for {
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			ok, err := round(mid, s.Attempts, false)
			if err != nil {
				return res, err
			}
			if ok {
				hi = mid
				passed[mid] = true
			} else {
				lo = mid
			}
		}
		ok, err := round(hi, s.Confirm, true)
		if err != nil {
			return res, err
		}
		if ok {
			break
		}
		// hi is flaky: it and everything below are out. Search again
		// between it and the next point above that passed a round (Max
		// at worst), which is trusted no more than hi was: it too must
		// pass a confirmation.
		if hi == last {
			return res, s.noPass(res)
		}
		lo = hi
		for hi = lo + 1; !passed[hi]; hi++ {
		}
	}
	res.Threshold = s.limit(hi)
	res.AtMin = hi == 0
	if lo >= 0 {
		res.Failed = s.limit(lo)
		for _, st := range res.Steps {
			if st.Limit == res.Failed && !st.Passed() {
				res.Reason = st.Reason
			}
		}
	}
	return res, nil
}

// noPass is the error for a Max that failed, with its last failure.
func (s Search) noPass(res Result) error {
	reason := ""
	if n := len(res.Steps); n > 0 {
		reason = res.Steps[n-1].Reason
	}
	return fmt.Errorf("%d bytes: %w: %s", s.Max, ErrNoPass, reason)
}
