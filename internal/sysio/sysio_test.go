package sysio

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// unixPair returns the two ends of a connected unix stream socket, both
// *net.UnixConn as the relay gets them from its listener and dialer.
func unixPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		acc <- c
	}()
	d, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); s.Close() })
	return d.(*net.UnixConn), s.(*net.UnixConn)
}

func TestSocketsOnly(t *testing.T) {
	a, _ := unixPair(t)
	if rw := New(a); rw == io.ReadWriter(a) {
		t.Errorf("New(%T) = the conn itself, want raw system calls", a)
	} else if _, ok := rw.(*conn); !ok {
		t.Errorf("New(%T) = %T, want *conn", a, rw)
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if rw := New(p); rw != io.ReadWriter(p) {
		t.Errorf("New(net.Pipe) = %T, want the conn itself", rw)
	}
}

// TestCopiesEverything writes 8 MiB in writes of random sizes through
// a socket whose buffers are shrunk to 4 KiB, so that writes are cut short
// and both ends wait for the poller, and reads it back in reads of random
// sizes.
func TestCopiesEverything(t *testing.T) {
	a, b := unixPair(t)
	if err := a.SetWriteBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := b.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	// A broken writer or reader fails the test instead of hanging it.
	a.SetDeadline(time.Now().Add(2 * time.Minute))
	b.SetDeadline(time.Now().Add(2 * time.Minute))
	want := make([]byte, 8<<20)
	rnd := rand.New(rand.NewSource(1))
	rnd.Read(want)
	w, r := New(a), New(b)

	werr := make(chan error, 1)
	go func() {
		rnd := rand.New(rand.NewSource(2))
		for p := want; len(p) > 0; {
			n := min(len(p), 1+rnd.Intn(256<<10))
			m, err := w.Write(p[:n])
			if err == nil && m != n {
				err = io.ErrShortWrite
			}
			if err != nil {
				werr <- err
				return
			}
			p = p[n:]
		}
		werr <- a.CloseWrite()
	}()
	var got bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf[:1+rnd.Intn(len(buf))])
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got.Len(), err)
		}
		if n == 0 {
			t.Fatal("read returned 0 bytes and no error")
		}
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("read %d bytes, not the %d written", got.Len(), len(want))
	}
}

func TestErrors(t *testing.T) {
	t.Run("read deadline", func(t *testing.T) {
		a, _ := unixPair(t)
		a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := New(a).Read(make([]byte, 10))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
	})
	t.Run("read on a closed conn", func(t *testing.T) {
		a, _ := unixPair(t)
		r := New(a)
		done := make(chan error, 1)
		go func() {
			_, err := r.Read(make([]byte, 10))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond) // let Read wait on the poller
		a.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("err = %v, want net.ErrClosed", err)
			}
		case <-time.After(time.Minute): // a hang guard
			t.Fatal("Read did not return after Close")
		}
	})
	t.Run("write to a closed peer", func(t *testing.T) {
		a, b := unixPair(t)
		b.Close()
		w := New(a)
		var err error
		for i := 0; i < 100 && err == nil; i++ { // the first write may still land
			_, err = w.Write(make([]byte, 64<<10))
		}
		if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("err = %v, want EPIPE or ECONNRESET", err)
		}
		if got, want := err.Error(), "write: "; got[:len(want)] != want {
			t.Fatalf("err = %q, want it to start with %q", got, want)
		}
	})
	t.Run("read after the peer closed", func(t *testing.T) {
		a, b := unixPair(t)
		b.Write([]byte("x"))
		b.Close()
		r := New(a)
		buf := make([]byte, 10)
		n, err := r.Read(buf)
		if n != 1 || err != nil || buf[0] != 'x' {
			t.Fatalf("first read = %d, %v; want the 1 byte sent", n, err)
		}
		if _, err := r.Read(buf); err != io.EOF {
			t.Fatalf("second read: err = %v, want io.EOF", err)
		}
	})
	t.Run("empty buffers", func(t *testing.T) {
		a, _ := unixPair(t)
		if n, err := New(a).Read(nil); n != 0 || err != nil {
			t.Fatalf("Read(nil) = %d, %v", n, err)
		}
		if n, err := New(a).Write(nil); n != 0 || err != nil {
			t.Fatalf("Write(nil) = %d, %v", n, err)
		}
	})
}

// TestNoAllocations: a read or a write allocates nothing (the functions
// handed to the RawConn are bound once, in New).
func TestNoAllocations(t *testing.T) {
	a, b := unixPair(t)
	w, r := New(a), New(b)
	out, in := make([]byte, 512), make([]byte, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := w.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per write and read, want 0", allocs)
	}
}
