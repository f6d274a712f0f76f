package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStatusAndMetricsWithContainerd runs `cri-guard status` and scrapes
// /metrics, /readyz of a cri-guard in front of a real containerd.
func TestStatusAndMetricsWithContainerd(t *testing.T) {
	rt, bin := sharedRuntime(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	g := startGuard(t, rt, bin, "--metrics-listen", addr, "--mode", "reject")
	ctx := context.Background()
	direct, err := rt.CRI.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	rs := kubelet(t, g.Endpoint)
	for range 2 {
		if _, err := rs.Status(ctx, false); err != nil {
			t.Fatal(err)
		}
	}

	// The upstream state follows cri-guard's own connection to containerd,
	// on a goroutine of its own: the calls above do not wait for it. Wait
	// until /metrics says READY (a hang guard), then ask status.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `cri_guard_upstream_state{state="READY"} 1`+"\n") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never said READY:\n%s", g.Logs())
		}
	}
	out, err := exec.Command(bin, "status", "--listen", g.Endpoint, "--metrics-listen", addr, "--timeout", "1m").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	t.Logf("cri-guard status:\n%s", out)
	rv := regexp.QuoteMeta(direct.GetRuntimeName() + " " + direct.GetRuntimeVersion())
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^config digest: +sha256:[0-9a-f]{64}$`),
		regexp.MustCompile(`(?m)^upstream: +` + regexp.QuoteMeta(rt.Endpoint) + ` \(READY\)$`),
		regexp.MustCompile(`(?m)^runtime: +` + rv + ` \(CRI v1\)$`),
		regexp.MustCompile(`(?m)^socket: +` + regexp.QuoteMeta(g.Endpoint) + `: ` + rv + ` answers through cri-guard$`),
	} {
		if !want.Match(out) {
			t.Errorf("status output lacks %s:\n%s", want, out)
		}
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %q", code, body)
	}
	_, body := get("/metrics")
	for _, want := range []string{
		`cri_guard_requests_total{code="OK",method="/runtime.v1.RuntimeService/Status"} 2`,
		`cri_guard_upstream_state{state="READY"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
