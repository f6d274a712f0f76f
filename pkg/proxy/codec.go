package proxy

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// frame is one gRPC message as the wire carries it. The relay moves frames
// between the two hops without copying or decoding them.
type frame struct {
	data mem.BufferSlice
}

// rawCodec passes frames through as they are. It also encodes and decodes
// proto messages, which the relay uses for calls that it makes itself.
type rawCodec struct{}

var _ encoding.CodecV2 = rawCodec{}

// Name is empty: gRPC names a forced codec's content-subtype after it, and
// a runtime may accept only the exact "application/grpc" that the kubelet
// sends (CRI-O serves its socket behind cmux, which resets a connection
// whose content-type is "application/grpc+proto"). With no name, calls go
// out as "application/grpc"; callOptions passes on a subtype that the
// kubelet named itself.
func (rawCodec) Name() string { return "" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *frame:
		// gRPC frees what Marshal returns; the frame gives up its reference.
		out := m.data
		m.data = nil
		return out, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	default:
		return nil, fmt.Errorf("cri-guard codec: cannot marshal %T", v)
	}
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *frame:
		// data is freed when Unmarshal returns; keep our own reference.
		data.Ref()
		m.data = data
		return nil
	case proto.Message:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	default:
		return fmt.Errorf("cri-guard codec: cannot unmarshal into %T", v)
	}
}

// free releases the frame's buffers, if it still holds any.
func (f *frame) free() {
	if f.data != nil {
		f.data.Free()
		f.data = nil
	}
}

// bytes returns the frame's payload as one contiguous slice.
func (f *frame) bytes() []byte {
	return f.data.Materialize()
}
