package guard

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// A pod that cri-guard refuses is retried by the kubelet every 10 to 15
// seconds without backoff, and a container's status is asked for on every
// pod sync: one line per event would be thousands a day for one pod. So
// the log says each distinct event once, when it first happens, and then
// once per summary interval how often it repeated; the metrics keep the
// exact counts.

// eventKey is what makes an event distinct.
type eventKey struct {
	msg                        string // the log message, e.g. "policy decision"
	pod, container, what, text string // what: the action or family; text: the message or explanation
}

type eventEntry struct {
	level   slog.Level
	attrs   []any // of the first occurrence
	repeats int   // since the last summary
	seen    bool  // in this summary interval
}

// maxEvents bounds the distinct events remembered; beyond it, events are
// logged every time rather than remembered.
const maxEvents = 4096

// events logs distinct events once and summarises their repeats.
type events struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[eventKey]*eventEntry
}

func newEvents(log *slog.Logger) *events {
	return &events{log: log, m: map[eventKey]*eventEntry{}}
}

// note logs the event at once if it is new, and otherwise counts it for
// the next summary. attrs are logged after the key's.
func (e *events) note(ctx context.Context, level slog.Level, k eventKey, attrs ...any) {
	e.mu.Lock()
	if en := e.m[k]; en != nil {
		en.repeats++
		en.seen = true
		e.mu.Unlock()
		return
	}
	if len(e.m) < maxEvents {
		e.m[k] = &eventEntry{level: level, attrs: attrs, seen: true}
	}
	e.mu.Unlock()
	e.log.Log(ctx, level, k.msg, attrs...)
}

// summarize logs one line for each event that repeated since the last
// summary, with how often, and forgets the events that did not happen in
// that time: one that comes back later is logged in full again.
func (e *events) summarize(ctx context.Context, window time.Duration) {
	type line struct {
		k  eventKey
		en eventEntry
	}
	var lines []line
	e.mu.Lock()
	for k, en := range e.m {
		if en.repeats > 0 {
			lines = append(lines, line{k, *en})
		}
		if !en.seen {
			delete(e.m, k)
			continue
		}
		en.repeats, en.seen = 0, false
	}
	e.mu.Unlock()
	sort.Slice(lines, func(i, j int) bool {
		a, b := lines[i].k, lines[j].k
		if a.pod != b.pod {
			return a.pod < b.pod
		}
		if a.container != b.container {
			return a.container < b.container
		}
		if a.msg != b.msg {
			return a.msg < b.msg
		}
		return a.text < b.text
	})
	for _, l := range lines {
		attrs := append(append([]any{}, l.en.attrs...), "repeats", l.en.repeats, "window", window.String())
		e.log.Log(ctx, l.en.level, l.k.msg+" (repeated)", attrs...)
	}
}

// SummarizeEvery logs, every interval until ctx ends, how often each
// logged event (a policy decision, a rewritten status, an explained
// failure) repeated since the previous summary. Without it repeats are
// counted by the metrics only.
func (g *Guard) SummarizeEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.events.summarize(ctx, interval)
		}
	}
}
