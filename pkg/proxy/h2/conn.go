package h2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cri-guard/cri-guard/internal/sysio"
)

// rstream is one kubelet call, or one forward of an intercepted call.
type rstream struct {
	c        *conn
	method   string
	start    time.Time
	k        *ostream // on the kubelet's side; nil for a forward
	u        *ostream // on the runtime's side
	up       *side
	fields   []hpack.HeaderField // the request's headers
	deadline time.Time

	req  msgParser // kubelet reader only
	resp msgParser // upstream reader only

	// Under c.mu.
	respHeaders bool // response HEADERS queued to the kubelet
	done        bool // the call's end was queued to the kubelet
	cancel      context.CancelFunc

	ic      Interceptor
	body    []byte
	refused bool

	sink  *sink
	watch *watch // a ReplyFilter's call
}

// conn is one kubelet connection and its connections to the runtime.
type conn struct {
	s      *Server
	nc     net.Conn
	k      *side
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	up       *side
	ups      map[*side]bool
	active   int
	draining bool
	closed   bool

	dialMu   sync.Mutex
	nextDial time.Time
	backoff  time.Duration
	lastErr  error
}

func (c *conn) serve() {
	defer c.close()
	defer func() {
		if r := recover(); r != nil {
			c.s.o.Logger.Error("panic on a kubelet connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.s.panicked()
		}
	}()
	rw := sysio.New(c.nc)
	br := bufio.NewReaderSize(rw, 64<<10)
	c.nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, pre); err != nil || string(pre) != http2.ClientPreface {
		return
	}
	c.nc.SetReadDeadline(time.Time{})
	k := newSide(c.nc, rw, false)
	c.mu.Lock()
	c.k = k
	draining := c.draining
	c.mu.Unlock()
	c.k.greet()
	if draining {
		// Drained before its preface (accepted as a shutdown or handover
		// began): GOAWAY naming no stream sends the client's calls to a
		// new connection, the successor's. Read on until the client
		// closes (a stream it opens anyway is refused, which gRPC retries
		// elsewhere): closing first could fail its writes, and its call.
		c.k.control(nil, func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCodeNo, nil) })
		c.nc.SetReadDeadline(time.Now().Add(prefaceWhileDraining))
	}
	r := newFrameReader(br)
	fl := r.fl
	defer fl.flush()
	first := true
	for {
		f, err := r.next()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) && !first {
				if os := c.k.lookup(se.StreamID); os != nil {
					c.kubeletReset(os, fl)
				}
				id := se.StreamID
				c.k.control(fl, func(fr *http2.Framer) error { return fr.WriteRSTStream(id, se.Code) })
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.k.control(nil, func(fr *http2.Framer) error { return fr.WriteGoAway(0, http2.ErrCode(ce), nil) })
				c.k.finish()
				time.Sleep(10 * time.Millisecond)
			}
			return
		}
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				return
			}
			first = false
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.k.settings(fl, f)
			}
		case *http2.PingFrame:
			c.kubeletPing(fl, f)
		case *http2.WindowUpdateFrame:
			c.k.windowUpdate(fl, f.StreamID, f.Increment)
		case *http2.MetaHeadersFrame:
			if !c.kubeletHeaders(f, fl) {
				return
			}
		case *dataFrame:
			c.kubeletData(f, fl)
		case *http2.RSTStreamFrame:
			if os := c.k.lookup(f.StreamID); os != nil {
				c.kubeletReset(os, fl)
			}
		case *http2.PushPromiseFrame:
			return
		}
	}
}

// kubeletPing relays a PING from the kubelet to the runtime, and
// upstreamPing one from the runtime to the kubelet, as a byte splice
// would. Both peers' flow-control estimators ping after every few DATA
// frames; relayed, a ping and its answer ride with the frames written
// anyway, where answering it here cost a write of its own on each hop.
// The relay never pings, so an ack from one peer answers the other's ping.
// Where the other peer cannot be reached (no runtime connection yet, or
// one going away or closed), the relay answers a ping itself; an ack then
// has nowhere to go.
func (c *conn) kubeletPing(fl *flusher, f *http2.PingFrame) {
	c.mu.Lock()
	up := c.up
	c.mu.Unlock()
	if f.IsAck() {
		if up != nil {
			up.ping(fl, true, f.Data) // the answer to a runtime's PING
		}
		return
	}
	if up == nil || !up.relayPing(fl, f.Data) {
		c.k.ping(fl, true, f.Data)
	}
}

func (c *conn) upstreamPing(up *side, fl *flusher, f *http2.PingFrame) {
	if f.IsAck() {
		up.pingAnswered()
	}
	c.mu.Lock()
	current := c.up == up
	c.mu.Unlock()
	if (!current || !c.k.ping(fl, f.IsAck(), f.Data)) && !f.IsAck() {
		up.ping(fl, true, f.Data)
	}
}

func (c *conn) recoverClose() {
	if r := recover(); r != nil {
		c.s.o.Logger.Error("panic on a connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		c.s.panicked()
		c.close()
	}
}

// close ends the kubelet connection and its runtime connections; the
// runtime sees every call on them end.
func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	ups := c.ups
	c.ups = nil
	c.up = nil
	c.mu.Unlock()
	c.cancel()
	if c.k != nil {
		c.k.close()
	} else {
		c.nc.Close()
	}
	for up := range ups {
		up.close()
	}
	c.s.forget(c)
}

// prefaceWhileDraining is how long a connection drained before its client
// preface waits for the preface, and then for the client to close.
const prefaceWhileDraining = 10 * time.Second

// drain refuses new calls, ends the streaming calls (endStreams) and
// closes the connection once the other calls in flight are done.
func (c *conn) drain() {
	c.mu.Lock()
	k := c.k
	if k == nil {
		c.draining = true
		c.mu.Unlock()
		// Its preface is not read yet: serve answers it with GOAWAY.
		// Closing it unread instead would fail the client's first write
		// ("broken pipe") and lose its call. A client that sends nothing
		// is not waited for long.
		c.nc.SetReadDeadline(time.Now().Add(prefaceWhileDraining))
		return
	}
	c.mu.Unlock()
	// The GOAWAY's last id, the streams counted in active, and the
	// streams ignored from now on (kubeletHeaders) agree: all are decided
	// under the side's lock.
	k.mu.Lock()
	c.mu.Lock()
	c.draining = true
	idle := c.active == 0
	c.mu.Unlock()
	last := k.lastID
	k.away = true
	k.mu.Unlock()
	// Not on the caller's goroutine: a kubelet that does not read must not
	// hold up a shutdown. The GOAWAY is queued before the streams' ends
	// (control frames are written first), so a client that subscribes
	// again on seeing its stream end does so on a new connection.
	go func() {
		c.k.control(nil, func(fr *http2.Framer) error { return fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
		if idle {
			c.k.finish()
			return
		}
		c.endStreams()
	}()
}

func (c *conn) streamDone(rs *rstream, code codes.Code) {
	if c.s.o.Observer != nil {
		c.s.o.Observer(rs.method, code, time.Since(rs.start))
	}
	c.mu.Lock()
	c.active--
	idle := c.draining && c.active == 0
	c.mu.Unlock()
	if idle {
		c.k.finish()
	}
}

// kubeletHeaders handles HEADERS from the kubelet; false closes the
// connection.
func (c *conn) kubeletHeaders(f *http2.MetaHeadersFrame, fl *flusher) bool {
	id := f.StreamID
	end := f.StreamEnded()
	c.k.mu.Lock()
	if os := c.k.streams[id]; os != nil {
		c.k.mu.Unlock()
		// Trailers from the client: gRPC sends none, but relay them.
		rs := os.rs
		if rs.u != nil && rs.ic == nil {
			rs.up.pushHeaders(fl, rs.u, f.Fields, end)
		}
		if end {
			c.k.recvEnded(os)
			if rs.ic != nil && !rs.refused {
				c.startIntercept(rs)
			}
		}
		return true
	}
	if id%2 == 0 || id <= c.k.lastID {
		c.k.mu.Unlock()
		return id%2 == 1 // a closed stream: ignore; an even id: protocol error
	}
	c.k.lastID = id
	if c.k.away {
		// Opened after drain's GOAWAY named a lower id: the client, on
		// reading the GOAWAY, retries it on a new connection (RFC 9113
		// 6.8). Refusing it with RST_STREAM instead could reach the client
		// before the GOAWAY, whose retry would then come back here, be
		// refused again and fail, as a second attempt (seen under load).
		c.k.mu.Unlock()
		return true
	}
	refuse := f.Truncated
	if !refuse {
		// Counted under the side's lock, which drain takes to read
		// lastID and active together: a stream at or below the id its
		// GOAWAY names is served, and the connection stays open for it.
		c.mu.Lock()
		refuse = c.draining || c.closed
		if !refuse {
			c.active++
		}
		c.mu.Unlock()
	}
	c.k.mu.Unlock()
	if refuse {
		c.k.control(fl, func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) })
		return true
	}

	rs := &rstream{c: c, method: f.PseudoValue("path"), start: time.Now()}
	for _, hf := range f.Fields {
		if hf.Name == "grpc-timeout" {
			if d, ok := parseTimeout(hf.Value); ok {
				rs.deadline = rs.start.Add(d)
			}
		}
	}
	rs.k = &ostream{rs: rs, recvEnd: end}
	c.k.mu.Lock()
	c.k.registerLocked(rs.k, id)
	c.k.mu.Unlock()
	if ic := c.s.interceptors[rs.method]; ic != nil {
		rs.fields = slices.Clone(f.Fields)
		if rf, ok := ic.(ReplyFilter); ok {
			rs.watch = &watch{rf: rf}
		} else {
			rs.ic = ic
			if end {
				c.startIntercept(rs)
			}
			return true
		}
	}
	up, err := c.upstream()
	if err != nil {
		c.finish(rs, c.s.unavailable(err), nil, fl)
		return true
	}
	rs.up = up
	rs.u = &ostream{rs: rs}
	if !up.pushHeaders(fl, rs.u, f.Fields, end) {
		c.finish(rs, c.s.unavailable(errors.New("connection closed")), nil, fl)
	}
	return true
}

func (c *conn) kubeletData(f *dataFrame, fl *flusher) {
	data := f.Data()
	n := int(f.Length)
	end := f.StreamEnded()
	os := c.k.lookupOpen(f.StreamID)
	if os == nil {
		c.k.credit(fl, nil, n)
		return
	}
	rs := os.rs
	max := c.s.o.MaxMsgSize
	if rs.ic != nil {
		c.k.credit(fl, os, n)
		if rs.refused {
			if end {
				c.k.recvEnded(os)
			}
			return
		}
		if off, size := rs.req.feed(data, max); off >= 0 {
			rs.refused = true
			c.finish(rs, tooLarge(size, max), nil, fl)
			return
		}
		rs.body = append(rs.body, data...)
		if end {
			c.k.recvEnded(os)
			c.startIntercept(rs)
		}
		return
	}
	c.mu.Lock()
	done := rs.done
	c.mu.Unlock()
	if done || rs.u == nil {
		c.k.credit(fl, os, n)
		if end {
			c.k.recvEnded(os)
		}
		return
	}
	if off, size := rs.req.feed(data, max); off >= 0 {
		c.k.credit(fl, os, n)
		rs.up.reset(fl, rs.u, http2.ErrCodeCancel)
		c.finish(rs, tooLarge(size, max), nil, fl)
		return
	}
	c.k.credit(fl, os, n-len(data))
	if rs.watch != nil {
		rs.watch.addRequest(data)
	}
	rs.up.pushData(fl, rs.u, data, end, c.k, os)
	if end {
		c.k.recvEnded(os)
	}
}

func tooLarge(size uint64, max int) *status.Status {
	return status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, max)
}

// kubeletReset handles RST_STREAM from the kubelet: the call is cancelled
// upstream.
func (c *conn) kubeletReset(os *ostream, fl *flusher) {
	c.k.abandon(os)
	rs := os.rs
	c.mu.Lock()
	done := rs.done
	rs.done = true
	cancel := rs.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if rs.u != nil {
		rs.up.reset(fl, rs.u, http2.ErrCodeCancel)
	}
	if !done {
		c.streamDone(rs, codes.Canceled)
	}
}

// finish ends a call toward the kubelet with st, unless it has ended.
func (c *conn) finish(rs *rstream, st *status.Status, md metadata.MD, fl *flusher) {
	c.mu.Lock()
	if rs.done {
		c.mu.Unlock()
		return
	}
	rs.done = true
	hdr := rs.respHeaders
	rs.respHeaders = true
	c.mu.Unlock()
	if hdr {
		c.k.push(fl, rs.k, item{kind: kHeaders, fields: appendMD(statusFields(st), md), end: true})
	} else {
		c.k.push(fl, rs.k, item{kind: kHeaders, fields: trailersOnly(st, md), end: true})
	}
	if rs.u != nil {
		rs.up.reset(fl, rs.u, http2.ErrCodeCancel)
	}
	c.streamDone(rs, st.Code())
}

// upstream returns the connection to the runtime, dialling it if needed.
func (c *conn) upstream() (*side, error) {
	c.mu.Lock()
	up := c.up
	c.mu.Unlock()
	if up != nil {
		return up, nil
	}
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	c.mu.Lock()
	up = c.up
	c.mu.Unlock()
	if up != nil {
		return up, nil
	}
	if time.Now().Before(c.nextDial) {
		return nil, c.lastErr
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	nc, err := c.s.dial(ctx)
	cancel()
	c.s.upstreamDialled(err)
	if err != nil {
		c.lastErr = err
		if c.backoff == 0 {
			c.backoff = 50 * time.Millisecond
		} else if c.backoff = c.backoff * 8 / 5; c.backoff > c.s.o.BackoffMax {
			c.backoff = c.s.o.BackoffMax
		}
		c.nextDial = time.Now().Add(c.backoff)
		return nil, err
	}
	c.backoff = 0
	up = newSide(nc, sysio.New(nc), true)
	up.bw.WriteString(http2.ClientPreface)
	up.greet()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nc.Close()
		return nil, errors.New("connection closed")
	}
	c.up = up
	c.ups[up] = true
	c.mu.Unlock()
	go c.readUpstream(up)
	return up, nil
}

func (c *conn) readUpstream(up *side) {
	why := "connection closed"
	defer func() {
		if r := recover(); r != nil {
			c.s.o.Logger.Error("panic on a runtime connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.s.panicked()
			why = fmt.Sprint("internal error: ", r)
		}
		c.upstreamClosed(up, why)
	}()
	r := newFrameReader(bufio.NewReaderSize(up.rw, 64<<10))
	fl := r.fl
	defer fl.flush()
	for {
		f, err := r.next()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if os := up.lookup(se.StreamID); os != nil {
					c.upstreamReset(up, os, se.Code, fl)
				}
				id := se.StreamID
				up.control(fl, func(fr *http2.Framer) error { return fr.WriteRSTStream(id, se.Code) })
				continue
			}
			if err != io.EOF {
				why = err.Error()
			}
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				up.settings(fl, f)
			}
		case *http2.PingFrame:
			c.upstreamPing(up, fl, f)
		case *http2.WindowUpdateFrame:
			up.windowUpdate(fl, f.StreamID, f.Increment)
		case *http2.GoAwayFrame:
			// NO_ERROR is a runtime stopping or restarting; anything else
			// (ENHANCE_YOUR_CALM too_many_pings, a protocol error) is
			// something to look into.
			lvl := slog.LevelWarn
			if f.ErrCode == http2.ErrCodeNo {
				lvl = slog.LevelInfo
			}
			c.s.o.Logger.Log(c.ctx, lvl, "the runtime sent GOAWAY", "code", f.ErrCode.String(), "debug", string(f.DebugData()), "last-stream", f.LastStreamID)
			c.upstreamGoAway(up, f.LastStreamID)
		case *http2.MetaHeadersFrame:
			up.framesIn.Add(1)
			os := up.lookup(f.StreamID)
			if os == nil {
				continue
			}
			rs := os.rs
			if f.StreamEnded() {
				up.recvEnded(os)
			}
			if rs.sink != nil {
				if rs.sink.headers(f.Fields, f.StreamEnded()) {
					up.reset(fl, os, http2.ErrCodeCancel)
				}
				continue
			}
			if rs.watch != nil {
				c.watchHeaders(rs, f, fl)
				continue
			}
			c.upstreamHeaders(rs, f, fl)
		case *dataFrame:
			up.framesIn.Add(1)
			n := int(f.Length)
			os := up.lookup(f.StreamID)
			if os == nil {
				up.credit(fl, nil, n)
				continue
			}
			rs := os.rs
			if rs.sink != nil {
				up.credit(fl, os, n)
				if f.StreamEnded() {
					up.recvEnded(os)
				}
				if rs.sink.data(f.Data(), f.StreamEnded()) {
					up.reset(fl, os, http2.ErrCodeCancel)
				}
				continue
			}
			if rs.watch != nil {
				c.watchData(up, rs, os, f, fl)
				continue
			}
			c.upstreamData(up, rs, os, f, fl)
		case *http2.RSTStreamFrame:
			if os := up.lookup(f.StreamID); os != nil {
				c.upstreamReset(up, os, f.ErrCode, fl)
			}
		}
	}
}

func (c *conn) upstreamHeaders(rs *rstream, f *http2.MetaHeadersFrame, fl *flusher) {
	end := f.StreamEnded()
	c.mu.Lock()
	if rs.done {
		c.mu.Unlock()
		return
	}
	rs.respHeaders = true
	if end {
		rs.done = true
	}
	c.mu.Unlock()
	c.k.pushHeaders(fl, rs.k, f.Fields, end)
	if end {
		rs.up.abandon(rs.u)
		c.streamDone(rs, codeOf(f.Fields))
	}
}

func (c *conn) upstreamData(up *side, rs *rstream, os *ostream, f *dataFrame, fl *flusher) {
	data := f.Data()
	n := int(f.Length)
	end := f.StreamEnded()
	c.mu.Lock()
	done := rs.done
	if end && !done {
		rs.done = true
	}
	c.mu.Unlock()
	if done {
		up.credit(fl, os, n)
		return
	}
	max := c.s.o.MaxMsgSize
	if off, size := rs.resp.feed(data, max); off >= 0 {
		up.credit(fl, os, n)
		if off > 0 {
			c.k.push(fl, rs.k, item{kind: kData, data: append([]byte(nil), data[:off]...)})
		}
		if end {
			c.mu.Lock()
			rs.done = false
			c.mu.Unlock()
		}
		c.finish(rs, tooLarge(size, max), nil, fl)
		return
	}
	up.credit(fl, os, n-len(data))
	c.k.pushData(fl, rs.k, data, end, up, os)
	if end {
		// No trailers: the kubelet's client reports the error.
		up.abandon(os)
		c.streamDone(rs, codes.Internal)
	}
}

// upstreamReset handles RST_STREAM from the runtime.
func (c *conn) upstreamReset(up *side, os *ostream, code http2.ErrCode, fl *flusher) {
	up.abandon(os)
	rs := os.rs
	if rs.sink != nil {
		rs.sink.mu.Lock()
		rs.sink.reset = true
		rs.sink.mu.Unlock()
		rs.sink.fail(status.Newf(rstCode(code), "cri-guard: the runtime reset the stream: %v", code))
		return
	}
	// As a gRPC server would: the kubelet gets a status, not a reset. A
	// runtime resets a call whose deadline passed.
	st := status.Newf(rstCode(code), "cri-guard: the runtime reset the stream: %v", code)
	if !rs.deadline.IsZero() && code == http2.ErrCodeCancel && !time.Now().Add(20*time.Millisecond).Before(rs.deadline) {
		st = status.New(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	c.finish(rs, st, nil, fl)
}

// upstreamLost fails a call whose runtime connection is gone.
func (c *conn) upstreamLost(rs *rstream, why string) {
	st := c.s.unavailable(errors.New(why))
	if rs.sink != nil {
		rs.sink.fail(st)
		return
	}
	if rs.k != nil {
		c.finish(rs, st, nil, nil)
	}
}

func (c *conn) upstreamGoAway(up *side, last uint32) {
	c.mu.Lock()
	if c.up == up {
		c.up = nil
	}
	c.mu.Unlock()
	up.mu.Lock()
	up.goaway = true
	var lost []*rstream
	for id, os := range up.streams {
		if id > last {
			lost = append(lost, os.rs)
		}
	}
	up.mu.Unlock()
	for _, rs := range lost {
		up.abandon(rs.u)
		c.upstreamLost(rs, "the runtime refused the call (GOAWAY)")
	}
}

func (c *conn) upstreamClosed(up *side, why string) {
	c.mu.Lock()
	if c.up == up {
		c.up = nil
	}
	delete(c.ups, up)
	c.mu.Unlock()
	up.close()
	up.mu.Lock()
	var lost []*rstream
	seen := map[*ostream]bool{}
	for _, os := range up.streams {
		seen[os] = true
		lost = append(lost, os.rs)
	}
	for _, os := range up.ready {
		if !seen[os] {
			lost = append(lost, os.rs)
		}
	}
	up.mu.Unlock()
	for _, rs := range lost {
		up.abandon(rs.u)
		c.upstreamLost(rs, why)
	}
}
