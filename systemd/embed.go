package systemd

import _ "embed"

// KubeletDropin is 10-cri-guard.conf, the kubelet drop-in that points the
// kubelet at cri-guard's socket. `cri-guard kubelet-dropin install` writes
// these bytes; the packages ship the same file, inactive, as
// /usr/share/cri-guard/10-cri-guard.conf.
//
//go:embed 10-cri-guard.conf
var KubeletDropin []byte

// KubeletDropinName is the drop-in's file name.
const KubeletDropinName = "10-cri-guard.conf"
