package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// garbageProxy serves a proxy in front of the fake runtime on a unix socket
// and returns the socket's path and a working client.
func garbageProxy(t *testing.T, opts ...Option) (string, *grpc.ClientConn, *fakeRuntime) {
	t.Helper()
	fake := newFakeRuntime()
	upLis := bufconn.Listen(1 << 20)
	up := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}), grpc.UnknownServiceHandler(fake.handle))
	go up.Serve(upLis)
	t.Cleanup(up.Stop)
	p, err := newCore("passthrough:///fake-runtime", append([]Option{WithDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return upLis.DialContext(ctx)
	})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, sock := unixProxy(t, p, t.TempDir())
	return sock, c, fake
}

// works checks that a fresh connection, and c, still get answers. The
// timeout only guards against a hang.
func works(t *testing.T, c *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, resp := []byte("ok"), []byte(nil)
	if err := c.Invoke(ctx, "/runtime.v1.RuntimeService/Version", &req, &resp); err != nil {
		t.Fatalf("a well-behaved client: %v", err)
	}
	if want := reply("/runtime.v1.RuntimeService/Version", append(req, '0')); !bytes.Equal(resp, want) {
		t.Fatalf("a well-behaved client got %q, want %q", resp, want)
	}
}

// closedByServer reads from c until the server closes it, and fails if it
// does not within a minute (a hang guard: the server closes it at once).
func closedByServer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept the connection open")
	}
}

func frameHeader(length uint32, typ http2.FrameType, flags http2.Flags, stream uint32) []byte {
	h := make([]byte, 9)
	h[0], h[1], h[2] = byte(length>>16), byte(length>>8), byte(length)
	h[3], h[4] = byte(typ), byte(flags)
	binary.BigEndian.PutUint32(h[5:], stream)
	return h
}

// settingsFrame is an empty SETTINGS frame.
var settingsFrame = frameHeader(0, http2.FrameSettings, 0, 0)

// TestGarbageOnTheSocket: whatever a client writes, the proxy closes that
// connection, or answers with an error, and keeps serving everyone else.
func TestGarbageOnTheSocket(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		random := make([]byte, 4096)
		rand.New(rand.NewSource(1)).Read(random)
		truncated := bytes.Join([][]byte{[]byte(http2.ClientPreface), settingsFrame,
			frameHeader(1000, http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1), make([]byte, 10)}, nil)
		oversized := bytes.Join([][]byte{[]byte(http2.ClientPreface), settingsFrame,
			frameHeader(1<<24-1, http2.FrameData, 0, 1), make([]byte, 64)}, nil)
		for name, tc := range map[string]struct {
			send []byte
			// closed: the server closes the connection without waiting for
			// the client to hang up.
			closed bool
		}{
			"HTTP/1.1 request":          {[]byte("GET /runtime.v1.RuntimeService/Version HTTP/1.1\r\nHost: cri-guard\r\n\r\n"), true},
			"random bytes":              {random, true},
			"preface then random bytes": {append([]byte(http2.ClientPreface), random...), true},
			// A HEADERS frame that announces 1000 bytes and brings 10.
			"truncated frame": {truncated, false},
			// A frame far larger than the 16 KiB that HTTP/2 allows by default.
			"oversized frame": {oversized, true},
			"empty":           {nil, false},
		} {
			t.Run(name, func(t *testing.T) {
				sock, client, _ := garbageProxy(t)
				works(t, client)
				c, err := net.Dial("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(tc.send); err != nil {
					t.Fatal(err)
				}
				// While the bad connection is open, others are served.
				works(t, client)
				if tc.closed {
					closedByServer(t, c)
					works(t, client)
					return
				}
				// A client that stops mid-frame is closed once it hangs up.
				c.(*net.UnixConn).CloseWrite()
				closedByServer(t, c)
				works(t, client)
			})
		}
	})
}

// TestOversizedMessage: a message over the size limit is refused with
// ResourceExhausted, without reaching the runtime, and without buffering
// what a lying length prefix announces; the connection keeps working.
func TestOversizedMessage(t *testing.T) {
	forEachCore(t, func(t *testing.T) {
		const max = 4 << 20
		t.Run("real message", func(t *testing.T) {
			_, client, fake := garbageProxy(t, WithMaxMsgSize(max))
			req, resp := bytes.Repeat([]byte{'x'}, max+1), []byte(nil)
			err := client.Invoke(context.Background(), "/runtime.v1.RuntimeService/Version", &req, &resp)
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("got %v, want ResourceExhausted", err)
			}
			if got := fake.lastRequest("/runtime.v1.RuntimeService/Version"); got != nil {
				t.Errorf("the runtime received %d bytes", len(got))
			}
			works(t, client)
		})
		t.Run("length prefix of 4 GiB", func(t *testing.T) {
			sock, client, fake := garbageProxy(t, WithMaxMsgSize(max))
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute)) // a hang guard
			c.Write([]byte(http2.ClientPreface))
			fr := http2.NewFramer(c, c)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			fr.WriteSettings()
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range [][2]string{
				{":method", "POST"}, {":scheme", "http"}, {":path", "/runtime.v1.RuntimeService/RunPodSandbox"},
				{":authority", "cri-guard"}, {"content-type", "application/grpc"}, {"te", "trailers"},
			} {
				enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
			fr.WriteData(1, false, []byte{0, 0xff, 0xff, 0xff, 0xff, 'x', 'y', 'z'})
			var grpcStatus string
			for grpcStatus == "" {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("the connection ended without a gRPC status: %v", err)
				}
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					for _, hf := range f.Fields {
						if hf.Name == "grpc-status" {
							grpcStatus = hf.Value
						}
					}
				case *http2.SettingsFrame:
					if !f.IsAck() {
						fr.WriteSettingsAck()
					}
				case *http2.RSTStreamFrame, *http2.GoAwayFrame:
					t.Fatalf("got %v before a gRPC status", f)
				}
			}
			if want := "8"; grpcStatus != want { // ResourceExhausted
				t.Errorf("grpc-status %s, want %s", grpcStatus, want)
			}
			if got := fake.lastRequest("/runtime.v1.RuntimeService/RunPodSandbox"); got != nil {
				t.Errorf("the runtime received %d bytes", len(got))
			}
			works(t, client)
		})
	})
}
