package main_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestUpstreamHealthWithoutProbe: the daemon's upstream state gauge, its
// reconnect counter, `cri-guard status` and its log follow a runtime that
// dies and comes back, with no call made and /readyz never fetched, for
// both forwarding cores.
func TestUpstreamHealthWithoutProbe(t *testing.T) {
	bin := binary(t)
	for _, core := range []string{"frames", "grpc"} {
		t.Run(core, func(t *testing.T) {
			dir := shortDir(t)
			rtPath := filepath.Join(dir, "rt.sock")
			serveRuntime := func() *grpc.Server {
				l, err := net.Listen("unix", rtPath)
				if err != nil {
					t.Fatal(err)
				}
				os.Chmod(rtPath, 0o660)
				s := grpc.NewServer()
				runtimeapi.RegisterRuntimeServiceServer(s, versionOnly{})
				go s.Serve(l) //nolint:errcheck
				t.Cleanup(s.Stop)
				return s
			}
			rt := serveRuntime()
			addr := freePort(t)
			cfg := filepath.Join(dir, "config.yaml")
			sock := "unix://" + filepath.Join(dir, "g.sock")
			os.WriteFile(cfg, []byte("listen: "+sock+"\nupstream: unix://"+rtPath+"\nmetricsListen: "+addr+"\nforwarding: "+core+"\n"), 0o644)
			d := start(t, exec.Command(bin, "serve", "--config", cfg))
			// metricsShow reads /metrics until it holds want; the deadline
			// only guards against a hang.
			metricsShow := func(want string) time.Duration {
				t.Helper()
				start := time.Now()
				for deadline := start.Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
					if resp, err := httpGetQuiet("http://" + addr + "/metrics"); err == nil && strings.Contains(resp, want+"\n") {
						return time.Since(start)
					}
					if time.Now().After(deadline) {
						t.Fatalf("/metrics did not show %q within a minute\n%s", want, d.out.String())
					}
				}
			}
			metricsShow(`cri_guard_upstream_state{state="READY"} 1`)
			rt.Stop()
			t.Logf("TRANSIENT_FAILURE %v after the runtime died", metricsShow(`cri_guard_upstream_state{state="TRANSIENT_FAILURE"} 1`).Round(time.Millisecond))
			// The timeout guards against a hang: the daemon answers /status
			// and its socket answers Unavailable at once.
			out, _ := exec.Command(bin, "status", "--config", cfg, "--timeout", "1m").CombinedOutput()
			if !regexp.MustCompile(`(?m)^upstream: +unix://` + regexp.QuoteMeta(rtPath) + ` \((TRANSIENT_FAILURE|CONNECTING)\)$`).Match(out) {
				t.Errorf("status while the runtime is down:\n%s", out)
			}
			time.Sleep(1500 * time.Millisecond) // down for a while: the backoff grows to its cap
			serveRuntime()
			t.Logf("READY %v after the runtime came back", metricsShow(`cri_guard_upstream_state{state="READY"} 1`).Round(time.Millisecond))
			metricsShow(`cri_guard_upstream_reconnects_total 1`)
			d.waitLog(t, `msg="runtime answers again" upstream=unix://`+rtPath+` downtime=`)
			for _, want := range []*regexp.Regexp{
				regexp.MustCompile(`(?m)^time=\S+ level=WARN msg="runtime unreachable" upstream=unix://` + regexp.QuoteMeta(rtPath) +
					` error="dial unix ` + regexp.QuoteMeta(rtPath) + `: connect: (no such file or directory|connection refused)"$`),
				regexp.MustCompile(`(?m)^time=\S+ level=INFO msg="runtime answers again" upstream=unix://` + regexp.QuoteMeta(rtPath) + ` downtime=\d\S*s$`),
			} {
				if n := len(want.FindAllString(d.out.String(), -1)); n != 1 {
					t.Errorf("%d lines match %s, want 1:\n%s", n, want, d.out.String())
				}
			}
		})
	}
}

func httpGetQuiet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = io.Copy(&b, resp.Body)
	return b.String(), err
}
