package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repo is a scratch git repository for tools/pkgversion.sh.
type repo struct {
	t   *testing.T
	dir string
}

func (r repo) git(env []string, args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit makes a commit dated date (UTC) and returns its short hash.
func (r repo) commit(date string) string {
	r.t.Helper()
	os.WriteFile(filepath.Join(r.dir, "f"), []byte(date), 0o644)
	r.git(nil, "add", "f")
	env := []string{"GIT_COMMITTER_DATE=" + date + " +0000", "GIT_AUTHOR_DATE=" + date + " +0000"}
	r.git(env, "commit", "-q", "-m", date)
	return r.git(nil, "rev-parse", "--short=7", "HEAD")
}

func (r repo) version(rev ...string) string {
	r.t.Helper()
	script, _ := filepath.Abs("../tools/pkgversion.sh")
	cmd := exec.Command(script, rev...)
	cmd.Dir = r.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("pkgversion.sh: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// newer reports whether dpkg and rpm both order a before b.
func ordered(t *testing.T, a, b string) {
	t.Helper()
	if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
		t.Errorf("dpkg: %s is not lower than %s", a, b)
	}
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Logf("rpm not installed: RPM order not checked")
		return
	}
	out, err := exec.Command("rpm", "--eval", `%{lua: print(rpm.vercmp("`+a+`", "`+b+`"))}`).Output()
	if err != nil || strings.TrimSpace(string(out)) != "-1" {
		t.Errorf("rpm: vercmp(%s, %s) = %q (%v), want -1", a, b, out, err)
	}
}

func TestPkgVersion(t *testing.T) {
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not found")
	}
	r := repo{t: t, dir: t.TempDir()}
	r.git(nil, "init", "-q")
	c1 := r.commit("2026-12-01T10:00:00")
	v1 := r.version()
	if want := "0.0.0~git20261201100000." + c1; v1 != want {
		t.Fatalf("untagged: %q, want %q", v1, want)
	}
	c2 := r.commit("2026-12-01T10:00:05")
	v2 := r.version()
	if want := "0.0.0~git20261201100005." + c2; v2 != want {
		t.Fatalf("second commit: %q, want %q", v2, want)
	}
	if got := r.version(c1); got != v1 {
		t.Errorf("pkgversion.sh %s = %q, want %q", c1, got, v1)
	}
	os.WriteFile(filepath.Join(r.dir, "f"), []byte("changed"), 0o644)
	dirty := r.version()
	if dirty != v2+".dirty" {
		t.Errorf("dirty tree: %q, want %q", dirty, v2+".dirty")
	}
	r.git(nil, "checkout", "-q", "f")
	r.git(nil, "tag", "v1.2.0-rc1")
	rc := r.version()
	if rc != "1.2.0~rc1" {
		t.Errorf("at tag v1.2.0-rc1: %q", rc)
	}
	c3 := r.commit("2026-12-02T09:00:00")
	r.git(nil, "tag", "v1.2.0")
	rel := r.version()
	c4 := r.commit("2026-12-03T09:00:00")
	after := r.version()
	if rel != "1.2.0" || after != "1.2.0+git20261203090000."+c4 {
		t.Errorf("at v1.2.0 (%s): %q; after it: %q", c3, rel, after)
	}
	// Every step of that history upgrades the one before, in dpkg and rpm,
	// and so does a test build with a suffix (the VM's upgrade scenario).
	steps := []string{v1, v2, v2 + ".dirty", rc, rel, after, after + "+upgrade1"}
	for i := 1; i < len(steps); i++ {
		ordered(t, steps[i-1], steps[i])
	}
}
