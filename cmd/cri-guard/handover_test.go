package main

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nonBlocking reports whether l's open file description has O_NONBLOCK.
// A duplicate of the descriptor shares that flag.
func nonBlocking(t *testing.T, l net.Listener) bool {
	t.Helper()
	rc, err := l.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags&unix.O_NONBLOCK != 0
}

// Sending the sockets to a successor must leave them non-blocking: they are
// the same open file descriptions as the ones this process still accepts
// on until the successor serves. os.File.Fd on a duplicate made by
// net.Listener.File turns the shared description to blocking mode; then an
// Accept that starts afterwards waits in the kernel, and closing the
// listener waits for that Accept, that is for the next connection, which
// may never come: the old process never got past stopping its metrics
// server after an upgrade by reload (seen once on the node VM under load).
func TestHandoverLeavesListenersNonBlocking(t *testing.T) {
	dir := t.TempDir()
	cri, err := net.Listen("unix", filepath.Join(dir, "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer cri.Close()
	ctl, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "ctl.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Close()
	// As in the daemon: the socket file stays for the successor (and here
	// lets the test reach a listener whose Close is stuck).
	cri.(*net.UnixListener).SetUnlinkOnClose(false)
	ctl.SetUnlinkOnClose(false)
	listeners := map[string]net.Listener{"cri": cri, "control": ctl, "metrics": ml}
	for name, l := range listeners {
		if !nonBlocking(t, l) {
			t.Fatalf("%s: not non-blocking before the handover", name)
		}
	}

	files, rep, err := handoverFiles(cri, ctl, ml, ml.Addr().String(), false)
	if err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	defer a.Close()
	defer b.Close()
	if err := send(a, rep, files...); err != nil {
		t.Fatal(err)
	}
	closeAll(files)
	var got ctlReply
	recvd, err := receive(b, &got)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(recvd)
	if len(recvd) != 3 || got.Metrics != ml.Addr().String() {
		t.Fatalf("received %d descriptors and metrics %q, want 3 and %q", len(recvd), got.Metrics, ml.Addr().String())
	}

	for name, l := range listeners {
		if !nonBlocking(t, l) {
			t.Errorf("%s: blocking after the handover: an Accept now waits in the kernel and Close waits for it", name)
		}
	}

	// What that does to the old process: once a connection was accepted
	// after the handover, closing the listener must still end its
	// accept loop.
	for name, l := range listeners {
		accepted := make(chan struct{})
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
				select {
				case <-accepted:
				default:
					close(accepted)
				}
			}
		}()
		c, err := net.Dial(l.Addr().Network(), l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		<-accepted
		closed := make(chan struct{})
		go func() { l.Close(); close(closed) }()
		select {
		case <-closed:
			<-ended
		case <-time.After(30 * time.Second):
			// Unblock the Accept that Close waits for, then fail.
			if c, err := net.Dial(l.Addr().Network(), l.Addr().String()); err == nil {
				c.Close()
			}
			<-closed
			t.Errorf("%s: Close of the old listener waited for a connection that did not come", name)
		}
	}
}
