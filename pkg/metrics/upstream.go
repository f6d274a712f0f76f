package metrics

import (
	"google.golang.org/grpc/connectivity"
)

var states = []connectivity.State{connectivity.Idle, connectivity.Connecting, connectivity.Ready,
	connectivity.TransientFailure, connectivity.Shutdown}

// SetUpstreamState makes s the one current state of UpstreamState. It is a
// proxy.HealthOptions OnState; UpstreamReconnects.Inc is its OnReconnect.
func SetUpstreamState(s connectivity.State) {
	for _, o := range states {
		v := 0.0
		if o == s {
			v = 1
		}
		UpstreamState.WithLabelValues(o.String()).Set(v)
	}
}
