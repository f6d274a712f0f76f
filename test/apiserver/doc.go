// Package apiserver tests the admission policy that `cri-guard
// admission-policy` generates against a real kube-apiserver and etcd,
// which the test starts on loopback (random free ports, a temporary
// directory, certificates and keys made by the test). It is skipped unless
// CRI_GUARD_KUBE_APISERVER and CRI_GUARD_ETCD name the binaries that
// tools/k8s/build.sh builds (`make test-apiserver` sets them).
package apiserver
