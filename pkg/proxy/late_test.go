package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// closingListener hands out its one connection only once it is closed:
// what Accept returns when a connection was taken from the socket's queue
// just as Shutdown began. accepting is closed when Serve first waits in
// Accept.
type closingListener struct {
	net.Listener
	late      net.Conn
	closed    chan struct{}
	accepting chan struct{}
	once      sync.Once
	waiting   sync.Once
}

func (l *closingListener) Accept() (net.Conn, error) {
	l.waiting.Do(func() { close(l.accepting) })
	<-l.closed
	if c := l.late; c != nil {
		l.late = nil
		return c, nil
	}
	return nil, net.ErrClosed
}

func (l *closingListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// TestAcceptedAfterShutdownBegan: a connection that Accept returns after
// Shutdown began was taken from the socket's queue, so no successor can
// have it. It is answered with SETTINGS and a GOAWAY naming no stream (its
// client sends its call on a new connection, to the successor), and
// Shutdown waits for its client to close it. Before, the frames core's
// Shutdown could return without it (it had found no connection), and the
// gRPC core's grpc.Server closed it unread: either way the client's call
// was lost ("error reading server preface").
func TestAcceptedAfterShutdownBegan(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		dir := t.TempDir()
		p, err := newCore("unix://" + filepath.Join(dir, "runtime.sock"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		inner, err := net.Listen("unix", filepath.Join(dir, "guard.sock"))
		if err != nil {
			t.Fatal(err)
		}
		kc, err := net.Dial("unix", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { kc.Close() })
		kc.SetDeadline(time.Now().Add(time.Minute)) // a hang guard
		sc, err := inner.Accept()
		if err != nil {
			t.Fatal(err)
		}
		l := &closingListener{Listener: inner, late: sc, closed: make(chan struct{}), accepting: make(chan struct{})}
		served := make(chan error, 1)
		go func() { served <- p.Serve(l) }()
		<-l.accepting
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			shut <- p.Shutdown(ctx)
		}()
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}

		var b bytes.Buffer
		b.WriteString(http2.ClientPreface)
		http2.NewFramer(&b, nil).WriteSettings()
		if _, err := kc.Write(b.Bytes()); err != nil {
			t.Fatalf("writing the client preface: %v (the connection was closed unread)", err)
		}
		fr := http2.NewFramer(nil, kc)
		var got []string
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("after %q: %v; want SETTINGS, then GOAWAY", got, err)
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				if ga.LastStreamID != 0 || ga.ErrCode != http2.ErrCodeNo {
					t.Fatalf("got GOAWAY last stream %d, %v; want last stream 0, NO_ERROR", ga.LastStreamID, ga.ErrCode)
				}
				break
			}
			got = append(got, f.Header().Type.String())
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) while the connection's client was still there", err)
		default:
		}
		kc.Close()
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}
