// Package metrics is cri-guard's Prometheus instrumentation and its small
// HTTP endpoint: /metrics, /healthz, /readyz and /status on one loopback
// listener.
//
// The collectors are package variables registered in Registry, so any
// package can count what it sees without plumbing:
//
//   - Requests and Latency are fed by Observe, a proxy.Observer.
//   - Decisions is fed by Record, a guard.Recorder.
//   - TranslatedErrors is for the code that turns a runtime error into an
//     explanation: call TranslatedErrors.WithLabelValues(family).Inc() once
//     per translated error, with family a short fixed word such as "oom" or
//     "cgroup" (never a message, a pod or an id: labels must stay few).
//   - Reloads counts configuration reloads by result ("success", "failure").
//   - UpstreamState and UpstreamReconnects are kept by proxy.WatchUpstream,
//     through SetUpstreamState and UpstreamReconnects.Inc.
//   - BuildInfo is set once by SetBuildInfo.
//
// It is not a tracing or logging package, and it never blocks the relay: every
// hook only increments in-memory counters.
package metrics
