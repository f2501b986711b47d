package link

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// The link protocol versions this build speaks. A peer outside the range is
// refused during the hello, before any stream exists.
const (
	ProtocolVersion    = 1
	MinProtocolVersion = 1
)

// clientHello runs the client's side of the link hello on a TLS connection
// whose handshake is complete, and returns the server's Welcome.
func clientHello(conn net.Conn, software string, maxHeader int) (*linkv1.Welcome, error) {
	hello := &linkv1.Hello{
		ProtocolVersion:    ProtocolVersion,
		MinProtocolVersion: MinProtocolVersion,
		Software:           software,
	}
	if err := writeMsg(conn, hello); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	var w linkv1.Welcome
	if err := readExact(conn, maxHeader, &w); err != nil {
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	if w.Refusal != "" {
		return nil, fmt.Errorf("%w by the server: %s", ErrRefused, w.Refusal)
	}
	if w.ProtocolVersion < MinProtocolVersion || w.ProtocolVersion > ProtocolVersion {
		return nil, fmt.Errorf("%w: server chose link protocol %d, this client speaks %d to %d",
			ErrRefused, w.ProtocolVersion, MinProtocolVersion, ProtocolVersion)
	}
	return &w, nil
}

// serverHello runs the server's side of the link hello: it reads the
// client's Hello, picks a version both speak or refuses the link.
func serverHello(conn net.Conn, software string, maxHeader int) (*linkv1.Hello, error) {
	var h linkv1.Hello
	if err := readExact(conn, maxHeader, &h); err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	v := min(h.ProtocolVersion, ProtocolVersion)
	if h.ProtocolVersion == 0 || v < h.MinProtocolVersion || v < MinProtocolVersion {
		refusal := fmt.Sprintf("client speaks link protocol %d to %d, this server speaks %d to %d",
			h.MinProtocolVersion, h.ProtocolVersion, MinProtocolVersion, ProtocolVersion)
		_ = writeMsg(conn, &linkv1.Welcome{Software: software, Refusal: refusal})
		return nil, fmt.Errorf("%w: %s", ErrRefused, refusal)
	}
	if err := writeMsg(conn, &linkv1.Welcome{ProtocolVersion: v, Software: software}); err != nil {
		return nil, fmt.Errorf("send welcome: %w", err)
	}
	return &h, nil
}

// readExact reads one HEADER frame into m without reading a byte past it:
// yamux takes over the connection right after the hello.
func readExact(r io.Reader, maxHeader int, m proto.Message) error {
	br := byteReader{r: r}
	t, err := br.ReadByte()
	if err != nil {
		return err
	}
	if t != frameHeader {
		return fmt.Errorf("%w: want a header frame, got type %d", ErrBadFrame, t)
	}
	n, err := binary.ReadUvarint(&br)
	if err != nil {
		return fmt.Errorf("%w: frame length: %v", ErrBadFrame, err)
	}
	if n > uint64(maxHeader) {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrFrameTooLarge, n, maxHeader)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: decode %T: %v", ErrBadFrame, m, err)
	}
	return nil
}

// byteReader reads single bytes from an unbuffered reader.
type byteReader struct {
	r   io.Reader
	buf [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(b.r, b.buf[:]); err != nil {
		return 0, err
	}
	return b.buf[0], nil
}

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
