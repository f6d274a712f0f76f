package lint

import (
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/internal/floorcases"
)

// FuzzCheck: whatever the input, Check returns (no panic, no hang) and
// every finding has a line in the input and a message.
func FuzzCheck(f *testing.F) {
	for _, c := range floorcases.Cases {
		f.Add(c.YAML)
	}
	for _, s := range []string{"", "---\n---", "{", "[1,2]", "apiVersion: v1\nkind: List\nitems: [{kind: Pod, apiVersion: v1, spec: {containers: [{resources: {limits: {memory: 1e400}}}]}}]",
		"--- {kind: Pod, apiVersion: v1}", "a: &x [*x]", "{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}{\"kind\":"} {
		f.Add(s)
	}
	pol := floorcases.Policy
	l := &Linter{Policy: &pol}
	f.Fuzz(func(t *testing.T, in string) {
		lines := strings.Count(in, "\n") + 1
		for _, fd := range l.Check("f", []byte(in)) {
			if fd.Line < 1 || fd.Line > lines || fd.Message == "" {
				t.Fatalf("finding %+v for an input of %d lines", fd, lines)
			}
		}
	})
}
