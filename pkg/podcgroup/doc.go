// Package podcgroup creates and removes pod cgroups the way the kubelet's
// cgroupfs driver does, below a parent of the caller's choosing: on cgroup
// v1 the directory in every hierarchy (cpuset initialised from the parent)
// with memory.limit_in_bytes, on cgroup v2 the directory with the memory
// controller enabled along the path and memory.max.
//
// cri-guard itself never writes cgroups: this package serves
// `cri-guard calibrate`, which starts throw-away pods exactly as the kubelet
// would, and the test harness. It only touches what is below the parent it
// is given.
package podcgroup
