package calibrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

const (
	Ki = policy.KiB
	Mi = policy.MiB
)

// fakeRuntime starts anything at or above reliable. In [flakyFrom,
// reliable) every failEvery-th attempt at a limit fails (counted per
// limit, from 1); below flakyFrom everything fails.
type fakeRuntime struct {
	reliable, flakyFrom int64
	failEvery           int
	calls               map[int64]int
	total               int
}

func (f *fakeRuntime) probe(_ context.Context, limit int64) (Outcome, error) {
	if f.calls == nil {
		f.calls = map[int64]int{}
	}
	f.calls[limit]++
	f.total++
	switch {
	case limit >= f.reliable:
		return Outcome{OK: true}, nil
	case f.flakyFrom > 0 && limit >= f.flakyFrom && f.calls[limit]%f.failEvery != 0:
		return Outcome{OK: true}, nil
	}
	return Outcome{Reason: fmt.Sprintf("init OOM-killed at %d", limit)}, nil
}

// here is the search the command uses by default.
var here = Search{Min: 256 * Ki, Max: 64 * Mi, Step: 128 * Ki, Attempts: 3, Confirm: 3}

func TestSearch(t *testing.T) {
	for name, tc := range map[string]struct {
		s          Search
		rt         fakeRuntime
		want       int64
		wantFailed int64
		atMin      bool
	}{
		"threshold on the grid":  {s: here, rt: fakeRuntime{reliable: 2 * Mi}, want: 2 * Mi, wantFailed: 2*Mi - 128*Ki},
		"threshold off the grid": {s: here, rt: fakeRuntime{reliable: 2*Mi + 1}, want: 2*Mi + 128*Ki, wantFailed: 2 * Mi},
		"threshold at max":       {s: here, rt: fakeRuntime{reliable: 64 * Mi}, want: 64 * Mi, wantFailed: 64*Mi - 128*Ki},
		"everything starts":      {s: here, rt: fakeRuntime{reliable: 1}, want: 256 * Ki, atMin: true},
		"max off the grid": {s: Search{Min: 256 * Ki, Max: 1_000_000, Step: 128 * Ki, Attempts: 2, Confirm: 1},
			rt: fakeRuntime{reliable: 999_999}, want: 1_000_000, wantFailed: 256*Ki + 5*128*Ki},
		"one point": {s: Search{Min: Mi, Max: Mi, Step: Ki, Attempts: 1}, rt: fakeRuntime{reliable: 1}, want: Mi, atMin: true},
		// Near the edge a start sometimes works. The binary search's
		// rounds of 3 can pass there; confirmation must catch it.
		"flaky every 4th": {s: here, rt: fakeRuntime{reliable: 2 * Mi, flakyFrom: 1536 * Ki, failEvery: 4}, want: 2 * Mi, wantFailed: 2*Mi - 128*Ki},
		"flaky every 6th": {s: here, rt: fakeRuntime{reliable: 2 * Mi, flakyFrom: 1536 * Ki, failEvery: 6}, want: 2 * Mi, wantFailed: 2*Mi - 128*Ki},
		"flaky every 2nd": {s: here, rt: fakeRuntime{reliable: 2 * Mi, flakyFrom: 256 * Ki, failEvery: 2}, want: 2 * Mi, wantFailed: 2*Mi - 128*Ki},
		// A wide flaky band: after a failed confirmation the search
		// starts again above the flaky limit.
		"wide flaky band": {s: here, rt: fakeRuntime{reliable: 6 * Mi, flakyFrom: Mi, failEvery: 5}, want: 6 * Mi, wantFailed: 6*Mi - 128*Ki},
		"flaky up to max": {s: Search{Min: Mi, Max: 2 * Mi, Step: 256 * Ki, Attempts: 3, Confirm: 3},
			rt: fakeRuntime{reliable: 2 * Mi, flakyFrom: Mi, failEvery: 6}, want: 2 * Mi, wantFailed: 2*Mi - 256*Ki},
	} {
		t.Run(name, func(t *testing.T) {
			res, err := tc.s.Run(context.Background(), tc.rt.probe)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Threshold != tc.want || res.Failed != tc.wantFailed || res.AtMin != tc.atMin {
				t.Errorf("got threshold %d failed %d atMin %v, want %d, %d, %v\nsteps: %+v",
					res.Threshold, res.Failed, res.AtMin, tc.want, tc.wantFailed, tc.atMin, res.Steps)
			}
			if tc.wantFailed != 0 && !strings.Contains(res.Reason, fmt.Sprint(tc.wantFailed)) {
				t.Errorf("reason %q is not the failure at %d", res.Reason, tc.wantFailed)
			}
			// The reported threshold passed Attempts+Confirm attempts in
			// a row, and the last round is its confirmation.
			last := res.Steps[len(res.Steps)-1]
			if !last.Confirm || last.Limit != res.Threshold || !last.Passed() || last.Attempts != tc.s.Confirm {
				t.Errorf("last round %+v is not a passed confirmation at the threshold", last)
			}
			if tc.rt.flakyFrom == 0 && len(res.Steps) > tc.s.Rounds() {
				t.Errorf("%d rounds, want at most %d", len(res.Steps), tc.s.Rounds())
			}
		})
	}
}

// Without confirmation the same flaky runtime fools the search: the flaky
// tests above would fail if confirmation did nothing.
func TestSearchWithoutConfirmationSettlesOnFlakyLimit(t *testing.T) {
	s := here
	s.Confirm = 0
	rt := fakeRuntime{reliable: 2 * Mi, flakyFrom: 1536 * Ki, failEvery: 4}
	res, err := s.Run(context.Background(), rt.probe)
	if err != nil {
		t.Fatal(err)
	}
	if res.Threshold >= 2*Mi {
		t.Fatalf("threshold %d: the fake is not flaky where the search looks; the flaky tests prove nothing", res.Threshold)
	}
}

func TestSearchFails(t *testing.T) {
	boom := errors.New("runtime went away")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for name, tc := range map[string]struct {
		s     Search
		ctx   context.Context
		probe Probe
		want  error
		msg   string
	}{
		"max does not start": {s: here, probe: (&fakeRuntime{reliable: 128 * Mi}).probe, want: ErrNoPass, msg: "init OOM-killed at 67108864"},
		"max is flaky": {s: Search{Min: Mi, Max: 2 * Mi, Step: Mi, Attempts: 3, Confirm: 3},
			probe: (&fakeRuntime{reliable: 3 * Mi, flakyFrom: Mi, failEvery: 5}).probe, want: ErrNoPass},
		"probe error aborts": {s: here, probe: func(_ context.Context, l int64) (Outcome, error) {
			if l < 10*Mi {
				return Outcome{}, boom
			}
			return Outcome{OK: true}, nil
		}, want: boom},
		"cancelled":     {s: here, ctx: cancelled, probe: (&fakeRuntime{reliable: Mi}).probe, want: context.Canceled},
		"no attempts":   {s: Search{Min: Mi, Max: 2 * Mi, Step: Ki}, msg: "attempts 0"},
		"zero step":     {s: Search{Min: Mi, Max: 2 * Mi, Attempts: 1}, msg: "step 0"},
		"max below min": {s: Search{Min: 2 * Mi, Max: Mi, Step: Ki, Attempts: 1}, msg: "below the lower bound"},
		"zero min":      {s: Search{Max: Mi, Step: Ki, Attempts: 1}, msg: "must be positive"},
		"negative confirm": {s: Search{Min: Mi, Max: 2 * Mi, Step: Ki, Attempts: 1, Confirm: -1},
			msg: "confirm -1"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			probe := tc.probe
			if probe == nil {
				probe = func(context.Context, int64) (Outcome, error) { t.Fatal("probe called"); return Outcome{}, nil }
			}
			_, err := tc.s.Run(ctx, probe)
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v is not %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestRecommend(t *testing.T) {
	for name, tc := range map[string]struct{ in, want int64 }{
		"2Mi doubles":          {2 * Mi, 4 * Mi},
		"rounds up to a MiB":   {1536*Ki + 1, 4 * Mi},
		"exact 1.5Mi":          {1536 * Ki, 3 * Mi},
		"tiny gets 1Mi":        {100, Mi},
		"zero gets 1Mi":        {0, Mi},
		"large stays doubling": {33 * Mi, 66 * Mi},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Recommend(tc.in); got != tc.want {
				t.Errorf("Recommend(%d) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

func TestSnippet(t *testing.T) {
	for name, tc := range map[string]struct {
		handler            string
		sandbox, container int64
		want               string
	}{
		"default handler": {"", 4 * Mi, 0, "sandboxMinMemory: 4Mi\n"},
		"both floors":     {"", 4 * Mi, 6 * Mi, "sandboxMinMemory: 4Mi\ncontainerMinMemory: 6Mi\n"},
		"named handler":   {"runc", 4 * Mi, 6 * Mi, "runtimeHandlers:\n  runc:\n    sandboxMinMemory: 4Mi\n    containerMinMemory: 6Mi\n"},
		"odd name quoted": {"kata qemu", 4 * Mi, 0, "runtimeHandlers:\n  \"kata qemu\":\n    sandboxMinMemory: 4Mi\n"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Snippet(tc.handler, tc.sandbox, tc.container); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
