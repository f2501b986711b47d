package link

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestMuxConnKeepsFrameOrder writes yamux-shaped frames through a muxConn
// as yamux's send loop does (a 12-byte header, then a data frame's body),
// some back to back (queued for the flusher) and some after a pause
// (written inline, a data frame's header held for its body), and checks
// that the peer reads exactly the bytes written, in order.
func TestMuxConnKeepsFrameOrder(t *testing.T) {
	p := newPKI(t)
	a, b := net.Pipe()
	client := tls.Client(&batchConn{Conn: a}, p.clientTLS(t, "c", "server"))
	server := tls.Server(b, p.serverTLS(t, "server"))
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	var in, out atomic.Uint64
	c := newMuxConn(client, &in, &out)
	defer func() { c.Close(); c.wait() }()

	rng := rand.New(rand.NewPCG(1, 2))
	var want bytes.Buffer
	type write struct {
		p     []byte
		pause bool
	}
	var writes []write
	for i := range 400 {
		hdr := make([]byte, yamuxHeaderSize)
		typ := byte(rng.IntN(3)) // data, window update, ping
		n := 0
		if typ == yamuxTypeData && rng.IntN(4) > 0 {
			n = 1 + rng.IntN(3000)
		}
		hdr[1] = typ
		binary.BigEndian.PutUint32(hdr[4:], uint32(i))
		binary.BigEndian.PutUint32(hdr[8:], uint32(n))
		pause := rng.IntN(3) == 0
		writes = append(writes, write{hdr, pause})
		want.Write(hdr)
		if n > 0 {
			body := bytes.Repeat([]byte{byte(i)}, n)
			writes = append(writes, write{body, false})
			want.Write(body)
		}
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, want.Len())
		_, err := io.ReadFull(server, b)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	for _, w := range writes {
		if w.pause {
			time.Sleep(2 * inlineGap) // the gap is what the test varies, not a wait for a condition
		}
		if _, err := c.Write(w.p); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			i := 0
			for i < len(b) && b[i] == want.Bytes()[i] {
				i++
			}
			t.Fatalf("the peer read other bytes than were written, from byte %d of %d", i, want.Len())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the peer did not read every byte within 20s")
	}
	if !c.Settle(time.Second) {
		t.Error("not settled after everything was read")
	}
}
