package h2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Forward sends an encoded request to the runtime and returns the encoded
// reply (proxy.Forward).
type Forward = func(ctx context.Context, req []byte) ([]byte, error)

// Interceptor handles the calls of one unary method instead of the plain
// relay (proxy.Interceptor; proxy.Unary builds typed ones).
type Interceptor interface {
	// Method is the full gRPC method name, e.g.
	// "/runtime.v1.RuntimeService/RunPodSandbox".
	Method() string
	// Intercept handles one call: req is the kubelet's encoded request,
	// forward reaches the runtime, and the result is the encoded reply.
	Intercept(ctx context.Context, req []byte, forward Forward) ([]byte, error)
}

// ReplyFilter is an Interceptor with nothing to do for a call whose
// successful reply does not contain Needle's bytes. Such calls are relayed
// as any other, with the reply held until its trailers; only when they
// carry status OK and the reply has Needle does Intercept run, with a
// forward that returns that reply (the request it is given is not sent
// again: the runtime already answered the kubelet's). So Intercept must
// pass forward the request it received.
type ReplyFilter interface {
	Interceptor
	Needle() []byte
}

// Needles is a ReplyFilter that watches for any of several needles
// (Needle is then one of them): Intercept runs when the reply has any.
type Needles interface {
	Needles() [][]byte
}

// replyHasNeedle says whether a reply has rf's needle, or any of its
// needles.
func replyHasNeedle(rf ReplyFilter, body []byte) bool {
	if n, ok := rf.(Needles); ok {
		for _, b := range n.Needles() {
			if bytes.Contains(body, b) {
				return true
			}
		}
		return false
	}
	return bytes.Contains(body, rf.Needle())
}

// watch is the state of a relayed call whose reply a ReplyFilter watches.
type watch struct {
	rf       ReplyFilter
	mu       sync.Mutex
	req      []byte // the request as relayed (kubelet's reader)
	hdr      []hpack.HeaderField
	gotHdr   bool
	body     []byte
	released bool // the reply goes to the kubelet as it comes (runtime's reader)
}

func (w *watch) addRequest(p []byte) {
	w.mu.Lock()
	w.req = append(w.req, p...)
	w.mu.Unlock()
}

// watchHeaders takes a header block of a watched reply.
func (c *conn) watchHeaders(rs *rstream, f *http2.MetaHeadersFrame, fl *flusher) {
	w := rs.watch
	if !w.released {
		if !f.StreamEnded() && !w.gotHdr {
			w.gotHdr = true
			w.hdr = slices.Clone(f.Fields)
			return
		}
		if f.StreamEnded() && w.gotHdr && codeOf(f.Fields) == codes.OK && replyHasNeedle(w.rf, w.body) {
			rs.up.abandon(rs.u)
			tlr := slices.Clone(f.Fields)
			go c.handOver(rs, tlr)
			return
		}
		c.releaseWatch(rs, fl, false)
	}
	c.upstreamHeaders(rs, f, fl)
}

// watchData takes a DATA frame of a watched reply.
func (c *conn) watchData(up *side, rs *rstream, os *ostream, f *dataFrame, fl *flusher) {
	w := rs.watch
	if w.released {
		c.upstreamData(up, rs, os, f, fl)
		return
	}
	up.credit(fl, os, int(f.Length))
	data := f.Data()
	max := c.s.o.MaxMsgSize
	if off, size := rs.resp.feed(data, max); off >= 0 {
		c.finish(rs, tooLarge(size, max), nil, fl)
		return
	}
	w.body = append(w.body, data...)
	if f.StreamEnded() {
		// No trailers: as a relayed call, the kubelet's client reports it.
		c.releaseWatch(rs, fl, true)
		up.abandon(os)
	}
}

// releaseWatch sends what the watch held to the kubelet: the reply goes on
// as a relayed one.
func (c *conn) releaseWatch(rs *rstream, fl *flusher, end bool) {
	w := rs.watch
	w.released = true
	c.mu.Lock()
	if rs.done {
		c.mu.Unlock()
		return
	}
	if w.gotHdr {
		rs.respHeaders = true
	}
	rs.done = end
	c.mu.Unlock()
	if w.gotHdr {
		c.k.pushHeaders(fl, rs.k, w.hdr, false)
	}
	if len(w.body) > 0 || end {
		c.k.push(fl, rs.k, item{kind: kData, data: w.body, end: end})
	}
	w.hdr, w.body = nil, nil
	if end {
		c.streamDone(rs, codes.Internal)
	}
}

// handOver runs a ReplyFilter for a call whose reply has its needle.
func (c *conn) handOver(rs *rstream, tlr []hpack.HeaderField) {
	defer c.recoverClose() // a panic while writing the reply
	w := rs.watch
	ctx, cancel, ok := c.interceptContext(rs)
	if !ok {
		return
	}
	defer cancel()
	w.mu.Lock()
	req := w.req
	w.mu.Unlock()
	out, err := c.safely(rs, func() ([]byte, error) {
		msg, st := unframe(req, "request")
		if st != nil {
			return nil, st.Err()
		}
		reply, st := unframe(w.body, "reply")
		if st != nil {
			return nil, st.Err()
		}
		return w.rf.Intercept(ctx, msg, func(context.Context, []byte) ([]byte, error) { return reply, nil })
	})
	c.reply(rs, out, err, metadataOf(w.hdr), metadataOf(tlr))
}

// safely runs an Interceptor's work; a panic becomes Internal, as in the
// gRPC core, and is counted.
func (c *conn) safely(rs *rstream, f func() ([]byte, error)) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.s.o.Logger.Error("panic in call", "method", rs.method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			c.s.panicked()
			out, err = nil, status.Errorf(codes.Internal, "cri-guard: internal error in %s: %v", rs.method, r)
		}
	}()
	return f()
}

// interceptContext is the context of an intercepted call: the kubelet's
// deadline and metadata. ok is false when the call already ended.
func (c *conn) interceptContext(rs *rstream) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	if rs.deadline.IsZero() {
		ctx, cancel = context.WithCancel(c.ctx)
	} else {
		ctx, cancel = context.WithDeadline(c.ctx, rs.deadline) // from grpc-timeout, when the call came in
	}
	c.mu.Lock()
	if rs.done {
		c.mu.Unlock()
		cancel()
		return nil, nil, false
	}
	rs.cancel = cancel
	c.mu.Unlock()
	return metadata.NewIncomingContext(ctx, metadataOf(rs.fields)), cancel, true
}

// startIntercept runs the Interceptor for a call whose request is complete.
func (c *conn) startIntercept(rs *rstream) {
	ctx, cancel, ok := c.interceptContext(rs)
	if !ok {
		return
	}
	go func() {
		defer c.recoverClose() // a panic while writing the reply
		defer cancel()
		var hdr, tlr metadata.MD
		out, err := c.safely(rs, func() ([]byte, error) {
			msg, st := unframe(rs.body, "request")
			rs.body = nil
			if st != nil {
				return nil, st.Err()
			}
			forward := func(ctx context.Context, body []byte) ([]byte, error) {
				return c.forward(ctx, rs, body, &hdr, &tlr)
			}
			return rs.ic.Intercept(ctx, msg, forward)
		})
		c.reply(rs, out, err, hdr, tlr)
	}()
}

// unframe returns the single, uncompressed message of a gRPC body.
func unframe(b []byte, what string) ([]byte, *status.Status) {
	if len(b) < 5 {
		return nil, status.Newf(codes.Internal, "cri-guard: no %s message", what)
	}
	if b[0] != 0 {
		return nil, status.Newf(codes.Unimplemented, "cri-guard: compressed %s messages are not supported", what)
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(len(b)-5) != uint64(n) {
		return nil, status.Newf(codes.Internal, "cri-guard: malformed or more than one %s message", what)
	}
	return b[5:], nil
}

func toStatus(err error) *status.Status {
	if st, ok := status.FromError(err); ok {
		return st
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err)
	}
	return status.New(codes.Unknown, err.Error())
}

// reply sends an intercepted call's result to the kubelet.
func (c *conn) reply(rs *rstream, out []byte, err error, hdr, tlr metadata.MD) {
	if err == nil && len(out) > c.s.o.MaxMsgSize {
		err = tooLarge(uint64(len(out)), c.s.o.MaxMsgSize).Err()
	}
	if err != nil {
		st := toStatus(err)
		if len(hdr) > 0 {
			c.mu.Lock()
			if rs.done {
				c.mu.Unlock()
				return
			}
			rs.respHeaders = true
			c.mu.Unlock()
			c.k.push(nil, rs.k, item{kind: kHeaders, fields: appendMD([]hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}, hdr)})
		}
		c.finish(rs, st, tlr, nil)
		return
	}
	c.mu.Lock()
	if rs.done {
		c.mu.Unlock()
		return
	}
	rs.done = true
	rs.respHeaders = true
	c.mu.Unlock()
	body := make([]byte, 5+len(out))
	binary.BigEndian.PutUint32(body[1:5], uint32(len(out)))
	copy(body[5:], out)
	c.k.push(nil, rs.k,
		item{kind: kHeaders, fields: appendMD([]hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}, hdr)},
		item{kind: kData, data: body},
		item{kind: kHeaders, fields: appendMD([]hpack.HeaderField{{Name: "grpc-status", Value: "0"}}, tlr), end: true})
	c.streamDone(rs, codes.OK)
}

// forward sends one request of an intercepted call to the runtime on a new
// stream and collects the reply.
func (c *conn) forward(ctx context.Context, rs *rstream, body []byte, hdr, tlr *metadata.MD) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if len(body) > c.s.o.MaxMsgSize {
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: trying to send message larger than max (%d vs. %d)", len(body), c.s.o.MaxMsgSize)
	}
	up, err := c.upstream()
	if err != nil {
		return nil, c.s.unavailable(err).Err()
	}
	fs := &rstream{c: c, method: rs.method, up: up, sink: newSink(c.s.o.MaxMsgSize)}
	fs.u = &ostream{rs: fs}
	fields := make([]hpack.HeaderField, 0, len(rs.fields)+1)
	for _, f := range rs.fields {
		if f.Name != "grpc-timeout" {
			fields = append(fields, f)
		}
	}
	if d, ok := ctx.Deadline(); ok {
		fields = append(fields, hpack.HeaderField{Name: "grpc-timeout", Value: encodeTimeout(time.Until(d))})
	}
	frame := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(body)))
	copy(frame[5:], body)
	if !up.push(nil, fs.u, item{kind: kHeaders, fields: fields}, item{kind: kData, data: frame, end: true}) {
		return nil, c.s.unavailable(errors.New("connection closed")).Err()
	}
	select {
	case <-fs.sink.done:
	case <-ctx.Done():
		up.reset(nil, fs.u, http2.ErrCodeCancel)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	*hdr, *tlr = fs.sink.hdr, fs.sink.tlr
	if fs.sink.reset && fs.sink.st.Code() == codes.Canceled {
		// A runtime resets a call whose deadline passed.
		if d, ok := ctx.Deadline(); ok && !time.Now().Add(20*time.Millisecond).Before(d) {
			return nil, status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
		}
	}
	if fs.sink.st.Code() != codes.OK {
		return nil, fs.sink.st.Err()
	}
	return fs.sink.msg, nil
}

// sink collects the reply of a forward.
type sink struct {
	max      int
	done     chan struct{}
	mu       sync.Mutex
	finished bool
	reset    bool // the runtime reset the stream
	gotHdr   bool
	buf      []byte
	parse    msgParser
	hdr, tlr metadata.MD
	st       *status.Status
	msg      []byte
}

func newSink(max int) *sink { return &sink{max: max, done: make(chan struct{})} }

func (s *sink) end(st *status.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return
	}
	s.finished = true
	s.st = st
	if st.Code() == codes.OK {
		msg, bad := unframe(s.buf, "reply")
		if bad != nil {
			s.st = bad
		}
		s.msg = msg
	}
	close(s.done)
}

func (s *sink) fail(st *status.Status) { s.end(st) }

// headers takes a header block; true means the stream should be reset.
func (s *sink) headers(fields []hpack.HeaderField, end bool) bool {
	if !s.gotHdr {
		s.gotHdr = true
		if !end {
			s.hdr = metadataOf(fields)
			return false
		}
	}
	if !end {
		s.end(status.New(codes.Internal, "cri-guard: the runtime sent headers twice"))
		return true
	}
	s.tlr = metadataOf(fields)
	st, ok := statusOf(fields)
	if !ok {
		st = status.New(codes.Internal, "cri-guard: the runtime's reply has no grpc-status")
	}
	s.end(st)
	return false
}

// data takes a DATA payload; true means the stream should be reset.
func (s *sink) data(p []byte, end bool) bool {
	if off, size := s.parse.feed(p, s.max); off >= 0 {
		s.end(tooLarge(size, s.max))
		return true
	}
	s.buf = append(s.buf, p...)
	if end {
		s.end(status.New(codes.Internal, "cri-guard: the runtime ended the stream without trailers"))
	}
	return false
}
