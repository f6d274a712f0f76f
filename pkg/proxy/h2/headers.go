package h2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// blockReader decodes the header blocks read from one connection and checks
// them as the Framer's ReadMetaHeaders does, but into a frame and a field
// slice that it reuses: a MetaHeadersFrame it returns, and its Fields, are
// valid only until the next frame is read. Whoever keeps fields copies them.
type blockReader struct {
	dec     *hpack.Decoder
	mh      http2.MetaHeadersFrame
	remain  uint32 // header list bytes still accepted in this block
	open    bool   // a block's last fragment is still to come
	regular bool   // a regular field was seen: no pseudo field may follow
	invalid error
}

func newBlockReader() *blockReader {
	b := &blockReader{}
	b.dec = hpack.NewDecoder(4096, b.emit)
	b.dec.SetMaxStringLength(ourMaxHeaderList)
	return b
}

var errPseudoAfterRegular = errors.New("pseudo header field after regular")

func (b *blockReader) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.refuse(errors.New("invalid value in header field " + hf.Name))
		return
	}
	if strings.HasPrefix(hf.Name, ":") {
		if b.regular {
			b.refuse(errPseudoAfterRegular)
			return
		}
	} else {
		b.regular = true
		if !validFieldName(hf.Name) {
			b.refuse(errors.New("invalid header field name " + hf.Name))
			return
		}
	}
	if size := hf.Size(); size <= b.remain {
		b.remain -= size
		b.mh.Fields = append(b.mh.Fields, hf)
		return
	}
	b.mh.Truncated = true
	b.remain = 0
	b.dec.SetEmitEnabled(false)
}

// refuse marks the block invalid. As the Framer does, the rest of the block
// is only parsed, not decoded: the block is refused anyway.
func (b *blockReader) refuse(err error) {
	b.invalid = err
	b.dec.SetEmitEnabled(false)
}

// frame takes a HEADERS or CONTINUATION frame. It returns the block's
// frame once its last fragment is decoded, and nil before. Errors are the
// Framer's: a StreamError for a malformed block, a ConnectionError for a
// block that cannot be decoded or is far too large.
func (b *blockReader) frame(f http2.Frame) (*http2.MetaHeadersFrame, error) {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return b.headers(f, f.HeaderBlockFragment())
	case *http2.ContinuationFrame:
		if b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return b.fragment(f.HeaderBlockFragment(), f.HeadersEnded())
	}
	return nil, nil
}

// headers starts a block with the fragment that f carries.
func (b *blockReader) headers(f *http2.HeadersFrame, frag []byte) (*http2.MetaHeadersFrame, error) {
	clear(b.mh.Fields)
	b.mh = http2.MetaHeadersFrame{HeadersFrame: f, Fields: b.mh.Fields[:0]}
	b.remain, b.regular, b.invalid = ourMaxHeaderList, false, nil
	b.dec.SetEmitEnabled(true)
	return b.fragment(frag, f.HeadersEnded())
}

// fragment decodes one fragment of the open block.
func (b *blockReader) fragment(frag []byte, ended bool) (*http2.MetaHeadersFrame, error) {
	// As the Framer does: refuse to decode far more than would be kept.
	if int64(len(frag)) > 4*int64(b.remain) {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := b.dec.Write(frag); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	b.open = !ended
	if !ended {
		return nil, nil
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: b.mh.StreamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	if err := checkPseudos(b.mh.Fields); err != nil {
		return nil, http2.StreamError{StreamID: b.mh.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &b.mh, nil
}

// validFieldName is HTTP/2's rule for a field name on the wire: a token, in
// lower case.
func validFieldName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !httpguts.IsTokenRune(r) || 'A' <= r && r <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos refuses unknown, repeated or mixed request and response
// pseudo fields.
func checkPseudos(fields []hpack.HeaderField) error {
	var req, resp bool
	for i, hf := range fields {
		if !strings.HasPrefix(hf.Name, ":") {
			break
		}
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			req = true
		case ":status":
			resp = true
		default:
			return errors.New("invalid pseudo header " + hf.Name)
		}
		for _, prev := range fields[:i] {
			if prev.Name == hf.Name {
				return errors.New("duplicate pseudo header " + hf.Name)
			}
		}
	}
	if req && resp {
		return errors.New("mix of request and response pseudo headers")
	}
	return nil
}

// frameReader reads the frames of one connection for its reader goroutine:
// header blocks come back decoded (see blockReader), and what the reader
// relayed is flushed before a read that may wait for the peer.
//
// The reader parses well-formed DATA, WINDOW_UPDATE, PING and HEADERS
// frames itself, into frames it reuses, and leaves anything else to the
// Framer, which says what is wrong. A DATA payload is not copied out of the
// read buffer (the Framer would copy it into a buffer of its own, one more
// copy of every relayed byte); WINDOW_UPDATE and PING come with every few
// DATA frames of a large reply, and a header block whole in one HEADERS
// frame with every call, twice or three times. DATA frames come as a
// *dataFrame, whoever parsed them. A frame it returns is valid until the
// next read.
type frameReader struct {
	br   *bufio.Reader
	fr   *http2.Framer
	hb   *blockReader
	fl   *flusher
	wu   http2.WindowUpdateFrame
	ping http2.PingFrame
	hf   http2.HeadersFrame
	df   dataFrame
}

// dataFrame is a DATA frame as the reader returns it, whoever parsed it.
// Its payload, without padding, is valid until the next read: it may still
// be in the read buffer.
type dataFrame struct {
	http2.FrameHeader
	data []byte
}

func (f *dataFrame) Data() []byte      { return f.data }
func (f *dataFrame) StreamEnded() bool { return f.Flags.Has(http2.FlagDataEndStream) }

func newFrameReader(br *bufio.Reader) *frameReader {
	fr := http2.NewFramer(nil, br)
	fr.SetMaxReadFrameSize(ourMaxFrame)
	// Only DATA frames are reused; each is done with before the next read.
	fr.SetReuseFrames()
	return &frameReader{br: br, fr: fr, hb: newBlockReader(), fl: &flusher{}}
}

// next returns the next frame; a header block comes as a
// *http2.MetaHeadersFrame.
func (r *frameReader) next() (http2.Frame, error) {
	for {
		if wouldBlock(r.br) {
			r.fl.flush()
		}
		if f, err := r.small(); f != nil || err != nil {
			return f, err
		}
		var typ http2.FrameType = 0xff
		if h, err := r.br.Peek(9); err == nil {
			typ = http2.FrameType(h[3])
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			if typ == http2.FrameHeaders && errors.As(err, new(http2.StreamError)) {
				// Padding longer than the payload, which the Framer
				// fails as a stream error. The block was never decoded,
				// so the decoder's table may no longer be the peer's:
				// a connection error, as RFC 9113 (6.2) has it.
				return nil, http2.ConnectionError(http2.ErrCodeProtocol)
			}
			return nil, err
		}
		switch f := f.(type) {
		case *http2.HeadersFrame, *http2.ContinuationFrame:
			mh, err := r.hb.frame(f)
			if err != nil {
				return nil, err
			}
			if mh == nil {
				continue
			}
			return mh, nil
		case *http2.DataFrame:
			r.df = dataFrame{FrameHeader: f.FrameHeader, data: f.Data()}
			return &r.df, nil
		}
		return f, nil
	}
}

// small reads the next frame if it is a well-formed DATA, WINDOW_UPDATE or
// PING frame, or a well-formed HEADERS frame with the whole of a header
// block, that fits in the read buffer, into the reader's own frame;
// otherwise it reads nothing and returns nil, nil.
// Within a header block only CONTINUATION may come, and the Framer says so.
// A block is only taken whole, so the Framer's own idea of whether a block
// is open stays right.
func (r *frameReader) small() (http2.Frame, error) {
	if r.hb.open {
		return nil, nil
	}
	h, err := r.br.Peek(9)
	if err != nil {
		return nil, nil
	}
	fh := http2.FrameHeader{
		Type:     http2.FrameType(h[3]),
		Flags:    http2.Flags(h[4]),
		Length:   uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]),
		StreamID: binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1),
	}
	switch {
	case fh.Type == http2.FrameData && fh.StreamID != 0 && int(fh.Length) <= r.br.Size()-9:
		n := 9 + int(fh.Length)
		p, err := r.br.Peek(n)
		if err != nil {
			return nil, nil
		}
		data := p[9:]
		if fh.Flags.Has(http2.FlagDataPadded) {
			if len(data) < 1 || int(data[0]) > len(data)-1 {
				return nil, nil
			}
			data = data[1 : len(data)-int(data[0])]
		}
		// The bytes stay in the buffer until the next read.
		r.br.Discard(n)
		r.df = dataFrame{FrameHeader: fh, data: data}
		return &r.df, nil
	case fh.Type == http2.FrameWindowUpdate && fh.Length == 4:
		p, err := r.br.Peek(13)
		if err != nil {
			return nil, nil
		}
		inc := binary.BigEndian.Uint32(p[9:]) & (1<<31 - 1)
		if inc == 0 {
			return nil, nil
		}
		r.br.Discard(13)
		r.wu = http2.WindowUpdateFrame{FrameHeader: fh, Increment: inc}
		return &r.wu, nil
	case fh.Type == http2.FramePing && fh.Length == 8 && fh.StreamID == 0:
		p, err := r.br.Peek(17)
		if err != nil {
			return nil, nil
		}
		r.ping = http2.PingFrame{FrameHeader: fh}
		copy(r.ping.Data[:], p[9:])
		r.br.Discard(17)
		return &r.ping, nil
	case fh.Type == http2.FrameHeaders && fh.Flags.Has(http2.FlagHeadersEndHeaders) && fh.StreamID != 0 &&
		int(fh.Length) <= r.br.Size()-9:
		n := 9 + int(fh.Length)
		p, err := r.br.Peek(n)
		if err != nil {
			return nil, nil
		}
		r.hf = http2.HeadersFrame{FrameHeader: fh}
		frag, ok := headersPayload(&r.hf, p[9:])
		if !ok {
			return nil, nil
		}
		// The decoder copies what it keeps: the fragment may go with the
		// buffer.
		mh, err := r.hb.headers(&r.hf, frag)
		r.br.Discard(n)
		if err != nil {
			return nil, err
		}
		return mh, nil
	}
	return nil, nil
}

// headersPayload reads a HEADERS frame's padding and priority fields into f
// and returns its block fragment, as the Framer does; false for a payload
// that the Framer would refuse.
func headersPayload(f *http2.HeadersFrame, p []byte) ([]byte, bool) {
	pad := 0
	if f.Flags.Has(http2.FlagHeadersPadded) {
		if len(p) < 1 {
			return nil, false
		}
		pad, p = int(p[0]), p[1:]
	}
	if f.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return nil, false
		}
		v := binary.BigEndian.Uint32(p)
		f.Priority.StreamDep = v & (1<<31 - 1)
		f.Priority.Exclusive = v != f.Priority.StreamDep
		f.Priority.Weight = p[4]
		p = p[5:]
	}
	if len(p) < pad {
		return nil, false
	}
	return p[:len(p)-pad], true
}

// wouldBlock tells whether reading the next frame from br may wait for the
// peer.
func wouldBlock(br *bufio.Reader) bool {
	if br.Buffered() < 9 {
		return true
	}
	h, _ := br.Peek(9)
	return br.Buffered() < 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}
