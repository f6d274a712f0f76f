package h2

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// streaming lists the CRI v1 methods whose reply is a stream that lasts as
// long as the caller wants (GetContainerEvents). A graceful stop ends them
// at once instead of waiting for them: they never end by themselves.
var streaming = func() map[string]bool {
	m := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, st := range sd.Streams {
			if st.ServerStreams {
				m["/"+sd.ServiceName+"/"+st.StreamName] = true
			}
		}
	}
	return m
}()

// Streaming tells whether method is a CRI call that streams its reply, such
// as GetContainerEvents.
func Streaming(method string) bool { return streaming[method] }

// StoppingStatus is what a streaming call gets when cri-guard stops or
// hands over to a new process: Unavailable, as when the runtime itself
// restarts, on which the kubelet's evented PLEG relists and subscribes
// again (on a new connection, which the next process answers).
func StoppingStatus() *status.Status {
	return status.New(codes.Unavailable, "cri-guard: stopping (restart or handover); subscribe again")
}

// endStreams ends every streaming call of the connection with
// StoppingStatus, and resets it toward the runtime.
func (c *conn) endStreams() {
	if c.k == nil {
		return
	}
	var open []*rstream
	c.k.mu.Lock()
	for _, os := range c.k.streams {
		if os.rs != nil && streaming[os.rs.method] {
			open = append(open, os.rs)
		}
	}
	c.k.mu.Unlock()
	for _, rs := range open {
		if rs.sink != nil {
			continue // cri-guard's own forward of an intercepted call
		}
		c.finish(rs, StoppingStatus(), nil, nil)
	}
}
