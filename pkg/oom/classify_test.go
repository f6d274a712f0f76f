package oom

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecordedErrors classifies every recorded runtime error under
// testdata/: the file name says the family, <family>--<source>.txt.
func TestRecordedErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) < 10 {
		t.Fatalf("recorded errors: %d files, %v", len(files), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := strings.Cut(name, "--")
			if want == "none" {
				want = ""
			}
			m := Classify(string(b))
			if string(m.Family) != want {
				t.Errorf("Classify = %q, want %q", m.Family, want)
			}
			if m.Family != None && !strings.Contains(string(b), m.Phrase) {
				t.Errorf("phrase %q is not in the text", m.Phrase)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	for name, tc := range map[string]struct {
		text string
		want Match
	}{
		"runc init oom": {
			text: "runc create failed: unable to start container process: container init was OOM-killed (memory limit too low?): unknown",
			want: Match{Family: InitOOMKilled, Phrase: "container init was OOM-killed (memory limit too low?)", Limit: -1, Usage: -1, Peak: -1},
		},
		"runc exec": {
			text: "exec failed: read init-p: connection reset by peer (possibly OOM-killed)",
			want: Match{Family: ExecOOMKilled, Phrase: "(possibly OOM-killed)", Limit: -1, Usage: -1, Peak: -1},
		},
		"runc update": {
			text: "unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896)",
			want: Match{Family: LimitBelowUsage, Phrase: "unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896)", Limit: 2000, Usage: 221184, Peak: 2256896},
		},
		"runc mkdir": {
			text: "unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod1/abc: cannot allocate memory: unknown",
			want: Match{Family: CgroupNoMemory, Phrase: "unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod1/abc: cannot allocate memory", Limit: -1, Usage: -1, Peak: -1},
		},
		"read parent": {
			text: `container init caused \"read parent: connection reset by peer\"`,
			want: Match{Family: InitDied, Phrase: "read parent: connection reset by peer", Limit: -1, Usage: -1, Peak: -1},
		},
		"final child rc95": {
			text: "process_linux.go:402: getting the final child's pid from pipe caused: EOF: unknown",
			want: Match{Family: InitDied, Phrase: "getting the final child's pid from pipe caused: EOF", Limit: -1, Usage: -1, Peak: -1},
		},
		"crun oom": {
			text: "crun: OOM: the memory limit could be too low: read from the init process",
			want: Match{Family: InitOOMKilled, Phrase: "OOM: the memory limit could be too low", Limit: -1, Usage: -1, Peak: -1},
		},
		"enomem elsewhere": {
			text: "failed to allocate buffer: cannot allocate memory",
			want: Match{Family: None, Limit: -1, Usage: -1, Peak: -1},
		},
		"empty": {
			want: Match{Family: None, Limit: -1, Usage: -1, Peak: -1},
		},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Classify(tc.text); got != tc.want {
				t.Errorf("Classify(%q)\n got %+v\nwant %+v", tc.text, got, tc.want)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Add("unable to set memory limit to 99999999999999999999999 (current usage: 1, peak usage: 2)")
	f.Fuzz(func(t *testing.T, s string) {
		m := Classify(s)
		if m.Family != None && !strings.Contains(s, m.Phrase) {
			t.Fatalf("phrase %q not in input", m.Phrase)
		}
		if msg, ok := Explain(Subject{Pod: "ns/p"}, m, Evidence{OOMBefore: -1}); ok && msg == "" {
			t.Fatal("claimed with an empty message")
		}
		MatchRecord(s, "/kubepods/pod1")
	})
}
