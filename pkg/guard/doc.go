// Package guard joins the relay, the node's facts and the policy: it
// provides the proxy.Interceptors for the CRI methods that cri-guard
// inspects, each a thin handler that gathers facts, asks the policy, and
// forwards, refuses or rewrites the call.
//
// It holds no lock across a call to the runtime. When facts cannot be
// gathered it fails open (unless the policy says otherwise) and logs why.
package guard
