package metrics

import (
	"context"
	"time"

	"google.golang.org/grpc/connectivity"
)

// Conn is the part of a *grpc.ClientConn that WatchUpstream follows.
type Conn interface {
	GetState() connectivity.State
	WaitForStateChange(ctx context.Context, from connectivity.State) bool
}

// Poll adapts a state getter that cannot report changes, such as
// proxy.Server.UpstreamState, into a Conn that looks every interval.
func Poll(get func() connectivity.State, interval time.Duration) Conn {
	return poller{get: get, every: interval}
}

type poller struct {
	get   func() connectivity.State
	every time.Duration
}

func (p poller) GetState() connectivity.State { return p.get() }

func (p poller) WaitForStateChange(ctx context.Context, from connectivity.State) bool {
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			if p.get() != from {
				return true
			}
		}
	}
}

var states = []connectivity.State{connectivity.Idle, connectivity.Connecting, connectivity.Ready,
	connectivity.TransientFailure, connectivity.Shutdown}

// setState makes s the one current state of UpstreamState.
func setState(s connectivity.State) {
	for _, o := range states {
		v := 0.0
		if o == s {
			v = 1
		}
		UpstreamState.WithLabelValues(o.String()).Set(v)
	}
}

// WatchUpstream keeps UpstreamState and UpstreamReconnects current until
// ctx ends or the connection shuts down. A return to READY after the
// connection had been READY before counts as a reconnect. Run it in its own
// goroutine; it holds no lock.
func WatchUpstream(ctx context.Context, c Conn) {
	s := c.GetState()
	wasReady := false
	for {
		setState(s)
		if s == connectivity.Ready {
			if wasReady {
				UpstreamReconnects.Inc()
			}
			wasReady = true
		}
		if s == connectivity.Shutdown || !c.WaitForStateChange(ctx, s) {
			return
		}
		s = c.GetState()
	}
}
