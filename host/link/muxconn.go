package link

import (
	"crypto/tls"
	"encoding/binary"
	"sync/atomic"
)

// muxConn is the connection yamux runs on. It counts the bytes each way;
// it sends a small data frame's header and body in one TLS record (see
// Write); and its Close drops the TCP connection at once instead of sending
// TLS close_notify, which can block for seconds on a dead link while every
// stream waits.
//
// Only yamux's send loop writes to it, from one goroutine, so Write keeps
// its state without locks.
type muxConn struct {
	*tls.Conn
	in, out *atomic.Uint64

	held    bool                  // hdr holds a data frame header waiting for its body
	hdr     [yamuxHeaderSize]byte // the held header
	scratch []byte                // header and body together, reused
}

// yamux's frame header: version, type, flags (2), stream id (4), length (4).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// coalesceMax is the largest body sent in one write with its header;
	// larger ones are split into several TLS records anyway.
	coalesceMax = 16<<10 - yamuxHeaderSize
)

func (c *muxConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(uint64(n))
	return n, err
}

// Write sends p. yamux's send loop writes each frame's 12-byte header and
// its body in two calls; sent as they come, a small event costs twice the
// TLS records and syscalls it needs. So Write holds back the header of a
// data frame that has a body and sends it together with that body, which
// is always the very next write.
func (c *muxConn) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		if len(p) <= coalesceMax {
			c.scratch = append(append(c.scratch[:0], c.hdr[:]...), p...)
			n, err := c.write(c.scratch)
			if cap(c.scratch) > 2*coalesceMax {
				c.scratch = nil
			}
			return max(n-yamuxHeaderSize, 0), err
		}
		if _, err := c.write(c.hdr[:]); err != nil {
			return 0, err
		}
		return c.write(p)
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	return c.write(p)
}

func (c *muxConn) write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(uint64(n))
	return n, err
}

func (c *muxConn) Close() error { return c.Conn.NetConn().Close() }
