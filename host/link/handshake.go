package link

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/proto/frame"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// The link protocol versions this build speaks. A peer outside the range is
// refused during the hello, before any stream exists. Version 2 reuses
// streams (Request.seq, Cancel.seq) and adds the Ready message; version 1
// nodes are refused with a sentence saying so. Version 3 adds a cluster's
// forward links (Hello.forward, Request.target, caller and hops,
// Error.not_delivered): a version 2 node ignores those fields, so a forward
// link needs version 3 on both ends (forwardVersion).
const (
	ProtocolVersion    = 3
	MinProtocolVersion = 2

	forwardVersion = 3
)

// maxSoftware bounds the peer's build string as this side logs it.
const maxSoftware = 128

// hello is what one side learns from the hello exchange.
type hello struct {
	software    string        // the peer's build, sanitized
	rtt         time.Duration // this side's measure of the round trip
	window      uint32        // this side's stream window, from rtt
	maxStreams  int           // how many streams this side lets the peer hold
	peerStreams int           // how many streams the peer lets this side hold
	forward     bool          // a server-to-server link (Hello.forward)
}

// clientHello runs the client's side of the link hello on a TLS connection
// whose handshake is complete: Hello, the server's Welcome, then Ready. The
// time from Hello to Welcome is the client's measure of the round trip.
func clientHello(conn net.Conn, cfg *Config) (hello, error) {
	return clientHelloKind(conn, cfg, false, 0)
}

// clientHelloKind is clientHello, asking for a forward link (a cluster's
// server-to-server link) when forward is set. tlsTime, when not 0, is how
// long the TLS handshake before it took, a second sample of the round trip
// (see shortestRTT).
func clientHelloKind(conn net.Conn, cfg *Config, forward bool, tlsTime time.Duration) (hello, error) {
	software, maxHeader := cfg.Software, cfg.MaxHeaderSize
	hl := &linkv1.Hello{
		ProtocolVersion:    ProtocolVersion,
		MinProtocolVersion: MinProtocolVersion,
		Software:           software,
		Forward:            forward,
	}
	start := time.Now()
	if err := frame.WriteMsg(conn, hl); err != nil {
		return hello{}, fmt.Errorf("send hello: %w", err)
	}
	var w linkv1.Welcome
	if err := readExact(conn, maxHeader, &w); err != nil {
		return hello{}, fmt.Errorf("read welcome: %w", err)
	}
	rtt := shortestRTT(time.Since(start), tlsTime)
	if w.Refusal != "" {
		return hello{}, fmt.Errorf("%w by the server: %s", ErrRefused, sanitize(w.Refusal, 512))
	}
	if w.ProtocolVersion < MinProtocolVersion || w.ProtocolVersion > ProtocolVersion {
		return hello{}, fmt.Errorf("%w: server chose link protocol %d, this client speaks %d to %d",
			ErrRefused, w.ProtocolVersion, MinProtocolVersion, ProtocolVersion)
	}
	if forward && w.ProtocolVersion < forwardVersion {
		return hello{}, fmt.Errorf("%w: the server speaks link protocol %d, a forward link needs %d: upgrade it", ErrRefused, w.ProtocolVersion, forwardVersion)
	}
	h := hello{software: sanitize(w.Software, maxSoftware), rtt: rtt, forward: forward}
	h.window, h.maxStreams = cfg.linkShape(rtt)
	if err := frame.WriteMsg(conn, &linkv1.Ready{RttUs: rtt.Microseconds(), MaxStreams: uint32(h.maxStreams)}); err != nil {
		return hello{}, fmt.Errorf("send ready: %w", err)
	}
	var a linkv1.Ack
	if err := readExact(conn, maxHeader, &a); err != nil {
		return hello{}, fmt.Errorf("read ack: %w", err)
	}
	h.peerStreams = int(a.MaxStreams)
	if h.peerStreams < minPeerStreams {
		return hello{}, fmt.Errorf("%w: the server lets this client hold %d streams, fewer than %d", ErrRefused, h.peerStreams, minPeerStreams)
	}
	return h, nil
}

// serverHello runs the server's side of the link hello: it reads the
// client's Hello, picks a version both speak or refuses the link, and
// waits for the client's Ready. The time from Welcome to Ready is the
// server's own measure of the round trip: it never trusts the client's.
func serverHello(conn net.Conn, cfg *Config) (hello, error) {
	return serverHelloCheck(conn, cfg, nil, 0)
}

// serverHelloCheck is serverHello; when the client asks for a forward
// link, check (nil: refuse every one) returns why it may not have one, or
// "" to take it. tlsTime is as for clientHelloKind.
func serverHelloCheck(conn net.Conn, cfg *Config, check func() string, tlsTime time.Duration) (hello, error) {
	software, maxHeader := cfg.Software, cfg.MaxHeaderSize
	var h linkv1.Hello
	if err := readExact(conn, maxHeader, &h); err != nil {
		return hello{}, fmt.Errorf("read hello: %w", err)
	}
	if h.Forward {
		refusal := "this server is not a member of a cluster: it takes no forward link"
		if check != nil {
			refusal = check()
		}
		if refusal == "" && h.ProtocolVersion < forwardVersion {
			refusal = fmt.Sprintf("a forward link needs link protocol %d", forwardVersion)
		}
		if refusal != "" {
			_ = frame.WriteMsg(conn, &linkv1.Welcome{Software: software, Refusal: refusal})
			return hello{}, fmt.Errorf("%w: a forward link: %s", ErrRefused, refusal)
		}
	}
	v := min(h.ProtocolVersion, ProtocolVersion)
	if h.ProtocolVersion == 0 || v < h.MinProtocolVersion || v < MinProtocolVersion {
		refusal := fmt.Sprintf("client speaks link protocol %d to %d, this server speaks %d to %d",
			h.MinProtocolVersion, h.ProtocolVersion, MinProtocolVersion, ProtocolVersion)
		if h.ProtocolVersion < MinProtocolVersion {
			refusal += ": upgrade the client"
		} else {
			refusal += ": upgrade the server"
		}
		_ = frame.WriteMsg(conn, &linkv1.Welcome{Software: software, Refusal: refusal})
		return hello{}, fmt.Errorf("%w: %s", ErrRefused, refusal)
	}
	start := time.Now()
	if err := frame.WriteMsg(conn, &linkv1.Welcome{ProtocolVersion: v, Software: software}); err != nil {
		return hello{}, fmt.Errorf("send welcome: %w", err)
	}
	var r linkv1.Ready
	if err := readExact(conn, maxHeader, &r); err != nil {
		return hello{}, fmt.Errorf("read ready: %w", err)
	}
	out := hello{software: sanitize(h.Software, maxSoftware), rtt: shortestRTT(time.Since(start), tlsTime), peerStreams: int(r.MaxStreams), forward: h.Forward}
	if out.peerStreams < minPeerStreams {
		return hello{}, fmt.Errorf("%w: the client lets this server hold %d streams, fewer than %d", ErrRefused, out.peerStreams, minPeerStreams)
	}
	out.window, out.maxStreams = cfg.linkShape(out.rtt)
	if err := frame.WriteMsg(conn, &linkv1.Ack{MaxStreams: uint32(out.maxStreams)}); err != nil {
		return hello{}, fmt.Errorf("send ack: %w", err)
	}
	return out, nil
}

// shortestRTT is the round trip a link is shaped for: the shorter of the
// hello's round trip and the TLS handshake's duration (0: not measured).
// Both span at least one round trip of the path, so neither is ever short
// of it, proxies and tunnels included; on a loaded machine either can be
// inflated by the scheduler (a loopback hello measured over 5 ms shaped a
// link for a WAN: 8 MiB windows, 16 streams), and the shorter of two is
// less often.
func shortestRTT(hello, tlsTime time.Duration) time.Duration {
	if tlsTime > 0 && tlsTime < hello {
		return tlsTime
	}
	return hello
}

// minPeerStreams is the fewest streams a peer may offer: a hello that
// offers fewer is refused.
const minPeerStreams = 4

// readExact reads one HEADER frame into m without reading a byte past it:
// yamux takes over the connection right after the hello.
func readExact(r io.Reader, maxHeader int, m proto.Message) error {
	br := byteReader{r: r}
	t, err := br.ReadByte()
	if err != nil {
		return err
	}
	if t != frame.TypeHeader {
		return fmt.Errorf("%w: want a header frame, got type %d", frame.ErrMalformed, t)
	}
	n, err := binary.ReadUvarint(&br)
	if err != nil {
		return fmt.Errorf("%w: frame length: %v", frame.ErrMalformed, err)
	}
	if n > uint64(maxHeader) {
		return fmt.Errorf("%w: %d bytes, the limit is %d", frame.ErrTooLarge, n, maxHeader)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: decode %T: %v", frame.ErrMalformed, m, err)
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

// sanitize makes a string a peer sent safe to log: at most n bytes,
// control characters and terminal escapes quoted, invalid UTF-8 replaced.
func sanitize(s string, n int) string {
	clean := true
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if !clean {
		q := strconv.QuoteToASCII(s)
		s = q[1 : len(q)-1]
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
