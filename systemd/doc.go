// Package systemd holds cri-guard's systemd units, the kubelet drop-in and
// the default configuration file that `make install` puts on a node, and
// the tests that check them with systemd-analyze verify. The files are the
// product; the only Go code is KubeletDropin, the drop-in embedded for
// `cri-guard kubelet-dropin`. See docs/operations.md.
package systemd
