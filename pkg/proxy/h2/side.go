package h2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// What this endpoint advertises on both hops.
	ourStreamWindow = 512 << 10
	ourConnWindow   = 2 << 20
	ourMaxFrame     = 1 << 20
	// Received bytes are credited back once this many have been forwarded:
	// a quarter of the window, as gRPC does, so that a peer sending a large
	// reply parses a WINDOW_UPDATE for every 128 KiB of a stream and every
	// 512 KiB of the connection.
	creditThreshold     = ourStreamWindow / 4
	connCreditThreshold = ourConnWindow / 4
	// While less than this is queued toward a side, DATA queued there (its
	// stream's window there is full: a stalled stream) gives its
	// connection window back to where it came from at once, so that a few
	// stalled streams do not stop every other stream of the connection.
	// Beyond it, queued DATA keeps holding its connection window until it
	// is written, which slows a peer that sends faster than the other
	// reads, up to maxHeld.
	queueCredit = 2 << 20
	// At most this much queued DATA holds its connection window: beyond
	// it, queued DATA gives its window back at once, whatever is queued.
	// Data that never leaves (streams whose reader stopped) must not hold
	// the whole window, or no stream of the connection could receive
	// again: with half of it held and less than connCreditThreshold owed,
	// the peer can always send what brings the next WINDOW_UPDATE.
	maxHeld = ourConnWindow / 2
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
	// connPaid: the connection window for data was already given back to
	// src; only the stream window is owed. Otherwise data is counted in
	// the side's held.
	connPaid bool
}

// holdsConn tells whether the item is relayed DATA whose connection window
// is not given back yet (counted in the side's held).
func (it *item) holdsConn() bool { return it.kind == kData && it.src != nil && !it.connPaid }

// release gives back to where it came from the windows that a DATA item
// of n bytes still holds.
func (it *item) release(fl *flusher, n int) {
	if it.kind != kData || it.src == nil {
		return
	}
	conn := n
	if it.connPaid {
		conn = 0
	}
	it.src.give(fl, it.srcOS, conn, n)
}

const pooledSize = 16 << 10

// freeBufs keeps a few idle buffers for DATA that has to be queued. Unlike
// a sync.Pool it holds at most 1 MiB: after a burst of queued replies, a
// pool full of idle buffers is live heap at the next collection and lifts
// the heap goal, so the RSS of everything after the burst.
var freeBufs = make(chan *[]byte, 64)

func getBuf() *[]byte {
	select {
	case b := <-freeBufs:
		return b
	default:
		b := make([]byte, pooledSize)
		return &b
	}
}

func putBuf(b *[]byte) {
	select {
	case freeBufs <- b:
	default:
	}
}

// copyData returns a copy of p, in a pooled buffer when it is large and
// fits. Small payloads get their own small buffer: a queue of small frames
// (an event stream) must not pin a pooled buffer each.
func copyData(p []byte) ([]byte, *[]byte) {
	if len(p) < pooledSize/4 || len(p) > pooledSize {
		return append([]byte(nil), p...), nil
	}
	b := getBuf()
	return (*b)[:copy(*b, p)], b
}

// maxFreeItems bounds both the queues a side keeps for reuse and the
// length of one kept queue's array.
const maxFreeItems = 64

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

// side is one HTTP/2 connection, the kubelet's or the runtime's.
//
// There is no writer goroutine. Frames are queued under mu, and whichever
// goroutine queues work while no other is writing becomes the writer: it
// writes what can be written (see drain), then gives the role up. A
// goroutine that finds another writing leaves its work to that one. So a
// relayed frame is usually written by the goroutine that read it, with no
// hand-off, as a byte splice would; a slow peer blocks only the goroutine
// writing to it, and what others queue meanwhile is bounded by flow control.
type side struct {
	nc       net.Conn
	rw       io.ReadWriter // nc's reads and writes (package sysio)
	upstream bool          // the runtime's: this endpoint is the client

	// Only the writer (writing is true) uses these.
	bw     *bufio.Writer
	wfr    *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	hcache blockCache
	dhdr   [9]byte // a DATA frame header
	batch  []wframe
	wctrl  []func(*http2.Framer) error
	wpings []pingFrame
	wcred  []credit

	mu          sync.Mutex
	writing     bool // a goroutine is the writer
	flushWanted bool // the writer must flush before it gives up the role
	ctrl        []func(*http2.Framer) error
	pings       []pingFrame // PING frames to write
	freeItems   [][]item    // emptied stream queues, for reuse (see emptyItemsLocked)
	ready       []*ostream
	streams     map[uint32]*ostream
	connWin     int64
	initWin     int64
	maxFrame    uint32
	maxHdrList  uint32
	tableSize   uint32
	newTable    bool
	connCredit  int64
	credits     []*ostream
	queued      int64 // bytes of DATA queued toward this side
	held        int64 // of those, bytes whose connection window is not given back (at most maxHeld)
	nextID      uint32
	closed      bool
	finishing   bool
	goaway      bool   // the peer sent GOAWAY: no new streams
	lastID      uint32 // highest stream id the peer opened (kubelet side)
	away        bool   // we sent GOAWAY naming lastID: newer streams are ignored (kubelet side)

	// The runtime's side: whether a kubelet's PING may be relayed to it
	// (see relayPing). Set by the two readers without s.mu.
	pingOut  atomic.Bool   // a relayed PING is not answered yet
	framesIn atomic.Uint64 // HEADERS and DATA frames read from the runtime
	ackAt    atomic.Uint64 // framesIn when the last relayed PING was answered
}

// credit is a WINDOW_UPDATE to write.
type credit struct {
	id uint32
	n  int64
}

// flusher is a reader's list of the sides it wrote to without flushing. A
// reader flushes them before it would block on a read, so the frames it
// relays from one read leave in one write.
type flusher struct{ sides []*side }

func (fl *flusher) note(s *side) {
	for _, x := range fl.sides {
		if x == s {
			return
		}
	}
	fl.sides = append(fl.sides, s)
}

func (fl *flusher) flush() {
	for i, s := range fl.sides {
		s.flush()
		fl.sides[i] = nil
	}
	fl.sides = fl.sides[:0]
}

// newSide makes a side of nc, whose reads and writes rw does.
func newSide(nc net.Conn, rw io.ReadWriter, upstream bool) *side {
	s := &side{
		nc:         nc,
		rw:         rw,
		upstream:   upstream,
		bw:         bufio.NewWriterSize(rw, 64<<10),
		streams:    map[uint32]*ostream{},
		connWin:    initialWindow,
		initWin:    initialWindow,
		maxFrame:   16384,
		maxHdrList: 0, // unlimited until the peer says otherwise
		tableSize:  4096,
		nextID:     1,
	}
	s.wfr = http2.NewFramer(s.bw, nil)
	s.enc = hpack.NewEncoder(&s.hbuf)
	return s
}

// greet queues this endpoint's SETTINGS and connection window and writes
// them.
func (s *side) greet() {
	s.control(nil, func(fr *http2.Framer) error {
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

// becomeWriterLocked is called with s.mu held after work was queued. It
// returns true when the caller is now the writer and must call drain. A
// caller without a flusher (fl is nil) wants its frames flushed: if another
// goroutine is the writer, that one will flush them.
func (s *side) becomeWriterLocked(fl *flusher) bool {
	if s.closed {
		return false
	}
	if s.writing {
		if fl == nil {
			s.flushWanted = true
		}
		return false
	}
	s.writing = true
	return true
}

// control queues a connection-level frame.
func (s *side) control(fl *flusher, f func(*http2.Framer) error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.ctrl = append(s.ctrl, f)
	w := s.becomeWriterLocked(fl)
	s.mu.Unlock()
	if w {
		s.drain(fl)
	}
}

// pingFrame is a PING frame to write: an answer, or one relayed.
type pingFrame struct {
	ack  bool
	data [8]byte
}

// ping queues a PING frame, and returns false when the side is closed. It
// is kept without a closure, since a peer's flow-control estimator may ping
// with every few DATA frames.
func (s *side) ping(fl *flusher, ack bool, data [8]byte) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	s.pings = append(s.pings, pingFrame{ack, data})
	w := s.becomeWriterLocked(fl)
	s.mu.Unlock()
	if w {
		s.drain(fl)
	}
	return true
}

// relayPing queues a kubelet's PING toward the runtime if the runtime
// cannot count it as abuse, and tells whether it did. A gRPC server counts
// a PING that comes before it has sent HEADERS or DATA since the previous
// one as a strike, and on the third closes the connection with GOAWAY
// too_many_pings, failing every call on it. The kubelet's flow-control
// estimator pings when DATA arrives, which through a direct connection
// means the server sent some since; through the relay that DATA may have
// been sent long before, and held here. So a PING is relayed only while no
// other is out and the runtime sent HEADERS or DATA after answering the
// last one (so after it counted it); otherwise the relay answers it, as the
// endpoint of the kubelet's hop.
func (s *side) relayPing(fl *flusher, data [8]byte) bool {
	if s.pingOut.Load() || s.framesIn.Load() <= s.ackAt.Load() {
		return false
	}
	s.pingOut.Store(true)
	return s.ping(fl, false, data)
}

// pingAnswered notes the runtime's answer to a relayed PING.
func (s *side) pingAnswered() {
	s.ackAt.Store(s.framesIn.Load())
	s.pingOut.Store(false)
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

// emptyItemsLocked forgets os's queue. An empty queue's array is kept for
// the next stream that queues, so that a stream's queue does not grow from
// nothing on every call; what is still queued is left to the caller.
func (s *side) emptyItemsLocked(os *ostream) {
	if os.head == len(os.items) && cap(os.items) > 0 && cap(os.items) <= maxFreeItems && len(s.freeItems) < maxFreeItems {
		s.freeItems = append(s.freeItems, os.items[:0])
	}
	os.items, os.head = nil, 0
}

// sentEndLocked records that os ended toward this side as it is written
// at once, with nothing queued: it is forgotten once both directions ended.
func (s *side) sentEndLocked(os *ostream) {
	os.sentEnd = true
	s.emptyItemsLocked(os)
	if os.recvEnd {
		delete(s.streams, os.id)
	}
}

// push queues items on os and writes them if no other goroutine is
// writing. It returns false when the side is closed: nothing was queued.
func (s *side) push(fl *flusher, os *ostream, its ...item) bool {
	s.mu.Lock()
	if s.closed || os.sentEnd {
		closed := s.closed
		s.unholdLocked(its)
		s.mu.Unlock()
		for i := range its {
			its[i].release(nil, len(its[i].data))
		}
		return !closed
	}
	if os.head > 0 && os.head*2 >= len(os.items) {
		// Reuse the consumed front instead of growing the queue.
		n := copy(os.items, os.items[os.head:])
		clear(os.items[n:])
		os.items, os.head = os.items[:n], 0
	}
	if os.items == nil && len(s.freeItems) > 0 {
		os.items = s.freeItems[len(s.freeItems)-1]
		s.freeItems = s.freeItems[:len(s.freeItems)-1]
	}
	os.items = append(os.items, its...)
	for i := range its {
		if its[i].kind == kData {
			s.queued += int64(len(its[i].data))
		}
	}
	if !os.inReady {
		os.inReady = true
		s.ready = append(s.ready, os)
	}
	w := s.becomeWriterLocked(fl)
	s.mu.Unlock()
	if w {
		s.drain(fl)
	}
	return true
}

// pushData relays a DATA payload received from src on srcOS. p is only
// borrowed: when nothing is queued ahead of it on os, the windows allow it
// and no other goroutine is writing, it is written at once, with no copy;
// otherwise a copy is queued. The padding and anything not forwarded is the
// caller's to credit.
func (s *side) pushData(fl *flusher, os *ostream, p []byte, end bool, src *side, srcOS *ostream) bool {
	n := int64(len(p))
	s.mu.Lock()
	if s.closed || os.sentEnd || s.writing || os.id == 0 || os.head != len(os.items) || n > s.connWin || n > os.win {
		paid := !s.closed && !os.sentEnd && (s.queued < queueCredit || s.held+n > maxHeld)
		if paid && os.head < len(os.items) {
			// Small payloads queued behind each other (an event stream
			// whose reader is slower than the runtime) share one buffer.
			if last := &os.items[len(os.items)-1]; last.kind == kData && !last.end && last.src == src && last.srcOS == srcOS && last.connPaid && len(last.data)+len(p) <= pooledSize {
				last.data = append(last.data, p...)
				last.end = end
				s.queued += n
				w := s.becomeWriterLocked(fl)
				s.mu.Unlock()
				src.give(fl, nil, len(p), 0)
				if w {
					s.drain(fl)
				}
				return true
			}
		}
		if !paid {
			s.held += n // counted before the lock is let go (see maxHeld); push takes it off if it queues nothing
		}
		s.mu.Unlock()
		if paid {
			src.give(fl, nil, len(p), 0)
		}
		buf, pool := copyData(p)
		return s.push(fl, os, item{kind: kData, data: buf, end: end, src: src, srcOS: srcOS, pool: pool, connPaid: paid})
	}
	s.writing = true
	s.connWin -= n
	os.win -= n
	if end {
		s.sentEndLocked(os)
	}
	maxFrame := int(s.maxFrame)
	s.mu.Unlock()
	if err := s.writeData(os.id, p, end, maxFrame); err != nil {
		s.fail()
		return true
	}
	src.give(fl, srcOS, len(p), len(p))
	s.drain(fl)
	return true
}

// pushHeaders relays a header block. fields are only borrowed: when nothing
// is queued ahead of them on os and no other goroutine is writing, they are
// written at once; otherwise a copy is queued.
func (s *side) pushHeaders(fl *flusher, os *ostream, fields []hpack.HeaderField, end bool) bool {
	s.mu.Lock()
	if s.closed || os.sentEnd || s.writing || os.head != len(os.items) || os.id == 0 && s.goaway {
		s.mu.Unlock()
		return s.push(fl, os, item{kind: kHeaders, fields: slices.Clone(fields), end: end})
	}
	s.writing = true
	if os.id == 0 {
		s.registerLocked(os, s.nextID)
		s.nextID += 2
	}
	if end {
		s.sentEndLocked(os)
	}
	maxFrame, maxHdr := int(s.maxFrame), s.maxHdrList
	s.mu.Unlock()
	w := wframe{os: os, it: item{kind: kHeaders, fields: fields, end: end}}
	if err := s.write(fl, &w, maxFrame, maxHdr); err != nil {
		s.fail()
		return true
	}
	s.drain(fl)
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
	s.unqueueLocked(drop)
	s.mu.Unlock()
	for i := range drop {
		drop[i].release(nil, len(drop[i].data))
	}
}

// finish closes the side once everything queued has been written.
func (s *side) finish() {
	s.mu.Lock()
	s.finishing = true
	w := s.becomeWriterLocked(nil)
	s.mu.Unlock()
	if w {
		s.drain(nil)
	}
}

// reset drops what is queued on os and queues RST_STREAM, unless the
// stream already ended toward this side. Data that will never be sent is
// credited to where it came from.
func (s *side) reset(fl *flusher, os *ostream, code http2.ErrCode) {
	s.mu.Lock()
	var drop []item
	w := false
	if !s.closed && !os.rst && !(os.sentEnd && os.recvEnd) {
		os.rst = true
		drop = os.items[os.head:]
		os.items, os.head = nil, 0
		s.unqueueLocked(drop)
		if os.id == 0 && (len(drop) == 0 || drop[0].kind == kHeaders) {
			// Never opened on this side: nothing to reset.
			os.sentEnd = true
		} else {
			os.items, os.head = []item{{kind: kRST, code: code}}, 0
			if !os.inReady {
				os.inReady = true
				s.ready = append(s.ready, os)
			}
			w = s.becomeWriterLocked(fl)
		}
	}
	os.recvEnd = true
	s.mu.Unlock()
	for i := range drop {
		drop[i].release(nil, len(drop[i].data))
	}
	if w {
		s.drain(fl)
	}
}

// credit records that n bytes received from this side on os (nil: the
// connection only) were consumed, and writes a WINDOW_UPDATE once enough
// are owed.
func (s *side) credit(fl *flusher, os *ostream, n int) { s.give(fl, os, n, n) }

// give gives back conn bytes of this side's connection window and stream
// bytes of os's.
func (s *side) give(fl *flusher, os *ostream, conn, stream int) {
	if conn <= 0 && (stream <= 0 || os == nil) {
		return
	}
	s.mu.Lock()
	s.connCredit += int64(max(conn, 0))
	wake := s.connCredit >= connCreditThreshold
	if os != nil && stream > 0 && !os.recvEnd {
		if os.credit == 0 {
			s.credits = append(s.credits, os)
		}
		os.credit += int64(stream)
		wake = wake || os.credit >= creditThreshold
	}
	w := wake && s.becomeWriterLocked(fl)
	s.mu.Unlock()
	if w {
		s.drain(fl)
	}
}

// windowUpdate applies a WINDOW_UPDATE received from this side.
func (s *side) windowUpdate(fl *flusher, id uint32, n uint32) {
	s.mu.Lock()
	if id == 0 {
		s.connWin += int64(n)
	} else if os := s.streams[id]; os != nil {
		os.win += int64(n)
	}
	w := len(s.ready) > 0 && s.becomeWriterLocked(fl)
	s.mu.Unlock()
	if w {
		s.drain(fl)
	}
}

// settings applies the peer's SETTINGS and acknowledges them.
func (s *side) settings(fl *flusher, f *http2.SettingsFrame) {
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
			if st.Val != s.tableSize {
				s.tableSize = st.Val
				s.newTable = true
			}
		}
		return nil
	})
	s.ctrl = append(s.ctrl, func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
	w := s.becomeWriterLocked(fl)
	s.mu.Unlock()
	if w {
		s.drain(fl)
	}
}

// flush writes out what a reader left buffered, or has the current writer
// do it.
func (s *side) flush() {
	s.mu.Lock()
	w := s.becomeWriterLocked(nil)
	s.mu.Unlock()
	if w {
		s.drain(nil)
	}
}

// close drops what is queued and closes the connection; a writer blocked on
// it returns.
func (s *side) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.nc.Close()
}

// fail ends the writer role after a write error and closes the side.
func (s *side) fail() {
	s.mu.Lock()
	s.writing = false
	s.mu.Unlock()
	s.close()
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

// drain is run by the writer: it writes what can be written until nothing
// is left, then gives up the role. Without a flusher it flushes before
// that; with one, it leaves the flush to the flusher's reader, unless a
// goroutine without one asked for it meanwhile.
func (s *side) drain(fl *flusher) {
	flush := fl == nil
	for {
		s.mu.Lock()
		if s.closed {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.wctrl = append(s.wctrl[:0], s.ctrl...)
		clear(s.ctrl)
		s.ctrl = s.ctrl[:0]
		s.wpings = append(s.wpings[:0], s.pings...)
		s.pings = s.pings[:0]
		if s.newTable {
			s.newTable = false
			s.enc.SetMaxDynamicTableSizeLimit(s.tableSize)
			s.hcache.reset()
		}
		s.wcred = s.wcred[:0]
		if s.connCredit >= connCreditThreshold {
			s.wcred = append(s.wcred, credit{0, s.connCredit})
			s.connCredit = 0
		}
		if len(s.credits) > 0 {
			keep := s.credits[:0]
			for _, os := range s.credits {
				switch {
				case os.recvEnd || os.id == 0:
					os.credit = 0
				case os.credit >= creditThreshold:
					s.wcred = append(s.wcred, credit{os.id, os.credit})
					os.credit = 0
				default:
					keep = append(keep, os)
				}
			}
			clear(s.credits[len(keep):])
			s.credits = keep
		}
		s.batch = s.pickLocked(s.batch[:0])
		if len(s.wctrl) == 0 && len(s.wpings) == 0 && len(s.wcred) == 0 && len(s.batch) == 0 {
			buffered := s.bw.Buffered() > 0
			if buffered && (flush || s.flushWanted) {
				s.flushWanted = false
				s.mu.Unlock()
				if err := s.bw.Flush(); err != nil {
					s.fail()
					return
				}
				continue
			}
			if !buffered {
				s.flushWanted = false
				if s.finishing {
					s.writing = false
					s.mu.Unlock()
					s.close()
					return
				}
			} else {
				fl.note(s)
			}
			s.writing = false
			s.mu.Unlock()
			return
		}
		maxFrame := int(s.maxFrame)
		maxHdr := s.maxHdrList
		s.mu.Unlock()

		for i, f := range s.wctrl {
			s.wctrl[i] = nil
			if err := f(s.wfr); err != nil {
				s.fail()
				return
			}
		}
		for _, p := range s.wpings {
			if err := s.wfr.WritePing(p.ack, p.data); err != nil {
				s.fail()
				return
			}
		}
		for _, c := range s.wcred {
			if err := s.wfr.WriteWindowUpdate(c.id, uint32(c.n)); err != nil {
				s.fail()
				return
			}
		}
		for i := range s.batch {
			if err := s.write(fl, &s.batch[i], maxFrame, maxHdr); err != nil {
				s.fail()
				return
			}
			s.batch[i] = wframe{}
		}
	}
}

// unqueueLocked accounts for dropped items.
func (s *side) unqueueLocked(drop []item) {
	for i := range drop {
		if drop[i].kind == kData {
			s.queued -= int64(len(drop[i].data))
		}
	}
	s.unholdLocked(drop)
}

// unholdLocked accounts for items that no longer hold their connection
// window here: dropped, or never queued (pickLocked accounts for what is
// written).
func (s *side) unholdLocked(its []item) {
	for i := range its {
		if its[i].holdsConn() {
			s.held -= int64(len(its[i].data))
		}
	}
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
						drop := os.items[os.head:]
						os.items, os.head = nil, 0
						os.sentEnd = true
						s.unqueueLocked(drop)
						go func() {
							for i := range drop {
								drop[i].release(nil, len(drop[i].data))
							}
						}()
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
				s.queued -= n
				if it.holdsConn() {
					s.held -= n
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
				s.emptyItemsLocked(os)
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
func (s *side) write(fl *flusher, w *wframe, maxFrame int, maxHdr uint32) error {
	it := &w.it
	switch it.kind {
	case kRST:
		return s.wfr.WriteRSTStream(w.os.id, it.code)
	case kHeaders:
		if maxHdr != 0 {
			var size uint32
			for _, f := range it.fields {
				size += f.Size()
			}
			if size > maxHdr {
				// The peer would refuse it; reset instead, before the
				// encoder's table takes in fields the peer never sees.
				return s.wfr.WriteRSTStream(w.os.id, http2.ErrCodeInternal)
			}
		}
		block := s.encodeHeaders(it.fields)
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
		if err := s.writeData(w.os.id, it.data, it.end, maxFrame); err != nil {
			return err
		}
		it.release(fl, len(it.data))
		if it.pool != nil {
			putBuf(it.pool)
		}
		return nil
	}
}

// writeData writes a DATA payload in frames of at most maxFrame bytes.
// It writes the frame header itself: the Framer would first copy the
// payload into a frame buffer of its own, one more copy of every relayed
// byte.
func (s *side) writeData(id uint32, data []byte, end bool, maxFrame int) error {
	for {
		n := min(len(data), maxFrame)
		h := s.dhdr[:]
		h[0], h[1], h[2] = byte(n>>16), byte(n>>8), byte(n)
		h[3] = byte(http2.FrameData)
		h[4] = 0
		if end && n == len(data) {
			h[4] = byte(http2.FlagDataEndStream)
		}
		binary.BigEndian.PutUint32(h[5:], id&(1<<31-1))
		s.bw.Write(h)
		if _, err := s.bw.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
}
