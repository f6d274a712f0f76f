package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/metrics"
	"github.com/cri-guard/cri-guard/pkg/policy"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// fakeRuntime answers Version and nothing else.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "fake", RuntimeVersion: "1.0", RuntimeApiVersion: "v1"}, nil
}

// startRuntime serves a fake runtime on a unix socket at path.
func startRuntime(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, fakeRuntime{})
	go s.Serve(l) //nolint:errcheck
	t.Cleanup(s.Stop)
}

// startProxy runs a proxy in front of upstream and returns a client of it.
func startProxy(t *testing.T, dir, upstream string) (*proxy.Server, runtimeapi.RuntimeServiceClient) {
	t.Helper()
	p, err := proxy.New("unix://"+upstream, proxy.WithObserver(metrics.Observe), proxy.WithReconnectBackoff(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "guard.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l) //nolint:errcheck
	t.Cleanup(func() { p.Close() })
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return p, runtimeapi.NewRuntimeServiceClient(cc)
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsAfterCallsThroughProxy(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "rt.sock")
	startRuntime(t, up)
	_, rs := startProxy(t, dir, up)
	const version = "/runtime.v1.RuntimeService/Version"
	const status = "/runtime.v1.RuntimeService/Status"
	okBefore := value(t, metrics.Requests.WithLabelValues(version, "OK"))
	unimplBefore := value(t, metrics.Requests.WithLabelValues(status, "Unimplemented"))
	ctx := context.Background()
	for range 3 {
		if _, err := rs.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rs.Status(ctx, &runtimeapi.StatusRequest{}); err == nil {
		t.Fatal("Status: want Unimplemented from the fake runtime, got nil")
	}
	if got := value(t, metrics.Requests.WithLabelValues(version, "OK")) - okBefore; got != 3 {
		t.Errorf("requests_total{Version,OK} grew by %v, want 3", got)
	}
	if got := value(t, metrics.Requests.WithLabelValues(status, "Unimplemented")) - unimplBefore; got != 1 {
		t.Errorf("requests_total{Status,Unimplemented} grew by %v, want 1", got)
	}
	metrics.Record(policy.Request{Pod: policy.Pod{Namespace: "team-a"}}, policy.Decision{Action: policy.Reject, Reason: policy.ReasonSandboxBelow})
	metrics.TranslatedErrors.WithLabelValues("oom").Inc()
	metrics.SetBuildInfo("v9.9.9", "abc", "v0.35.0", "go1.26")

	code, body := get(t, metrics.Handler(metrics.HandlerOptions{}), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`cri_guard_requests_total{code="OK",method="/runtime.v1.RuntimeService/Version"} `,
		`cri_guard_requests_total{code="Unimplemented",method="/runtime.v1.RuntimeService/Status"} `,
		`cri_guard_request_duration_seconds_bucket{method="/runtime.v1.RuntimeService/Version",le="+Inf"} `,
		`cri_guard_policy_decisions_total{action="reject",namespace="team-a",reason="sandbox-below-floor"} 1`,
		`cri_guard_translated_errors_total{family="oom"} 1`,
		`cri_guard_config_reloads_total{result="failure"} 0`,
		`cri_guard_upstream_reconnects_total `,
		`cri_guard_status_rewrites_total{reason="OOMKilled"} 0`,
		`cri_guard_build_info{commit="abc",cri_api="v0.35.0",goversion="go1.26",version="v9.9.9"} 1`,
		`process_open_fds `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestReadyzFollowsUpstream(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "rt.sock")
	p, _ := startProxy(t, dir, up) // nothing listens at up yet
	h := metrics.Handler(metrics.HandlerOptions{
		ReadyTimeout: 300 * time.Millisecond,
		Ready: func(ctx context.Context) error {
			_, err := p.CheckUpstream(ctx)
			return err
		},
	})
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: ") {
		t.Fatalf("/readyz with the runtime down: %d %q, want 503 not ready", code, body)
	}
	if code, body := get(t, h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q, want 200 ok", code, body)
	}
	startRuntime(t, up)
	deadline := time.Now().Add(time.Minute) // a hang guard
	for {
		code, body := get(t, h, "/readyz")
		if code == http.StatusOK && body == "ok\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after the runtime came up: %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestStatusEndpoint(t *testing.T) {
	h := metrics.Handler(metrics.HandlerOptions{Status: func(context.Context) any { return map[string]string{"configDigest": "sha256:x"} }})
	code, body := get(t, h, "/status")
	if code != http.StatusOK || body != "{\n  \"configDigest\": \"sha256:x\"\n}\n" {
		t.Fatalf("/status: %d %q", code, body)
	}
	if code, _ := get(t, metrics.Handler(metrics.HandlerOptions{}), "/status"); code != http.StatusNotFound {
		t.Fatalf("/status without a Status func: %d, want 404", code)
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		allow      bool
		wantErr    bool
	}{
		{"ipv4 loopback", "127.0.0.1:0", false, false},
		{"localhost", "localhost:0", false, false},
		{"every interface", ":0", false, true},
		{"unspecified ipv4", "0.0.0.0:0", false, true},
		{"every interface allowed", "0.0.0.0:0", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := metrics.Listen(tc.addr, tc.allow)
			if tc.wantErr {
				if !errors.Is(err, metrics.ErrNotLoopback) {
					t.Fatalf("Listen(%q): %v, want ErrNotLoopback", tc.addr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listen(%q): %v", tc.addr, err)
			}
			l.Close()
		})
	}
}

func TestObserveCode(t *testing.T) {
	const m = "/runtime.v1.RuntimeService/ListPodSandbox"
	latBefore := samples(t, m)
	for _, code := range []codes.Code{codes.DeadlineExceeded, codes.OK, codes.Unauthenticated, codes.Code(42)} {
		before := value(t, metrics.Requests.WithLabelValues(m, code.String()))
		// Twice: the second call uses the series the first looked up.
		metrics.Observe(m, code, time.Millisecond)
		metrics.Observe(m, code, time.Millisecond)
		if got := value(t, metrics.Requests.WithLabelValues(m, code.String())) - before; got != 2 {
			t.Errorf("%v: got %v, want 2", code, got)
		}
	}
	if got := samples(t, m) - latBefore; got != 8 {
		t.Errorf("latency samples: got %d, want 8", got)
	}
}

// samples reads the number of observations in a method's latency histogram.
func samples(t *testing.T, method string) uint64 {
	t.Helper()
	var d dto.Metric
	if err := metrics.Latency.WithLabelValues(method).(prometheus.Metric).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetHistogram().GetSampleCount()
}

// BenchmarkObserve is what every relayed call pays for its metrics.
func BenchmarkObserve(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		metrics.Observe("/runtime.v1.RuntimeService/ListPodSandbox", codes.OK, time.Millisecond)
	}
}

func TestUnknownMethodsShareOneSeries(t *testing.T) {
	before := value(t, metrics.Requests.WithLabelValues("unknown", "OK"))
	for i := 0; i < 3; i++ {
		metrics.Observe(fmt.Sprintf("/made.up.Service/Method%d", i), codes.OK, time.Millisecond)
	}
	if got := value(t, metrics.Requests.WithLabelValues("unknown", "OK")) - before; got != 3 {
		t.Fatalf("got %v, want 3", got)
	}
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("%v is neither a counter nor a gauge", m.Desc())
	return 0
}

// TestUpstreamMetricsFollowTheRuntime: the state gauge and the reconnect
// counter follow a runtime that is killed and started again, with no call
// made and nothing fetching /readyz, through both cores. Before, the gauge
// went IDLE and stayed there, and nothing was counted.
func TestUpstreamMetricsFollowTheRuntime(t *testing.T) {
	for _, core := range []string{proxy.ForwardingGRPC, proxy.ForwardingFrames} {
		t.Run(core, func(t *testing.T) {
			dir := t.TempDir()
			up := filepath.Join(dir, "rt.sock")
			stop := startStoppableRuntime(t, up)
			p, err := proxy.NewCore(core, "unix://"+up)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				proxy.WatchUpstream(ctx, p, proxy.HealthOptions{OnState: metrics.SetUpstreamState, OnReconnect: metrics.UpstreamReconnects.Inc})
			}()
			defer func() { cancel(); <-done }()
			h := metrics.Handler(metrics.HandlerOptions{})
			// waitFor reads /metrics until it shows want; the deadline only
			// guards against a hang.
			waitFor := func(want string) time.Duration {
				t.Helper()
				start := time.Now()
				for deadline := start.Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
					_, body := get(t, h, "/metrics")
					if strings.Contains(body, want+"\n") {
						return time.Since(start)
					}
					if time.Now().After(deadline) {
						t.Fatalf("/metrics did not show %q within a minute", want)
					}
				}
			}
			waitFor(`cri_guard_upstream_state{state="READY"} 1`)
			before := value(t, metrics.UpstreamReconnects)
			stop()
			d := waitFor(`cri_guard_upstream_state{state="TRANSIENT_FAILURE"} 1`)
			t.Logf("TRANSIENT_FAILURE %v after the runtime died", d.Round(time.Millisecond))
			time.Sleep(1500 * time.Millisecond) // down for a while: the backoff grows to its cap
			startRuntime(t, up)
			d = waitFor(`cri_guard_upstream_state{state="READY"} 1`)
			t.Logf("READY %v after the runtime came back", d.Round(time.Millisecond))
			// The counter follows the gauge on the watcher's goroutine:
			// wait for it to move (a hang guard), then check by how much.
			for deadline := time.Now().Add(time.Minute); value(t, metrics.UpstreamReconnects) == before && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			if got := value(t, metrics.UpstreamReconnects) - before; got != 1 {
				t.Errorf("upstream_reconnects_total grew by %v, want 1", got)
			}
		})
	}
}

// startStoppableRuntime is startRuntime with a stop that kills the runtime
// at once: its listener and socket file go, its connections close.
func startStoppableRuntime(t *testing.T, path string) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, fakeRuntime{})
	go s.Serve(l) //nolint:errcheck
	t.Cleanup(s.Stop)
	return s.Stop
}
