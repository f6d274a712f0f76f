package proxy

import (
	"bytes"
	"net"
	"sync"
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
	c := &lateConn{Conn: nc, s: l.s, away: make(chan struct{})}
	l.s.mu.Lock()
	if l.s.live == nil {
		l.s.live = map[*lateConn]bool{}
	}
	l.s.live[c] = true
	l.s.mu.Unlock()
	return c, nil
}

// lateConn notes whether gRPC used the connection: grpc.Server sets a
// deadline before its handshake, after its check for a stop. Once the
// server stops it also watches what gRPC writes for the GOAWAY that
// GracefulStop sends (see Server.goAwaysSent).
type lateConn struct {
	net.Conn
	s    *Server
	used atomic.Bool

	mu     sync.Mutex
	tail   []byte        // the end of the last write, for a frame header split across two
	away   chan struct{} // closed once a GOAWAY was written or the connection closed
	isAway bool
}

func (c *lateConn) Read(p []byte) (int, error) {
	c.used.Store(true)
	return c.Conn.Read(p)
}

// goAwayHeadsUp is the first GOAWAY that GracefulStop has written, after
// its length: type 7, no flags, stream 0, last stream 2^31-1, NO_ERROR
// (grpc-go's outgoingGoAwayHandler, headsUp), then its debug data.
var goAwayHeadsUp = []byte{7, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0}

func (c *lateConn) Write(p []byte) (int, error) {
	c.used.Store(true)
	n, err := c.Conn.Write(p)
	if c.s.draining.Load() {
		c.mu.Lock()
		if !c.isAway {
			// The same bytes inside a message would only end the
			// streams a moment early, as before the wait existed.
			b := append(c.tail, p[:n]...)
			if bytes.Contains(b, goAwayHeadsUp) {
				c.isAway = true
				close(c.away)
			} else {
				c.tail = append(c.tail[:0], b[max(0, len(b)-len(goAwayHeadsUp)+1):]...)
			}
		}
		c.mu.Unlock()
	}
	return n, err
}

// gone marks c as needing no GOAWAY any more.
func (c *lateConn) gone() {
	c.mu.Lock()
	if !c.isAway {
		c.isAway = true
		close(c.away)
	}
	c.mu.Unlock()
	c.s.mu.Lock()
	delete(c.s.live, c)
	c.s.mu.Unlock()
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
	c.gone()
	if c.used.Load() || !c.s.goAwayLate(c.Conn) {
		return c.Conn.Close()
	}
	return nil
}

// goAwayWait bounds how long Shutdown waits for the GOAWAYs before it ends
// the streaming calls anyway (a client that does not read can hold up its
// connection's writes).
const goAwayWait = time.Second

// goAwaysSent waits until every connection open when called has written
// GracefulStop's GOAWAY, or closed, or until goAwayWait. Call it with
// draining set, once GracefulStop runs. A client told so before its stream
// ends subscribes again on a new connection, to the successor; otherwise
// it could subscribe again on this one, and be ended again.
func (s *Server) goAwaysSent() {
	s.mu.Lock()
	var aways []chan struct{}
	for c := range s.live {
		aways = append(aways, c.away)
	}
	s.mu.Unlock()
	t := time.NewTimer(goAwayWait)
	defer t.Stop()
	for _, a := range aways {
		select {
		case <-a:
		case <-t.C:
			return
		}
	}
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
