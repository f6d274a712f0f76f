package guard

import "testing"

// The explanations kept for failed starts are bounded: the oldest goes.
func TestRecentIsBounded(t *testing.T) {
	r := newRecent(2)
	r.put("a", "1")
	r.put("b", "2")
	r.put("a", "1'") // an update keeps its place
	r.put("c", "3")
	for id, want := range map[string]string{"a": "", "b": "2", "c": "3"} {
		got, ok := r.get(id)
		if got != want || ok != (want != "") {
			t.Errorf("%s: got %q %v, want %q", id, got, ok, want)
		}
	}
	var none *recent
	none.put("x", "y")
	if _, ok := none.get("x"); ok {
		t.Error("nil recent holds something")
	}
}
