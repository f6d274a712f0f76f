package h2

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func hf(name, value string) hpack.HeaderField { return hpack.HeaderField{Name: name, Value: value} }

// encodeBlock writes fields as one HEADERS frame on stream 1, or as a
// HEADERS and CONTINUATION frames of at most split bytes of block each.
func encodeBlock(t *testing.T, fields []hpack.HeaderField, split int) *bytes.Buffer {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	b := block.Bytes()
	first := b
	if split > 0 && len(first) > split {
		first = b[:split]
	}
	b = b[len(first):]
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(b) == 0}); err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		n := min(split, len(b))
		if err := fr.WriteContinuation(1, n == len(b), b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	return &out
}

func TestBlockReader(t *testing.T) {
	request := []hpack.HeaderField{
		hf(":method", "POST"), hf(":scheme", "http"), hf(":path", "/runtime.v1.RuntimeService/Version"),
		hf(":authority", "localhost"), hf("content-type", "application/grpc"), hf("te", "trailers"),
		hf("grpc-timeout", "1999871u"),
	}
	for name, tc := range map[string]struct {
		fields    []hpack.HeaderField
		split     int
		want      []hpack.HeaderField // nil: use fields
		truncated bool
		err       string
	}{
		"request":                                {fields: request},
		"request split over CONTINUATION frames": {fields: request, split: 7},
		"response":                               {fields: []hpack.HeaderField{hf(":status", "200"), hf("content-type", "application/grpc")}},
		"trailers":                               {fields: []hpack.HeaderField{hf("grpc-status", "5"), hf("grpc-message", "not found")}},
		"upper case":                             {fields: []hpack.HeaderField{hf(":path", "/x"), hf("X-Trace", "1")}, err: "stream error: stream ID 1; PROTOCOL_ERROR; invalid header field name X-Trace"},
		"newline":                                {fields: []hpack.HeaderField{hf(":path", "/x"), hf("x-trace", "a\nb")}, err: "stream error: stream ID 1; PROTOCOL_ERROR; invalid value in header field x-trace"},
		"pseudo after":                           {fields: []hpack.HeaderField{hf("x-trace", "1"), hf(":path", "/x")}, err: "stream error: stream ID 1; PROTOCOL_ERROR; pseudo header field after regular"},
		"unknown pseudo":                         {fields: []hpack.HeaderField{hf(":path", "/x"), hf(":foo", "1")}, err: "stream error: stream ID 1; PROTOCOL_ERROR; invalid pseudo header :foo"},
		"repeated pseudo":                        {fields: []hpack.HeaderField{hf(":path", "/x"), hf(":path", "/y")}, err: "stream error: stream ID 1; PROTOCOL_ERROR; duplicate pseudo header :path"},
		"mixed pseudo":                           {fields: []hpack.HeaderField{hf(":status", "200"), hf(":path", "/y")}, err: "stream error: stream ID 1; PROTOCOL_ERROR; mix of request and response pseudo headers"},
		"over the list size": {
			fields:    []hpack.HeaderField{hf(":path", "/x"), hf("x-big", strings.Repeat("a", ourMaxHeaderList-50)), hf("x-after", "1")},
			want:      []hpack.HeaderField{hf(":path", "/x")},
			truncated: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := newFrameReader(bufio.NewReader(encodeBlock(t, tc.fields, tc.split)))
			f, err := r.next()
			if tc.err != "" {
				var se http2.StreamError
				if !errors.As(err, &se) || err.Error() != tc.err {
					t.Fatalf("got %v (%T), want %s", err, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mh, ok := f.(*http2.MetaHeadersFrame)
			if !ok {
				t.Fatalf("got %T", f)
			}
			want := tc.want
			if want == nil {
				want = tc.fields
			}
			if !reflect.DeepEqual(mh.Fields, want) || mh.Truncated != tc.truncated || !mh.StreamEnded() || mh.StreamID != 1 {
				t.Fatalf("got %s truncated=%v, want %s truncated=%v", names(mh.Fields), mh.Truncated, names(want), tc.truncated)
			}
		})
	}
}

// names lists fields without their (possibly huge) values.
func names(fields []hpack.HeaderField) string {
	var b strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&b, "%s(%d) ", f.Name, len(f.Value))
	}
	return b.String()
}

func TestBlockReaderGarbage(t *testing.T) {
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	// 0xff 0xff... is an indexed field with an index far past any table.
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0x0f}, EndHeaders: true})
	_, err := newFrameReader(bufio.NewReader(&out)).next()
	if fmt.Sprint(err) != "connection error: COMPRESSION_ERROR" {
		t.Fatalf("got %v, want connection error: COMPRESSION_ERROR", err)
	}
}

// The fields handed out are reused for the next block: a relay must copy
// what it keeps (pushHeaders does when it queues).
func TestBlockReaderReusesFields(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(encodeBlock(t, []hpack.HeaderField{hf(":path", "/a")}, 0).Bytes())
	var more bytes.Buffer
	enc := hpack.NewEncoder(&more)
	enc.WriteField(hf(":path", "/b"))
	fr := http2.NewFramer(&buf, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: more.Bytes(), EndHeaders: true})
	r := newFrameReader(bufio.NewReader(&buf))
	f1, _ := r.next()
	first := f1.(*http2.MetaHeadersFrame).Fields
	f2, _ := r.next()
	if got := f2.(*http2.MetaHeadersFrame).PseudoValue("path"); got != "/b" {
		t.Fatalf("second block: %q", got)
	}
	if first[0].Value != "/b" {
		t.Fatalf("the first block's fields were not reused (%q): update this test and the copying rule", first[0].Value)
	}
}

// rawFrame is a frame as it goes on the wire, well formed or not.
func rawFrame(typ http2.FrameType, flags http2.Flags, id uint32, payload ...byte) []byte {
	n := len(payload)
	return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(typ), byte(flags), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}, payload...)
}

// TestFrameReaderSmallFrames: the DATA, WINDOW_UPDATE, PING and HEADERS
// frames that the reader parses itself come out as the Framer reads them,
// malformed ones fail as the Framer fails them, and the frames are reused.
func TestFrameReaderSmallFrames(t *testing.T) {
	frame := rawFrame
	openBlock := frame(http2.FrameHeaders, 0, 1, 0x82) // :method GET, no END_HEADERS
	// :method GET, :scheme http, :path /, x: y (a literal, indexed)
	block := []byte{0x82, 0x86, 0x84, 0x40, 1, 'x', 1, 'y'}
	whole := http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream
	cat := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	big := cat([]byte{0x40, 1, 'x', 0x7f, 0xf1, 0xa1, 0x04}, bytes.Repeat([]byte{'v'}, 70000)) // x: 70,000 v
	for name, tc := range map[string]struct {
		in     []byte
		frames int    // frames the Framer reads before the one compared
		next   int    // and the reader
		err    string // "": a frame
		framer bool   // read by the Framer, not into the reader's own frame
		fwErr  string // the Framer's error, where it differs
	}{
		"data":                     {in: frame(http2.FrameData, 0, 1, 'a', 'b', 'c')},
		"empty data, stream end":   {in: frame(http2.FrameData, http2.FlagDataEndStream, 3)},
		"padded data":              {in: frame(http2.FrameData, http2.FlagDataPadded, 1, 2, 'a', 0, 0)},
		"all padding":              {in: frame(http2.FrameData, http2.FlagDataPadded, 1, 3, 0, 0, 0)},
		"data beyond the buffer":   {in: frame(http2.FrameData, 0, 1, big...), framer: true},
		"data on stream 0":         {in: frame(http2.FrameData, 0, 0, 'a'), err: "connection error: PROTOCOL_ERROR"},
		"data pad too long":        {in: frame(http2.FrameData, http2.FlagDataPadded, 1, 2, 'a'), err: "connection error: PROTOCOL_ERROR"},
		"data without pad length":  {in: frame(http2.FrameData, http2.FlagDataPadded, 1), err: "unexpected EOF"},
		"cut data":                 {in: frame(http2.FrameData, 0, 1, 'a', 'b', 'c')[:11], err: "unexpected EOF"},
		"headers":                  {in: frame(http2.FrameHeaders, whole, 1, block...)},
		"headers, stream open":     {in: frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 3, block...)},
		"padded headers":           {in: frame(http2.FrameHeaders, whole|http2.FlagHeadersPadded, 1, cat([]byte{3}, block, []byte{0, 0, 0})...)},
		"headers with priority":    {in: frame(http2.FrameHeaders, whole|http2.FlagHeadersPriority, 5, cat([]byte{0x80, 0, 0, 3, 15}, block)...)},
		"padded, with priority":    {in: frame(http2.FrameHeaders, whole|http2.FlagHeadersPadded|http2.FlagHeadersPriority, 5, cat([]byte{1, 0, 0, 0, 3, 200}, block, []byte{0})...)},
		"two blocks":               {in: cat(frame(http2.FrameHeaders, whole, 1, block...), frame(http2.FrameHeaders, whole, 3, 0x82, 0x86, 0x84, 0xbe)), frames: 1, next: 1},
		"headers and continuation": {in: cat(frame(http2.FrameHeaders, 0, 1, block[:3]...), frame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, block[3:]...)), framer: true},
		"block beyond the buffer":  {in: frame(http2.FrameHeaders, whole, 1, cat(block[:3], big)...), framer: true},
		// RFC 9113 (6.2): a connection error; the Framer fails the stream.
		"pad too long":          {in: frame(http2.FrameHeaders, whole|http2.FlagHeadersPadded, 1, cat([]byte{200}, block)...), err: "connection error: PROTOCOL_ERROR", fwErr: "stream error: stream ID 1; PROTOCOL_ERROR"},
		"short priority":        {in: frame(http2.FrameHeaders, whole|http2.FlagHeadersPriority, 1, 0, 0, 0), err: "unexpected EOF"},
		"headers on stream 0":   {in: frame(http2.FrameHeaders, whole, 0, block...), err: "connection error: PROTOCOL_ERROR"},
		"undecodable headers":   {in: frame(http2.FrameHeaders, whole, 1, 0xff), err: "connection error: COMPRESSION_ERROR"},
		"window update":         {in: frame(http2.FrameWindowUpdate, 0, 0, 0, 0, 0x40, 0)},
		"stream window update":  {in: frame(http2.FrameWindowUpdate, 0, 3, 0, 1, 0, 0)},
		"reserved bits":         {in: frame(http2.FrameWindowUpdate, 0, 1<<31|3, 0xff, 0xff, 0xff, 0xff)},
		"zero increment":        {in: frame(http2.FrameWindowUpdate, 0, 0, 0, 0, 0, 0), err: "connection error: PROTOCOL_ERROR"},
		"zero stream increment": {in: frame(http2.FrameWindowUpdate, 0, 3, 0, 0, 0, 0), err: "stream error: stream ID 3; PROTOCOL_ERROR"},
		"long window update":    {in: frame(http2.FrameWindowUpdate, 0, 0, 0, 0, 0, 1, 0), err: "connection error: FRAME_SIZE_ERROR"},
		"cut window update":     {in: frame(http2.FrameWindowUpdate, 0, 0, 0, 0, 0x40, 0)[:12], err: "unexpected EOF"},
		"ping":                  {in: frame(http2.FramePing, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8)},
		"ping ack":              {in: frame(http2.FramePing, http2.FlagPingAck, 0, 8, 7, 6, 5, 4, 3, 2, 1)},
		"ping on a stream":      {in: frame(http2.FramePing, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8), err: "connection error: PROTOCOL_ERROR"},
		"short ping":            {in: frame(http2.FramePing, 0, 0, 1, 2, 3, 4, 5, 6, 7), err: "connection error: FRAME_SIZE_ERROR"},
		"inside a header block": {in: append(openBlock, frame(http2.FrameWindowUpdate, 0, 0, 0, 0, 0x40, 0)...), err: "connection error: PROTOCOL_ERROR"},
	} {
		t.Run(name, func(t *testing.T) {
			fr := http2.NewFramer(nil, bytes.NewReader(tc.in))
			fr.SetMaxReadFrameSize(ourMaxFrame)
			fr.MaxHeaderListSize = ourMaxHeaderList
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			fr.ReadMetaHeaders.SetMaxStringLength(ourMaxHeaderList)
			r := newFrameReader(bufio.NewReader(bytes.NewReader(tc.in)))
			for range tc.frames {
				if _, err := fr.ReadFrame(); err != nil {
					t.Fatal(err)
				}
			}
			for range tc.next {
				if _, err := r.next(); err != nil {
					t.Fatal(err)
				}
			}
			want, wantErr := fr.ReadFrame()
			// What small takes, the reader parsed itself.
			got, err := r.small()
			own := got != nil
			if got == nil && err == nil {
				got, err = r.next()
			}
			if tc.err != "" || wantErr != nil {
				fwErr := cmp.Or(tc.fwErr, tc.err)
				if err == nil || wantErr == nil || err.Error() != tc.err || wantErr.Error() != fwErr {
					t.Fatalf("got %v, the Framer %v; want %q, %q", err, wantErr, tc.err, fwErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g, w := got.Header(), want.Header(); g.Type != w.Type || g.Flags != w.Flags || g.Length != w.Length || g.StreamID != w.StreamID {
				t.Fatalf("got %v, the Framer %v", g, w)
			}
			if own == tc.framer {
				t.Fatalf("parsed by the reader itself: %v, want %v", own, !tc.framer)
			}
			switch w := want.(type) {
			case *http2.WindowUpdateFrame:
				if g := got.(*http2.WindowUpdateFrame); g.Increment != w.Increment || g != &r.wu {
					t.Fatalf("got increment %d (own frame: %v), the Framer %d", g.Increment, g == &r.wu, w.Increment)
				}
			case *http2.PingFrame:
				if g := got.(*http2.PingFrame); g.Data != w.Data || g.IsAck() != w.IsAck() || g != &r.ping {
					t.Fatalf("got %v ack %v (own frame: %v), the Framer %v ack %v", g.Data, g.IsAck(), g == &r.ping, w.Data, w.IsAck())
				}
			case *http2.MetaHeadersFrame:
				g := got.(*http2.MetaHeadersFrame)
				if !slices.Equal(g.Fields, w.Fields) || g.Priority != w.Priority || g.Truncated != w.Truncated || g.StreamEnded() != w.StreamEnded() {
					t.Fatalf("got %v %+v truncated %v, the Framer %v %+v truncated %v", g.Fields, g.Priority, g.Truncated, w.Fields, w.Priority, w.Truncated)
				}
				if own != (g.HeadersFrame == &r.hf) {
					t.Fatalf("parsed by the reader itself: %v, into its own frame: %v", own, g.HeadersFrame == &r.hf)
				}
			case *http2.DataFrame:
				if g := got.(*dataFrame); !bytes.Equal(g.Data(), w.Data()) || g.StreamEnded() != w.StreamEnded() || g != &r.df {
					t.Fatalf("got %q end %v (own frame: %v), the Framer %q end %v", g.Data(), g.StreamEnded(), g == &r.df, w.Data(), w.StreamEnded())
				}
			default:
				t.Fatalf("the Framer read a %T", want)
			}
		})
	}
}
