package facts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFiles writes a fake cgroup tree under root.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// v1Cgroup is a cgroup v1 memory directory as the kernel shows it.
func v1Cgroup(dir, limit, oomKill string) map[string]string {
	return map[string]string{
		dir + "/memory.stat":               "cache 0\nrss 0\n",
		dir + "/memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill " + oomKill + "\n",
		dir + "/memory.usage_in_bytes":     "1048576\n",
		dir + "/memory.max_usage_in_bytes": "2531328\n",
		dir + "/memory.failcnt":            "7\n",
		dir + "/memory.limit_in_bytes":     limit + "\n",
	}
}

func v2Cgroup(dir, max, events string) map[string]string {
	return map[string]string{
		dir + "/memory.stat":    "anon 0\nfile 0\n",
		dir + "/memory.max":     max + "\n",
		dir + "/memory.current": "1048576\n",
		dir + "/memory.peak":    "2531328\n",
		dir + "/memory.events":  events,
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestMemory(t *testing.T) {
	const (
		cgroupfs = "/kubepods/burstable/pod1234"
		slice    = "kubepods-burstable-pod1234.slice"
		sliceDir = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
		events   = "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n"
	)
	for name, tc := range map[string]struct {
		files  map[string]string
		parent string
		want   Memory // Path is filled in relative to the root
		err    string
	}{
		"v1 cgroupfs, 2000 bytes read back as 0": {
			files:  v1Cgroup("memory/kubepods/burstable/pod1234", "0", "3"),
			parent: cgroupfs,
			want:   Memory{Path: "memory/kubepods/burstable/pod1234", Version: 1, Limit: 0, Usage: 1048576, Peak: 2531328, Failcnt: 7, OOMKills: 3},
		},
		"v1 systemd slice": {
			files:  v1Cgroup("memory/"+sliceDir, "12582912", "0"),
			parent: slice,
			want:   Memory{Path: "memory/" + sliceDir, Version: 1, Limit: 12582912, Usage: 1048576, Peak: 2531328, Failcnt: 7},
		},
		"v1 unlimited": {
			files:  v1Cgroup("memory/kubepods/besteffort/pod1234", "9223372036854771712", "0"),
			parent: "/kubepods/besteffort/pod1234",
			want:   Memory{Path: "memory/kubepods/besteffort/pod1234", Version: 1, Unlimited: true, Usage: 1048576, Peak: 2531328, Failcnt: 7},
		},
		"v1 hybrid host: the v1 memory controller wins": {
			files:  merge(v1Cgroup("memory/kubepods/burstable/pod1234", "4096", "0"), map[string]string{"unified/cgroup.controllers": ""}),
			parent: cgroupfs,
			want:   Memory{Path: "memory/kubepods/burstable/pod1234", Version: 1, Limit: 4096, Usage: 1048576, Peak: 2531328, Failcnt: 7},
		},
		"v1 missing cgroup": {
			files:  map[string]string{"memory/memory.stat": ""},
			parent: cgroupfs,
			err:    "read cgroup v1 memory of ROOT/memory/kubepods/burstable/pod1234: open ROOT/memory/kubepods/burstable/pod1234/memory.stat: no such file or directory",
		},
		"v2 cgroupfs": {
			files:  merge(map[string]string{"cgroup.controllers": "cpu io memory pids\n"}, v2Cgroup("kubepods/burstable/pod1234", "2097152", events)),
			parent: cgroupfs,
			want:   Memory{Path: "kubepods/burstable/pod1234", Version: 2, Limit: 2097152, Usage: 1048576, Peak: 2531328, Failcnt: 9, OOMKills: 1, OOMEvents: 2},
		},
		"v2 systemd unlimited": {
			files:  merge(map[string]string{"cgroup.controllers": "memory\n"}, v2Cgroup(sliceDir, "max", events)),
			parent: slice,
			want:   Memory{Path: sliceDir, Version: 2, Unlimited: true, Usage: 1048576, Peak: 2531328, Failcnt: 9, OOMKills: 1, OOMEvents: 2},
		},
		"v2 without memory.max is unknown, not 0": {
			files:  map[string]string{"cgroup.controllers": "memory\n", "kubepods/burstable/pod1234/memory.current": "1\n"},
			parent: cgroupfs,
			err:    "read cgroup v2 memory of ROOT/kubepods/burstable/pod1234: stat ROOT/kubepods/burstable/pod1234/memory.max: no such file or directory",
		},
		"no memory controller": {
			files:  map[string]string{"cgroup.controllers": "cpu io\n"},
			parent: cgroupfs,
			err:    "no memory cgroup controller under ROOT",
		},
		"escape with ..": {
			files:  v1Cgroup("memory/kubepods", "0", "0"),
			parent: "/kubepods/../../etc",
			err:    `cgroup path leaves the cgroup root: "/kubepods/../../etc"`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, tc.files)
			got, err := Reader{Root: root}.Memory(tc.parent)
			if tc.err != "" {
				want := strings.ReplaceAll(tc.err, "ROOT", root)
				if err == nil || err.Error() != want {
					t.Fatalf("got %v\nwant %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Path = filepath.Join(root, tc.want.Path)
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestUnreadableIsAnError(t *testing.T) {
	if os.Getuid() == 0 {
		// Root reads through file modes; an unreadable file is simulated
		// by a directory where the file should be.
		root := t.TempDir()
		files := v1Cgroup("memory/kubepods/pod1", "0", "0")
		delete(files, "memory/kubepods/pod1/memory.limit_in_bytes")
		writeFiles(t, root, files)
		os.MkdirAll(filepath.Join(root, "memory/kubepods/pod1/memory.limit_in_bytes"), 0o755)
		_, err := Reader{Root: root}.Memory("/kubepods/pod1")
		if err == nil {
			t.Fatal("an unreadable limit was read")
		}
	}
}

func TestResolveParent(t *testing.T) {
	for name, tc := range map[string]struct {
		in, want string
		err      error
	}{
		"cgroupfs":            {in: "/kubepods/burstable/pod1", want: "/kubepods/burstable/pod1"},
		"cgroupfs, no slash":  {in: "kubepods/pod1", want: "/kubepods/pod1"},
		"trailing slash":      {in: "/kubepods/pod1/", want: "/kubepods/pod1"},
		"systemd":             {in: "kubepods-besteffort-pod1.slice", want: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice"},
		"systemd top":         {in: "kubepods.slice", want: "/kubepods.slice"},
		"systemd root":        {in: "-.slice", want: "/"},
		"systemd full path":   {in: "/kubepods.slice/kubepods-pod1.slice", want: "/kubepods.slice/kubepods-pod1.slice"},
		"dotdot":              {in: "/kubepods/../..", err: ErrEscape},
		"dotdot at the start": {in: "../x", err: ErrEscape},
		"empty":               {in: "", err: ErrBadPath},
		"nul":                 {in: "/a\x00b", err: ErrBadPath},
		"too long":            {in: "/" + strings.Repeat("a", 5000), err: ErrBadPath},
		"empty slice part":    {in: "kubepods--pod1.slice", err: ErrBadPath},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ResolveParent(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %q, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func FuzzResolveParent(f *testing.F) {
	for _, s := range []string{"/kubepods/burstable/pod1", "kubepods-burstable-pod1.slice", "../..", "/a/./../b", "-.slice", "a-.slice"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ResolveParent(in)
		if err != nil {
			if got != "" {
				t.Fatalf("error with a path: %q", got)
			}
			return
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("%q resolved to a relative path %q", in, got)
		}
		for _, e := range strings.Split(got, "/") {
			if e == ".." {
				t.Fatalf("%q resolved to %q, which leaves the root", in, got)
			}
		}
	})
}
