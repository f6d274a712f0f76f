package h2

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestTimeoutRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 999 * time.Microsecond, 100 * time.Millisecond, 2 * time.Minute, 1000 * time.Hour} {
		v := encodeTimeout(d)
		got, ok := parseTimeout(v)
		if !ok || got < d || len(v) > 9 {
			t.Errorf("%v: encoded %q, parsed %v %v", d, v, got, ok)
		}
	}
	for _, bad := range []string{"", "1", "1x", "-1S", "123456789S"} {
		if _, ok := parseTimeout(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestStatusFieldsRoundTrip(t *testing.T) {
	st, _ := status.New(codes.NotFound, "naïve 100% \n sure").WithDetails(wrapperspb.String("d"))
	got, ok := statusOf(statusFields(st))
	if !ok || got.Code() != codes.NotFound || got.Message() != st.Message() || len(got.Details()) != 1 {
		t.Fatalf("got %v %v", got, ok)
	}
	if e := encodeGrpcMessage("a%b\x01é"); e != "a%25b%01%C3%A9" {
		t.Errorf("encoded %q", e)
	}
}

func TestMsgParser(t *testing.T) {
	var m msgParser
	msg := func(n int) []byte { return append([]byte{0, 0, 0, byte(n >> 8), byte(n)}, make([]byte, n)...) }
	stream := append(append(msg(3), msg(300)...), msg(10)...)
	// Fed one byte at a time, nothing is over 300.
	for i := range stream {
		if off, _ := m.feed(stream[i:i+1], 300); off >= 0 {
			t.Fatalf("byte %d: over the limit", i)
		}
	}
	if m.msgs != 3 {
		t.Fatalf("%d messages", m.msgs)
	}
	m = msgParser{}
	if off, size := m.feed(stream, 100); off != 8 || size != 300 {
		t.Fatalf("got %d %d, want the second message at 8", off, size)
	}
}
