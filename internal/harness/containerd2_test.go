package harness

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseContainerdVersion(t *testing.T) {
	for name, tc := range map[string]struct {
		out     string
		version string
		major   int
		err     string
	}{
		"debian 1.6":     {out: "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n", version: "1.6.20~ds1", major: 1},
		"built 2.4.2":    {out: "containerd github.com/containerd/containerd/v2 v2.4.2 \n", version: "v2.4.2", major: 2},
		"unstamped":      {out: "containerd github.com/containerd/containerd/v2 2.4.2+unknown \n", version: "2.4.2+unknown", major: 2},
		"not containerd": {out: "runc version 1.1.5\n", err: `unexpected containerd --version output "runc version 1.1.5"`},
		"no number":      {out: "containerd github.com/containerd/containerd/v2 main \n", err: `unexpected containerd version "main"`},
		"empty":          {out: "", err: `unexpected containerd --version output ""`},
	} {
		t.Run(name, func(t *testing.T) {
			v, m, err := parseContainerdVersion(tc.out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil || v != tc.version || m != tc.major {
				t.Errorf("got %q, %d, %v; want %q, %d", v, m, err, tc.version, tc.major)
			}
		})
	}
}

func TestWithPathFirst(t *testing.T) {
	for name, tc := range map[string]struct {
		env, want []string
	}{
		"prepends": {env: []string{"A=1", "PATH=/usr/bin:/bin", "B=2"}, want: []string{"A=1", "B=2", "PATH=/c:/usr/bin:/bin"}},
		"no PATH":  {env: []string{"A=1"}, want: []string{"A=1", "PATH=/c"}},
		"empty":    {env: []string{"PATH="}, want: []string{"PATH=/c"}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := withPathFirst(tc.env, "/c"); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestContainerdBinaries(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(ContainerdDirEnv, "")
	if _, _, err := containerdBinaries(dir); err == nil || !strings.Contains(err.Error(), "no executable containerd") {
		t.Fatalf("empty dir: err = %v", err)
	}
	for _, n := range []string{"containerd", "containerd-shim-runc-v2"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d, s, err := containerdBinaries(dir)
	if err != nil || d != filepath.Join(dir, "containerd") || s != filepath.Join(dir, "containerd-shim-runc-v2") {
		t.Fatalf("got %q %q %v", d, s, err)
	}
	// The environment variable is used when the option is empty.
	t.Setenv(ContainerdDirEnv, dir)
	if d, _, err := containerdBinaries(""); err != nil || d != filepath.Join(dir, "containerd") {
		t.Errorf("from %s: got %q %v", ContainerdDirEnv, d, err)
	}
}

// TestConfigComplaints checks that a configuration containerd 2.x would
// partly ignore is caught from its log line.
func TestConfigComplaints(t *testing.T) {
	log := filepath.Join(t.TempDir(), "containerd.log")
	content := `time="2026-12-01T16:50:00Z" level=warning msg="Configuration migrated from version 3, use ` + "`containerd config migrate`" + ` to avoid migration" t="4µs"
time="2026-12-01T16:50:00Z" level=warning msg="Ignoring unknown key in TOML for plugin" error="strict mode: fields in the document are missing in the target struct" key=sandbox_image plugin=io.containerd.grpc.v1.cri
time="2026-12-01T16:50:01Z" level=info msg="containerd successfully booted in 0.1s"
`
	if err := os.WriteFile(log, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got := configComplaints(log)
	if len(got) != 1 || !strings.Contains(got[0], "key=sandbox_image") {
		t.Errorf("complaints = %q, want the one sandbox_image line", got)
	}
}
