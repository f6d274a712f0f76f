// Package lint checks Kubernetes manifests against cri-guard's memory floors
// before they reach a cluster: the same floors, exemptions and words as the
// node, for a CI job or a pre-commit hook (`cri-guard lint`).
//
// A manifest is read as kubectl reads it (multi-document YAML, JSON, List
// kinds) into the Kubernetes API types of k8s.io/api, with the quantity
// parser of k8s.io/apimachinery. For each pod spec (a Pod's, or the pod
// template of a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or
// CronJob) the package makes the CRI calls that the kubelet of Kubernetes
// 1.34 would make for it (Calls: RunPodSandbox with the pod cgroup's limit,
// then CreateContainer for each init, regular and ephemeral container) and
// asks package policy, the node's own code, to decide each one. So a finding
// is, word for word, what cri-guard on the node would say, with the pod named
// by the object that carries it ("deployment team-a/web").
//
// What the package cannot know from a manifest: the RuntimeClass's handler
// (a runtimeClassName is taken to name a handler of the same name unless told
// otherwise) and the overhead that the RuntimeClass admission plugin adds to a
// Pod when it is created (a spec.overhead that the manifest carries is used).
package lint
