// Package h2 is cri-guard's HTTP/2 frame-level forwarding core: an
// alternative to package proxy's gRPC-level relay, selected with
// "forwarding: frames".
//
// It is an HTTP/2 endpoint on both hops. Each accepted kubelet connection
// gets its own upstream connection (h2c with prior knowledge). HEADERS are
// decoded with hpack and re-encoded per direction, DATA payloads are copied
// as they are, RST_STREAM, trailers and flow control are handled per stream.
// gRPC messages of relayed calls are never decoded: only their 5-byte length
// prefixes are read, to enforce the maximum message size as gRPC does.
// Methods with an Interceptor are answered by the core itself: it collects
// the request message, runs the Interceptor, and opens a new upstream stream
// for each forward.
//
// What it is not: a general HTTP/2 proxy (no push, no priorities, no
// HTTP/1), nor a gRPC implementation (no compression for intercepted calls,
// no retries, no keepalive pings of its own). Calls cri-guard makes itself
// (Conn) go through a small separate grpc.ClientConn.
package h2
