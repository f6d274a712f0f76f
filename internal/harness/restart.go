package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Kill sends SIGKILL to containerd alone, as a crash would, and waits for it
// to exit. Shims and their containers keep running, as they do when the
// real daemon dies; Restart brings containerd back on the same Dir and
// socket, and Close still removes everything. Kill and Restart must not run
// concurrently with each other or with Close.
func (r *Runtime) Kill() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return errors.New("kill containerd: not started")
	}
	if isClosed(r.exited) {
		return errors.New("kill containerd: not running")
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill containerd: %w", err)
	}
	select {
	case <-r.exited:
	case <-time.After(killWaitTimeout):
		return errors.New("kill containerd: no exit after SIGKILL")
	}
	fmt.Fprintf(r.log, "harness: killed containerd pid %d\n", r.cmd.Process.Pid)
	return nil
}

// Restart starts containerd again with the same configuration, after Kill
// or after it died, and waits until its CRI service answers. r.CRI is
// replaced by a new client.
func (r *Runtime) Restart(ctx context.Context) error {
	if r.cmd != nil && !isClosed(r.exited) {
		return errors.New("restart containerd: still running; Kill it first")
	}
	if err := r.CRI.Close(); err != nil {
		fmt.Fprintf(r.log, "harness: closing the old CRI client: %v\n", err)
	}
	r.CRI = nil
	r.exited = make(chan struct{})
	if err := r.startDaemon(ctx); err != nil {
		return fmt.Errorf("restart containerd: %w", err)
	}
	return nil
}
