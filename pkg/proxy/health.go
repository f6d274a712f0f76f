package proxy

import (
	"context"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/connectivity"
)

// HealthOptions configure WatchUpstream.
type HealthOptions struct {
	// Logger gets one line when the runtime becomes unreachable (with the
	// error) and one when it answers again (with the downtime).
	Logger *slog.Logger
	// OnState is told every state of the connection to the runtime as it
	// changes; OnReconnect every return to READY after a READY before. Both
	// run on WatchUpstream's goroutine and must not block.
	OnState     func(connectivity.State)
	OnReconnect func()

	now func() time.Time // tests
}

// stateConn is what WatchUpstream needs of a *grpc.ClientConn.
type stateConn interface {
	GetState() connectivity.State
	WaitForStateChange(ctx context.Context, from connectivity.State) bool
	Connect()
}

// WatchUpstream keeps the core's own connection to the runtime (Conn)
// connected and follows its state until ctx ends or the core closes, so
// that the state, and what OnState and the log say, is the runtime's
// without anyone asking: a connection that nothing uses would otherwise go
// IDLE when the runtime goes away, and stay IDLE, whatever the runtime
// does. When the runtime goes away the connection sees it at once (its
// socket closes, or the runtime sends GOAWAY), and while it is away the
// connection tries again with a backoff capped at the core's reconnect
// backoff (one second by default), so a runtime that is back is seen
// within that. The frames core also makes the connection try at once when
// one of its kubelet connections reaches the runtime.
//
// Run it in its own goroutine. It holds no lock and makes no call to the
// runtime besides keeping the connection.
func WatchUpstream(ctx context.Context, c Core, o HealthOptions) {
	sc, ok := c.Conn().(stateConn)
	if !ok {
		return
	}
	watch(ctx, sc, c.Upstream(), c.UpstreamError, o)
}

// watch follows c. lastErr returns the last failed dial's error and how
// many dials have failed so far.
func watch(ctx context.Context, c stateConn, upstream string, lastErr func() (error, uint64), o HealthOptions) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := o.now
	if now == nil {
		now = time.Now
	}
	var (
		wasReady bool      // the runtime answered at least once
		down     time.Time // since when it has not; zero while it does
		failed   bool      // an attempt failed in this outage (logged once it had answered)
		failures int       // attempts that failed in this outage
		dialsAt  uint64    // failed dials counted when it last answered
	)
	s := c.GetState()
	for {
		if o.OnState != nil {
			o.OnState(s)
		}
		switch s {
		case connectivity.Ready:
			if wasReady && o.OnReconnect != nil {
				o.OnReconnect()
			}
			switch {
			case failed && wasReady:
				log.Info("runtime answers again", "upstream", upstream, "downtime", now().Sub(down).Round(time.Millisecond).String())
			case failed:
				// serve logged at start that it did not answer.
				log.Info("runtime answers", "upstream", upstream, "after", now().Sub(down).Round(time.Millisecond).String())
			case !down.IsZero():
				log.Info("reconnected to the runtime", "upstream", upstream, "after", now().Sub(down).Round(time.Millisecond).String())
			}
			wasReady, down, failed, failures = true, time.Time{}, false, 0
			_, dialsAt = lastErr()
		case connectivity.Idle, connectivity.Connecting:
			if wasReady && down.IsZero() {
				down = now()
			}
			if s == connectivity.Idle {
				c.Connect()
			}
		case connectivity.TransientFailure:
			if down.IsZero() {
				down = now()
			}
			failures++
			// The error is a failed dial's. An attempt can also fail after
			// its dial succeeded, as when it reaches a runtime that is
			// dying (a killed containerd's socket still accepts for a
			// moment): then the next attempt, whose dial will fail, tells
			// why; a second failure is logged whatever it was.
			err, dials := lastErr()
			if !failed && wasReady && (dials > dialsAt || failures > 1) {
				why := "the connection failed after it was made"
				if dials > dialsAt {
					why = err.Error()
				}
				log.Warn("runtime unreachable", "upstream", upstream, "error", why)
				failed = true
			}
			if !wasReady {
				failed = true
			}
		case connectivity.Shutdown:
			return
		}
		changed := false
		if s == connectivity.TransientFailure && wasReady && !failed {
			// Not logged yet: the failure came after a dial that
			// succeeded. gRPC stays in TRANSIENT_FAILURE while it tries
			// again, so look at the dials meanwhile.
			for polls := 1; !failed; polls++ {
				wctx, cancel := context.WithTimeout(ctx, tfPoll)
				changed = c.WaitForStateChange(wctx, s)
				cancel()
				if changed || ctx.Err() != nil {
					break
				}
				err, dials := lastErr()
				switch {
				case dials > dialsAt:
					log.Warn("runtime unreachable", "upstream", upstream, "error", err.Error())
					failed = true
				case polls*int(tfPoll/time.Millisecond) >= 2000:
					log.Warn("runtime unreachable", "upstream", upstream, "error", "the connection failed after it was made")
					failed = true
				}
			}
		}
		if !changed && !c.WaitForStateChange(ctx, s) {
			return
		}
		s = c.GetState()
	}
}

// tfPoll is how often WatchUpstream looks for a failed dial while the
// connection stays in TRANSIENT_FAILURE.
const tfPoll = 50 * time.Millisecond
