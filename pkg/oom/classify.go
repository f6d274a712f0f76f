package oom

import (
	"math"
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
	// StoppedBeforeStart: the runtime created the container, and its
	// first process was gone when the runtime went to start it ("cannot
	// start a stopped process", Docker and containerd 2.x). With OOM
	// evidence from the call it was OOM-killed in between; alone, it says
	// nothing about memory.
	StoppedBeforeStart Family = "stopped-before-start"
	// CgroupUnitFailed: with the systemd cgroup driver, systemd could not
	// start the container's scope unit ("unable to start unit ...: got
	// `failed`"). With OOM evidence from the call (cgroup v2
	// memory.events), the process moved into it was OOM-killed; alone, it
	// says nothing about memory.
	CgroupUnitFailed Family = "cgroup-unit-failed"
	// BelowRuntimeMinimum: the runtime refused a limit below a minimum of
	// its own (CRI-O's 12Mi, Docker's 6MB).
	BelowRuntimeMinimum Family = "below-runtime-minimum"
)

// needsEvidence says whether a family's text alone, even with a small
// limit, is not enough to blame memory: only an OOM seen during the call
// is.
func (f Family) needsEvidence() bool {
	return f == StoppedBeforeStart || f == CgroupUnitFailed
}

// Match is what Classify found in an error text.
type Match struct {
	Family Family
	// Phrase is the part of the text that matched, as it appears there.
	Phrase string
	// Limit, Usage and Peak are the numbers of a LimitBelowUsage error,
	// Limit and Min those of a BelowRuntimeMinimum one (-1 where the text
	// does not give them).
	Limit, Usage, Peak, Min int64
}

type pattern struct {
	family Family
	re     *regexp.Regexp
	// groups name what each submatch is: 'l' limit, 'u' usage, 'p' peak,
	// 'm' minimum in bytes, 'M' minimum in Docker's MB (MiB).
	groups string
}

// patterns are tried in order; the first match wins. They are matched
// case-insensitively: crun capitalises errno texts, runc does not.
var patterns = []pattern{
	{InitOOMKilled, regexp.MustCompile(`(?i)container init was OOM-killed \(memory limit too low\?\)`), ""},
	{InitOOMKilled, regexp.MustCompile(`(?i)OOM: the memory limit could be too low`), ""},
	{ExecOOMKilled, regexp.MustCompile(`(?i)\(possibly OOM-killed\)`), ""},
	{LimitBelowUsage, regexp.MustCompile(`(?i)unable to set memory limit to (-?\d+) \(current usage: (\d+), peak usage: (\d+)\)`), "lup"},
	// CRI-O 1.36, UpdateContainerResources below the usage.
	{LimitBelowUsage, regexp.MustCompile(`(?i)cannot decrease memory limit to (\d+) bytes: current usage is (\d+) bytes`), "lu"},
	// CRI-O 1.36's own floor, for a pod ("pod set memory limit") and a
	// container ("set memory limit").
	{BelowRuntimeMinimum, regexp.MustCompile(`(?i)set memory limit (\d+) too low; should be at least (\d+) bytes`), "lm"},
	// Docker (dockerd's daemon check), for a container and on resize.
	{BelowRuntimeMinimum, regexp.MustCompile(`(?i)Minimum memory limit allowed is (\d+)MB`), "M"},
	{CgroupNoMemory, regexp.MustCompile(`(?i)(?:unable to apply cgroup configuration|cgroup)[^;]*?mkdir [^:]*: cannot allocate memory`), ""},
	{CgroupNoMemory, regexp.MustCompile("(?i)mkdir `?/sys/fs/cgroup[^:]*: cannot allocate memory"), ""},
	// runc with the systemd driver: "unable to start unit \"x.scope\"
	// (properties [...]): error creating systemd unit `x.scope`: got
	// `failed`".
	{CgroupUnitFailed, regexp.MustCompile("(?i)unable to start unit \"?[^\" ]+\\.scope\"?.*?got [`'\"]?failed[`'\"]?"), ""},
	{StoppedBeforeStart, regexp.MustCompile(`(?i)cannot start a stopped process`), ""},
	{InitDied, regexp.MustCompile(`(?i)read parent: connection reset by peer`), ""},
	{InitDied, regexp.MustCompile(`(?i)read init-p: connection reset by peer`), ""},
	{InitDied, regexp.MustCompile(`(?i)write init-p: broken pipe`), ""},
	{InitDied, regexp.MustCompile(`(?i)can't get final child's PID from pipe: EOF`), ""},
	{InitDied, regexp.MustCompile(`(?i)getting the final child's pid from pipe caused:? \\*"?EOF`), ""},
	{InitDied, regexp.MustCompile(`(?i)the memory limit could be too low`), ""},
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
		m := Match{Family: p.family, Phrase: text[loc[0]:loc[1]], Limit: -1, Usage: -1, Peak: -1, Min: -1}
		for i, g := range p.groups {
			n := number(text, loc, i+1)
			switch g {
			case 'l':
				m.Limit = n
			case 'u':
				m.Usage = n
			case 'p':
				m.Peak = n
			case 'm':
				m.Min = n
			case 'M':
				if n >= 0 && n <= math.MaxInt64>>20 {
					m.Min = n << 20 // dockerd's "MB" is 1024*1024
				}
			}
		}
		return m
	}
	return Match{Family: None, Limit: -1, Usage: -1, Peak: -1, Min: -1}
}

func number(text string, loc []int, group int) int64 {
	s := text[loc[2*group]:loc[2*group+1]]
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
