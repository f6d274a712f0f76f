package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cri-guard/cri-guard/pkg/proxy/h2"
)

// streamDesc lets one upstream stream carry any kind of call: unary, server
// streaming, client streaming or both.
var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// handle is the UnknownServiceHandler: every call arrives here.
func (s *Server) handle(_ any, ss grpc.ServerStream) (err error) {
	start := time.Now()
	method, _ := grpc.MethodFromServerStream(ss)
	defer func() {
		if r := recover(); r != nil {
			s.opts.logger.Error("panic in call", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.panicked()
			err = status.Errorf(codes.Internal, "cri-guard: internal error in %s: %v", method, r)
		}
		if s.opts.observer != nil {
			s.opts.observer(method, status.Code(err), time.Since(start))
		}
	}()
	switch {
	case s.opts.interceptors[method] != nil:
		return s.intercept(ss, method, s.opts.interceptors[method])
	case s.unary[method]:
		return s.relayUnary(ss, method)
	default:
		return s.relayStream(ss, method)
	}
}

func (s *Server) panicked() {
	if s.opts.onPanic != nil {
		s.opts.onPanic()
	}
}

// outgoing turns the kubelet's request metadata into the upstream call's.
// The deadline and cancellation come with ctx itself.
func outgoing(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	for k := range md {
		if strings.HasPrefix(k, ":") {
			delete(md, k)
		}
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// contentSubtype is the content-subtype of the kubelet's call ("proto" for
// "application/grpc+proto"), or "" for plain "application/grpc".
func contentSubtype(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, ct := range md["content-type"] {
		if sub, ok := strings.CutPrefix(ct, "application/grpc+"); ok {
			sub, _, _ = strings.Cut(sub, ";")
			return sub
		}
	}
	return ""
}

// callOptions makes the upstream call carry the content-type that the
// kubelet's call carried, exactly: "application/grpc" unless the kubelet
// named a subtype. opts are added.
func callOptions(ctx context.Context, opts ...grpc.CallOption) []grpc.CallOption {
	if sub := contentSubtype(ctx); sub != "" {
		opts = append(opts, grpc.CallContentSubtype(sub))
	}
	return opts
}

// relayUnary forwards one unary call without decoding it.
func (s *Server) relayUnary(ss grpc.ServerStream, method string) error {
	var req, resp frame
	defer req.free()
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	var hdr, tlr metadata.MD
	ctx := ss.Context()
	err := s.conn.Invoke(outgoing(ctx), method, &req, &resp, callOptions(ctx, grpc.Header(&hdr), grpc.Trailer(&tlr))...)
	return s.reply(ss, &resp, hdr, tlr, err)
}

// intercept runs an Interceptor for one unary call.
func (s *Server) intercept(ss grpc.ServerStream, method string, ic Interceptor) error {
	var req frame
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	in := req.bytes()
	req.free()
	var hdr, tlr metadata.MD
	forward := func(ctx context.Context, body []byte) ([]byte, error) {
		var resp frame
		defer resp.free()
		in := frame{data: mem.BufferSlice{mem.SliceBuffer(body)}}
		err := s.conn.Invoke(outgoing(ctx), method, &in, &resp, callOptions(ss.Context(), grpc.Header(&hdr), grpc.Trailer(&tlr))...)
		if err != nil {
			return nil, s.upstreamError(err)
		}
		return resp.bytes(), nil
	}
	out, err := ic.Intercept(ss.Context(), in, forward)
	if err != nil {
		return s.reply(ss, nil, hdr, tlr, err)
	}
	resp := frame{data: mem.BufferSlice{mem.SliceBuffer(out)}}
	return s.reply(ss, &resp, hdr, tlr, nil)
}

// reply sends the runtime's headers, trailers and reply, or its error.
func (s *Server) reply(ss grpc.ServerStream, resp *frame, hdr, tlr metadata.MD, err error) error {
	if len(hdr) > 0 {
		_ = ss.SetHeader(hdr)
	}
	if len(tlr) > 0 {
		ss.SetTrailer(tlr)
	}
	if err != nil {
		return s.upstreamError(err)
	}
	return ss.SendMsg(resp)
}

// relayStream forwards a call of any kind, message by message, in both
// directions, without decoding.
func (s *Server) relayStream(ss grpc.ServerStream, method string) error {
	ctx, cancelCause := context.WithCancelCause(outgoing(ss.Context()))
	cancel := func() { cancelCause(context.Canceled) }
	defer cancel()
	if h2.Streaming(method) {
		// Shutdown ends it at once: such a stream never ends by itself.
		if !s.trackStream(&cancelCause) {
			return h2.StoppingStatus().Err()
		}
		defer s.untrackStream(&cancelCause)
	}
	cs, err := s.conn.NewStream(ctx, streamDesc, method, callOptions(ss.Context())...)
	if err != nil {
		if context.Cause(ctx) == errStopping {
			return h2.StoppingStatus().Err()
		}
		return s.upstreamError(err)
	}
	go s.forwardRequests(ss, cs, cancel)

	for sent := false; ; sent = true {
		var f frame
		err := cs.RecvMsg(&f)
		if err != nil {
			if !sent {
				if hdr, herr := cs.Header(); herr == nil && len(hdr) > 0 {
					_ = ss.SetHeader(hdr)
				}
			}
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			if context.Cause(ctx) == errStopping {
				return h2.StoppingStatus().Err()
			}
			return s.upstreamError(err)
		}
		if !sent {
			if hdr, herr := cs.Header(); herr == nil && len(hdr) > 0 {
				if err := ss.SendHeader(hdr); err != nil {
					f.free()
					return err
				}
			}
		}
		if err := ss.SendMsg(&f); err != nil {
			f.free()
			return err // the kubelet went away; cancel() ends the upstream call
		}
	}
}

// forwardRequests copies the kubelet's messages to the runtime until the
// kubelet half-closes. A broken kubelet stream cancels the upstream call.
func (s *Server) forwardRequests(ss grpc.ServerStream, cs grpc.ClientStream, cancel context.CancelFunc) {
	defer func() {
		if r := recover(); r != nil {
			s.opts.logger.Error("panic while forwarding requests", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.panicked()
			cancel()
		}
	}()
	for {
		var f frame
		if err := ss.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				_ = cs.CloseSend()
			} else {
				cancel()
			}
			return
		}
		if err := cs.SendMsg(&f); err != nil {
			f.free()
			// The upstream call has ended; its status reaches the kubelet
			// through RecvMsg on the other side.
			return
		}
	}
}

// upstreamError returns err as the kubelet should see it. The runtime's own
// errors pass unchanged. When the runtime cannot be reached, the error says
// which runtime, since the kubelet only knows cri-guard's socket.
func (s *Server) upstreamError(err error) error {
	return h2.RuntimeError(s.upstream, s.conn.GetState(), err)
}
