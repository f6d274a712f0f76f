// Package systemd holds cri-guard's systemd units, the kubelet drop-in and
// the default configuration file that `make install` puts on a node, and
// the tests that check them with systemd-analyze verify. It has no Go code
// to import: the files are the product. See docs/operations.md.
package systemd
