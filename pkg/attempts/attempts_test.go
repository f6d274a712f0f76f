package attempts

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// clock is a Store's time, moved by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newStore(max int, ttl time.Duration) (*Store, *clock) {
	c := &clock{t: time.Date(2026, 12, 1, 19, 40, 0, 0, time.UTC)}
	s := New(max, ttl)
	s.now = c.now
	return s, c
}

func refused(ns, name, uid string, attempt uint32) Attempt {
	return Attempt{Namespace: ns, Name: name, UID: uid, Attempt: attempt, Outcome: Refused, Code: "InvalidArgument",
		Message: "pod " + ns + "/" + name + ": memory limit 2000 bytes is below the 12Mi minimum"}
}

// uids lists what Find returned, as uid/attempt/calls.
func uids(as []Attempt) string {
	var s []string
	for _, a := range as {
		s = append(s, fmt.Sprintf("%s/%d/%d", a.UID, a.Attempt, a.Calls))
	}
	return strings.Join(s, " ")
}

func TestStore(t *testing.T) {
	type step struct {
		wait time.Duration // before the step
		add  *Attempt
	}
	add := func(a Attempt) step { return step{add: &a} }
	wait := func(d time.Duration) step { return step{wait: d} }
	for name, tc := range map[string]struct {
		max   int
		ttl   time.Duration
		steps []step
		find  string
		want  string
		len   int
	}{
		"by name": {
			steps: []step{add(refused("team-a", "tiny", "u1", 0))},
			find:  "team-a/tiny", want: "u1/0/1", len: 1,
		},
		"by uid": {
			steps: []step{add(refused("team-a", "tiny", "u1", 0))},
			find:  "u1", want: "u1/0/1", len: 1,
		},
		"no such pod: nothing": {
			steps: []step{add(refused("team-a", "tiny", "u1", 0))},
			find:  "team-a/other", want: "", len: 1,
		},
		"the kubelet's retries make one entry, the latest attempt, counted": {
			steps: []step{add(refused("team-a", "tiny", "u1", 0)), wait(time.Second), add(refused("team-a", "tiny", "u1", 1)), wait(time.Second), add(refused("team-a", "tiny", "u1", 2))},
			find:  "team-a/tiny", want: "u1/2/3", len: 1,
		},
		"one name, two uids (deleted and created again): newest first": {
			steps: []step{add(refused("team-a", "tiny", "old", 0)), wait(time.Second), add(refused("team-a", "tiny", "new", 0))},
			find:  "team-a/tiny", want: "new/0/1 old/0/1", len: 2,
		},
		"bounded: the pod called least recently goes first": {
			max: 2,
			steps: []step{add(refused("a", "p1", "u1", 0)), wait(time.Second), add(refused("a", "p2", "u2", 0)), wait(time.Second),
				add(refused("a", "p1", "u1", 1)), wait(time.Second), add(refused("a", "p3", "u3", 0))},
			find: "u2", want: "", len: 2,
		},
		"bounded: the one called again stays": {
			max: 2,
			steps: []step{add(refused("a", "p1", "u1", 0)), wait(time.Second), add(refused("a", "p2", "u2", 0)), wait(time.Second),
				add(refused("a", "p1", "u1", 1)), wait(time.Second), add(refused("a", "p3", "u3", 0))},
			find: "a/p1", want: "u1/1/2", len: 2,
		},
		"expired after the TTL": {
			ttl:   time.Minute,
			steps: []step{add(refused("a", "p1", "u1", 0)), wait(61 * time.Second)},
			find:  "u1", want: "", len: 0,
		},
		"a retry keeps it alive": {
			ttl:   time.Minute,
			steps: []step{add(refused("a", "p1", "u1", 0)), wait(50 * time.Second), add(refused("a", "p1", "u1", 1)), wait(50 * time.Second)},
			find:  "u1", want: "u1/1/2", len: 1,
		},
		"no uid: keyed by name": {
			steps: []step{add(refused("a", "p1", "", 0)), add(refused("a", "p1", "", 1))},
			find:  "a/p1", want: "/1/2", len: 1,
		},
		"empty query finds nothing": {
			steps: []step{add(refused("", "", "", 0))},
			find:  "", want: "", len: 1,
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, c := newStore(tc.max, tc.ttl)
			for _, st := range tc.steps {
				c.t = c.t.Add(st.wait)
				if st.add != nil {
					s.Add(*st.add)
				}
			}
			got := s.Find(tc.find)
			if uids(got) != tc.want {
				t.Errorf("Find(%q) = %q, want %q", tc.find, uids(got), tc.want)
			}
			// Len after Find: Find drops what expired.
			if n := s.Len(); n != tc.len {
				t.Errorf("Len = %d, want %d", n, tc.len)
			}
		})
	}
}

func TestStoreTimesAndFields(t *testing.T) {
	s, c := newStore(0, 0)
	t0 := c.t
	a := refused("team-a", "tiny", "u1", 0)
	a.CgroupParent = "/kubepods/podu1"
	s.Add(a)
	c.t = c.t.Add(10 * time.Second)
	a.Attempt = 1
	a.Outcome, a.Code, a.Message = Failed, "Unknown", "runc failed"
	s.Add(a)
	got := s.Find("u1")
	want := Attempt{Namespace: "team-a", Name: "tiny", UID: "u1", Attempt: 1, CgroupParent: "/kubepods/podu1", Outcome: Failed,
		Code: "Unknown", Message: "runc failed", First: t0, Last: t0.Add(10 * time.Second), Calls: 2}
	if len(got) != 1 || got[0] != want {
		t.Errorf("Find = %+v\nwant %+v", got, want)
	}
	if max, ttl := s.Bounds(); max != DefaultMax || ttl != DefaultTTL {
		t.Errorf("Bounds = %d, %v; want the defaults", max, ttl)
	}
}

func TestStoreFindIsBounded(t *testing.T) {
	s, c := newStore(0, 0)
	for i := range MaxFound + 3 {
		c.t = c.t.Add(time.Second)
		s.Add(refused("a", "same", fmt.Sprint("u", i), 0))
	}
	got := s.Find("a/same")
	if len(got) != MaxFound || got[0].UID != fmt.Sprint("u", MaxFound+2) {
		t.Errorf("Find = %s: want the %d newest, u%d first", uids(got), MaxFound, MaxFound+2)
	}
}

func TestMessageCut(t *testing.T) {
	s, _ := newStore(0, 0)
	long := strings.Repeat("é", MaxMessage) // two bytes each
	a := refused("a", "p", "u", 0)
	a.Message = long
	s.Add(a)
	m := s.Find("u")[0].Message
	if len(m) > MaxMessage || !utf8.ValidString(m) || !strings.HasSuffix(m, " …(cut)") {
		t.Errorf("message of %d bytes, valid %v, ends %q", len(m), utf8.ValidString(m), m[len(m)-12:])
	}
	if got := cut("short", MaxMessage); got != "short" {
		t.Errorf("cut(short) = %q", got)
	}
}

func TestNilStore(t *testing.T) {
	var s *Store
	s.Add(refused("a", "p", "u", 0))
	if s.Find("u") != nil || s.Len() != 0 {
		t.Error("a nil store kept something")
	}
}
