package h2

import "golang.org/x/net/http2/hpack"

// blockCache remembers header blocks that were encoded as indexed fields
// only. Such a block does not change the encoder's dynamic table, so the
// same fields encode to the same bytes until something is inserted into the
// table; then the cache is emptied. A relay sends the same few header lists
// (a method's request headers, ":status: 200", "grpc-status: 0") again and
// again, and so skips the encoder's table searches.
type blockCache struct {
	entries [16]cachedBlock
	n, next int
}

type cachedBlock struct {
	fields []hpack.HeaderField // without grpc-timeout
	block  []byte
}

// encodeHeaders returns fields as a header block for this side's peer,
// valid until the next call. The writer calls it.
//
// grpc-timeout has a new value on every call: it goes last, as a literal
// that is never indexed, so that it neither pushes the other fields out of
// the peer's table nor empties the cache. Field order among regular fields
// carries no meaning in HTTP/2 or gRPC.
func (s *side) encodeHeaders(fields []hpack.HeaderField) []byte {
	s.hbuf.Reset()
	if b := s.hcache.lookup(fields); b != nil {
		s.hbuf.Write(b)
	} else {
		for _, f := range fields {
			if f.Name != "grpc-timeout" {
				s.enc.WriteField(f)
			}
		}
		if b := s.hbuf.Bytes(); indexedOnly(b) {
			s.hcache.add(fields, b)
		} else {
			s.hcache.reset()
		}
	}
	for _, f := range fields {
		if f.Name != "grpc-timeout" {
			continue
		}
		if s.hbuf.Len() > 0 && len(f.Value) < 0x7f {
			// By hand, skipping the encoder's table searches: a literal
			// never indexed, with a new name, without Huffman coding
			// (RFC 7541, 6.2.3). Only after other fields: a pending
			// table size update must start the block.
			s.hbuf.WriteByte(0x10)
			s.hbuf.WriteByte(byte(len("grpc-timeout")))
			s.hbuf.WriteString("grpc-timeout")
			s.hbuf.WriteByte(byte(len(f.Value)))
			s.hbuf.WriteString(f.Value)
			continue
		}
		f.Sensitive = true
		s.enc.WriteField(f)
	}
	return s.hbuf.Bytes()
}

func (c *blockCache) lookup(fields []hpack.HeaderField) []byte {
	for i := range c.n {
		if sameFields(c.entries[i].fields, fields) {
			return c.entries[i].block
		}
	}
	return nil
}

func (c *blockCache) add(fields []hpack.HeaderField, block []byte) {
	e := &c.entries[c.next]
	e.fields = e.fields[:0]
	for _, f := range fields {
		if f.Name != "grpc-timeout" {
			e.fields = append(e.fields, f)
		}
	}
	e.block = append(e.block[:0], block...)
	c.next = (c.next + 1) % len(c.entries)
	c.n = min(c.n+1, len(c.entries))
}

func (c *blockCache) reset() { c.n, c.next = 0, 0 }

// sameFields compares a cached list with fields, leaving out grpc-timeout.
func sameFields(cached, fields []hpack.HeaderField) bool {
	j := 0
	for _, f := range fields {
		if f.Name == "grpc-timeout" {
			continue
		}
		if j == len(cached) || cached[j] != f {
			return false
		}
		j++
	}
	return j == len(cached)
}

// indexedOnly tells whether a header block holds nothing but indexed
// fields (RFC 7541, 6.1): no literal, no table size update.
func indexedOnly(b []byte) bool {
	for len(b) > 0 {
		if b[0]&0x80 == 0 {
			return false
		}
		more := b[0]&0x7f == 0x7f // the index goes on in the next bytes
		b = b[1:]
		for more {
			if len(b) == 0 {
				return false
			}
			more = b[0]&0x80 != 0
			b = b[1:]
		}
	}
	return true
}
