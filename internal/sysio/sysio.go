package sysio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// call is one direction's read or write in progress: the buffer and what
// was done with it, and the two functions a call needs, bound once so that
// a call allocates nothing.
type call struct {
	p    []byte
	n    int
	err  error
	fn   func(fd uintptr) bool             // readFD or writeFD
	wait func(func(fd uintptr) bool) error // the RawConn's Read or Write
}

// do reads or writes p: fn runs until it is done, and wait parks the
// goroutine on the poller between its tries.
func (c *call) do(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.p, c.n, c.err = p, 0, nil
	err := c.wait(c.fn)
	c.p = nil
	if err == nil {
		err = c.err
	}
	return c.n, err
}

// conn reads and writes a socket with raw read(2) and write(2) calls.
type conn struct{ r, w call }

// New returns nc's reads and writes as raw system calls if nc is a socket
// of package net, and nc itself otherwise. A read and a write may run at
// the same time, but not two reads, nor two writes.
func New(nc net.Conn) io.ReadWriter {
	rc := rawConn(nc)
	if rc == nil {
		return nc
	}
	c := new(conn)
	c.r.fn, c.r.wait = c.readFD, rc.Read
	c.w.fn, c.w.wait = c.writeFD, rc.Write
	return c
}

func (c *conn) Read(p []byte) (int, error) { return c.r.do(p) }

// Write writes all of p, waiting for room as net.Conn's Write does.
func (c *conn) Write(p []byte) (int, error) { return c.w.do(p) }

// readFD makes one read; false means the socket has nothing yet.
func (c *conn) readFD(fd uintptr) bool {
	r := &c.r
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			r.err = os.NewSyscallError("read", e)
		case n == 0:
			r.err = io.EOF
		default:
			r.n = int(n)
		}
		return true
	}
}

// writeFD writes what the socket takes; false means it took less than all
// and has no room now.
func (c *conn) writeFD(fd uintptr) bool {
	w := &c.w
	for w.n < len(w.p) {
		rest := w.p[w.n:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false
		case e != 0:
			w.err = os.NewSyscallError("write", e)
			return true
		case n == 0:
			w.err = io.ErrUnexpectedEOF // as internal/poll says of a write that took nothing
			return true
		}
		w.n += int(n)
	}
	return true
}

// rawConn returns nc's raw connection if nc is a socket of package net,
// nil otherwise.
func rawConn(nc net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.UnixConn:
		sc = c
	case *net.TCPConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
