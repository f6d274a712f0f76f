package policy

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseQuantity: parsing never panics; what it accepts is a
// non-negative byte count whose formatting parses back to the same count.
func FuzzParseQuantity(f *testing.F) {
	for _, s := range []string{"12Mi", "2000", "500m", "1e3", "0.5Gi", "-1", "9223372036854775807", "9223372036854775808", "8Ei", "1e400", " 1Mi", "1.5", "0x10", "", "Mi", "1Mi1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseQuantity(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), strconv.Quote(s)+" ") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		if v < 0 {
			t.Fatalf("ParseQuantity(%q) = %d", s, v)
		}
		checkRoundTrip(t, v)
	})
}

// FuzzQuantity: every byte count formats to a quantity that parses back to
// itself, and Bytes always leads with the exact count.
func FuzzQuantity(f *testing.F) {
	for _, b := range []int64{0, 1, 2000, 4096, 1 << 20, 12 << 20, 6_000_000, 1<<63 - 1, 999_999, 1_000_000} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b int64) {
		if b < 0 {
			b = -(b + 1) // limits are never negative here; cover the range
		}
		checkRoundTrip(t, b)
	})
}

func checkRoundTrip(t *testing.T, b int64) {
	t.Helper()
	q := Quantity(b)
	back, err := ParseQuantity(q)
	if err != nil || back != b {
		t.Fatalf("Quantity(%d) = %q, which parses to %d, %v", b, q, back, err)
	}
	if strings.HasSuffix(q, "k") {
		t.Fatalf("Quantity(%d) = %q: never k", b, q)
	}
	s := Bytes(b)
	if !strings.HasPrefix(s, strconv.FormatInt(b, 10)+" byte") {
		t.Fatalf("Bytes(%d) = %q", b, s)
	}
}

// TestQuantityNeverKilo: the formats that FuzzParseQuantity found wrong.
// Quantity(1000) was "1k" and Quantity(1500000) "1500k", which the doc
// forbids; 10^12 was "976562500Ki", not the shortest.
func TestQuantityNeverKilo(t *testing.T) {
	for in, want := range map[int64]string{
		1000: "1000", 1_500_000: "1500000", 2_000_000: "2M", 1_000_000_000_000: "1T",
		1024: "1Ki", 1_024_000: "1000Ki", 12 * MiB: "12Mi", 999: "999", 0: "0",
	} {
		if got := Quantity(in); got != want {
			t.Errorf("Quantity(%d) = %q, want %q", in, got, want)
		}
	}
}
