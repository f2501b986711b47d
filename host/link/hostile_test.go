package link

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/proto/frame"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// TestJunkOnTheLinkPort sends garbage, plain HTTP and silent connections to
// the link port: each is dropped, none costs more than its handshake
// timeout, and real clients are served all along.
func TestJunkOnTheLinkPort(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) { c.HandshakeTimeout = 500 * time.Millisecond })

	junk := map[string][]byte{
		"garbage":    bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 4096),
		"plain HTTP": []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"silent":     nil,
	}
	var conns []net.Conn
	for name, b := range junk {
		for range 20 {
			c, err := net.Dial("tcp", srv.addr)
			if err != nil {
				t.Fatalf("%s: dial: %v", name, err)
			}
			conns = append(conns, c)
			if b != nil {
				c.Write(b)
			}
		}
	}
	// A real client gets in and is served while the junk is there.
	cl := startClient(t, p, "a", srv.addr, nil)
	sess := cl.waitUp(t, 5*time.Second)
	if got, err := call(context.Background(), sess, "get", "whoami", nil); err != nil || !strings.HasPrefix(got, "server answers") {
		t.Fatalf("event with junk around = %q, %v", got, err)
	}
	// Every junk connection is closed by the server within its timeout.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("a junk connection was left open past the handshake timeout")
		}
		c.Close()
	}
	waitFor(t, 2*time.Second, "no connection in handshake", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.pending) == 0
	})
	if n := len(srv.Sessions()); n != 1 {
		t.Errorf("sessions = %d, want just the real client", n)
	}
}

// TestHandshakeLimit checks that connections still in handshake hold a
// slot each, at most MaxHandshakes of them: a client dialing while slow
// handshakes (ones that have spoken) hold every slot waits in the accept
// queue, and gets in on its first attempt once a slot frees.
func TestHandshakeLimit(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) {
		c.MaxHandshakes, c.MaxHandshakesPerSource = 4, 4
		c.HandshakeTimeout = time.Minute
	})
	var slow []net.Conn
	for range 4 {
		slow = append(slow, dialSpeaking(t, srv.addr, ""))
	}
	waitPending(t, srv, 4)
	cl := startClient(t, p, "a", srv.addr, func(c *ClientConfig) { c.HandshakeTimeout = 30 * time.Second })
	waitFor(t, 5*time.Second, "the client's dial", func() bool { return cl.Stats().Dials == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if s, err := cl.Peer(ctx); err == nil {
		t.Fatalf("a fifth connection got a session (%s) while 4 handshakes held every slot", s.Peer())
	}
	slow[0].Close()
	cl.waitUp(t, 5*time.Second)
	if d := cl.Stats().Dials; d != 1 {
		t.Errorf("client dialed %d times, want 1: it should have waited, not been refused", d)
	}
	for _, c := range slow[1:] {
		c.Close()
	}
}

// TestSilentFloodDoesNotDelayALink fills every handshake slot with
// connections that never speak: a real client still links at once,
// because the oldest silent connection makes room.
func TestSilentFloodDoesNotDelayALink(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) {
		c.MaxHandshakes, c.MaxHandshakesPerSource = 8, 8
		c.HandshakeTimeout = time.Minute
	})
	var silent []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	waitPending(t, srv, 8)
	time.Sleep(silentGrace) // the experiment: they have been silent long enough to be shed
	start := time.Now()
	cl := startClient(t, p, "a", srv.addr, nil)
	cl.waitUp(t, 5*time.Second)
	if d := cl.Stats().Dials; d != 1 {
		t.Errorf("client dialed %d times, want 1", d)
	}
	t.Logf("linked %v after dialing, with every slot held by a silent connection", time.Since(start).Round(time.Millisecond))
	// The oldest silent connection was closed to make room.
	silent[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent[0].Read(make([]byte, 1)); isTimeout(err) {
		t.Error("the oldest silent connection is still open")
	}
}

// TestFirstByteTimeout checks a connection that never speaks is closed
// after FirstByteTimeout, long before the handshake timeout.
func TestFirstByteTimeout(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) { c.FirstByteTimeout = 200 * time.Millisecond; c.HandshakeTimeout = time.Minute })
	c, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); isTimeout(err) {
		t.Fatal("a silent connection still open after 10s")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a silent connection was closed after %v, want about 200ms", d)
	}
}

// TestHandshakesPerSource checks one source address can hold at most
// MaxHandshakesPerSource handshakes: beyond it, its connections wait,
// unread, for a slot of its own, while a client from another address
// links at once; a real client behind the busy address links in its turn,
// not refused.
func TestHandshakesPerSource(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) {
		c.MaxHandshakes, c.MaxHandshakesPerSource, c.HandshakeTimeout = 16, 3, time.Minute
	})
	var speakers []net.Conn
	for range 3 {
		c := dialSpeaking(t, srv.addr, "127.0.0.1")
		defer c.Close()
		speakers = append(speakers, c)
	}
	waitPending(t, srv, 3)
	over := dialSpeaking(t, srv.addr, "127.0.0.1")
	defer over.Close()
	waitParked(t, srv, 1)
	waitPending(t, srv, 3)
	// Another address of this machine (all of 127/8 is loopback).
	other := startClient(t, p, "a", srv.addr, func(c *ClientConfig) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		c.Dial = d.DialContext
	})
	other.waitUp(t, 5*time.Second)
	// A real client behind the busy address queues behind the fourth
	// connection; as the three handshakes ahead end, the fourth and then
	// the client get their slots.
	same := startClient(t, p, "b", srv.addr, nil)
	waitParked(t, srv, 2)
	for _, c := range speakers {
		c.Close()
	}
	same.waitUp(t, 10*time.Second)
	srv.mu.Lock()
	parked := srv.nParked
	srv.mu.Unlock()
	if parked != 0 {
		t.Errorf("%d connections still parked, want 0", parked)
	}
}

// waitParked waits until n connections wait for their source's slot.
func waitParked(t testing.TB, srv *testServer, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d connections parked", n), func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.nParked == n
	})
}

// dialSpeaking opens a connection that sends the first byte of a TLS
// record and nothing more: a handshake in progress, not a silent one.
func dialSpeaking(t testing.TB, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0x16}); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitPending waits until n connections are in handshake on srv, and
// have spoken if they will.
func waitPending(t testing.TB, srv *testServer, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d connections in handshake", n), func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.pending) == n
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// rawLink dials the server with a valid certificate and returns the TLS
// connection before the hello.
func rawLink(t testing.TB, p *testPKI, addr, name string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, p.clientTLS(t, name, "server"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProtocolVersionRefused(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	c := rawLink(t, p, srv.addr, "future")
	if err := frame.WriteMsg(c, &linkv1.Hello{ProtocolVersion: 9, MinProtocolVersion: 7, Software: "restpipe 9"}); err != nil {
		t.Fatal(err)
	}
	var w linkv1.Welcome
	if err := readExact(c, 1<<16, &w); err != nil {
		t.Fatal(err)
	}
	if w.ProtocolVersion != 0 || !strings.Contains(w.Refusal, fmt.Sprintf("client speaks link protocol 7 to 9, this server speaks %d to %d: upgrade the server", MinProtocolVersion, ProtocolVersion)) {
		t.Errorf("welcome = %v, want a refusal naming both ranges", &w)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after the refusal")
	}
	if n := len(srv.Sessions()); n != 0 {
		t.Errorf("sessions = %d, want 0", n)
	}

	// A client meeting a server from the future says why it gives up.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(raw, p.serverTLS(t, "server"))
		defer tc.Close()
		var h linkv1.Hello
		if readExact(tc, 1<<16, &h) == nil {
			frame.WriteMsg(tc, &linkv1.Welcome{Refusal: "this server speaks link protocol 9 only"})
		}
	}()
	cl := &Client{cfg: ClientConfig{Config: DefaultConfig(), Addr: ln.Addr().String()}}
	cl.cfg.Handler = newNodeHandler("a")
	tlsCfg := p.clientTLS(t, "a", "server")
	cl.cfg.TLS = func() *tls.Config { return tlsCfg }
	cl.cfg.Dial = dialer.DialContext
	_, err = cl.connect(context.Background())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "protocol 9 only") {
		t.Errorf("connect() = %v, want ErrRefused with the server's reason", err)
	}
}

// mustFrame encodes m as a HEADER frame.
func mustFrame(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := frame.AppendMsg(nil, frame.TypeHeader, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// peerMux completes a valid hello and returns a yamux session driven by the
// test, to misbehave at the stream level.
func peerMux(t testing.TB, p *testPKI, addr, name string) *yamux.Session {
	t.Helper()
	m, _ := peerMuxHello(t, p, addr, name)
	return m
}

// peerMuxHello is peerMux, also returning what the hello settled (the
// streams the server lets this peer hold: fewer when the machine is so
// loaded that the hello measured a long round trip).
func peerMuxHello(t testing.TB, p *testPKI, addr, name string) (*yamux.Session, hello) {
	t.Helper()
	c := rawLink(t, p, addr, name)
	h, err := clientHello(c, testLinkConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	m, err := yamux.Client(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, h
}

func TestStreamLevelAbuse(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) { c.HeaderTimeout = 300 * time.Millisecond; c.MaxInFlight = 16 })
	good := startClient(t, p, "good", srv.addr, nil)
	goodSess := good.waitUp(t, 5*time.Second)

	// A protocol violation from an authenticated peer ends its link (and
	// frees whatever it held); every other peer goes on.
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"oversized header", binary.AppendUvarint([]byte{frame.TypeHeader}, 1<<30)}, // 1 GiB announced
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"event out of sequence", mustFrame(t, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{
			Request: &linkv1.Request{Id: "x", Verb: "get", Noun: "whoami", Seq: 5}}})},
		{"body without a header", append([]byte{frame.TypeData, 3}, "abc"...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := peerMux(t, p, srv.addr, "bad")
			st, err := m.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			st.Write(tc.data)
			select {
			case <-m.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("the server kept the link of a peer that broke the protocol")
			}
		})
	}

	t.Run("stream without a header", func(t *testing.T) {
		m := peerMux(t, p, srv.addr, "mute")
		st, err := m.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{frame.TypeHeader}) // then nothing
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("read = %v, want the server to give up on the stream", err)
		}
		// A slow stream costs only itself: the link stays.
		if m.IsClosed() {
			t.Error("one silent stream closed the whole link")
		}
	})

	t.Run("thousands of streams never read", func(t *testing.T) {
		m := peerMux(t, p, srv.addr, "flood")
		before := runtime.NumGoroutine()
		for i := 0; i < 5000 && !m.IsClosed(); i++ {
			st, err := m.OpenStream()
			if err != nil {
				break
			}
			// A valid event the peer then never reads the answer of.
			frame.WriteMsg(st, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{
				Request: &linkv1.Request{Id: "x", Verb: "get", Noun: "block", Seq: 1}}})
		}
		select {
		case <-m.CloseChan():
		case <-time.After(10 * time.Second):
			t.Fatal("the server kept a session whose peer opened 5000 streams")
		}
		waitFor(t, 30*time.Second, "the flood's goroutines to end", func() bool {
			return runtime.NumGoroutine() <= before+10
		})
	})

	// The well-behaved client is served after the abuse. Its link normally
	// never notices; on a machine starved of CPU (the race detector beside
	// a load) the flood can delay its keepalive past 4 s, and then it
	// relinks: either way it is served, which is what is asserted.
	sess := goodSess
	if sess.Err() != nil {
		t.Logf("the good client's link ended during the flood (%v): a starved machine; it relinks", sess.Err())
		sess = good.waitUp(t, 15*time.Second)
	}
	if got, err := call(context.Background(), sess, "get", "whoami", nil); err != nil || got != "server answers get_whoami from good args=" {
		t.Errorf("good client after the abuse = %q, %v", got, err)
	}
	if _, err := call(context.Background(), srv.session(t, "good", time.Second), "get", "whoami", nil); err != nil {
		t.Errorf("server to good client after the abuse: %v", err)
	}
}
