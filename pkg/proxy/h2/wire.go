package h2

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// statusFields are the gRPC status fields of a trailer block.
func statusFields(st *status.Status) []hpack.HeaderField {
	f := []hpack.HeaderField{{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))}}
	if m := st.Message(); m != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: encodeGrpcMessage(m)})
	}
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			f = append(f, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	return f
}

// trailersOnly is a complete response that carries only a status.
func trailersOnly(st *status.Status, md metadata.MD) []hpack.HeaderField {
	f := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}
	f = append(f, statusFields(st)...)
	return appendMD(f, md)
}

// codeOf reads the code of a trailer block, as statusOf would, without
// building a status: Unknown without one.
func codeOf(fields []hpack.HeaderField) codes.Code {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			n, err := strconv.Atoi(f.Value)
			if err != nil {
				return codes.Internal
			}
			return codes.Code(n)
		}
	}
	return codes.Unknown
}

// statusOf reads the status of a trailer block; ok is false without one.
func statusOf(fields []hpack.HeaderField) (st *status.Status, ok bool) {
	var (
		code    = -1
		msg     string
		details string
	)
	for _, f := range fields {
		switch f.Name {
		case "grpc-status":
			n, err := strconv.Atoi(f.Value)
			if err != nil {
				return status.New(codes.Internal, "cri-guard: malformed grpc-status "+strconv.Quote(f.Value)), true
			}
			code = n
		case "grpc-message":
			msg = decodeGrpcMessage(f.Value)
		case "grpc-status-details-bin":
			details = f.Value
		}
	}
	if code < 0 {
		return nil, false
	}
	if details != "" {
		if b, err := decodeBin(details); err == nil {
			p := &spb.Status{}
			if proto.Unmarshal(b, p) == nil && p.Code == int32(code) {
				return status.FromProto(p), true
			}
		}
	}
	return status.New(codes.Code(code), msg), true
}

func decodeBin(v string) ([]byte, error) {
	if len(v)%4 == 0 {
		return base64.StdEncoding.DecodeString(v)
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// reserved header names are not metadata.
func reserved(name string) bool {
	if strings.HasPrefix(name, ":") {
		return true
	}
	switch name {
	case "content-type", "te", "grpc-status", "grpc-message", "grpc-status-details-bin",
		"grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent":
		return true
	}
	return false
}

// metadataOf is the application metadata of a header block.
func metadataOf(fields []hpack.HeaderField) metadata.MD {
	md := metadata.MD{}
	for _, f := range fields {
		if !reserved(f.Name) {
			md[f.Name] = append(md[f.Name], f.Value)
		}
	}
	return md
}

func appendMD(f []hpack.HeaderField, md metadata.MD) []hpack.HeaderField {
	for k, vs := range md {
		if reserved(k) {
			continue
		}
		for _, v := range vs {
			f = append(f, hpack.HeaderField{Name: k, Value: v})
		}
	}
	return f
}

// encodeGrpcMessage percent-encodes as the gRPC HTTP/2 protocol says.
func encodeGrpcMessage(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			var b strings.Builder
			for j := 0; j < len(s); j++ {
				c := s[j]
				if c < 0x20 || c > 0x7e || c == '%' {
					fmt.Fprintf(&b, "%%%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
			return b.String()
		}
	}
	return s
}

func decodeGrpcMessage(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseTimeout reads a grpc-timeout value.
func parseTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(1<<62)/int64(unit) {
		return 1 << 62, true
	}
	return time.Duration(n) * unit, true
}

// encodeTimeout writes d as a grpc-timeout value of at most 8 digits.
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	for _, u := range []struct {
		d time.Duration
		c string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if v := (d + u.d - 1) / u.d; v < 1e8 {
			return strconv.FormatInt(int64(v), 10) + u.c
		}
	}
	return strconv.FormatInt(int64((d+time.Hour-1)/time.Hour), 10) + "H"
}

// rstCode is the status a gRPC client reports for a reset stream.
func rstCode(c http2.ErrCode) codes.Code {
	switch c {
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	default:
		return codes.Internal
	}
}

// msgParser follows the gRPC length prefixes of one direction of a stream,
// without keeping the messages, to enforce the size limit.
type msgParser struct {
	hdr  [5]byte
	hn   int    // bytes of hdr filled
	left uint64 // body bytes still to come
	msgs int
}

// feed consumes p; it returns the offset where a message over max starts,
// or -1.
func (m *msgParser) feed(p []byte, max int) (int, uint64) {
	off := 0
	for off < len(p) {
		if m.left > 0 {
			n := uint64(len(p) - off)
			if n > m.left {
				n = m.left
			}
			m.left -= n
			off += int(n)
			continue
		}
		start := off - m.hn
		for m.hn < 5 && off < len(p) {
			m.hdr[m.hn] = p[off]
			m.hn++
			off++
		}
		if m.hn < 5 {
			return -1, 0
		}
		m.hn = 0
		m.msgs++
		n := uint64(m.hdr[1])<<24 | uint64(m.hdr[2])<<16 | uint64(m.hdr[3])<<8 | uint64(m.hdr[4])
		if n > uint64(max) {
			if start < 0 {
				start = 0
			}
			return start, n
		}
		m.left = n
	}
	return -1, 0
}
