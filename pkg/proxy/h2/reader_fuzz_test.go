package h2

import (
	"bufio"
	"bytes"
	"errors"
	"slices"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzFrameReader reads the same bytes with the relay's frame reader and
// with a Framer set up the same way: they must see the same frames, and
// fail at the same frame in the same way.
func FuzzFrameReader(f *testing.F) {
	frame := rawFrame
	block := []byte{0x82, 0x86, 0x84, 0x40, 1, 'x', 1, 'y'}
	f.Add(frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, block...))
	f.Add(bytes.Join([][]byte{
		frame(http2.FrameHeaders, http2.FlagHeadersPadded|http2.FlagHeadersPriority, 1, append([]byte{1, 0, 0, 0, 3, 9}, append(block[:3:3], 0)...)...),
		frame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, block[3:]...),
		frame(http2.FrameData, http2.FlagDataPadded, 1, 2, 'a', 0, 0),
		frame(http2.FrameWindowUpdate, 0, 1, 0, 0, 1, 0),
		frame(http2.FramePing, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8),
		frame(http2.FrameData, http2.FlagDataEndStream, 1),
		frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 3, 0x82, 0x86, 0x84, 0xbe),
		frame(http2.FrameRSTStream, 0, 3, 0, 0, 0, 8),
	}, nil))
	f.Add(frame(http2.FrameData, 0, 0, 'a'))
	// The same indexed block before and after the decoder's table changes.
	end := http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream
	f.Add(bytes.Join([][]byte{
		frame(http2.FrameHeaders, end, 1, 0x88, 0x40, 1, 'x', 1, 'y'),
		frame(http2.FrameHeaders, end, 3, 0x88, 0xbe),
		frame(http2.FrameHeaders, end, 5, 0x88, 0xbe),
		frame(http2.FrameHeaders, end, 7, 0x88, 0x40, 1, 'x', 1, 'z'),
		frame(http2.FrameHeaders, end, 9, 0x88, 0xbe),
		frame(http2.FrameHeaders, end, 11, 0x88, 0xbf),
	}, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := bytes.NewReader(in)
		fr := http2.NewFramer(nil, rd)
		fr.SetMaxReadFrameSize(ourMaxFrame)
		fr.MaxHeaderListSize = ourMaxHeaderList
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.ReadMetaHeaders.SetMaxStringLength(ourMaxHeaderList)
		r := newFrameReader(bufio.NewReaderSize(bytes.NewReader(in), 64<<10))
		for i := 0; ; i++ {
			pos := len(in) - rd.Len() // the Framer reads no further than its frame
			want, wantErr := fr.ReadFrame()
			got, err := r.next()
			if wantErr != nil && err != nil && headersPadTooLong(in[pos:]) {
				// The Framer fails the stream, the relay the connection
				// (its decoder never saw the block).
				if !errors.Is(err, http2.ConnectionError(http2.ErrCodeProtocol)) {
					t.Fatalf("frame %d: HEADERS padded beyond its payload: got %v, want a connection error", i, err)
				}
				return
			}
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("frame %d: got %v, %v; the Framer %v, %v", i, got, err, want, wantErr)
			}
			if err != nil {
				if !sameError(err, wantErr) {
					t.Fatalf("frame %d: got %v, the Framer %v", i, err, wantErr)
				}
				var se http2.StreamError
				if errors.As(err, &se) {
					continue // both go on after a stream error
				}
				return
			}
			if !sameFrame(got, want) {
				t.Fatalf("frame %d: got %+v, the Framer %+v", i, got, want)
			}
		}
	})
}

// sameError: the same error, or the same stream or connection error; the
// cause of a stream error may be worded differently.
func sameError(a, b error) bool {
	var sa, sb http2.StreamError
	if errors.As(a, &sa) && errors.As(b, &sb) {
		return sa.StreamID == sb.StreamID && sa.Code == sb.Code
	}
	return a.Error() == b.Error()
}

func sameFrame(got, want http2.Frame) bool {
	g, w := got.Header(), want.Header()
	if g.Type != w.Type || g.Flags != w.Flags || g.Length != w.Length || g.StreamID != w.StreamID {
		return false
	}
	switch w := want.(type) {
	case *http2.DataFrame:
		g, ok := got.(*dataFrame)
		return ok && bytes.Equal(g.Data(), w.Data())
	case *http2.MetaHeadersFrame:
		g, ok := got.(*http2.MetaHeadersFrame)
		return ok && slices.Equal(g.Fields, w.Fields) && g.Truncated == w.Truncated && g.Priority == w.Priority
	case *http2.WindowUpdateFrame:
		g, ok := got.(*http2.WindowUpdateFrame)
		return ok && g.Increment == w.Increment
	case *http2.PingFrame:
		g, ok := got.(*http2.PingFrame)
		return ok && g.Data == w.Data
	}
	return true
}

// headersPadTooLong tells whether b starts with a HEADERS frame whose
// padding is longer than what its payload leaves for it.
func headersPadTooLong(b []byte) bool {
	if len(b) < 10 || http2.FrameType(b[3]) != http2.FrameHeaders || !http2.Flags(b[4]).Has(http2.FlagHeadersPadded) {
		return false
	}
	n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	if len(b) < 9+n || n < 1 {
		return false
	}
	rest := n - 1
	if http2.Flags(b[4]).Has(http2.FlagHeadersPriority) {
		rest -= 5
	}
	return rest >= 0 && int(b[9]) > rest
}
