package policy

import (
	"errors"
	"fmt"
	"math"
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

// maxExponent bounds a decimal exponent ("1e3") before apimachinery sees
// it: parsing takes time in proportion to the exponent, and 1e2147483648
// does not return. 10^19 is already more bytes than an int64 holds.
const maxExponent = 30

// ParseQuantity parses a Kubernetes memory quantity such as "12Mi" into
// bytes, rounding fractions up as the kubelet does. It refuses negative
// quantities and any that do not fit in an int64 (apimachinery's Value
// reads those as 0 or negative), except that apimachinery itself caps
// binary ones ("8Ei") at the largest int64.
func ParseQuantity(s string) (int64, error) {
	if exponentOutOfRange(s) {
		return 0, fmt.Errorf("%q is out of range: the exponent is beyond ±%d", s, maxExponent)
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity (use a number of bytes or a suffix such as Ki, Mi, Gi): %w", s, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if q.CmpInt64(math.MaxInt64) > 0 {
		return 0, fmt.Errorf("%q is out of range: more than %d bytes", s, int64(math.MaxInt64))
	}
	return q.Value(), nil
}

// exponentOutOfRange tells whether s has a decimal-exponent suffix ("e3",
// "E-2") beyond ±maxExponent, or too long for an int. A bare "E" is the exa
// suffix, and what is not an exponent is left to apimachinery to refuse.
func exponentOutOfRange(s string) bool {
	rest := strings.TrimLeft(s, "+-0123456789.")
	if len(rest) < 2 || (rest[0] != 'e' && rest[0] != 'E') {
		return false
	}
	n, err := strconv.Atoi(rest[1:])
	if errors.Is(err, strconv.ErrRange) {
		return true
	}
	return err == nil && (n > maxExponent || n < -maxExponent)
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

// Size formats a floor or a suggested limit as a quantity a person can
// write in a pod spec: "12Mi", or "2000 bytes" and "1 byte" where no
// suffix says it shorter (a bare "1" reads as a count, not a size).
func Size(b int64) string {
	q := Quantity(b)
	if q != strconv.FormatInt(b, 10) {
		return q
	}
	if b == 1 {
		return "1 byte"
	}
	return q + " bytes"
}
