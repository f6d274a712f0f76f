package oom

import (
	"regexp"
	"strconv"
	"strings"
)

// Family is a kind of memory failure that a runtime error text shows.
type Family string

const (
	// None: the text shows no memory failure.
	None Family = ""
	// InitOOMKilled: the runtime saw the container's first process
	// OOM-killed while it started (runc ≥ 1.0, crun "OOM: ...").
	InitOOMKilled Family = "init-oom-killed"
	// ExecOOMKilled: a process the runtime started in a running container
	// died, possibly OOM-killed (runc's exec path).
	ExecOOMKilled Family = "exec-oom-killed"
	// CgroupNoMemory: the runtime could not create the container's cgroup
	// inside the pod cgroup: mkdir failed with ENOMEM, which on cgroup v1
	// means the pod cgroup's limit leaves nothing to charge the new memory
	// cgroup to.
	CgroupNoMemory Family = "cgroup-enomem"
	// LimitBelowUsage: the runtime refused to set a limit below the
	// current usage.
	LimitBelowUsage Family = "limit-below-usage"
	// InitDied: the container's first process vanished while the runtime
	// talked to it (older runc and Docker, crun without OOM evidence). With
	// a small limit or an OOM count this is an OOM kill; alone, it is not.
	InitDied Family = "init-died"
)

// Match is what Classify found in an error text.
type Match struct {
	Family Family
	// Phrase is the part of the text that matched, as it appears there.
	Phrase string
	// Limit, Usage and Peak are the numbers of a LimitBelowUsage error
	// (-1 where the text does not give them).
	Limit, Usage, Peak int64
}

type pattern struct {
	family Family
	re     *regexp.Regexp
}

// patterns are tried in order; the first match wins. They are matched
// case-insensitively: crun capitalises errno texts, runc does not.
var patterns = []pattern{
	{InitOOMKilled, regexp.MustCompile(`(?i)container init was OOM-killed \(memory limit too low\?\)`)},
	{InitOOMKilled, regexp.MustCompile(`(?i)OOM: the memory limit could be too low`)},
	{ExecOOMKilled, regexp.MustCompile(`(?i)\(possibly OOM-killed\)`)},
	{LimitBelowUsage, regexp.MustCompile(`(?i)unable to set memory limit to (-?\d+) \(current usage: (\d+), peak usage: (\d+)\)`)},
	{CgroupNoMemory, regexp.MustCompile(`(?i)(?:unable to apply cgroup configuration|cgroup)[^;]*?mkdir [^:]*: cannot allocate memory`)},
	{CgroupNoMemory, regexp.MustCompile("(?i)mkdir `?/sys/fs/cgroup[^:]*: cannot allocate memory")},
	{InitDied, regexp.MustCompile(`(?i)read parent: connection reset by peer`)},
	{InitDied, regexp.MustCompile(`(?i)read init-p: connection reset by peer`)},
	{InitDied, regexp.MustCompile(`(?i)write init-p: broken pipe`)},
	{InitDied, regexp.MustCompile(`(?i)can't get final child's PID from pipe: EOF`)},
	{InitDied, regexp.MustCompile(`(?i)getting the final child's pid from pipe caused:? \\*"?EOF`)},
	{InitDied, regexp.MustCompile(`(?i)the memory limit could be too low`)},
}

// maxText bounds the text Classify looks at; runtime errors are short, and
// a huge one is not worth a regexp pass at every call.
const maxText = 64 << 10

// Classify says which memory failure, if any, an error text shows.
func Classify(text string) Match {
	if len(text) > maxText {
		text = text[:maxText]
	}
	for _, p := range patterns {
		loc := p.re.FindStringSubmatchIndex(text)
		if loc == nil {
			continue
		}
		m := Match{Family: p.family, Phrase: text[loc[0]:loc[1]], Limit: -1, Usage: -1, Peak: -1}
		if p.family == LimitBelowUsage {
			m.Limit = number(text, loc, 1)
			m.Usage = number(text, loc, 2)
			m.Peak = number(text, loc, 3)
		}
		return m
	}
	return Match{Family: None, Limit: -1, Usage: -1, Peak: -1}
}

func number(text string, loc []int, group int) int64 {
	s := text[loc[2*group]:loc[2*group+1]]
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
