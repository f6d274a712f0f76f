package h2

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestStalledStreamsLeaveConnectionWindow: DATA queued for streams whose
// kubelet stopped reading never holds the whole runtime connection window,
// whatever else was queued when it came, so a call the kubelet reads still
// gets its reply.
//
// In make test (unit phase, two CPU hogs) TestStalledStreamsDoNotBlockOthers
// once waited a minute for a 3 MiB reply next to six stalled streams: the
// reply's own DATA, queued for a moment, had pushed what was queued past
// queueCredit, so the stalled streams' DATA that came meanwhile kept its
// connection window (1.69 MB of it, with 409,600 bytes owed below
// connCreditThreshold: all 2 MiB), and the runtime could send nothing more.
// Here the kubelet grants no stream window at first, so the relay queues all
// DATA and the same order is made on purpose: the reply's first 512 KiB is
// queued, then seven stalled streams send 512 KiB each.
func TestStalledStreamsLeaveConnectionWindow(t *testing.T) {
	const (
		stalled = 7
		chunk   = 16 << 10
	)
	_, ul, kc := relayWithKubelet(t)
	kc.Write([]byte(http2.ClientPreface))
	kubelet := newRawPeer(t, kc, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	kubelet.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<30) })

	relayed := acceptRuntime(t, ul, "/runtime.v1.RuntimeService/ListContainers")
	call := func(path string) []string {
		return []string{":method", "POST", ":scheme", "http", ":path", path,
			":authority", "x", "content-type", "application/grpc", "te", "trailers"}
	}
	kubelet.headers(1, true, call("/runtime.v1.RuntimeService/ListContainers")...)
	for i := range stalled {
		kubelet.headers(uint32(3+2*i), true, call("/runtime.v1.RuntimeService/GetContainerEvents")...)
	}
	var runtime *rawPeer
	select {
	case runtime = <-relayed:
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("the call did not reach the runtime")
	}
	// The relay opens the streams in the kubelet's order: 1 is the reply's.
	for range stalled {
		if _, ok := runtime.next().(*http2.MetaHeadersFrame); !ok {
			t.Fatal("the runtime did not get the stalled streams' HEADERS")
		}
	}
	// The kubelet reads what the relay sends; reply gets the bytes of the
	// reply when its trailers come.
	reply := make(chan int, 1)
	go func() {
		n := 0
		for f := range kubelet.frames {
			switch f := f.(type) {
			case *http2.DataFrame:
				if f.StreamID == 1 {
					n += int(f.Length) // the frame is reused once read: no Data()
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == 1 && f.StreamEnded() {
					reply <- n
				}
			}
		}
	}()

	// send sends n bytes of a gRPC message body on stream id as a runtime
	// would: within the relay's connection window (the stream windows are
	// the relay's 512 KiB, more than what is sent on any stream before
	// the relay gives some back).
	var sent int64
	body := make([]byte, chunk)
	send := func(id uint32, n int, end bool) {
		t.Helper()
		for n > 0 {
			k := min(n, chunk)
			deadline := time.Now().Add(time.Minute) // a hang guard
			for runtime.granted(0)+initialWindow-sent < int64(k) {
				if time.Now().After(deadline) {
					t.Fatalf("the runtime has no connection window left: it sent %d bytes, the relay granted %d; stream %d cannot answer", sent, runtime.granted(0)+initialWindow, id)
				}
				time.Sleep(5 * time.Millisecond)
			}
			runtime.write(func(fr *http2.Framer) error { return fr.WriteData(id, end && k == n, body[:k]) })
			sent += int64(k)
			n -= k
		}
	}
	binary.BigEndian.PutUint32(body[1:], 1<<20-5) // the reply: one message of 1 MiB
	for i := range stalled + 1 {
		runtime.headers(uint32(1+2*i), false, ":status", "200", "content-type", "application/grpc")
	}
	send(1, ourStreamWindow, false)
	binary.BigEndian.PutUint32(body[1:], ourStreamWindow-5)
	for i := range stalled {
		send(uint32(3+2*i), ourStreamWindow, false)
	}

	// The kubelet reads the reply: the relay writes its first half and
	// gives its stream window back; the second half needs connection
	// window too.
	kubelet.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(1, 1<<20) })
	deadline := time.Now().Add(time.Minute) // a hang guard
	for runtime.granted(1) < ourStreamWindow {
		if time.Now().After(deadline) {
			t.Fatalf("the relay gave back %d bytes of the reply's stream window, want %d", runtime.granted(1), ourStreamWindow)
		}
		time.Sleep(5 * time.Millisecond)
	}
	clear(body[:5])
	send(1, ourStreamWindow, false)
	runtime.headers(1, true, "grpc-status", "0")
	select {
	case n := <-reply:
		if n != 1<<20 {
			t.Errorf("the kubelet got %d bytes of the reply, want %d", n, 1<<20)
		}
	case <-time.After(time.Minute): // a hang guard
		t.Fatal("the reply's trailers did not reach the kubelet")
	}
}
