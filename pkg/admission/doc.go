// Package admission generates a ValidatingAdmissionPolicy and its binding
// (admissionregistration.k8s.io/v1, GA in Kubernetes 1.30) that refuse at
// admission what cri-guard would refuse on the node, with the same words:
// `cri-guard admission-policy` prints them from the node's configuration
// file.
//
// The policy is CEL with the Kubernetes quantity library. It matches Pods
// (and their resize and ephemeralcontainers subresources) and the pod
// templates of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs and
// CronJobs, and checks them as package lint does: the pod cgroup's limit as
// the kubelet of Kubernetes 1.34 sets it (the containers' limits, sidecars
// and init containers by the kubelet's rule, pod-level resources, the pod
// overhead) against the sandbox floor, then each init, regular and ephemeral
// container against the container floor, in that order; its message is the
// first refusal, as the node would say it. Namespaces in exemptNamespaces
// are left out by the policy's namespaceSelector, and a pod (template)
// annotated cri-guard.io/skip: "true" passes. An update that leaves the pod
// spec as it was passes too, so that an object made before the policy can
// still be labelled, scaled or deleted.
//
// The floors of runtime handlers apply by runtimeClassName: a class is taken
// to name a handler of the same name unless Options.RuntimeClasses says
// otherwise. The policy's failurePolicy is Ignore (fail open, as the node),
// or Fail when the configuration sets failClosed.
//
// The expressions need the quantity library (Kubernetes 1.28+) and the lists
// library's indexOf (1.27+); the objects are admissionregistration.k8s.io/v1
// (1.30+).
package admission
