package oom

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRecordedErrors classifies every runtime error under testdata/: the
// file name says the family and where the text came from,
// <family>--<runtime and version>-<case>-recorded.txt for a text recorded
// on a real runtime, or -reconstructed.txt for one written from the
// runtime's source or an old report, never seen on this project's nodes.
func TestRecordedErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) < 10 {
		t.Fatalf("recorded errors: %d files, %v", len(files), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			if !strings.HasSuffix(name, "-recorded") && !strings.HasSuffix(name, "-reconstructed") {
				t.Errorf("%s: the name does not say whether the text was recorded or reconstructed", f)
			}
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
			want: Match{Family: InitOOMKilled, Phrase: "container init was OOM-killed (memory limit too low?)", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"runc exec": {
			text: "exec failed: read init-p: connection reset by peer (possibly OOM-killed)",
			want: Match{Family: ExecOOMKilled, Phrase: "(possibly OOM-killed)", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"runc update": {
			text: "unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896)",
			want: Match{Family: LimitBelowUsage, Phrase: "unable to set memory limit to 2000 (current usage: 221184, peak usage: 2256896)", Limit: 2000, Usage: 221184, Peak: 2256896, Min: -1},
		},
		"runc mkdir": {
			text: "unable to start container process: unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod1/abc: cannot allocate memory: unknown",
			want: Match{Family: CgroupNoMemory, Phrase: "unable to apply cgroup configuration: mkdir /sys/fs/cgroup/memory/kubepods/burstable/pod1/abc: cannot allocate memory", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"read parent": {
			text: `container init caused \"read parent: connection reset by peer\"`,
			want: Match{Family: InitDied, Phrase: "read parent: connection reset by peer", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"final child rc95": {
			text: "process_linux.go:402: getting the final child's pid from pipe caused: EOF: unknown",
			want: Match{Family: InitDied, Phrase: "getting the final child's pid from pipe caused: EOF", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"crun oom": {
			text: "crun: OOM: the memory limit could be too low: read from the init process",
			want: Match{Family: InitOOMKilled, Phrase: "OOM: the memory limit could be too low", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"cri-o 1.36.3 resize below usage": {
			text: "memory validation failed: cannot decrease memory limit to 2000 bytes: current usage is 516096 bytes",
			want: Match{Family: LimitBelowUsage, Phrase: "cannot decrease memory limit to 2000 bytes: current usage is 516096 bytes", Limit: 2000, Usage: 516096, Peak: -1, Min: -1},
		},
		"cri-o 1.36.3 pod floor": {
			text: "pod set memory limit 1048576 too low; should be at least 12582912 bytes",
			want: Match{Family: BelowRuntimeMinimum, Phrase: "set memory limit 1048576 too low; should be at least 12582912 bytes", Limit: 1048576, Usage: -1, Peak: -1, Min: 12582912},
		},
		"cri-o 1.36.3 container floor": {
			text: "set memory limit 2000 too low; should be at least 12582912 bytes",
			want: Match{Family: BelowRuntimeMinimum, Phrase: "set memory limit 2000 too low; should be at least 12582912 bytes", Limit: 2000, Usage: -1, Peak: -1, Min: 12582912},
		},
		"docker 20.10.24 minimum": {
			text: `failed to update container "abc": Error response from daemon: Minimum memory limit allowed is 6MB`,
			want: Match{Family: BelowRuntimeMinimum, Phrase: "Minimum memory limit allowed is 6MB", Limit: -1, Usage: -1, Peak: -1, Min: 6 << 20},
		},
		"docker minimum beyond int64": {
			text: "Minimum memory limit allowed is 99999999999999999MB",
			want: Match{Family: BelowRuntimeMinimum, Phrase: "Minimum memory limit allowed is 99999999999999999MB", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"docker stopped process": {
			text: `failed to start sandbox container for pod "g3m1": Error response from daemon: cannot start a stopped process: unknown`,
			want: Match{Family: StoppedBeforeStart, Phrase: "cannot start a stopped process", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"runc systemd scope failed": {
			text: "runc create failed: unable to start container process: unable to apply cgroup configuration: unable to start unit \"cri-containerd-abc.scope\" (properties [{Name:Description Value:\"libcontainer container abc\"}]): error creating systemd unit `cri-containerd-abc.scope`: got `failed`: unknown",
			want: Match{Family: CgroupUnitFailed, Phrase: "unable to start unit \"cri-containerd-abc.scope\" (properties [{Name:Description Value:\"libcontainer container abc\"}]): error creating systemd unit `cri-containerd-abc.scope`: got `failed`", Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"systemd scope that started": {
			text: "unable to start unit \"cri-containerd-abc.scope\": got `done`",
			want: Match{Family: None, Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"enomem elsewhere": {
			text: "failed to allocate buffer: cannot allocate memory",
			want: Match{Family: None, Limit: -1, Usage: -1, Peak: -1, Min: -1},
		},
		"empty": {
			want: Match{Family: None, Limit: -1, Usage: -1, Peak: -1, Min: -1},
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
