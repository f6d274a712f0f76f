package main

import (
	"fmt"
	"io"
	"strings"
)

type report struct {
	Machine string   `json:"machine"`
	Results []Result `json:"results"`
	Idle    []Idle   `json:"idle"`
	Targets []Target `json:"targets"`
}

// Target is one of issue 6's goals, compared with the splice.
type Target struct {
	Name   string  `json:"name"`
	Relay  string  `json:"relay"`
	Value  float64 `json:"value"`
	Goal   string  `json:"goal"`
	Pass   bool    `json:"pass"`
	Detail string  `json:"detail"`
}

func (r *report) find(suite, wl, relay string, c int) (Result, bool) {
	for _, x := range r.Results {
		if x.Suite == suite && x.Workload == wl && x.Relay == relay && x.Conc == c {
			return x, true
		}
	}
	return Result{}, false
}

// evaluate compares each relay with the splice on the fake runtime.
func (r *report) evaluate() {
	const wl = "ListPodSandbox-0"
	var big string
	for _, x := range r.Results {
		if strings.HasPrefix(x.Workload, "ListPodSandbox-") && x.Workload != wl {
			big = x.Workload
		}
	}
	for _, relay := range []string{"splice-raw", "naive", "cri-guard", "cri-guard-frames", "cri-guard-bin"} {
		d1, ok1 := r.find("fake", wl, "direct", 1)
		s1, ok2 := r.find("fake", wl, "splice", 1)
		g1, ok3 := r.find("fake", wl, relay, 1)
		if !ok3 {
			continue
		}
		if ok1 && ok2 {
			sa, ga := s1.P50Ms-d1.P50Ms, g1.P50Ms-d1.P50Ms
			v := ga / max(sa, 0.001)
			r.Targets = append(r.Targets, Target{"added p50, c=1 (" + wl + ")", relay, v, "<= 1.5x splice", v <= 1.5,
				fmt.Sprintf("added %.3f ms vs splice %.3f ms", ga, sa)})
		}
		s16, ok1 := r.find("fake", wl, "splice", 16)
		g16, ok2 := r.find("fake", wl, relay, 16)
		if ok1 && ok2 {
			v := g16.PerSec / s16.PerSec
			r.Targets = append(r.Targets, Target{"throughput, c=16 (" + wl + ")", relay, v, ">= 0.85x splice", v >= 0.85,
				fmt.Sprintf("%.0f/s vs splice %.0f/s", g16.PerSec, s16.PerSec)})
			v = g16.CPUUsCall / s16.CPUUsCall
			r.Targets = append(r.Targets, Target{"relay CPU per call, c=16 (" + wl + ")", relay, v, "<= 1.5x splice", v <= 1.5,
				fmt.Sprintf("%.1f µs vs splice %.1f µs", g16.CPUUsCall, s16.CPUUsCall)})
		}
		sb, ok1 := r.find("fake", big, "splice", 1)
		gb, ok2 := r.find("fake", big, relay, 1)
		if ok1 && ok2 {
			v := gb.P50Ms / sb.P50Ms
			r.Targets = append(r.Targets, Target{big + " time, c=1 p50", relay, v, "<= 1.1x splice", v <= 1.1,
				fmt.Sprintf("%.2f ms vs splice %.2f ms", gb.P50Ms, sb.P50Ms)})
		}
		small, all := 0.0, 0.0
		for _, x := range r.Results {
			if x.Relay != relay || x.Suite != "fake" {
				continue
			}
			all = max(all, x.RSSMiB)
			if x.Workload == "Version" || x.Workload == wl {
				small = max(small, x.RSSMiB)
			}
		}
		if small > 0 {
			r.Targets = append(r.Targets, Target{"peak RSS under load, small replies (Version, " + wl + ", all c)", relay, small, "<= 30 MiB", small <= 30, fmt.Sprintf("%.1f MiB", small)})
		}
		if all > 0 {
			r.Targets = append(r.Targets, Target{"peak RSS under load, every fake workload (incl. " + big + " at high c)", relay, all, "<= 30 MiB", all <= 30, fmt.Sprintf("%.1f MiB", all)})
		}
	}
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s. Relays run as child processes; ratios compare cells measured side by side in this run.\n\n", r.Machine)
	for _, suite := range []string{"fake", "containerd"} {
		first := true
		for _, x := range r.Results {
			if x.Suite != suite {
				continue
			}
			if first {
				fmt.Fprintf(w, "### %s runtime\n\n", suite)
				fmt.Fprintln(w, "| workload | c | relay | p50 ms | p99 ms | calls/s | vs splice calls/s | relay CPU µs/call | vs splice CPU | peak RSS MiB | goroutines | errors |")
				fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
				first = false
			}
			ratio, cpuRatio, cpu, rss, gor := "", "", "-", "-", "-"
			if s, ok := r.find(suite, x.Workload, "splice", x.Conc); ok && x.Relay != "splice" {
				ratio = fmt.Sprintf("%.2fx", x.PerSec/s.PerSec)
				if x.CPUUsCall >= 0 && s.CPUUsCall > 0 {
					cpuRatio = fmt.Sprintf("%.2fx", x.CPUUsCall/s.CPUUsCall)
				}
			}
			if x.CPUUsCall >= 0 {
				cpu = fmt.Sprintf("%.1f", x.CPUUsCall)
				rss = fmt.Sprintf("%.1f", x.RSSMiB)
				gor = fmt.Sprint(x.Goroutines)
				if x.Goroutines < 0 {
					gor = "n/a"
				}
			}
			fmt.Fprintf(w, "| %s | %d | %s | %.3f | %.3f | %.0f | %s | %s | %s | %s | %s | %d |\n",
				x.Workload, x.Conc, x.Relay, x.P50Ms, x.P99Ms, x.PerSec, ratio, cpu, cpuRatio, rss, gor, x.Errors)
		}
		if !first {
			fmt.Fprintln(w)
		}
	}
	if len(r.Idle) > 0 {
		fmt.Fprintln(w, "### idle footprint (fake runtime, after connecting)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| relay | RSS MiB | goroutines |")
		fmt.Fprintln(w, "|---|---:|---:|")
		for _, i := range r.Idle {
			g := fmt.Sprint(i.Goroutines)
			if i.Goroutines < 0 {
				g = "n/a"
			}
			fmt.Fprintf(w, "| %s | %.1f | %s |\n", i.Relay, i.RSSMiB, g)
		}
		fmt.Fprintln(w)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "### targets (fake runtime, relative to the splice)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | relay | value | goal | result | detail |")
		fmt.Fprintln(w, "|---|---|---:|---|---|---|")
		for _, t := range r.Targets {
			res := "MISS"
			if t.Pass {
				res = "PASS"
			}
			fmt.Fprintf(w, "| %s | %s | %.2f | %s | %s | %s |\n", t.Name, t.Relay, t.Value, t.Goal, res, t.Detail)
		}
		fmt.Fprintln(w)
	}
}
