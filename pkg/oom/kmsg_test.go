package oom

import (
	"os"
	"path/filepath"
	"testing"
)

func TestShortKernelLine(t *testing.T) {
	const line = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=abc,mems_allowed=0,oom_memcg=/k/pod1,task_memcg=/k/pod1/abc,task=runc:[2:INIT],pid=42,uid=0"
	if got, want := ShortKernelLine(line), "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/k/pod1,task_memcg=/k/pod1/abc,task=runc:[2:INIT],pid=42"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := ShortKernelLine("other"); got != "other" {
		t.Errorf("got %q", got)
	}
}

func TestMatchRecord(t *testing.T) {
	const line = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=abc,mems_allowed=0,oom_memcg=/kubepods/burstable/pod1,task_memcg=/kubepods/burstable/pod1/abc,task=runc:[2:INIT],pid=42,uid=0"
	for name, tc := range map[string]struct {
		record, memcg string
		want          string
	}{
		"kmsg record":       {record: "6,2459,730652074,-;" + line + "\n", memcg: "/kubepods/burstable/pod1", want: line},
		"bare text":         {record: line, memcg: "/kubepods/burstable/pod1", want: line},
		"nested root":       {record: "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/machine/ns/kubepods/burstable/pod1,task=sh", memcg: "kubepods/burstable/pod1", want: "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/machine/ns/kubepods/burstable/pod1,task=sh"},
		"container below":   {record: "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/burstable/pod1/abc,task_memcg=/kubepods/burstable/pod1/abc", memcg: "/kubepods/burstable/pod1", want: "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/burstable/pod1/abc,task_memcg=/kubepods/burstable/pod1/abc"},
		"other pod":         {record: "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/kubepods/burstable/pod12,task_memcg=/kubepods/burstable/pod12/x", memcg: "/kubepods/burstable/pod1"},
		"not an oom line":   {record: "6,1,2,-;Memory cgroup out of memory: Killed process 1 (sh)", memcg: "/kubepods/burstable/pod1"},
		"root never":        {record: line, memcg: "/"},
		"continuation line": {record: " SUBSYSTEM=oom_memcg=/kubepods/burstable/pod1", memcg: "/kubepods/burstable/pod1"},
	} {
		t.Run(name, func(t *testing.T) {
			got, ok := MatchRecord(tc.record, tc.memcg)
			if ok != (tc.want != "") || got != tc.want {
				t.Errorf("MatchRecord = %v %q, want %q", ok, got, tc.want)
			}
		})
	}
}

// A device that cannot be opened gives no lines, and a regular file (where
// read does not return one record at a time) is read without hanging.
func TestKernelOOMLinesUnreadable(t *testing.T) {
	if got := kernelOOMLines(filepath.Join(t.TempDir(), "missing"), "/pod1", 5); got != nil {
		t.Errorf("missing device: %q", got)
	}
	f := filepath.Join(t.TempDir(), "kmsg")
	os.WriteFile(f, []byte("6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/pod1\n"), 0o644)
	if got := kernelOOMLines(f, "/pod1", 5); len(got) != 1 {
		t.Errorf("regular file: %q", got)
	}
}

// On a host where /dev/kmsg is readable, reading it ends and finds nothing
// for a cgroup that never existed.
func TestKernelOOMLinesDevice(t *testing.T) {
	if _, err := os.Stat(Kmsg); err != nil {
		t.Skip("no /dev/kmsg")
	}
	if got := KernelOOMLines("/no/such/cgroup/pod-never", 5); len(got) != 0 {
		t.Errorf("lines for a cgroup that never existed: %q", got)
	}
}

// A window gives only the records written after it was opened: a kill
// logged before the call is not the call's.
func TestKernelWindow(t *testing.T) {
	f := filepath.Join(t.TempDir(), "kmsg")
	const before = "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/pod1,task_memcg=/pod1/hog,task=hog\n"
	const during = "6,2,3,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/pod1,task_memcg=/pod1/tiny2,task=runc:[2:INIT]\n"
	if err := os.WriteFile(f, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	w := openKernelWindow(f)
	if w == nil {
		t.Fatal("window not opened")
	}
	defer w.Close()
	fh, err := os.OpenFile(f, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString(during)
	fh.Close()
	want := []string{"oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/pod1,task_memcg=/pod1/tiny2,task=runc:[2:INIT]"}
	if got := w.OOMLines("/pod1", 5); len(got) != 1 || got[0] != want[0] {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := w.OOMLines("/pod1", 5); got != nil {
		t.Errorf("read twice: %q", got)
	}
	var none *KernelWindow
	if got := none.OOMLines("/pod1", 5); got != nil {
		t.Errorf("nil window: %q", got)
	}
	none.Close()
	if openKernelWindow(filepath.Join(t.TempDir(), "missing")) != nil {
		t.Error("a window on a missing device")
	}
}

// On a host where /dev/kmsg is readable, a window opened now holds no
// line for a cgroup that never existed, and reading it ends.
func TestKernelWindowDevice(t *testing.T) {
	w := OpenKernelWindow()
	if w == nil {
		t.Skip("/dev/kmsg not readable")
	}
	defer w.Close()
	if got := w.OOMLines("/no/such/cgroup/pod-never", 5); len(got) != 0 {
		t.Errorf("lines: %q", got)
	}
}
