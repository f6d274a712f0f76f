package proxy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cri-guard/cri-guard/pkg/proxy/h2"
)

// The hook types are defined once, in package h2, so that both forwarding
// cores take the same Interceptors.
type (
	// Forward sends an encoded request to the runtime and returns the
	// encoded reply. It is how an Interceptor reaches the forwarding core.
	Forward = h2.Forward
	// Interceptor handles the calls of one unary method instead of the
	// plain relay. Build one with Unary.
	Interceptor = h2.Interceptor
	// ReplyFilter is an Interceptor with nothing to do for a call whose
	// successful encoded reply does not contain its needle. The frame-level
	// core relays such calls as any other and runs Intercept only for
	// replies with the needle; the gRPC-level core runs it for every call.
	ReplyFilter = h2.ReplyFilter
)

// Handler intercepts one unary method. It receives the decoded request, and
// next, which forwards a request to the runtime and decodes its reply.
//
// Bytes are kept where nothing changed: if the handler passes next the very
// request it received, the kubelet's original bytes are forwarded, not a
// re-encoding; if it returns the very reply that next returned, the
// runtime's original bytes go back. So never modify a message in place:
// clone it (proto.Clone) and change the clone.
//
// Errors returned by next are the runtime's gRPC status errors; returning
// one unchanged passes it to the kubelet unchanged.
type Handler[Req, Resp proto.Message] func(ctx context.Context, req Req, next func(context.Context, Req) (Resp, error)) (Resp, error)

// Unary returns the Interceptor that runs h for method.
func Unary[Req, Resp proto.Message](method string, h Handler[Req, Resp]) Interceptor {
	return &unary[Req, Resp]{method: method, handler: h}
}

type unary[Req, Resp proto.Message] struct {
	method  string
	handler Handler[Req, Resp]
}

func (u *unary[Req, Resp]) Method() string { return u.method }

func (u *unary[Req, Resp]) Intercept(ctx context.Context, in []byte, forward Forward) ([]byte, error) {
	req := newMessage[Req]()
	if err := proto.Unmarshal(in, req); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "cri-guard: cannot decode %s request: %v", u.method, err)
	}
	var (
		raw      []byte
		received Resp
		got      bool
	)
	next := func(ctx context.Context, r Req) (Resp, error) {
		var zero Resp
		body := in
		if any(r) != any(req) {
			b, err := proto.Marshal(r)
			if err != nil {
				return zero, status.Errorf(codes.Internal, "cri-guard: cannot encode %s request: %v", u.method, err)
			}
			body = b
		}
		out, err := forward(ctx, body)
		if err != nil {
			return zero, err
		}
		resp := newMessage[Resp]()
		if err := proto.Unmarshal(out, resp); err != nil {
			return zero, status.Errorf(codes.Internal, "cri-guard: cannot decode the runtime's %s reply: %v", u.method, err)
		}
		raw, received, got = out, resp, true
		return resp, nil
	}
	resp, err := u.handler(ctx, req, next)
	if err != nil {
		return nil, err
	}
	if got && any(resp) == any(received) {
		return raw, nil
	}
	out, err := proto.Marshal(resp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "cri-guard: cannot encode %s reply: %v", u.method, err)
	}
	return out, nil
}

// newMessage returns a new, empty M. Generated message types answer
// ProtoReflect on a nil pointer, which is what the zero M is.
func newMessage[M proto.Message]() M {
	var m M
	return m.ProtoReflect().Type().New().Interface().(M)
}
