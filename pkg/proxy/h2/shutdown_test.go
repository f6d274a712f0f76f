package h2

import (
	"context"
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
	kubelet.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
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
