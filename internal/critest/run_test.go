package critest

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testdata/direct.json and testdata/proxied.json are trimmed from the
// ginkgo JSON reports of a real run (critest v1.37.0 -parallel=2 against
// containerd 1.6.20, directly and through cri-guard): a selection of
// specs, with the bulky event and output fields removed.

func mustRead(t *testing.T, name string) *Report {
	t.Helper()
	r, err := ReadReport(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const (
	specHostPID  = "[k8s.io] Security Context NamespaceOption runtime should support HostPID"
	specRunAs    = "[k8s.io] Security Context bucket runtime should support RunAsUserName"
	specMasked   = "[k8s.io] Security Context bucket runtime should support MaskedPaths"
	specStopPod  = "[k8s.io] Idempotence StopPodSandbox should not return an error if not found"
	specMetrics  = "[k8s.io] PodSandbox runtime should support metrics operations runtime should support returning metrics descriptors [Conformance]"
	specDigest   = "[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]"
	specHostPort = "[k8s.io] Networking runtime should support networking runtime should support port mapping with host port and container port [Conformance]"
)

func TestParseReportFixture(t *testing.T) {
	r := mustRead(t, "direct.json")
	if got := len(r.Specs); got != 13 {
		t.Fatalf("got %d specs, want 13 (BeforeSuite nodes are not specs)", got)
	}
	if p, f, s := r.Count(Passed), r.Count(Failed), r.Count(Skipped); p != 6 || f != 5 || s != 2 {
		t.Errorf("counts = %d passed, %d failed, %d skipped; want 6, 5, 2", p, f, s)
	}
	if got, want := r.Summary(), "6 passed, 5 failed, 2 skipped"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
	if r.SuiteSucceeded {
		t.Error("SuiteSucceeded = true for a run with failures")
	}
	if len(r.SuiteFailures) != 0 {
		t.Errorf("SuiteFailures = %q, want none", r.SuiteFailures)
	}
	if r.Duration < time.Minute {
		t.Errorf("Duration = %s, want the recorded 1m24s", r.Duration)
	}
	wantFailed := []string{
		"[k8s.io] Idempotence StopContainer should not return an error if not found",
		specStopPod,
		specDigest,
		specHostPort,
		specMasked,
	}
	if got := r.Names(Failed); !reflect.DeepEqual(got, wantFailed) {
		t.Errorf("Names(Failed) =\n%q\nwant\n%q", got, wantFailed)
	}

	sp, ok := r.Lookup(specStopPod)
	if !ok {
		t.Fatalf("spec %q not found", specStopPod)
	}
	if sp.GinkgoState != "failed" || !strings.Contains(sp.Message, "code = NotFound") || sp.Location != "idempotence.go:46" {
		t.Errorf("failed spec = %+v", sp)
	}
	if sp.Duration <= 0 {
		t.Errorf("failed spec has no duration: %+v", sp)
	}
	sp, _ = r.Lookup(specMetrics)
	if sp.State != Skipped || !strings.Contains(sp.Message, "not supported") {
		t.Errorf("skipped spec = %+v, want its skip message", sp)
	}
	sp, _ = r.Lookup(specHostPID)
	if sp.State != Passed || sp.Message != "" {
		t.Errorf("passed spec = %+v", sp)
	}
	if _, ok := r.Lookup("no such spec"); ok {
		t.Error("Lookup found a missing spec")
	}
}

func TestCompareRecordedParity(t *testing.T) {
	direct, proxied := mustRead(t, "direct.json"), mustRead(t, "proxied.json")
	if lost := Compare(direct, proxied); len(lost) != 0 {
		t.Errorf("Compare = %q, want none (the recorded runs agree)", lost)
	}
}

func TestCompareListsLostSpecs(t *testing.T) {
	direct, proxied := mustRead(t, "direct.json"), mustRead(t, "proxied.json")
	var specs []Spec
	for _, sp := range proxied.Specs {
		switch sp.Name {
		case specHostPID: // passes directly, fails through the proxy
			sp.State = Failed
		case specRunAs: // passes directly, missing through the proxy
			continue
		case specMasked: // fails directly too: not a loss
			sp.State = Failed
		case specMetrics: // skipped directly, failing through the proxy: not a loss
			sp.State = Failed
		}
		specs = append(specs, sp)
	}
	proxied.Specs = specs
	want := []string{specHostPID, specRunAs}
	if got := Compare(direct, proxied); !reflect.DeepEqual(got, want) {
		t.Errorf("Compare =\n%q\nwant\n%q", got, want)
	}
	// A spec skipped through the proxy did not pass there either.
	for i := range proxied.Specs {
		if proxied.Specs[i].Name == specHostPID {
			proxied.Specs[i].State = Skipped
		}
	}
	if got := Compare(direct, proxied); !reflect.DeepEqual(got, want) {
		t.Errorf("Compare with a skipped spec =\n%q\nwant\n%q", got, want)
	}
}

func TestParseReportStatesAndSuiteFailure(t *testing.T) {
	data := `[{"SuiteDescription":"CRI validation","SuiteSucceeded":false,"RunTime":2000000000,
	  "SpecReports":[
	    {"LeafNodeType":"BeforeSuite","State":"failed","Failure":{"Message":"cannot connect\nmore","Location":{"FileName":"/x/util.go","LineNumber":7}}},
	    {"ContainerHierarchyTexts":["[k8s.io] A"," B "],"LeafNodeType":"It","LeafNodeText":"c","State":"panicked"},
	    {"ContainerHierarchyTexts":null,"LeafNodeType":"It","LeafNodeText":"d","State":"timedout"},
	    {"ContainerHierarchyTexts":["E"],"LeafNodeType":"It","LeafNodeText":"f","State":"pending"},
	    {"ContainerHierarchyTexts":["E"],"LeafNodeType":"It","LeafNodeText":"g","State":"interrupted"},
	    {"LeafNodeType":"ReportAfterSuite","State":"passed"}
	  ]}]`
	r, err := ParseReport([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"BeforeSuite failed: cannot connect"}; !reflect.DeepEqual(r.SuiteFailures, want) {
		t.Errorf("SuiteFailures = %q, want %q", r.SuiteFailures, want)
	}
	got := map[string]State{}
	for _, sp := range r.Specs {
		got[sp.Name] = sp.State
	}
	want := map[string]State{"[k8s.io] A B c": Failed, "d": Failed, "E f": Pending, "E g": Failed}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if got, want := r.Summary(), "0 passed, 3 failed, 1 skipped"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}

func TestParseReportErrors(t *testing.T) {
	for _, data := range []string{"", "not json", "[]", `{"SpecReports":[]}`} {
		if _, err := ParseReport([]byte(data)); err == nil {
			t.Errorf("ParseReport(%q) succeeded, want an error", data)
		}
	}
	if _, err := ReadReport(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("ReadReport of a missing file succeeded")
	}
}

func TestArgs(t *testing.T) {
	got := Options{}.args("unix:///a.sock", "/r.json")
	want := []string{
		"-runtime-endpoint=unix:///a.sock",
		"-image-endpoint=unix:///a.sock",
		"-ginkgo.json-report=/r.json",
		"-ginkgo.no-color",
		"-ginkgo.timeout=20m0s",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default args =\n%q\nwant\n%q", got, want)
	}
	got = Options{
		ImageEndpoint: "unix:///i.sock",
		Focus:         []string{"Image"},
		Skip:          []string{"NRI", "AppArmor"},
		Parallel:      3,
		Timeout:       5 * time.Minute,
		FlakeAttempts: 2,
		Args:          []string{"-registry-prefix=localhost:5000"},
	}.args("unix:///a.sock", "/r.json")
	want = []string{
		"-runtime-endpoint=unix:///a.sock",
		"-image-endpoint=unix:///i.sock",
		"-ginkgo.json-report=/r.json",
		"-ginkgo.no-color",
		"-ginkgo.timeout=5m0s",
		"-ginkgo.focus=Image",
		"-ginkgo.skip=NRI",
		"-ginkgo.skip=AppArmor",
		"-ginkgo.flake-attempts=2",
		"-parallel=3",
		"-registry-prefix=localhost:5000",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("args =\n%q\nwant\n%q", got, want)
	}
}

// fakeCritest writes a shell script that behaves like critest as far as Run
// cares: it prints its arguments, copies fixture to the -ginkgo.json-report
// path (unless fixture is empty) and exits with code.
func fakeCritest(t *testing.T, fixture string, code int) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "critest")
	script := "#!/bin/sh\necho \"fake critest $*\"\necho \"PATH=$PATH\"\necho \"TMPDIR=$TMPDIR\"\n" +
		"mktemp -d -t cri-testXXXX >/dev/null\nfor a in \"$@\"; do\n" +
		"  case \"$a\" in -ginkgo.json-report=*) report=\"${a#-ginkgo.json-report=}\" ;; esac\ndone\n"
	if fixture != "" {
		abs, err := filepath.Abs(fixture)
		if err != nil {
			t.Fatal(err)
		}
		script += "cp '" + abs + "' \"$report\"\n"
	}
	script += "exit " + string(rune('0'+code)) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestRunParsesReportDespiteFailingExit(t *testing.T) {
	bin := fakeCritest(t, "testdata/direct.json", 1)
	var out strings.Builder
	keep := filepath.Join(t.TempDir(), "kept.json")
	r, err := Run(context.Background(), bin, "unix:///x.sock", Options{
		Output: &out, ReportPath: keep, Parallel: 2, GinkgoDir: "/opt/ginkgo-dir",
	})
	if err != nil {
		t.Fatalf("Run: %v\noutput:\n%s", err, out.String())
	}
	if got := r.Summary(); got != "6 passed, 5 failed, 2 skipped" {
		t.Errorf("Summary() = %q", got)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("report not kept at ReportPath: %v", err)
	}
	i := strings.Index(out.String(), "TMPDIR=")
	tmpdir := strings.TrimSpace(strings.SplitN(out.String()[i+len("TMPDIR="):], "\n", 2)[0])
	if i < 0 || !strings.HasPrefix(filepath.Base(filepath.Dir(tmpdir)), "critest-run-") {
		t.Errorf("critest's TMPDIR = %q, want a directory of its own", tmpdir)
	} else if _, err := os.Stat(tmpdir); !os.IsNotExist(err) {
		t.Errorf("critest's TMPDIR %s left behind (%v)", tmpdir, err)
	}
	for _, want := range []string{"-runtime-endpoint=unix:///x.sock", "-parallel=2", "PATH=/opt/ginkgo-dir:" + filepath.Dir(bin) + ":"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunWithoutReportFails(t *testing.T) {
	bin := fakeCritest(t, "", 3)
	_, err := Run(context.Background(), bin, "unix:///x.sock", Options{})
	if err == nil || !strings.Contains(err.Error(), "no usable report") || !strings.Contains(err.Error(), "fake critest") {
		t.Errorf("Run error = %v, want one naming the missing report and the output tail", err)
	}
	if _, err := Run(context.Background(), filepath.Join(t.TempDir(), "nope"), "unix:///x.sock", Options{}); err == nil {
		t.Error("Run of a missing binary succeeded")
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 4}
	tb.Write([]byte("abc"))
	tb.Write([]byte("defg"))
	if got := tb.String(); got != "defg" {
		t.Errorf("tail = %q, want %q", got, "defg")
	}
}

func TestFocusRegexp(t *testing.T) {
	names := []string{specDigest, specHostPID}
	re := regexp.MustCompile(FocusRegexp(names))
	for _, n := range names {
		if !re.MatchString(n) || !re.MatchString("CRI validation "+n) {
			t.Errorf("%s does not match %q", re, n)
		}
	}
	for _, n := range []string{specRunAs, specHostPID + " more", "x" + specDigest, "CRI validation x" + specDigest} {
		if re.MatchString(n) {
			t.Errorf("%s matches %q", re, n)
		}
	}
}
