package sysio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// sysReader reads a socket with raw read(2) calls. One goroutine reads.
type sysReader struct {
	rc   syscall.RawConn
	p    []byte
	n    int
	err  error
	read func(fd uintptr) bool // r.readFD, bound once
}

// NewReader returns a reader of nc: raw read(2) calls for a socket, nc
// itself otherwise.
func NewReader(nc net.Conn) io.Reader {
	rc := rawConn(nc)
	if rc == nil {
		return nc
	}
	r := &sysReader{rc: rc}
	r.read = r.readFD
	return r
}

func (r *sysReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p, r.n, r.err = p, 0, nil
	err := r.rc.Read(r.read)
	r.p = nil
	if err != nil {
		return 0, err
	}
	return r.n, r.err
}

// readFD makes one read; false means the socket has nothing yet.
func (r *sysReader) readFD(fd uintptr) bool {
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

// sysWriter writes a socket with raw write(2) calls. One goroutine writes
// at a time.
type sysWriter struct {
	rc    syscall.RawConn
	p     []byte
	n     int
	err   error
	write func(fd uintptr) bool // w.writeFD, bound once
}

// NewWriter returns a writer to nc: raw write(2) calls for a socket, nc
// itself otherwise.
func NewWriter(nc net.Conn) io.Writer {
	rc := rawConn(nc)
	if rc == nil {
		return nc
	}
	w := &sysWriter{rc: rc}
	w.write = w.writeFD
	return w
}

// Write writes all of p, waiting for room as net.Conn's Write does.
func (w *sysWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.write)
	w.p = nil
	if err == nil {
		err = w.err
	}
	return w.n, err
}

// writeFD writes what the socket takes; false means it took less than all
// and has no room now.
func (w *sysWriter) writeFD(fd uintptr) bool {
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
