package proxy

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzRelay sends arbitrary bytes as the request of a relayed method and of
// an intercepted one. A relayed request reaches the runtime byte for byte
// and its reply comes back byte for byte; an intercepted request that does
// not decode is InvalidArgument and never reaches the runtime.
func FuzzRelay(f *testing.F) {
	b, _ := proto.Marshal(&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "n"}}})
	for _, frames := range []bool{false, true} {
		f.Add(frames, false, []byte{})
		f.Add(frames, true, []byte{0xff, 0x01})
		f.Add(frames, true, withUnknownField(&runtimeapi.RunPodSandboxRequest{RuntimeHandler: "x"}))
		f.Add(frames, true, b)
		f.Add(frames, false, bytes.Repeat([]byte{0}, 1<<16))
	}
	const (
		relayed     = "/runtime.v1.RuntimeService/ListPodSandbox"
		intercepted = "/runtime.v1.RuntimeService/RunPodSandbox"
	)
	f.Fuzz(func(t *testing.T, frames, intercept bool, body []byte) {
		testCore = ForwardingGRPC
		if frames {
			testCore = ForwardingFrames
		}
		defer func() { testCore = ForwardingGRPC }()
		e := newEnv(t, WithInterceptors(passThrough(intercepted),
			Unary("/runtime.v1.RuntimeService/CreateContainer", func(ctx context.Context, req *runtimeapi.CreateContainerRequest, next func(context.Context, *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error)) (*runtimeapi.CreateContainerResponse, error) {
				return next(ctx, req)
			})))
		// A hang guard: a fuzz input that merely met a busy machine must not
		// be saved as a failure.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if !intercept {
			resp, err := e.call(ctx, relayed, body)
			if err != nil {
				t.Fatalf("relay: %v", err)
			}
			if got := e.fake.lastRequest(relayed); !bytes.Equal(got, body) {
				t.Fatalf("the runtime got %d bytes, sent %d", len(got), len(body))
			}
			if want := reply(relayed, append(append([]byte(nil), body...), '0')); !bytes.Equal(resp, want) {
				t.Fatalf("reply changed on the way")
			}
			return
		}
		// The typed interceptor decodes: garbage is InvalidArgument.
		const typed = "/runtime.v1.RuntimeService/CreateContainer"
		_, err := e.call(ctx, typed, body)
		decodes := proto.Unmarshal(body, &runtimeapi.CreateContainerRequest{}) == nil
		switch st := status.Convert(err); {
		case !decodes:
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "cri-guard: cannot decode "+typed+" request: ") {
				t.Fatalf("undecodable request: got %v", err)
			}
			if e.fake.lastRequest(typed) != nil {
				t.Fatal("an undecodable request reached the runtime")
			}
		default:
			// The fake's reply is not a CreateContainerResponse unless by
			// chance; either way the request arrived unchanged.
			if got := e.fake.lastRequest(typed); !bytes.Equal(got, body) {
				t.Fatalf("the runtime got a changed request (%v)", err)
			}
			if err != nil && st.Code() != codes.Internal {
				t.Fatalf("decodable request: got %v", err)
			}
		}
		// The raw interceptor forwards anything.
		if _, err := e.call(ctx, intercepted, body); err != nil {
			t.Fatalf("pass-through interceptor: %v", err)
		}
		if got := e.fake.lastRequest(intercepted); !bytes.Equal(got, body) {
			t.Fatal("the pass-through interceptor changed the request")
		}
	})
}
