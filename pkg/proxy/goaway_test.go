package proxy

import (
	"bytes"
	"context"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestGoAwayBeforeStreamEnds: Shutdown sends its GOAWAY before it ends a
// streaming call, so that a client that subscribes again on seeing the end
// does so on a new connection, the successor's. Before, the gRPC core
// ended the stream while GracefulStop's GOAWAY could still be on its way,
// and a client could subscribe again on the old connection, there to be
// ended again (1 failed subscription in TestRestartUnderLoad/grpc/handover).
func TestGoAwayBeforeStreamEnds(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		e := newEnv(t)
		const events = "/runtime.v1.RuntimeService/GetContainerEvents"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
		defer cancel()
		nc, err := e.lis.DialContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(time.Minute)) // a hang guard

		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", events}, {":authority", "x"},
			{"content-type", "application/grpc"}, {"te", "trailers"}, {"x-block", "1"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		var out bytes.Buffer
		out.WriteString(http2.ClientPreface)
		w := http2.NewFramer(&out, nil)
		w.WriteSettings()
		w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
		w.WriteData(1, true, []byte{0, 0, 0, 0, 1, 'r'})
		if _, err := nc.Write(out.Bytes()); err != nil {
			t.Fatal(err)
		}
		frames := make(chan http2.Frame, 64)
		go func() {
			defer close(frames)
			fr := http2.NewFramer(nil, nc)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if f.IsAck() {
						continue
					}
				case *http2.PingFrame:
					if f.IsAck() {
						continue
					}
				case *http2.DataFrame, *http2.WindowUpdateFrame:
					continue
				}
				frames <- f
			}
		}()
		for e.fake.lastRequest(events) == nil {
			time.Sleep(5 * time.Millisecond)
		}
		shut := make(chan error, 1)
		go func() { shut <- e.proxy.Shutdown(ctx) }()

		var got []string
		ack := func(f http2.Frame) {
			var b bytes.Buffer
			w := http2.NewFramer(&b, nil)
			switch f := f.(type) {
			case *http2.SettingsFrame:
				w.WriteSettingsAck()
			case *http2.PingFrame:
				w.WritePing(true, f.Data)
			}
			nc.Write(b.Bytes())
		}
	read:
		for f := range frames {
			switch f := f.(type) {
			case *http2.SettingsFrame, *http2.PingFrame:
				ack(f)
			case *http2.GoAwayFrame:
				got = append(got, "GOAWAY")
			case *http2.HeadersFrame:
				if f.StreamID == 1 && f.StreamEnded() {
					got = append(got, "stream 1 ends")
					break read
				}
			case *http2.RSTStreamFrame:
				if f.StreamID == 1 {
					got = append(got, "stream 1 reset")
					break read
				}
			}
		}
		if len(got) == 0 || got[0] != "GOAWAY" || got[len(got)-1] != "stream 1 ends" {
			t.Errorf("the client read %q, want GOAWAY first, then the stream's end", got)
		}
		nc.Close()
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}
