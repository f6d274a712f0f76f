// Package critest runs the CRI validation suite (critest from
// sigs.k8s.io/cri-tools, built by tools/build.sh) against a CRI endpoint,
// parses its ginkgo JSON report into per-spec results, and compares a
// direct run with one through cri-guard. It also builds stand-ins for the
// images critest pulls (images.go; see IMAGES.md), to be served by the
// harness's loopback registry.
package critest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// State is the outcome of one spec, simplified from ginkgo's states.
type State string

const (
	Passed  State = "passed"
	Failed  State = "failed" // also panicked, interrupted, aborted, timedout
	Skipped State = "skipped"
	Pending State = "pending"
)

// Spec is the result of one critest spec (a ginkgo It).
type Spec struct {
	// Name is the container texts and the It text joined by spaces, e.g.
	// "[k8s.io] Image Manager public image with tag should be pulled ...".
	Name string
	// State is the simplified outcome; GinkgoState is ginkgo's own.
	State       State
	GinkgoState string
	// Message is the failure or skip message, if any.
	Message string
	// Location is file:line of the failure, if any.
	Location string
	Duration time.Duration
}

// Report is a parsed critest run.
type Report struct {
	Specs []Spec // in report order
	// SuiteFailures are failures of suite-level nodes (BeforeSuite etc.).
	SuiteFailures  []string
	SuiteSucceeded bool
	Duration       time.Duration
}

// Count returns the number of specs in state s.
func (r *Report) Count(s State) int {
	n := 0
	for _, sp := range r.Specs {
		if sp.State == s {
			n++
		}
	}
	return n
}

// Summary is "N passed, N failed, N skipped" (pending counted as skipped).
func (r *Report) Summary() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped",
		r.Count(Passed), r.Count(Failed), r.Count(Skipped)+r.Count(Pending))
}

// Names returns the names of the specs in state s, sorted.
func (r *Report) Names(s State) []string {
	var names []string
	for _, sp := range r.Specs {
		if sp.State == s {
			names = append(names, sp.Name)
		}
	}
	sort.Strings(names)
	return names
}

// Lookup returns the spec called name.
func (r *Report) Lookup(name string) (Spec, bool) {
	for _, sp := range r.Specs {
		if sp.Name == name {
			return sp, true
		}
	}
	return Spec{}, false
}

// Compare lists, sorted, the specs that passed in direct but did not pass
// in proxied (failed, skipped, or absent).
func Compare(direct, proxied *Report) (lost []string) {
	got := map[string]State{}
	for _, sp := range proxied.Specs {
		got[sp.Name] = sp.State
	}
	for _, sp := range direct.Specs {
		if sp.State == Passed && got[sp.Name] != Passed {
			lost = append(lost, sp.Name)
		}
	}
	sort.Strings(lost)
	return lost
}

// FocusRegexp returns a ginkgo focus expression (for Options.Focus) that
// selects exactly the specs named, e.g. to re-run the ones Compare lists.
// Ginkgo matches it against "<suite description> <spec name>", so a name
// is anchored at the end and after a space.
func FocusRegexp(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return "(^| )(" + strings.Join(quoted, "|") + ")$"
}

// The subset of ginkgo v2's types.Report that is used here.
type ginkgoReport struct {
	SuiteDescription string             `json:"SuiteDescription"`
	SuiteSucceeded   bool               `json:"SuiteSucceeded"`
	RunTime          int64              `json:"RunTime"`
	SpecReports      []ginkgoSpecReport `json:"SpecReports"`
}

type ginkgoSpecReport struct {
	ContainerHierarchyTexts []string      `json:"ContainerHierarchyTexts"`
	LeafNodeType            string        `json:"LeafNodeType"`
	LeafNodeText            string        `json:"LeafNodeText"`
	State                   string        `json:"State"`
	RunTime                 int64         `json:"RunTime"`
	Failure                 *ginkgoFailed `json:"Failure"`
}

type ginkgoFailed struct {
	Message  string `json:"Message"`
	Location struct {
		FileName   string `json:"FileName"`
		LineNumber int    `json:"LineNumber"`
	} `json:"Location"`
	FailureNodeType string `json:"FailureNodeType"`
}

// ParseReport parses a ginkgo v2 JSON report (the -ginkgo.json-report
// file: an array with one report per suite).
func ParseReport(data []byte) (*Report, error) {
	var suites []ginkgoReport
	if err := json.Unmarshal(data, &suites); err != nil {
		return nil, fmt.Errorf("parse ginkgo JSON report: %w", err)
	}
	if len(suites) == 0 {
		return nil, errors.New("parse ginkgo JSON report: no suite in report")
	}
	r := &Report{SuiteSucceeded: true}
	for _, s := range suites {
		r.SuiteSucceeded = r.SuiteSucceeded && s.SuiteSucceeded
		r.Duration += time.Duration(s.RunTime)
		for _, sr := range s.SpecReports {
			st := simplify(sr.State)
			if sr.LeafNodeType != "It" {
				if st == Failed {
					msg := sr.LeafNodeType + " " + sr.State
					if sr.Failure != nil {
						msg += ": " + firstLine(sr.Failure.Message)
					}
					r.SuiteFailures = append(r.SuiteFailures, msg)
				}
				continue
			}
			sp := Spec{
				Name:        specName(sr.ContainerHierarchyTexts, sr.LeafNodeText),
				State:       st,
				GinkgoState: sr.State,
				Duration:    time.Duration(sr.RunTime),
			}
			if f := sr.Failure; f != nil {
				sp.Message = strings.TrimSpace(f.Message)
				if f.Location.FileName != "" {
					sp.Location = filepath.Base(f.Location.FileName) + ":" + strconv.Itoa(f.Location.LineNumber)
				}
			}
			r.Specs = append(r.Specs, sp)
		}
	}
	return r, nil
}

// ReadReport reads and parses a ginkgo JSON report file.
func ReadReport(path string) (*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseReport(data)
}

func simplify(ginkgoState string) State {
	switch ginkgoState {
	case "passed":
		return Passed
	case "skipped":
		return Skipped
	case "pending":
		return Pending
	default: // failed, panicked, interrupted, aborted, timedout, invalid
		return Failed
	}
}

func specName(containers []string, leaf string) string {
	parts := make([]string, 0, len(containers)+1)
	for _, c := range containers {
		if c = strings.TrimSpace(c); c != "" {
			parts = append(parts, c)
		}
	}
	return strings.Join(append(parts, strings.TrimSpace(leaf)), " ")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Options tune a critest run. The zero value runs every validation spec
// serially against the endpoint, with a 20 minute suite timeout.
type Options struct {
	// ImageEndpoint defaults to the runtime endpoint.
	ImageEndpoint string
	// Focus and Skip are ginkgo regular expressions (-ginkgo.focus/skip).
	// critest always skips "benchmark" in validation mode.
	Focus, Skip []string
	// Parallel > 1 runs that many ginkgo nodes; critest then execs the
	// ginkgo CLI, looked up in GinkgoDir (if set), the critest binary's
	// directory, then PATH. Specs labelled Serial still run alone.
	Parallel  int
	GinkgoDir string
	// ReportPath is where the JSON report is written; default is a file
	// in a temporary directory that is removed afterwards.
	ReportPath string
	// Timeout is ginkgo's suite timeout (-ginkgo.timeout); default 20m.
	Timeout time.Duration
	// FlakeAttempts > 1 retries failing specs (-ginkgo.flake-attempts).
	FlakeAttempts int
	// Output receives critest's stdout and stderr (may be nil).
	Output io.Writer
	// Args are appended to the command line.
	Args []string
	// Dir is the working directory (default: a temporary directory).
	Dir string
}

// Args returns critest's command line (without the binary) for opts.
func (opts Options) args(endpoint, reportPath string) []string {
	imageEndpoint := opts.ImageEndpoint
	if imageEndpoint == "" {
		imageEndpoint = endpoint
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Minute
	}
	args := []string{
		"-runtime-endpoint=" + endpoint,
		"-image-endpoint=" + imageEndpoint,
		"-ginkgo.json-report=" + reportPath,
		"-ginkgo.no-color",
		"-ginkgo.timeout=" + timeout.String(),
	}
	for _, f := range opts.Focus {
		args = append(args, "-ginkgo.focus="+f)
	}
	for _, s := range opts.Skip {
		args = append(args, "-ginkgo.skip="+s)
	}
	if opts.FlakeAttempts > 1 {
		args = append(args, "-ginkgo.flake-attempts="+strconv.Itoa(opts.FlakeAttempts))
	}
	if opts.Parallel > 1 {
		args = append(args, "-parallel="+strconv.Itoa(opts.Parallel))
	}
	return append(args, opts.Args...)
}

// Run runs the critest binary against endpoint and returns its parsed
// report. A run in which specs fail is not an error: err is only set when
// critest could not be run or left no readable report (then the error
// includes the tail of its output). Afterwards it removes the host SysV
// shared memory segments that critest's HostIpc specs create and leak.
func Run(ctx context.Context, critestBinary, endpoint string, opts Options) (*Report, error) {
	bin, err := filepath.Abs(critestBinary)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("critest binary: %w", err)
	}
	tmp, err := os.MkdirTemp("", "critest-run-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	reportPath := opts.ReportPath
	if reportPath == "" {
		reportPath = filepath.Join(tmp, "report.json")
	}
	if reportPath, err = filepath.Abs(reportPath); err != nil {
		return nil, err
	}
	_ = os.Remove(reportPath)
	dir := opts.Dir
	if dir == "" {
		dir = tmp
	}

	// critest -parallel leaves a cri-test* directory in TMPDIR per run;
	// keep its temporary files inside tmp, which is removed below.
	tmpDir := filepath.Join(tmp, "tmp")
	if err := os.Mkdir(tmpDir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, opts.args(endpoint, reportPath)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmpDir)
	if opts.Parallel > 1 {
		pathDirs := []string{filepath.Dir(bin)}
		if opts.GinkgoDir != "" {
			pathDirs = append([]string{opts.GinkgoDir}, pathDirs...)
		}
		cmd.Env = append(cmd.Env, "PATH="+strings.Join(append(pathDirs, os.Getenv("PATH")), string(os.PathListSeparator)))
	}
	tail := &tailBuffer{max: 8 << 10}
	var out io.Writer = tail
	if opts.Output != nil {
		out = io.MultiWriter(opts.Output, tail)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = 10 * time.Second
	shmBefore := shmSegments()
	runErr := cmd.Run()
	removeLeakedShm(shmBefore)

	rep, err := ReadReport(reportPath)
	if err != nil {
		return nil, fmt.Errorf("critest (%v) left no usable report: %w\n--- output tail ---\n%s", runErr, err, tail.String())
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("critest interrupted: %w", ctx.Err())
	}
	return rep, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return t.buf.String() }
