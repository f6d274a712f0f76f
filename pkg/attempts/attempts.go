package attempts

import (
	"sort"
	"sync"
	"time"
	"unicode/utf8"
)

// Outcome says who ended a RunPodSandbox call without a sandbox.
type Outcome string

const (
	// Refused: cri-guard refused the call; the runtime never saw it.
	Refused Outcome = "refused"
	// Failed: the runtime failed the call.
	Failed Outcome = "failed"
)

// Bounds of a Store made by New with zero arguments, and of what Find
// returns.
const (
	DefaultMax = 256
	DefaultTTL = time.Hour
	// MaxMessage bounds the message kept per pod.
	MaxMessage = 2048
	// MaxFound bounds what Find returns, newest first.
	MaxFound = 8
)

// Attempt is the latest RunPodSandbox call of one pod that created no
// sandbox, and how many such calls came before it.
type Attempt struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID is the pod uid the kubelet sent, the one in the pod cgroup's
	// name (for a static pod, not the mirror pod's uid that kubectl shows).
	UID          string `json:"uid"`
	Attempt      uint32 `json:"attempt"`
	CgroupParent string `json:"cgroupParent,omitempty"`
	// ConfigSource is the pod's kubernetes.io/config.source annotation:
	// "api", or "file" or "http" for a static pod.
	ConfigSource string  `json:"configSource,omitempty"`
	Outcome      Outcome `json:"outcome"`
	// Code and Message are what the kubelet was told: cri-guard's refusal,
	// or the runtime's error with cri-guard's explanation, if any, before it.
	Code    string `json:"code"`
	Message string `json:"message"`
	// First and Last are the times of the first and the latest call; Calls
	// counts them.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	Calls int       `json:"calls"`
}

// Pod is "namespace/name".
func (a Attempt) Pod() string { return a.Namespace + "/" + a.Name }

func (a Attempt) key() string {
	if a.UID != "" {
		return "uid " + a.UID
	}
	return "pod " + a.Pod()
}

// Store is a bounded set of Attempts, one per pod. A nil *Store keeps
// nothing.
type Store struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]*Attempt
}

// New returns a Store of at most max pods (DefaultMax if max <= 0), each
// forgotten ttl after its latest call (DefaultTTL if ttl <= 0).
func New(max int, ttl time.Duration) *Store {
	if max <= 0 {
		max = DefaultMax
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Store{max: max, ttl: ttl, now: time.Now, m: map[string]*Attempt{}}
}

// Bounds returns the store's limits, for a reader to say what it covers.
func (s *Store) Bounds() (max int, ttl time.Duration) {
	if s == nil {
		return 0, 0
	}
	return s.max, s.ttl
}

// Add records one call. Its First, Last and Calls are set here.
func (s *Store) Add(a Attempt) {
	if s == nil {
		return
	}
	a.Message = cut(a.Message, MaxMessage)
	now := s.now()
	a.Last, a.Calls, a.First = now, 1, now
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	k := a.key()
	if old, ok := s.m[k]; ok {
		a.First, a.Calls = old.First, old.Calls+1
	} else if len(s.m) >= s.max {
		s.evictOldest()
	}
	s.m[k] = &a
}

// Find returns the attempts of the pod named by pod, a uid or
// "namespace/name", newest first, at most MaxFound. A name can match more
// than one uid: a pod deleted and created again under the same name.
func (s *Store) Find(pod string) []Attempt {
	if s == nil || pod == "" {
		return nil
	}
	s.mu.Lock()
	s.expire(s.now())
	var out []Attempt
	for _, a := range s.m {
		if a.UID == pod || a.Pod() == pod {
			out = append(out, *a)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Last.Equal(out[j].Last) {
			return out[i].Last.After(out[j].Last)
		}
		return out[i].UID < out[j].UID
	})
	if len(out) > MaxFound {
		out = out[:MaxFound]
	}
	return out
}

// Len is how many pods the store holds.
func (s *Store) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// expire drops the entries whose latest call is older than the TTL. It is
// called with s.mu held.
func (s *Store) expire(now time.Time) {
	for k, a := range s.m {
		if now.Sub(a.Last) > s.ttl {
			delete(s.m, k)
		}
	}
}

// evictOldest drops the entry whose latest call is the oldest. It is called
// with s.mu held.
func (s *Store) evictOldest() {
	var oldest string
	for k, a := range s.m {
		if oldest == "" || a.Last.Before(s.m[oldest].Last) || (a.Last.Equal(s.m[oldest].Last) && k < oldest) {
			oldest = k
		}
	}
	delete(s.m, oldest)
}

// cut shortens s to at most n bytes, on a rune boundary, marking the cut.
func cut(s string, n int) string {
	const mark = " …(cut)"
	if len(s) <= n {
		return s
	}
	i := n - len(mark)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}
