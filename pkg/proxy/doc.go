// Package proxy is a transparent gRPC relay for the Container Runtime
// Interface, placed between the kubelet and a runtime such as containerd.
//
// Every call is forwarded as raw frames: the relay never decodes a message
// unless a typed Interceptor was registered for its method. Status codes,
// messages, headers, trailers, request metadata and deadlines pass through
// unchanged, and methods unknown to this build's cri-api are relayed like any
// other, so a newer kubelet keeps working.
//
// Interceptors are independent of the forwarding core: an Interceptor sees a
// decoded request and a function that forwards it, and nothing else. Two
// cores implement Core with the same options: Server (New), a gRPC-level
// relay, and package h2 (NewFrames), an HTTP/2 frame-level relay; NewCore
// picks one by name ("grpc" or "frames").
//
// The package is not a policy engine and reads nothing from the node; see
// package policy and package facts for that.
package proxy
