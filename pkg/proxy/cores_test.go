package proxy

import "testing"

// testCore is the forwarding core that newCore builds; forEachCore runs a
// test once per core. Tests in this package do not run in parallel.
var testCore = ForwardingGRPC

func forEachCore(t *testing.T, f func(t *testing.T)) {
	for _, c := range []string{ForwardingGRPC, ForwardingFrames} {
		t.Run(c, func(t *testing.T) {
			prev := testCore
			testCore = c
			defer func() { testCore = prev }()
			f(t)
		})
	}
}

func newCore(upstream string, opts ...Option) (Core, error) {
	return NewCore(testCore, upstream, opts...)
}
