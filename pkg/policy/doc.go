// Package policy decides whether a pod sandbox or a container may start with
// the memory limit it asks for, and says why in words that the person who
// wrote the pod's manifest can act on.
//
// The package is pure: it takes facts (the request, the pod cgroup's limit as
// the node holds it, the node's settings) and returns a Decision. It does no
// gRPC and no file I/O; package facts reads the node, and package guard joins
// the two on the path of each call.
package policy
