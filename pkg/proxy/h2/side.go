package h2

import (
	"bufio"
	"bytes"
	"net"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// What this endpoint advertises on both hops.
	ourStreamWindow = 4 << 20
	ourConnWindow   = 8 << 20
	ourMaxFrame     = 1 << 20
	// Received bytes are credited back once this many have been forwarded.
	creditThreshold = 256 << 10
	// The largest header list accepted from a peer.
	ourMaxHeaderList = 1 << 20
	initialWindow    = 65535
)

type itemKind uint8

const (
	kHeaders itemKind = iota
	kData
	kRST
)

// item is one frame (or one DATA payload, split as windows allow) queued for
// a stream.
type item struct {
	kind   itemKind
	end    bool
	fields []hpack.HeaderField
	data   []byte
	code   http2.ErrCode
	// src is where DATA came from, to be credited once written.
	src   *side
	srcOS *ostream
	// pool holds data's buffer, returned once the item is written.
	pool *[]byte
}

const pooledSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, pooledSize); return &b }}

// copyData returns a copy of p, in a pooled buffer when it is large and
// fits. Small payloads get their own small buffer: a queue of small frames
// (an event stream) must not pin a pooled buffer each.
func copyData(p []byte) ([]byte, *[]byte) {
	if len(p) < pooledSize/4 || len(p) > pooledSize {
		return append([]byte(nil), p...), nil
	}
	b := bufPool.Get().(*[]byte)
	return (*b)[:copy(*b, p)], b
}

// ostream is one stream on one side: the frames queued toward that side,
// the send window granted by that side, and the credit owed to it.
type ostream struct {
	id      uint32
	win     int64
	items   []item // items[head:] are queued
	head    int
	inReady bool
	credit  int64 // received from this side, forwarded, not yet credited
	sentEnd bool  // END_STREAM or RST written to this side
	rst     bool  // RST_STREAM queued to this side
	recvEnd bool  // END_STREAM or RST received from this side
	rs      *rstream
}

// side is one HTTP/2 connection, the kubelet's or the runtime's, and the
// goroutine that writes to it.
type side struct {
	nc       net.Conn
	upstream bool // the runtime's: this endpoint is the client
	bw       *bufio.Writer
	wfr      *http2.Framer
	enc      *hpack.Encoder
	hbuf     bytes.Buffer

	mu         sync.Mutex
	cond       sync.Cond
	ctrl       []func(*http2.Framer) error
	ready      []*ostream
	streams    map[uint32]*ostream
	connWin    int64
	initWin    int64
	maxFrame   uint32
	maxHdrList uint32
	tableSize  uint32
	newTable   bool
	connCredit int64
	credits    []*ostream
	nextID     uint32
	closed     bool
	finishing  bool
	goaway     bool   // the peer sent GOAWAY: no new streams
	lastID     uint32 // highest stream id the peer opened (kubelet side)
	done       chan struct{}
}

func newSide(nc net.Conn, upstream bool) *side {
	s := &side{
		nc:         nc,
		upstream:   upstream,
		bw:         bufio.NewWriterSize(nc, 64<<10),
		streams:    map[uint32]*ostream{},
		connWin:    initialWindow,
		initWin:    initialWindow,
		maxFrame:   16384,
		maxHdrList: 0, // unlimited until the peer says otherwise
		tableSize:  4096,
		nextID:     1,
		done:       make(chan struct{}),
	}
	s.cond.L = &s.mu
	s.wfr = http2.NewFramer(s.bw, nil)
	s.enc = hpack.NewEncoder(&s.hbuf)
	return s
}

// greet queues this endpoint's SETTINGS and connection window.
func (s *side) greet() {
	s.control(func(fr *http2.Framer) error {
		st := []http2.Setting{
			{ID: http2.SettingInitialWindowSize, Val: ourStreamWindow},
			{ID: http2.SettingMaxFrameSize, Val: ourMaxFrame},
			{ID: http2.SettingMaxHeaderListSize, Val: ourMaxHeaderList},
		}
		if s.upstream {
			st = append(st, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		}
		if err := fr.WriteSettings(st...); err != nil {
			return err
		}
		return fr.WriteWindowUpdate(0, ourConnWindow-initialWindow)
	})
}

// control queues a connection-level frame.
func (s *side) control(f func(*http2.Framer) error) {
	s.mu.Lock()
	if !s.closed {
		s.ctrl = append(s.ctrl, f)
		s.cond.Signal()
	}
	s.mu.Unlock()
}

// register makes os known under id; call with s.mu held.
func (s *side) registerLocked(os *ostream, id uint32) {
	os.id = id
	os.win = s.initWin
	s.streams[id] = os
}

// lookup finds a stream by its id on this side.
func (s *side) lookup(id uint32) *ostream {
	s.mu.Lock()
	os := s.streams[id]
	s.mu.Unlock()
	return os
}

// lookupOpen finds a stream on which the peer may still send.
func (s *side) lookupOpen(id uint32) *ostream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if os := s.streams[id]; os != nil && !os.recvEnd {
		return os
	}
	return nil
}

// push queues items on os and wakes the writer. It returns false when the
// side is closed: nothing was queued.
func (s *side) push(os *ostream, its ...item) bool {
	s.mu.Lock()
	if s.closed || os.sentEnd {
		closed := s.closed
		s.mu.Unlock()
		for _, it := range its {
			if it.kind == kData && it.src != nil {
				it.src.credit(it.srcOS, len(it.data))
			}
		}
		return !closed
	}
	if os.head > 0 && os.head*2 >= len(os.items) {
		// Reuse the consumed front instead of growing the queue.
		n := copy(os.items, os.items[os.head:])
		clear(os.items[n:])
		os.items, os.head = os.items[:n], 0
	}
	os.items = append(os.items, its...)
	if !os.inReady {
		os.inReady = true
		s.ready = append(s.ready, os)
	}
	s.cond.Signal()
	s.mu.Unlock()
	return true
}

// abandon forgets os on this side: the peer reset it, or it can no longer
// be used. Queued data is credited to where it came from.
func (s *side) abandon(os *ostream) {
	s.mu.Lock()
	drop := os.items[os.head:]
	os.items, os.head = nil, 0
	os.sentEnd, os.recvEnd = true, true
	if os.id != 0 && s.streams[os.id] == os {
		delete(s.streams, os.id)
	}
	s.mu.Unlock()
	for _, it := range drop {
		if it.kind == kData && it.src != nil {
			it.src.credit(it.srcOS, len(it.data))
		}
	}
}

// finishing closes the side once everything queued has been written.
func (s *side) finish() {
	s.mu.Lock()
	s.finishing = true
	s.cond.Signal()
	s.mu.Unlock()
}

// reset drops what is queued on os and queues RST_STREAM, unless the
// stream already ended toward this side. Data that will never be sent is
// credited to where it came from.
func (s *side) reset(os *ostream, code http2.ErrCode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var drop []item
	if !s.closed && !os.rst && !(os.sentEnd && os.recvEnd) {
		os.rst = true
		drop = os.items[os.head:]
		os.items, os.head = nil, 0
		if os.id == 0 && (len(drop) == 0 || drop[0].kind == kHeaders) {
			// Never opened on this side: nothing to reset.
			os.sentEnd = true
		} else {
			os.items, os.head = []item{{kind: kRST, code: code}}, 0
			if !os.inReady {
				os.inReady = true
				s.ready = append(s.ready, os)
			}
			s.cond.Signal()
		}
	}
	os.recvEnd = true
	for _, it := range drop {
		if it.kind == kData && it.src != nil {
			go it.src.credit(it.srcOS, len(it.data))
		}
	}
}

// credit records that n bytes received from this side on os (nil: the
// connection only) were consumed.
func (s *side) credit(os *ostream, n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.connCredit += int64(n)
	wake := s.connCredit >= creditThreshold
	if os != nil && !os.recvEnd {
		if os.credit == 0 {
			s.credits = append(s.credits, os)
		}
		os.credit += int64(n)
		wake = wake || os.credit >= creditThreshold
	}
	if wake {
		s.cond.Signal()
	}
	s.mu.Unlock()
}

// windowUpdate applies a WINDOW_UPDATE received from this side.
func (s *side) windowUpdate(id uint32, n uint32) {
	s.mu.Lock()
	if id == 0 {
		s.connWin += int64(n)
	} else if os := s.streams[id]; os != nil {
		os.win += int64(n)
	}
	s.cond.Signal()
	s.mu.Unlock()
}

// settings applies the peer's SETTINGS.
func (s *side) settings(f *http2.SettingsFrame) {
	s.mu.Lock()
	f.ForeachSetting(func(st http2.Setting) error {
		switch st.ID {
		case http2.SettingInitialWindowSize:
			d := int64(st.Val) - s.initWin
			s.initWin = int64(st.Val)
			for _, os := range s.streams {
				os.win += d
			}
		case http2.SettingMaxFrameSize:
			s.maxFrame = st.Val
		case http2.SettingMaxHeaderListSize:
			s.maxHdrList = st.Val
		case http2.SettingHeaderTableSize:
			if st.Val < s.tableSize || st.Val != s.tableSize {
				s.tableSize = st.Val
				s.newTable = true
			}
		}
		return nil
	})
	s.ctrl = append(s.ctrl, func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
	s.cond.Signal()
	s.mu.Unlock()
}

// close stops the writer; queued frames are dropped.
func (s *side) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.nc.Close()
}

// sendableLocked tells whether os's first item can be written now.
func (s *side) sendableLocked(os *ostream) bool {
	if os.head == len(os.items) {
		return false
	}
	it := &os.items[os.head]
	if it.kind != kData || len(it.data) == 0 {
		return true
	}
	return s.connWin > 0 && os.win > 0
}

type wframe struct {
	os *ostream
	it item
}

// writeLoop writes queued frames until the side closes.
func (s *side) writeLoop() error {
	defer close(s.done)
	var batch []wframe
	var ctrl []func(*http2.Framer) error
	for {
		s.mu.Lock()
		for {
			if s.closed {
				s.mu.Unlock()
				return nil
			}
			if len(s.ctrl) > 0 || s.connCredit >= creditThreshold || s.anyCreditLocked() || s.anySendableLocked() {
				break
			}
			if s.finishing && s.bw.Buffered() == 0 {
				s.mu.Unlock()
				s.close()
				return nil
			}
			if s.bw.Buffered() > 0 {
				s.mu.Unlock()
				if err := s.bw.Flush(); err != nil {
					s.close()
					return err
				}
				s.mu.Lock()
				continue
			}
			s.cond.Wait()
		}
		ctrl = append(ctrl[:0], s.ctrl...)
		s.ctrl = s.ctrl[:0]
		if s.newTable {
			s.newTable = false
			ts := s.tableSize
			s.enc.SetMaxDynamicTableSizeLimit(ts)
		}
		var connCredit int64
		if s.connCredit >= creditThreshold {
			connCredit, s.connCredit = s.connCredit, 0
		}
		type sc struct {
			id uint32
			n  int64
		}
		var scs []sc
		if len(s.credits) > 0 {
			keep := s.credits[:0]
			for _, os := range s.credits {
				switch {
				case os.recvEnd || os.id == 0:
					os.credit = 0
				case os.credit >= creditThreshold:
					scs = append(scs, sc{os.id, os.credit})
					os.credit = 0
				default:
					keep = append(keep, os)
				}
			}
			s.credits = keep
		}
		batch = s.pickLocked(batch[:0])
		maxFrame := int(s.maxFrame)
		maxHdr := s.maxHdrList
		s.mu.Unlock()

		for _, f := range ctrl {
			if err := f(s.wfr); err != nil {
				s.close()
				return err
			}
		}
		if connCredit > 0 {
			s.wfr.WriteWindowUpdate(0, uint32(connCredit))
		}
		for _, c := range scs {
			s.wfr.WriteWindowUpdate(c.id, uint32(c.n))
		}
		for i := range batch {
			if err := s.write(&batch[i], maxFrame, maxHdr); err != nil {
				s.close()
				return err
			}
			batch[i] = wframe{}
		}
	}
}

func (s *side) anyCreditLocked() bool {
	for _, os := range s.credits {
		if os.credit >= creditThreshold {
			return true
		}
	}
	return false
}

func (s *side) anySendableLocked() bool {
	for _, os := range s.ready {
		if s.sendableLocked(os) {
			return true
		}
	}
	return false
}

// pickLocked takes what can be written now from the ready streams.
func (s *side) pickLocked(batch []wframe) []wframe {
	keep := s.ready[:0]
	for _, os := range s.ready {
		for s.sendableLocked(os) {
			it := os.items[os.head]
			switch it.kind {
			case kHeaders:
				if os.id == 0 {
					if s.goaway {
						// The runtime refuses new streams on this
						// connection; the stream fails when the reader sees
						// it is not registered.
						os.items, os.head = nil, 0
						os.sentEnd = true
						if os.rs != nil {
							go os.rs.c.upstreamLost(os.rs, "the runtime is going away")
						}
						continue
					}
					s.registerLocked(os, s.nextID)
					s.nextID += 2
				}
			case kData:
				n := int64(len(it.data))
				if n > s.connWin {
					n = s.connWin
				}
				if n > os.win {
					n = os.win
				}
				if n < int64(len(it.data)) {
					part := it
					part.data = it.data[:n]
					part.end = false
					part.pool = nil
					os.items[os.head].data = it.data[n:]
					s.connWin -= n
					os.win -= n
					batch = append(batch, wframe{os, part})
					continue
				}
				s.connWin -= n
				os.win -= n
			}
			os.items[os.head] = item{}
			os.head++
			if os.head == len(os.items) {
				os.items, os.head = os.items[:0], 0
			}
			if it.end || it.kind == kRST {
				os.sentEnd = true
				os.items, os.head = nil, 0
			}
			batch = append(batch, wframe{os, it})
		}
		if os.sentEnd && os.recvEnd && os.id != 0 {
			delete(s.streams, os.id)
		}
		if os.head < len(os.items) {
			keep = append(keep, os)
		} else {
			os.inReady = false
		}
	}
	for i := len(keep); i < len(s.ready); i++ {
		s.ready[i] = nil
	}
	s.ready = keep
	return batch
}

// recvEnded marks that the peer ended os; it is forgotten once both
// directions have ended.
func (s *side) recvEnded(os *ostream) {
	s.mu.Lock()
	os.recvEnd = true
	if os.sentEnd && os.id != 0 {
		delete(s.streams, os.id)
	}
	s.mu.Unlock()
}

// write writes one frame, splitting DATA and header blocks to the peer's
// frame size.
func (s *side) write(w *wframe, maxFrame int, maxHdr uint32) error {
	it := &w.it
	switch it.kind {
	case kRST:
		return s.wfr.WriteRSTStream(w.os.id, it.code)
	case kHeaders:
		s.hbuf.Reset()
		var size uint32
		for _, f := range it.fields {
			size += f.Size()
			s.enc.WriteField(f)
		}
		if maxHdr != 0 && size > maxHdr {
			// The peer would refuse it; reset instead.
			return s.wfr.WriteRSTStream(w.os.id, http2.ErrCodeInternal)
		}
		block := s.hbuf.Bytes()
		first := block
		if len(first) > maxFrame {
			first = block[:maxFrame]
		}
		block = block[len(first):]
		if err := s.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: w.os.id, BlockFragment: first, EndStream: it.end, EndHeaders: len(block) == 0}); err != nil {
			return err
		}
		for len(block) > 0 {
			n := len(block)
			if n > maxFrame {
				n = maxFrame
			}
			if err := s.wfr.WriteContinuation(w.os.id, n == len(block), block[:n]); err != nil {
				return err
			}
			block = block[n:]
		}
		return nil
	default:
		data := it.data
		for {
			n := len(data)
			if n > maxFrame {
				n = maxFrame
			}
			if err := s.wfr.WriteData(w.os.id, it.end && n == len(data), data[:n]); err != nil {
				return err
			}
			data = data[n:]
			if len(data) == 0 {
				break
			}
		}
		if it.src != nil {
			it.src.credit(it.srcOS, len(it.data))
		}
		if it.pool != nil {
			bufPool.Put(it.pool)
		}
		return nil
	}
}
