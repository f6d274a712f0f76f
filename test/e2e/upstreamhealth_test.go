package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUpstreamStateFollowsContainerd kills a real containerd and starts it
// again behind two cri-guards, one per forwarding core, with no call made
// through them and only /metrics read (never /readyz or /status): each
// one's state gauge goes out of READY and back, counts one reconnect, and
// logs one line for each change.
func TestUpstreamStateFollowsContainerd(t *testing.T) {
	_, bin := sharedRuntime(t) // for the binary
	rt := ownRuntime(t)
	type guard struct {
		core, addr string
		logs       func() string
	}
	var guards []guard
	for _, core := range []string{"frames", "grpc"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		g := startGuard(t, rt, bin, "--metrics-listen", addr, "--forwarding", core)
		guards = append(guards, guard{core, addr, g.Logs})
	}
	metricsShow := func(g guard, want string) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) { // a hang guard
			resp, err := http.Get("http://" + g.addr + "/metrics")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(b), want+"\n") {
					return time.Since(start)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /metrics did not show %q within 30s\n%s", g.core, want, g.logs())
			}
		}
	}
	for _, g := range guards {
		metricsShow(g, `cri_guard_upstream_state{state="READY"} 1`)
		metricsShow(g, `cri_guard_upstream_reconnects_total 0`)
	}
	if err := rt.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for _, g := range guards {
		metricsShow(g, `cri_guard_upstream_state{state="READY"} 0`)
		t.Logf("%s: out of READY %v after the kill", g.core, time.Since(killed).Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second) // containerd stays down a while
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := rt.Restart(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	back := time.Now() // containerd answers CRI again
	for _, g := range guards {
		metricsShow(g, `cri_guard_upstream_state{state="READY"} 1`)
		t.Logf("%s: READY %v after containerd answered again", g.core, time.Since(back).Round(time.Millisecond))
		metricsShow(g, `cri_guard_upstream_reconnects_total 1`)
	}
	ep := regexp.QuoteMeta(rt.Endpoint)
	for _, g := range guards {
		// The answer line may follow the gauge by a moment.
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(g.logs(), `msg="runtime answers again"`) && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)level=WARN msg="runtime unreachable" upstream=` + ep + ` error="dial unix \S+: connect: (no such file or directory|connection refused)"$`),
			regexp.MustCompile(`(?m)level=INFO msg="runtime answers again" upstream=` + ep + ` downtime=\d\S*s$`),
		} {
			if n := len(want.FindAllString(g.logs(), -1)); n != 1 {
				t.Errorf("%s: %d lines match %s, want 1:\n%s", g.core, n, want, g.logs())
			}
		}
		for _, l := range strings.Split(g.logs(), "\n") {
			if strings.Contains(l, "runtime unreachable") || strings.Contains(l, "runtime answers again") {
				t.Logf("%s: %s", g.core, l)
			}
		}
	}
}
