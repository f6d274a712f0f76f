// Package h2 is cri-guard's HTTP/2 frame-level forwarding core: an
// alternative to package proxy's gRPC-level relay, selected with
// "forwarding: frames" (the default).
//
// It is an HTTP/2 endpoint on both hops. Each accepted kubelet connection
// gets its own upstream connection (h2c with prior knowledge). HEADERS are
// decoded with hpack and re-encoded per direction, DATA payloads are copied
// as they are, RST_STREAM, trailers and flow control are handled per stream.
// PING frames cross as they would a byte splice (the relay never pings, so
// an ack from one peer answers the other's ping), so that they ride with the
// frames relayed anyway. The relay answers a kubelet's PING itself before
// the runtime connection exists, and whenever the runtime could count it as
// abuse (see side.relayPing: a gRPC server closes a connection that pings
// too often).
// gRPC messages of relayed calls are never decoded: only their 5-byte length
// prefixes are read, to enforce the maximum message size as gRPC does.
//
// There is no writer goroutine: a frame is usually written by the goroutine
// that read it, straight from its read buffer, and a reader flushes only
// before a read that may block, so what one read brought in leaves in one
// write (see side). Frames are queued, and copied, only when their windows
// or another writer hold them up. Sockets are read and written with raw
// system calls, waiting on the runtime's poller as net.Conn does, but
// without telling the scheduler of a call that cannot block (package
// internal/sysio).
//
// Methods with an Interceptor are answered by the core itself: it collects
// the request message, runs the Interceptor, and opens a new upstream stream
// for each forward. A ReplyFilter's calls are relayed instead, their reply
// held until its trailers; only replies holding its needle are handed to it.
//
// What it is not: a general HTTP/2 proxy (no push, no priorities, no
// HTTP/1), nor a gRPC implementation (no compression for intercepted calls,
// no retries, no keepalive pings of its own). Calls cri-guard makes itself
// (Conn) go through a small separate grpc.ClientConn.
//
// Limits: no cap on the streams it opens toward the runtime (the kubelet's
// own concurrency bounds them); calls refused by a runtime's GOAWAY are
// failed with Unavailable, not retried; the upstream connection is dialled
// on the kubelet connection's reader, which a runtime with a full accept
// queue can hold up to 5 s; a stream whose client stops reading holds up to
// its stream window (512 KiB) in the relay, so N such streams hold N times
// that, as the kubelet's own gRPC client would. Queued DATA holds its
// connection window only while more than 2 MiB is queued toward that
// connection and at most 1 MiB of it does (half the window): stalled
// streams never stop the connection's other calls.
package h2
