package proxy

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/proxy/h2"
)

// Core is what cri-guard needs of a forwarding core: the gRPC-level Server
// or the HTTP/2 frame-level one (package h2).
type Core interface {
	Serve(l net.Listener) error
	Shutdown(ctx context.Context) error
	Close() error
	Upstream() string
	Conn() grpc.ClientConnInterface
	UpstreamState() connectivity.State
	UpstreamError() (error, uint64)
	CheckUpstream(ctx context.Context) (*runtimeapi.VersionResponse, error)
}

var (
	_ Core = (*Server)(nil)
	_ Core = (*h2.Server)(nil)
)

// Forwarding names the cores for configuration.
const (
	ForwardingGRPC   = "grpc"
	ForwardingFrames = "frames"
)

// NewCore returns the core named by forwarding ("grpc" or "frames") with
// the same options.
func NewCore(forwarding, upstream string, opts ...Option) (Core, error) {
	switch forwarding {
	case ForwardingGRPC, "":
		return New(upstream, opts...)
	case ForwardingFrames:
		return NewFrames(upstream, opts...)
	}
	return nil, fmt.Errorf("unknown forwarding %q (want grpc or frames)", forwarding)
}

// NewFrames returns the HTTP/2 frame-level core (package h2), configured
// with the same options as New.
func NewFrames(upstream string, opts ...Option) (*h2.Server, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("proxy option: %w", err)
		}
	}
	ho := h2.Options{
		MaxMsgSize: o.maxMsgSize,
		Logger:     o.logger,
		Observer:   o.observer,
		OnPanic:    o.onPanic,
		BackoffMax: o.backoffMax,
		Dialer:     o.dialer,
	}
	for _, ic := range o.interceptors {
		ho.Interceptors = append(ho.Interceptors, ic)
	}
	return h2.New(upstream, ho)
}
