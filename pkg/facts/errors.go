package facts

import "errors"

var (
	// ErrEscape is returned for a cgroup path that tries to leave the
	// cgroup root.
	ErrEscape = errors.New("cgroup path leaves the cgroup root")
	// ErrBadPath is returned for a cgroup path that is not one the kubelet
	// would send.
	ErrBadPath = errors.New("malformed cgroup path")
	// ErrNoMemoryController is returned when neither cgroup v1 nor v2 has a
	// memory controller under the root.
	ErrNoMemoryController = errors.New("no memory cgroup controller")
)
