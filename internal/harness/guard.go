package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// guardStopTimeout is a hang guard: past the daemon's own hard cap on
// draining (shutdownTimeout, 2m by default), so that a kill means it hung,
// not that a busy machine or a call in flight made it slow.
const guardStopTimeout = 3 * time.Minute

// GuardOptions configures StartGuard.
type GuardOptions struct {
	Binary   string    // path to the cri-guard binary (see BuildGuard); required
	Upstream string    // upstream CRI endpoint, e.g. Runtime.Endpoint; required
	Dir      string    // directory for the listening socket; required
	Args     []string  // extra arguments after the standard ones
	Log      io.Writer // also receives the process output (nil: only Logs)
	// Activation, when set, is passed to cri-guard as systemd passes a
	// socket unit's socket: on fd 3, with LISTEN_FDS=1 and LISTEN_PID set by
	// a shell that then execs cri-guard. The caller keeps it open across
	// restarts; --listen then names <Dir>/unused.sock, which stays unused.
	Activation *net.UnixListener
}

// Guard is a running `cri-guard serve` process.
type Guard struct {
	Socket   string // listening socket path
	Endpoint string // "unix://" + Socket
	Cmd      *exec.Cmd
	CRI      *CRIClient // client connected to Endpoint, closed by Stop

	out      *SyncBuffer
	exited   chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// StartGuard runs
//
//	<Binary> serve --listen unix://<Dir>/cri-guard.sock --upstream <Upstream> <Args...> $CRI_GUARD_ARGS
//
// and waits (up to 30 s) until CRI Version answers through it. On error the
// process is stopped and the error includes its output.
func StartGuard(ctx context.Context, opts GuardOptions) (*Guard, error) {
	if opts.Binary == "" || opts.Upstream == "" || opts.Dir == "" {
		return nil, errors.New("start cri-guard: Binary, Upstream and Dir are required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start cri-guard: %w", err)
	}
	sock := filepath.Join(opts.Dir, "cri-guard.sock")
	listen := sock
	if opts.Activation != nil {
		sock = opts.Activation.Addr().String()
		listen = filepath.Join(opts.Dir, "unused.sock")
	}
	if len(sock) > maxSockPath {
		return nil, fmt.Errorf("start cri-guard: socket path %q too long", sock)
	}
	g := &Guard{
		Socket:   sock,
		Endpoint: "unix://" + sock,
		out:      &SyncBuffer{},
		exited:   make(chan struct{}),
	}
	args := append([]string{"serve", "--listen", "unix://" + listen, "--upstream", opts.Upstream}, opts.Args...)
	// CRI_GUARD_ARGS adds arguments to every cri-guard the tests start,
	// e.g. "--forwarding frames" to run the e2e tests on the frames core.
	args = append(args, strings.Fields(os.Getenv("CRI_GUARD_ARGS"))...)
	cmd := exec.Command(opts.Binary, args...)
	if opts.Activation != nil {
		f, err := opts.Activation.File()
		if err != nil {
			return nil, fmt.Errorf("start cri-guard: %w", err)
		}
		defer f.Close()
		cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, opts.Binary}, args...)...)
		cmd.ExtraFiles = []*os.File{f}
	}
	var w io.Writer = g.out
	if opts.Log != nil {
		w = io.MultiWriter(g.out, opts.Log)
	}
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start cri-guard: %w", err)
	}
	g.Cmd = cmd
	go func() {
		cmd.Wait() //nolint:errcheck // reported through ProcessState
		close(g.exited)
	}()
	fail := func(err error) (*Guard, error) {
		serr := g.Stop()
		return nil, errors.Join(fmt.Errorf("start cri-guard: %w\noutput:\n%s", err, g.Logs()), serr)
	}
	c, err := DialCRI(g.Endpoint)
	if err != nil {
		return fail(err)
	}
	g.CRI = c
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if _, err := WaitForCRI(wctx, c, g.exited); err != nil {
		return fail(err)
	}
	return g, nil
}

// Logs returns everything the process has written so far.
func (g *Guard) Logs() string { return g.out.String() }

// WaitLog tells whether the process's output holds s within timeout. A line
// the daemon logged before it answered a call may still be in the pipe when
// the caller has the answer.
func (g *Guard) WaitLog(s string, timeout time.Duration) bool {
	for end := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if strings.Contains(g.Logs(), s) {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// Exited is closed when the process has exited.
func (g *Guard) Exited() <-chan struct{} { return g.exited }

// Stop sends SIGTERM, waits up to guardStopTimeout, then SIGKILLs. It returns an error
// if the process had to be killed or exited with a failure status. It is
// safe to call more than once.
func (g *Guard) Stop() error {
	g.stopOnce.Do(func() { g.stopErr = g.stop() })
	return g.stopErr
}

func (g *Guard) stop() error {
	var errs []error
	if g.CRI != nil {
		errs = append(errs, g.CRI.Close())
	}
	if g.Cmd == nil || g.Cmd.Process == nil {
		return errors.Join(errs...)
	}
	if !isClosed(g.exited) {
		if err := g.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("stop cri-guard: %w", err))
		}
		select {
		case <-g.exited:
		case <-time.After(guardStopTimeout):
			g.Cmd.Process.Kill() //nolint:errcheck
			<-g.exited
			errs = append(errs, fmt.Errorf("stop cri-guard: no exit %s after SIGTERM, killed", guardStopTimeout))
		}
	}
	if st := g.Cmd.ProcessState; st != nil && !st.Success() {
		if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !(ws.Signaled() && ws.Signal() == syscall.SIGTERM) {
			errs = append(errs, fmt.Errorf("stop cri-guard: %s", st))
		}
	}
	return errors.Join(errs...)
}

// BuildGuard runs `go build -o <outDir>/cri-guard ./cmd/cri-guard` in
// repoRoot, without cgo as `make build` does, and returns the binary's path.
func BuildGuard(ctx context.Context, repoRoot, outDir string) (string, error) {
	out, err := filepath.Abs(filepath.Join(outDir, "cri-guard"))
	if err != nil {
		return "", fmt.Errorf("build cri-guard: %w", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/cri-guard")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build cri-guard: %w: %s", err, bytes.TrimSpace(b))
	}
	return out, nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads, for
// a child process's output that a test reads while it runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
