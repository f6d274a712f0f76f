package policy

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Common sizes.
const (
	KiB = int64(1) << 10
	MiB = int64(1) << 20
	GiB = int64(1) << 30
)

// ParseQuantity parses a Kubernetes memory quantity such as "12Mi" into
// bytes, rounding fractions up as the kubelet does.
func ParseQuantity(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity (use a number of bytes or a suffix such as Ki, Mi, Gi): %w", s, err)
	}
	v := q.Value()
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return v, nil
}

// Quantity formats bytes as the shortest exact Kubernetes quantity: 12Mi,
// 6M, or a plain number of bytes (never 2k: that reads as a typo). On a tie
// the binary form wins.
func Quantity(b int64) string {
	best := strconv.FormatInt(b, 10)
	for _, f := range []resource.Format{resource.BinarySI, resource.DecimalSI} {
		s := resource.NewQuantity(b, f).String()
		if len(s) < len(best) && !strings.HasSuffix(s, "k") {
			best = s
		}
	}
	return best
}

// Bytes formats bytes for a person: "2000 bytes", or "8388608 bytes (8Mi)"
// when a shorter quantity says the same.
func Bytes(b int64) string {
	q := Quantity(b)
	if b == 1 {
		return "1 byte"
	}
	if q == strconv.FormatInt(b, 10) {
		return q + " bytes"
	}
	return fmt.Sprintf("%d bytes (%s)", b, q)
}
