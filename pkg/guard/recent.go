package guard

import "sync"

// recentStartErrors bounds how many explanations of failed starts are
// kept: enough for every container of a busy node that keeps failing, and
// a few hundred KiB at most.
const recentStartErrors = 512

// recent is a bounded map from container id to the explanation its failed
// StartContainer got, so that the container's status can carry it. The
// oldest entry goes first. It is held only for a map operation, never
// across a call to the runtime. A restart loses it: the status is then
// explained from what the node shows, or left as the runtime gave it.
type recent struct {
	mu    sync.Mutex
	max   int
	m     map[string]string
	order []string
}

func newRecent(max int) *recent {
	return &recent{max: max, m: map[string]string{}}
}

func (r *recent) put(id, v string) {
	if r == nil || id == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[id]; !ok {
		r.order = append(r.order, id)
	}
	r.m[id] = v
	for len(r.order) > r.max {
		delete(r.m, r.order[0])
		r.order = r.order[1:]
	}
}

func (r *recent) get(id string) (string, bool) {
	if r == nil {
		return "", false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[id]
	return v, ok
}
