package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

const namespace = "cri_guard"

// Registry holds every cri-guard collector plus the Go and process
// collectors. Handler serves it.
var Registry = prometheus.NewRegistry()

var (
	// Requests counts CRI calls relayed, by full method and gRPC code.
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "requests_total",
		Help: "CRI calls relayed, by method and gRPC status code.",
	}, []string{"method", "code"})

	// Latency is the duration of CRI calls, by full method.
	Latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "request_duration_seconds",
		Help:    "Duration of CRI calls through cri-guard, by method.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 120},
	}, []string{"method"})

	// Decisions counts policy decisions that were not a plain allow.
	Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "policy_decisions_total",
		Help: "Policy decisions other than a plain allow, by action, reason and pod namespace.",
	}, []string{"action", "reason", "namespace"})

	// Panics counts panics recovered in the relay; each failed one call
	// with Internal and left the daemon serving.
	Panics = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "panics_total",
		Help: "Panics recovered in the relay (the call got Internal; the daemon kept serving).",
	})

	// TranslatedErrors counts runtime errors that cri-guard explained, by
	// family. See the package documentation for how to use it.
	TranslatedErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "translated_errors_total",
		Help: "Runtime errors that cri-guard translated into an explanation, by family.",
	}, []string{"family"})

	// StatusRewrites counts container statuses whose message cri-guard
	// rewrote (an OOM kill, a start that failed for memory), by the
	// status's reason.
	StatusRewrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "status_rewrites_total",
		Help: "Container statuses whose message cri-guard rewrote into an explanation, by reason.",
	}, []string{"reason"})

	// Reloads counts configuration reloads by result.
	Reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "config_reloads_total",
		Help: "Configuration reloads by result.",
	}, []string{"result"})

	// UpstreamState is 1 for the current state of the connection to the
	// runtime and 0 for the others.
	UpstreamState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "upstream_state",
		Help: "State of the connection to the runtime: 1 for the current state, 0 for the others.",
	}, []string{"state"})

	// UpstreamReconnects counts the times the connection to the runtime
	// became ready again after having been ready before.
	UpstreamReconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "upstream_reconnects_total",
		Help: "Times the connection to the runtime was re-established after being lost.",
	})

	// BuildInfo is always 1; its labels describe the binary.
	BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Always 1; the labels describe the cri-guard binary.",
	}, []string{"version", "commit", "cri_api", "goversion"})
)

func init() {
	Registry.MustRegister(Requests, Latency, Decisions, TranslatedErrors, StatusRewrites, Reloads, Panics,
		UpstreamState, UpstreamReconnects, BuildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"success", "failure"} {
		Reloads.WithLabelValues(r)
	}
	for _, r := range []string{"OOMKilled", "StartError"} {
		StatusRewrites.WithLabelValues(r)
	}
	UpstreamReconnects.Add(0)
}

// Observe records one finished CRI call. It is a proxy.Observer.
//
// It runs once per relayed call, so it looks up a method's series once and
// keeps them: WithLabelValues hashes and checks its labels on every use
// (about 300 ns, 2% of the daemon's CPU per relayed call). Series are still
// created only when first used; Requests and Latency are never Reset, which
// would leave the kept series outside the vectors.
func Observe(method string, code codes.Code, elapsed time.Duration) {
	s := methods[method]
	if s == nil {
		// Anyone who reaches the socket can name any method: keep the
		// number of series bounded.
		s = methods["unknown"]
	}
	s.requests(code).Inc()
	s.latency().Observe(elapsed.Seconds())
}

// series are one method's Requests and Latency series, looked up on first
// use.
type series struct {
	method string
	lat    atomic.Pointer[prometheus.Observer]
	byCode [codes.Unauthenticated + 1]atomic.Pointer[prometheus.Counter]
}

func (s *series) requests(c codes.Code) prometheus.Counter {
	if int(c) >= len(s.byCode) {
		return Requests.WithLabelValues(s.method, c.String())
	}
	if p := s.byCode[c].Load(); p != nil {
		return *p
	}
	m := Requests.WithLabelValues(s.method, c.String())
	s.byCode[c].Store(&m)
	return m
}

func (s *series) latency() prometheus.Observer {
	if p := s.lat.Load(); p != nil {
		return *p
	}
	m := Latency.WithLabelValues(s.method)
	s.lat.Store(&m)
	return m
}

// methods holds the series of the CRI v1 methods this build knows, and of
// "unknown" for the others. The map is never written after init.
var methods = func() map[string]*series {
	m := map[string]*series{"unknown": {method: "unknown"}}
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, md := range sd.Methods {
			name := "/" + sd.ServiceName + "/" + md.MethodName
			m[name] = &series{method: name}
		}
		for _, st := range sd.Streams {
			name := "/" + sd.ServiceName + "/" + st.StreamName
			m[name] = &series{method: name}
		}
	}
	return m
}()

// Record counts one policy decision. It is a guard.Recorder.
func Record(in policy.Request, d policy.Decision) {
	Decisions.WithLabelValues(string(d.Action), string(d.Reason), in.Pod.Namespace).Inc()
}

// SetBuildInfo sets the labels of BuildInfo. Call it once at start.
func SetBuildInfo(version, commit, criAPI, goVersion string) {
	BuildInfo.Reset()
	BuildInfo.WithLabelValues(version, commit, criAPI, goVersion).Set(1)
}
