package h2

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawPeer is one end of an HTTP/2 connection driven frame by frame. A
// goroutine reads its frames, acknowledges SETTINGS, adds up WINDOW_UPDATEs
// (see granted), and hands on the rest.
type rawPeer struct {
	t      *testing.T
	mu     sync.Mutex // writes
	fr     *http2.Framer
	frames chan http2.Frame
	err    error

	wmu     sync.Mutex
	updates map[uint32]int64 // WINDOW_UPDATE increments by stream (0: the connection)
}

// newRawPeer writes the peer's SETTINGS on c, with settings, then reads
// c. The SETTINGS go first, before the reader could acknowledge the other
// side's: a client whose first frame is an ACK is refused.
func newRawPeer(t *testing.T, c net.Conn, settings ...http2.Setting) *rawPeer {
	c.SetDeadline(time.Now().Add(time.Minute)) // a hang guard
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p := &rawPeer{t: t, fr: fr, frames: make(chan http2.Frame, 16), updates: map[uint32]int64{}}
	if err := fr.WriteSettings(settings...); err != nil {
		t.Error(err)
	}
	go func() {
		defer close(p.frames)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				p.err = err
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					p.mu.Lock()
					fr.WriteSettingsAck() // a failed write ends the next read
					p.mu.Unlock()
				}
			case *http2.WindowUpdateFrame:
				p.wmu.Lock()
				p.updates[f.StreamID] += int64(f.Increment)
				p.wmu.Unlock()
			default:
				p.frames <- f
			}
		}
	}()
	return p
}

// granted returns the sum of the WINDOW_UPDATE increments received so far
// for stream id (0: the connection).
func (p *rawPeer) granted(id uint32) int64 {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.updates[id]
}

func (p *rawPeer) write(f func(*http2.Framer) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := f(p.fr); err != nil {
		p.t.Error(err)
	}
}

func (p *rawPeer) next() http2.Frame {
	p.t.Helper()
	f, ok := <-p.frames
	if !ok {
		p.t.Fatal(p.err)
	}
	return f
}

// wantPing reads the next frame and fails unless it is this PING.
func (p *rawPeer) wantPing(who string, ack bool, data [8]byte) {
	p.t.Helper()
	f, ok := p.next().(*http2.PingFrame)
	if !ok || f.IsAck() != ack || f.Data != data {
		p.t.Fatalf("%s got %v, want PING ack=%v %q", who, f, ack, data)
	}
}

func (p *rawPeer) ping(ack bool, data [8]byte) {
	p.write(func(fr *http2.Framer) error { return fr.WritePing(ack, data) })
}

func (p *rawPeer) headers(id uint32, end bool, fields ...string) {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	p.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b.Bytes(), EndStream: end, EndHeaders: true})
	})
}

// relayWithKubelet starts a relay in front of a runtime socket that
// nobody accepts on until the test does (ul), and connects a kubelet to it
// (kc); all three are closed when the test ends.
func relayWithKubelet(t *testing.T) (s *Server, ul net.Listener, kc net.Conn) {
	t.Helper()
	dir := t.TempDir()
	upSock := filepath.Join(dir, "runtime.sock")
	ul, err := net.Listen("unix", upSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close() })
	s, err = New("unix://"+upSock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	kl, err := net.Listen("unix", filepath.Join(dir, "guard.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(kl)
	t.Cleanup(func() { s.Close() })
	kc, err = net.Dial("unix", kl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kc.Close() })
	return s, ul, kc
}

// acceptRuntime answers the relay's connections on ul as a runtime, and
// sends on the channel the peer of the first one that carries a call to
// path (the server's own gRPC client connects too). When the test ends,
// ul and the connections are closed.
func acceptRuntime(t *testing.T, ul net.Listener, path string) <-chan *rawPeer {
	relayed := make(chan *rawPeer, 1)
	accepted := make(chan net.Conn, 16)
	t.Cleanup(func() {
		ul.Close()
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	})
	go func() {
		for {
			uc, err := ul.Accept()
			if err != nil {
				return
			}
			accepted <- uc
			preface := make([]byte, len(http2.ClientPreface))
			if _, err := io.ReadFull(uc, preface); err != nil || string(preface) != http2.ClientPreface {
				continue // the call then does not reach the runtime
			}
			p := newRawPeer(t, uc)
			go func() {
				for f := range p.frames {
					if f, ok := f.(*http2.MetaHeadersFrame); ok && f.PseudoValue("path") == path {
						relayed <- p
						return
					}
				}
			}()
		}
	}()
	return relayed
}

// TestPingsRelayed: once a runtime connection exists, PING frames and their
// answers cross the relay as they would a byte splice, both ways; before
// one exists, and once it goes away, the relay answers PINGs itself, and
// so it does when the runtime could count a kubelet's PING as abuse.
func TestPingsRelayed(t *testing.T) {
	_, ul, kc := relayWithKubelet(t)
	kc.Write([]byte(http2.ClientPreface))
	kubelet := newRawPeer(t, kc)

	kubelet.ping(false, [8]byte{'e', 'a', 'r', 'l', 'y'})
	kubelet.wantPing("the kubelet, with no runtime connection,", true, [8]byte{'e', 'a', 'r', 'l', 'y'})

	// One call makes the relay dial the runtime.
	relayed := acceptRuntime(t, ul, "/runtime.v1.RuntimeService/Version")
	kubelet.headers(1, true, ":method", "POST", ":scheme", "http", ":path", "/runtime.v1.RuntimeService/Version",
		":authority", "x", "content-type", "application/grpc", "te", "trailers")
	var runtime *rawPeer
	select {
	case runtime = <-relayed:
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("the call did not reach the runtime")
	}
	runtime.headers(1, false, ":status", "200", "content-type", "application/grpc")
	runtime.headers(1, true, "grpc-status", "0")
	for range 2 {
		if f, ok := kubelet.next().(*http2.MetaHeadersFrame); !ok {
			t.Fatalf("the kubelet got %v, want the call's HEADERS", f)
		}
	}

	kubelet.ping(false, [8]byte{'k'})
	runtime.wantPing("the runtime", false, [8]byte{'k'})
	runtime.ping(true, [8]byte{'k'})
	kubelet.wantPing("the kubelet", true, [8]byte{'k'})

	// The runtime has sent nothing since it answered: a gRPC server would
	// count another PING as a strike (three close the connection with
	// too_many_pings), so the relay answers it. Had it relayed it, the
	// runtime's next frame would be this PING, not the answer below.
	kubelet.ping(false, [8]byte{'k', '2'})
	kubelet.wantPing("the kubelet, its runtime sending nothing since the last PING,", true, [8]byte{'k', '2'})

	runtime.ping(false, [8]byte{'r'})
	kubelet.wantPing("the kubelet", false, [8]byte{'r'})
	kubelet.ping(true, [8]byte{'r'})
	runtime.wantPing("the runtime", true, [8]byte{'r'})

	// Once the runtime sent HEADERS again, a PING is relayed again; while
	// it is out, another is answered by the relay.
	kubelet.headers(3, true, ":method", "POST", ":scheme", "http", ":path", "/runtime.v1.RuntimeService/Version",
		":authority", "x", "content-type", "application/grpc", "te", "trailers")
	f, ok := runtime.next().(*http2.MetaHeadersFrame)
	if !ok {
		t.Fatalf("the runtime got %v, want the second call's HEADERS", f)
	}
	runtime.headers(f.StreamID, false, ":status", "200", "content-type", "application/grpc")
	runtime.headers(f.StreamID, true, "grpc-status", "0")
	for range 2 {
		if f, ok := kubelet.next().(*http2.MetaHeadersFrame); !ok {
			t.Fatalf("the kubelet got %v, want the second call's HEADERS", f)
		}
	}
	kubelet.ping(false, [8]byte{'k', '3'})
	runtime.wantPing("the runtime, after sending HEADERS,", false, [8]byte{'k', '3'})
	kubelet.ping(false, [8]byte{'k', '4'})
	kubelet.wantPing("the kubelet, a relayed PING out,", true, [8]byte{'k', '4'})
	runtime.ping(true, [8]byte{'k', '3'})
	kubelet.wantPing("the kubelet", true, [8]byte{'k', '3'})

	// A runtime going away (gRPC's graceful stop) gets its ping answered
	// by the relay, and so does the kubelet from then on.
	runtime.write(func(fr *http2.Framer) error { return fr.WriteGoAway(1, http2.ErrCodeNo, nil) })
	runtime.ping(false, [8]byte{'g'})
	runtime.wantPing("the runtime, going away,", true, [8]byte{'g'})
	kubelet.ping(false, [8]byte{'x'})
	kubelet.wantPing("the kubelet, its runtime going away,", true, [8]byte{'x'})
}
