package packaging_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/systemd"
)

// pkgs finds the .deb and .rpm in $CRI_GUARD_PKG_DIR (make test-package
// sets it after make package). Without it the test is skipped.
func pkgs(t *testing.T) (deb, rpm string) {
	t.Helper()
	dir := os.Getenv("CRI_GUARD_PKG_DIR")
	if dir == "" {
		t.Skip("CRI_GUARD_PKG_DIR not set (make test-package builds the packages and sets it)")
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "cri-guard_*_amd64.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dir, "cri-guard-*-1.x86_64.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("want one .deb and one .rpm in %s, found %q and %q", dir, debs, rpms)
	}
	return debs[0], rpms[0]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// entry is one path of a package's payload.
type entry struct {
	dir  bool
	mode int64
	body []byte
}

// payload reads a tar stream (gzip'd if gz) into path -> entry, paths
// made absolute ("./usr/bin/x" -> "/usr/bin/x").
func payload(t *testing.T, r io.Reader, gz bool) map[string]entry {
	t.Helper()
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	m := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		p := "/" + strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if p == "/" {
			continue
		}
		b, _ := io.ReadAll(tr)
		m[p] = entry{dir: h.Typeflag == tar.TypeDir, mode: h.Mode & 0o7777, body: b}
	}
}

func debPayload(t *testing.T, deb string) map[string]entry {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb --fsys-tarfile: %v", err)
	}
	return payload(t, bytes.NewReader(out), false)
}

func rpmPayload(t *testing.T, rpm string) map[string]entry {
	f, err := os.Open(rpm)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("rpm2archive", "-")
	cmd.Stdin = f
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rpm2archive: %v", err)
	}
	return payload(t, bytes.NewReader(out), true)
}

// listed parses `dpkg -c` or `rpm -qlp` output into the files (not
// directories) it names.
func dpkgFiles(out string) []string {
	var files []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		files = append(files, "/"+strings.TrimPrefix(f[5], "./"))
	}
	sort.Strings(files)
	return files
}

// Debian keeps units in /lib/systemd/system, RPM distributions in
// /usr/lib/systemd/system; the lintian overrides exist for Debian only.
// Every other path is the same in both packages.
func debToRPM(p string) (string, bool) {
	if p == "/usr/share/lintian/overrides/cri-guard" {
		return "", false
	}
	if rest, ok := strings.CutPrefix(p, "/lib/systemd/system/"); ok {
		return "/usr/lib/systemd/system/" + rest, true
	}
	return p, true
}

var wantFiles = []string{
	"/etc/cri-guard/config.yaml",
	"/lib/systemd/system/cri-guard.service",
	"/lib/systemd/system/cri-guard.service.d/10-runtime.conf",
	"/lib/systemd/system/cri-guard.socket",
	"/usr/bin/cri-guard",
	"/usr/share/cri-guard/10-cri-guard.conf",
	"/usr/share/cri-guard/runtime/containerd.conf",
	"/usr/share/cri-guard/runtime/cri-docker.conf",
	"/usr/share/cri-guard/runtime/crio.conf",
	"/usr/share/doc/cri-guard/changelog.gz",
	"/usr/share/doc/cri-guard/copyright",
	"/usr/share/lintian/overrides/cri-guard",
	"/usr/share/man/man1/cri-guard.1.gz",
}

// TestSameFiles: `rpm -qlp` lists the files `dpkg -c` lists (directories
// aside), with the two documented differences.
func TestSameFiles(t *testing.T) {
	deb, rpm := pkgs(t)
	debFiles := dpkgFiles(run(t, "dpkg", "-c", deb))
	if !reflect.DeepEqual(debFiles, wantFiles) {
		t.Errorf("dpkg -c lists\n  %s\nwant\n  %s", strings.Join(debFiles, "\n  "), strings.Join(wantFiles, "\n  "))
	}
	var mapped []string
	for _, p := range debFiles {
		if q, ok := debToRPM(p); ok {
			mapped = append(mapped, q)
		}
	}
	sort.Strings(mapped)
	// rpm -qlp names directories the package owns too; -qlp with
	// --qf FILEMODES tells them apart.
	var rpmFiles []string
	for _, line := range strings.Split(strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm)), "\n") {
		perms, p, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(perms, "d") {
			rpmFiles = append(rpmFiles, p)
		}
	}
	sort.Strings(rpmFiles)
	if !reflect.DeepEqual(rpmFiles, mapped) {
		t.Errorf("rpm -qlp lists\n  %s\nthe .deb's files are (units under /usr/lib, no lintian overrides)\n  %s", strings.Join(rpmFiles, "\n  "), strings.Join(mapped, "\n  "))
	}
	// Same bytes and modes, path for path.
	dp, rp := debPayload(t, deb), rpmPayload(t, rpm)
	for _, p := range debFiles {
		q, ok := debToRPM(p)
		if !ok {
			continue
		}
		if dp[p].mode != rp[q].mode || !bytes.Equal(dp[p].body, rp[q].body) {
			t.Errorf("%s differs between the .deb (mode %o, %d bytes) and the .rpm (mode %o, %d bytes)", p, dp[p].mode, len(dp[p].body), rp[q].mode, len(rp[q].body))
		}
	}
	// The RPM owns its directories, so an erase removes them.
	owned := run(t, "rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", rpm)
	for _, d := range []string{"/etc/cri-guard", "/usr/share/cri-guard", "/usr/share/cri-guard/runtime", "/usr/share/doc/cri-guard", "/usr/lib/systemd/system/cri-guard.service.d"} {
		if !strings.Contains(owned, "\nd") || !strings.Contains(owned, " "+d+"\n") {
			t.Errorf("the .rpm does not own %s:\n%s", d, owned)
		}
	}
}

// TestConffiles: the config is a conffile (deb) and %config(noreplace)
// (rpm), and nothing else is.
func TestConffiles(t *testing.T) {
	deb, rpm := pkgs(t)
	dir := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, dir)
	b, err := os.ReadFile(filepath.Join(dir, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "/etc/cri-guard/config.yaml" {
		t.Errorf("deb conffiles = %q", got)
	}
	var cfg []string
	for _, line := range strings.Split(strings.TrimSuffix(run(t, "rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags}|%{FILENAMES}\n]", rpm), "\n"), "\n") {
		flags, p, _ := strings.Cut(line, "|")
		if strings.Contains(flags, "c") {
			cfg = append(cfg, flags+" "+p)
		}
	}
	if want := []string{"cn /etc/cri-guard/config.yaml"}; !reflect.DeepEqual(cfg, want) {
		t.Errorf("rpm config files %q, want %q (c: %%config, n: noreplace)", cfg, want)
	}
	// The shipped config is the repository's default.
	want, _ := os.ReadFile("../systemd/config.yaml")
	if got := debPayload(t, deb)["/etc/cri-guard/config.yaml"].body; !bytes.Equal(got, want) {
		t.Error("/etc/cri-guard/config.yaml differs from systemd/config.yaml")
	}
}

// TestMaintainerScripts: both packages carry this directory's scripts,
// executable.
func TestMaintainerScripts(t *testing.T) {
	deb, rpm := pkgs(t)
	dir := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, dir)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		want, err := os.ReadFile(filepath.Join("deb", s))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, s)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("the .deb has no %s: %v", s, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("the .deb's %s differs from packaging/deb/%s", s, s)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("the .deb's %s is not executable (%v)", s, fi.Mode())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "preinst")); err == nil {
		t.Error("the .deb has a preinst; none is expected")
	}
	for tag, file := range map[string]string{"POSTIN": "post", "PREUN": "preun", "POSTUN": "postun"} {
		want, err := os.ReadFile(filepath.Join("rpm", file))
		if err != nil {
			t.Fatal(err)
		}
		got := run(t, "rpm", "-qp", "--qf", "%{"+tag+"}", rpm)
		if strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
			t.Errorf("the .rpm's %%%s differs from packaging/rpm/%s:\n%s", strings.ToLower(tag), file, got)
		}
	}
}

// TestUnitsAndBinary: the units run /usr/bin/cri-guard, the drop-in is the
// embedded one, and the binary is static and knows its version.
func TestUnitsAndBinary(t *testing.T) {
	deb, rpm := pkgs(t)
	version := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))
	if rv := run(t, "rpm", "-qp", "--qf", "%{VERSION}-%{RELEASE}", rpm); rv != version+"-1" {
		t.Errorf("rpm version %q, deb version %q", rv, version)
	}
	if filepath.Base(deb) != "cri-guard_"+version+"_amd64.deb" {
		t.Errorf("deb file name %s does not carry its version %s", filepath.Base(deb), version)
	}
	for name, files := range map[string]map[string]entry{"deb": debPayload(t, deb), "rpm": rpmPayload(t, rpm)} {
		unitDir := "/lib/systemd/system/"
		if name == "rpm" {
			unitDir = "/usr/lib/systemd/system/"
		}
		svc := string(files[unitDir+"cri-guard.service"].body)
		if !strings.Contains(svc, "\nExecStart=/usr/bin/cri-guard serve --config /etc/cri-guard/config.yaml\n") {
			t.Errorf("%s: cri-guard.service has no ExecStart=/usr/bin/cri-guard:\n%s", name, svc)
		}
		if strings.Contains(svc, "/usr/local") {
			t.Errorf("%s: cri-guard.service still names /usr/local", name)
		}
		sock, _ := os.ReadFile("../systemd/cri-guard.socket")
		if !bytes.Equal(files[unitDir+"cri-guard.socket"].body, sock) {
			t.Errorf("%s: cri-guard.socket differs from systemd/cri-guard.socket", name)
		}
		ctrd, _ := os.ReadFile("../systemd/runtime/containerd.conf")
		if !bytes.Equal(files[unitDir+"cri-guard.service.d/10-runtime.conf"].body, ctrd) {
			t.Errorf("%s: the runtime drop-in is not systemd/runtime/containerd.conf", name)
		}
		if !bytes.Equal(files["/usr/share/cri-guard/10-cri-guard.conf"].body, systemd.KubeletDropin) {
			t.Errorf("%s: the shipped drop-in differs from what `cri-guard kubelet-dropin install` writes", name)
		}
		for p := range files {
			if strings.Contains(p, "kubelet.service.d") {
				t.Errorf("%s: ships %s: the kubelet drop-in must be inactive", name, p)
			}
		}
	}
	bin := filepath.Join(t.TempDir(), "cri-guard")
	if err := os.WriteFile(bin, debPayload(t, deb)["/usr/bin/cri-guard"].body, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("/usr/bin/cri-guard has a program interpreter: it is not static")
		}
	}
	if f.Section(".symtab") != nil {
		t.Error("/usr/bin/cri-guard is not stripped")
	}
	f.Close()
	if out := run(t, bin, "version"); !strings.HasPrefix(out, "cri-guard "+version+" (commit ") {
		t.Errorf("cri-guard version says %q, want version %s", out, version)
	}
	man := debPayload(t, deb)["/usr/share/man/man1/cri-guard.1.gz"].body
	zr, err := gzip.NewReader(bytes.NewReader(man))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(zr)
	for _, want := range []string{".TH CRI-GUARD 1", ".SS kubelet-dropin", "usage: cri-guard kubelet-dropin install|remove|status"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("the man page has no %q", want)
		}
	}
}
