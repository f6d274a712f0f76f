package h2

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestShutdownBeforePreface: a connection accepted before Shutdown whose
// client preface comes after it (a kubelet or crictl that connected while
// cri-guard handed over to its successor) is told to go elsewhere, with
// the server's SETTINGS and a GOAWAY naming no stream (gRPC then sends its
// call on a new connection, to the successor), instead of being closed
// unread: its client then fails to write the preface ("broken pipe"), and
// the call is lost (seen in the node VM's package upgrade under load).
func TestShutdownBeforePreface(t *testing.T) {
	s, _, kc := relayWithKubelet(t)
	// Wait until the server has accepted it (hang guard only).
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection was not accepted")
		}
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// Shutdown has marked the connection (draining) before the preface.
	for {
		var draining bool
		s.mu.Lock()
		for c := range s.conns {
			c.mu.Lock()
			draining = c.draining || c.closed
			c.mu.Unlock()
		}
		done := len(s.conns) == 0
		s.mu.Unlock()
		if draining || done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Shutdown did not reach the connection")
		}
		time.Sleep(time.Millisecond)
	}

	if _, err := kc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatalf("writing the client preface after Shutdown: %v (the connection was closed unread)", err)
	}
	kubelet := newRawPeer(t, kc)
	f, ok := <-kubelet.frames
	if !ok {
		t.Fatalf("no frame from the server, then %v: want GOAWAY", kubelet.err)
	}
	ga, isGA := f.(*http2.GoAwayFrame)
	if !isGA || ga.LastStreamID != 0 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("got %v, want GOAWAY last stream 0, NO_ERROR", f)
	}
	// The client, told to go away, closes; then Shutdown returns.
	kc.Close()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestStreamAfterGoAwayIgnored: a call the kubelet opens after the relay's
// GOAWAY (it had not read it yet) is ignored, not refused: the GOAWAY names
// a lower stream, so the client retries the call on a new connection, to
// the successor. A REFUSED_STREAM could reach the client before the GOAWAY;
// its retry then came back to this connection, was refused again and
// failed ("stream terminated by RST_STREAM with error code:
// REFUSED_STREAM", 1 of 192 calls in e2e TestRestartWithEventStream with
// two CPU hogs beside it). The call in flight at the GOAWAY is answered.
func TestStreamAfterGoAwayIgnored(t *testing.T) {
	s, ul, kc := relayWithKubelet(t)
	kc.Write([]byte(http2.ClientPreface))
	kubelet := newRawPeer(t, kc)

	relayed := acceptRuntime(t, ul, "/runtime.v1.RuntimeService/Version")
	call := []string{":method", "POST", ":scheme", "http", ":path", "/runtime.v1.RuntimeService/Version",
		":authority", "x", "content-type", "application/grpc", "te", "trailers"}
	kubelet.headers(1, true, call...)
	var runtime *rawPeer
	select {
	case runtime = <-relayed:
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("the call did not reach the runtime")
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	f := kubelet.next()
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.LastStreamID != 1 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("the kubelet got %v, want GOAWAY last stream 1, NO_ERROR", f)
	}
	go func() { // the runtime answers PINGs the relay passes on
		for f := range runtime.frames {
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				runtime.ping(true, p.Data)
			}
		}
	}()
	kubelet.headers(3, true, call...) // sent before the client read the GOAWAY
	// The relay reads frames in order: the PING's answer comes after it
	// has handled stream 3.
	kubelet.ping(false, [8]byte{'s', 'y', 'n', 'c'})
	var got []string
	for f := range kubelet.frames {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			got = append(got, fmt.Sprintf("HEADERS %d", f.StreamID))
		case *http2.RSTStreamFrame:
			got = append(got, fmt.Sprintf("RST_STREAM %d %v", f.StreamID, f.ErrCode))
		case *http2.PingFrame:
			got = append(got, fmt.Sprintf("PING ack=%v", f.IsAck()))
			if f.IsAck() {
				// The runtime answers the call in flight; with it done,
				// the relay closes the connection.
				runtime.headers(1, false, ":status", "200", "content-type", "application/grpc")
				runtime.headers(1, true, "grpc-status", "0")
			}
		default:
			got = append(got, f.Header().Type.String())
		}
	}
	if want := []string{"PING ack=true", "HEADERS 1", "HEADERS 1"}; !slices.Equal(got, want) {
		t.Errorf("after the GOAWAY the kubelet got %q, want %q (the call in flight answered; the one opened after the GOAWAY ignored)", got, want)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
