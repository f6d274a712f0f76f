package h2

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// What the peer decodes must be what was encoded, grpc-timeout last,
// whatever mix of repeated lists, new fields and table size changes comes.
func TestEncodeHeadersRoundTrip(t *testing.T) {
	s := newSide(nil, nil, true)
	dec := hpack.NewDecoder(4096, nil)
	request := func(method, timeout string) []hpack.HeaderField {
		return []hpack.HeaderField{
			hf(":method", "POST"), hf(":scheme", "http"), hf(":path", "/runtime.v1.RuntimeService/"+method),
			hf(":authority", "localhost"), hf("content-type", "application/grpc"), hf("grpc-timeout", timeout),
			hf("user-agent", "grpc-go/1.72.0"), hf("te", "trailers"),
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	hits := 0
	for i := range 5000 {
		var in []hpack.HeaderField
		switch r := rng.IntN(100); {
		case r < 70:
			in = request([]string{"Version", "ListPodSandbox", "ListContainers", "ContainerStatus"}[rng.IntN(4)], fmt.Sprintf("%du", rng.IntN(2000000)))
		case r < 90:
			in = []hpack.HeaderField{hf(":status", "200"), hf("content-type", "application/grpc")}
		case r < 98:
			in = []hpack.HeaderField{hf("grpc-status", fmt.Sprint(rng.IntN(3))), hf("grpc-message", ""), hf("x-new", fmt.Sprint(i))}
		default:
			size := uint32(rng.IntN(4096))
			s.enc.SetMaxDynamicTableSizeLimit(size)
			s.hcache.reset() // as drain does when the peer's table size changes
			dec.SetMaxDynamicTableSize(size)
			continue
		}
		if s.hcache.lookup(in) != nil {
			hits++
		}
		block := s.encodeHeaders(in)
		got, err := dec.DecodeFull(block)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		var want []hpack.HeaderField
		var timeout []hpack.HeaderField
		for _, f := range in {
			if f.Name == "grpc-timeout" {
				f.Sensitive = true
				timeout = append(timeout, f)
			} else {
				want = append(want, f)
			}
		}
		want = append(want, timeout...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("block %d: decoded %v, want %v", i, got, want)
		}
	}
	if hits == 0 {
		t.Errorf("no block came from the cache")
	}
}

// A list sent again is taken from the cache once its fields are all in the
// table, whatever its grpc-timeout; a field inserted into the table empties
// the cache, as the indexes of the others move.
func TestEncodeHeadersCache(t *testing.T) {
	s := newSide(nil, nil, true)
	in := []hpack.HeaderField{hf(":method", "POST"), hf(":path", "/x"), hf("grpc-timeout", "0u"), hf("te", "trailers")}
	var got []string
	for i, v := range []string{"1u", "2u", "3u", "new", "5u", "6u"} {
		if v == "new" {
			s.encodeHeaders([]hpack.HeaderField{hf("x-new", "v")})
			got = append(got, fmt.Sprintf("%d:insert n=%d", i, s.hcache.n))
			continue
		}
		in[2].Value = v
		hit := s.hcache.lookup(in) != nil
		s.encodeHeaders(in)
		got = append(got, fmt.Sprintf("%d:hit=%v", i, hit))
	}
	want := []string{"0:hit=false", "1:hit=false", "2:hit=true", "3:insert n=0", "4:hit=false", "5:hit=true"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestIndexedOnly(t *testing.T) {
	for name, tc := range map[string]struct {
		b    []byte
		want bool
	}{
		"empty":                 {nil, true},
		"static indexed":        {[]byte{0x82, 0x86}, true},
		"long index":            {[]byte{0xff, 0x80, 0x01, 0x82}, true},
		"truncated long index":  {[]byte{0xff, 0x80}, false},
		"literal with indexing": {[]byte{0x82, 0x41, 0x01, 'a'}, false},
		"never indexed literal": {[]byte{0x10, 0x01, 'a', 0x01, 'b'}, false},
		"table size update":     {[]byte{0x20, 0x82}, false},
	} {
		if got := indexedOnly(tc.b); got != tc.want {
			t.Errorf("%s: got %v, want %v", name, got, tc.want)
		}
	}
}
