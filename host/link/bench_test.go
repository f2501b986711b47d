package link

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/hopbench"
)

// BenchmarkLinkEvent is one small event over the link (client node ->
// server node's handler -> reply read to its end: framing, a reused
// yamux stream, TLS both ways) beside its floor, a 128-byte echo over one
// mutual-TLS connection on loopback.
func BenchmarkLinkEvent(b *testing.B) {
	s, floor := benchLink(b, 128)
	want := len("server answers get_whoami from c1 args=")
	ctx := context.Background()
	hopbench.Run(b, func() error {
		n, err := discard(ctx, s, "get", "whoami", nil)
		if err == nil && n != int64(want) {
			err = fmt.Errorf("reply of %d bytes, want %d", n, want)
		}
		return err
	}, floor)
}

// BenchmarkLinkEcho is a 64 KiB body over the link and back (post echo),
// beside a 64 KiB echo over one mutual-TLS connection.
func BenchmarkLinkEcho(b *testing.B) {
	const size = 64 << 10
	s, floor := benchLink(b, size)
	body := bytes.Repeat([]byte("x"), size)
	ctx := context.Background()
	b.SetBytes(2 * size)
	hopbench.Run(b, func() error {
		n, err := discard(ctx, s, "post", "echo", body)
		if err == nil && n != size {
			err = fmt.Errorf("echoed %d bytes, want %d", n, size)
		}
		return err
	}, floor)
}

// benchLink starts a server and a client "c1" on loopback and returns the
// client's session and a TLS echo floor of size bytes between the same
// certificates.
func benchLink(b *testing.B, size int) (*Session, func() error) {
	p := newPKI(b)
	ts := startServer(b, p, nil)
	tc := startClient(b, p, "c1", ts.addr, nil)
	s := tc.waitUp(b, 10*time.Second)
	floor := hopbench.TLSEcho(b, p.serverTLS(b, "server"), p.clientTLS(b, "c1", "server"), size)
	return s, floor
}

// discard sends one event and reads the reply to its end, keeping none
// of it: what a node does when it relays a reply.
func discard(ctx context.Context, h host.Handler, verb, noun string, body []byte) (int64, error) {
	ev := &host.Event{ID: "b", Verb: verb, Noun: noun}
	if body != nil {
		ev.Body, ev.Size = bytes.NewReader(body), int64(len(body))
	}
	rep, err := h.Handle(ctx, ev)
	if err != nil {
		return 0, err
	}
	defer rep.Close()
	if rep.Body == nil {
		return 0, nil
	}
	return io.Copy(io.Discard, rep.Body)
}
