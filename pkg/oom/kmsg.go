package oom

import (
	"errors"
	"strings"
	"syscall"
	"time"
)

// Kmsg is where the kernel's log records are read.
const Kmsg = "/dev/kmsg"

// Bounds of one read of the kernel log.
const (
	kmsgMaxTime  = 250 * time.Millisecond
	kmsgMaxBytes = 16 << 20
)

// KernelOOMLines returns the kernel's "oom-kill:" records, oldest first, at
// most max, whose oom_memcg or task_memcg is memcg (a cgroup path relative
// to the hierarchy root) or below it. It reads what the kernel's ring
// buffer still holds without blocking, within a bounded time and size; it
// returns nothing when /dev/kmsg cannot be read (no permission, no device).
func KernelOOMLines(memcg string, max int) []string {
	return kernelOOMLines(Kmsg, memcg, max)
}

func kernelOOMLines(dev, memcg string, max int) []string {
	if memcg == "" || max <= 0 {
		return nil
	}
	fd, err := syscall.Open(dev, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	return readOOMLines(fd, memcg, max)
}

// readOOMLines reads records from fd until there are no more, and keeps
// the last max oom-kill lines for memcg.
func readOOMLines(fd int, memcg string, max int) []string {
	var (
		out      []string
		buf      = make([]byte, 8192)
		total    int
		deadline = time.Now().Add(kmsgMaxTime)
	)
	for total < kmsgMaxBytes && time.Now().Before(deadline) {
		n, err := syscall.Read(fd, buf)
		switch {
		case errors.Is(err, syscall.EPIPE):
			continue // records were overwritten while we read; go on
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil || n <= 0:
			return out // EAGAIN: no more records; EINVAL on a regular file read
		}
		total += n
		if l, ok := MatchRecord(string(buf[:n]), memcg); ok {
			out = append(out, l)
			if len(out) > max {
				out = out[1:]
			}
		}
	}
	return out
}

// KernelWindow reads the kernel log records written after it was opened:
// opened before a call is forwarded and read when it failed, it gives the
// oom-kill lines that belong to the call and no older ones. A nil
// KernelWindow (the log could not be opened) gives no lines.
type KernelWindow struct {
	fd   int
	read bool
}

// OpenKernelWindow opens the kernel log at its end; nil when it cannot be
// read.
func OpenKernelWindow() *KernelWindow { return openKernelWindow(Kmsg) }

func openKernelWindow(dev string) *KernelWindow {
	fd, err := syscall.Open(dev, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	// On /dev/kmsg, SEEK_END moves to after the last record; on a regular
	// file (tests), to its end.
	if _, err := syscall.Seek(fd, 0, 2); err != nil {
		syscall.Close(fd)
		return nil
	}
	return &KernelWindow{fd: fd}
}

// OOMLines returns the oom-kill lines for memcg (or a cgroup below it)
// logged since the window was opened, at most max, oldest first. It reads
// the window once: a second call returns nothing.
func (w *KernelWindow) OOMLines(memcg string, max int) []string {
	if w == nil || w.read || memcg == "" || max <= 0 {
		return nil
	}
	w.read = true
	return readOOMLines(w.fd, memcg, max)
}

// Close releases the window; it may be called on nil.
func (w *KernelWindow) Close() {
	if w != nil && w.fd >= 0 {
		syscall.Close(w.fd)
		w.fd = -1
	}
}

// MatchRecord says whether a kernel log record (as /dev/kmsg gives it,
// "prio,seq,usec,flags;text", or the bare text) is an oom-kill line for
// memcg or a cgroup below it, and returns its text.
//
// The kernel names cgroups relative to the root of its own view, which in a
// nested setup has a prefix, so memcg matches at the end of the path or
// before a "/".
func MatchRecord(record, memcg string) (string, bool) {
	text := record
	if i := strings.IndexByte(text, ';'); i >= 0 && strings.Count(text[:i], ",") >= 2 && !strings.Contains(text[:i], ":") {
		text = text[i+1:]
	}
	text = strings.TrimRight(strings.SplitN(text, "\n", 2)[0], "\r")
	if !strings.HasPrefix(text, "oom-kill:") {
		return "", false
	}
	memcg = "/" + strings.Trim(memcg, "/")
	if memcg == "/" {
		return "", false
	}
	for _, f := range strings.Split(strings.TrimPrefix(text, "oom-kill:"), ",") {
		k, v, ok := strings.Cut(f, "=")
		if !ok || (k != "oom_memcg" && k != "task_memcg") {
			continue
		}
		if strings.HasSuffix(v, memcg) || strings.Contains(v, memcg+"/") {
			return text, true
		}
	}
	return "", false
}
