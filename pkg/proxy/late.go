package proxy

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/cri-guard/cri-guard/pkg/proxy/h2"
)

// A grpc.Server that is stopping closes, unread, a connection that its
// Serve accepted just as the stop began: the client's call is lost ("error
// reading server preface"), although no successor could have had it (it
// was taken from the socket's queue). lateListener hands grpc.Server
// lateConns, and a lateConn closed before gRPC touched it is answered with
// a GOAWAY instead (h2.GoAwayUnread), so that its client calls the
// successor.
type lateListener struct {
	net.Listener
	s *Server
}

func (l *lateListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lateConn{Conn: nc, s: l.s}, nil
}

// lateConn notes whether gRPC used the connection: grpc.Server sets a
// deadline before its handshake, after its check for a stop.
type lateConn struct {
	net.Conn
	s    *Server
	used atomic.Bool
}

func (c *lateConn) Read(p []byte) (int, error) {
	c.used.Store(true)
	return c.Conn.Read(p)
}

func (c *lateConn) Write(p []byte) (int, error) {
	c.used.Store(true)
	return c.Conn.Write(p)
}

func (c *lateConn) SetDeadline(t time.Time) error {
	c.used.Store(true)
	return c.Conn.SetDeadline(t)
}

func (c *lateConn) SetReadDeadline(t time.Time) error {
	c.used.Store(true)
	return c.Conn.SetReadDeadline(t)
}

func (c *lateConn) SetWriteDeadline(t time.Time) error {
	c.used.Store(true)
	return c.Conn.SetWriteDeadline(t)
}

// lateWait bounds how long a connection accepted as the server stopped
// waits for its client's preface, and then for the client to close.
const lateWait = 10 * time.Second

func (c *lateConn) Close() error {
	if c.used.Load() || !c.s.goAwayLate(c.Conn) {
		return c.Conn.Close()
	}
	return nil
}

// goAwayLate answers nc with h2.GoAwayUnread if the server is stopping
// (Shutdown or Close has begun), and tells whether it does.
func (s *Server) goAwayLate(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		return false
	}
	if s.lateConns == nil {
		s.lateConns = map[net.Conn]bool{}
	}
	s.lateConns[nc] = true
	s.late.Add(1)
	go func() {
		defer s.late.Done()
		h2.GoAwayUnread(nc, lateWait)
		s.mu.Lock()
		delete(s.lateConns, nc)
		s.mu.Unlock()
	}()
	return true
}
