package oom

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cri-guard/cri-guard/pkg/facts"
)

func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindPodCgroups(t *testing.T) {
	const uid = "1234-ab"
	for name, tc := range map[string]struct {
		dirs   []string
		within string
		want   []string
	}{
		"v1 cgroupfs": {
			dirs: []string{"memory/kubepods/burstable/pod" + uid + "/abc", "memory/kubepods/burstable/pod9999", "memory/system.slice/x"},
			want: []string{"/kubepods/burstable/pod" + uid},
		},
		"v2 systemd": {
			dirs: []string{"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice/cri-containerd-abc.scope", "kubepods.slice/kubepods-besteffort.slice"},
			want: []string{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice"},
		},
		"harness layout, within": {
			dirs:   []string{"memory/criguard-e2e-1/kubepods/burstable/pod" + uid, "memory/criguard-e2e-2/kubepods/burstable/pod" + uid},
			within: "/criguard-e2e-2",
			want:   []string{"/criguard-e2e-2/kubepods/burstable/pod" + uid},
		},
		"too deep": {
			dirs: []string{"memory/a/b/c/d/e/f/pod" + uid},
		},
		"none": {
			dirs: []string{"memory/kubepods"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			mkdirs(t, root, tc.dirs...)
			got, err := FindPodCgroups(root, tc.within, uid)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("FindPodCgroups = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := FindPodCgroups(t.TempDir(), "", "../x"); err == nil {
		t.Error("a uid with a slash was searched for")
	}
}

// ReadCgroup reads the evidence from fake v1 and v2 trees through
// package facts.
func TestReadCgroup(t *testing.T) {
	write := func(t *testing.T, root string, files map[string]string) {
		for n, b := range files {
			p := filepath.Join(root, n)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	const pod = "/kubepods/burstable/pod1"
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		d := "memory" + pod
		write(t, root, map[string]string{
			d + "/memory.stat":               "cache 0\nrss 0\n",
			d + "/memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
			d + "/memory.usage_in_bytes":     "1048576\n",
			d + "/memory.max_usage_in_bytes": "1052672\n",
			d + "/memory.failcnt":            "17\n",
			d + "/memory.limit_in_bytes":     "1048576\n",
		})
		got := ReadCgroup(facts.Reader{Root: root}, pod)
		want := Cgroup{Path: pod, Read: true, Version: 1, Limit: 1 << 20, Usage: 1 << 20, Peak: 1052672, Failcnt: 17, OOMKills: 3}
		if got != want {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})
	t.Run("v2 systemd", func(t *testing.T) {
		root := t.TempDir()
		const slice = "kubepods-burstable-pod1.slice"
		d := "kubepods.slice/kubepods-burstable.slice/" + slice
		write(t, root, map[string]string{
			"cgroup.controllers":  "cpu memory pids\n",
			d + "/memory.stat":    "anon 0\nfile 0\n",
			d + "/memory.max":     "16777216\n",
			d + "/memory.current": "4096\n",
			d + "/memory.peak":    "16777216\n",
			d + "/memory.events":  "low 0\nhigh 0\nmax 40\noom 2\noom_kill 2\n",
		})
		got := ReadCgroup(facts.Reader{Root: root}, slice)
		want := Cgroup{Path: "/" + d, Read: true, Version: 2, Limit: 16 << 20, Usage: 4096, Peak: 16 << 20, Failcnt: 40, OOMKills: 2, OOMEvents: 2}
		if got != want {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})
	t.Run("missing", func(t *testing.T) {
		root := t.TempDir()
		mkdirs(t, root, "memory")
		got := ReadCgroup(facts.Reader{Root: root}, pod)
		if got.Read || got.Error == "" || got.Path != pod {
			t.Errorf("got %+v", got)
		}
	})
}

func TestSystemdCgroup(t *testing.T) {
	for in, want := range map[string]string{
		"kubepods-burstable-pod1.slice:cri-containerd:abc": "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope",
		"/kubepods/pod1/abc":                   "",
		"kubepods.slice:cri-containerd:a/../b": "",
		"notaslice:cri-containerd:abc":         "",
		"kubepods.slice::abc":                  "",
	} {
		got, ok := SystemdCgroup(in)
		if got != want || ok != (want != "") {
			t.Errorf("SystemdCgroup(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
