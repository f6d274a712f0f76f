// Package floorcases is the one table of manifests that the three places
// cri-guard enforces its memory floors are tested against: the node's
// policy (package policy, fed the calls the kubelet makes), the linter
// (package lint) and the admission policy (package admission, evaluated
// here by CEL and in test/apiserver by a real kube-apiserver). Each case
// says, word for word, what each of them must say.
package floorcases
