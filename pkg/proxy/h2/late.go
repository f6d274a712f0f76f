package h2

import (
	"bytes"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// GoAwayUnread answers a connection that was accepted as a server stopped
// and never served: it reads the client's preface, sends empty SETTINGS and
// a GOAWAY naming no stream, then reads on until the client closes, and
// closes nc. A gRPC client then sends its call on a new connection, to the
// successor. Closing such a connection unread instead fails the client's
// first write ("broken pipe", "error reading server preface") and its
// call. wait bounds the whole exchange.
func GoAwayUnread(nc net.Conn, wait time.Duration) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(wait))
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, pre); err != nil || string(pre) != http2.ClientPreface {
		return
	}
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings()
	fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	if _, err := nc.Write(b.Bytes()); err != nil {
		return
	}
	io.Copy(io.Discard, nc)
}
