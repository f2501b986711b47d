package link

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts the writes reaching the TCP connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestSmallEventWrites checks what a small event costs on the wire: on a
// reused stream the requester writes only the request, one yamux data
// frame whose header and body go out together in one syscall (in one TLS
// record through the flusher, in two when the frame finds the link idle
// and is written inline; protocol 1 took three: the stream's SYN, the
// request, its FIN; four before header and body were coalesced).
func TestSmallEventWrites(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	var writes atomic.Int64
	cl := startClient(t, p, "a", srv.addr, func(c *ClientConfig) {
		c.KeepAliveInterval = time.Hour // no pings during the count
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, &writes}, nil
		}
	})
	sess := cl.waitUp(t, 5*time.Second)
	for range 10 { // warm up
		if _, err := call(context.Background(), sess, "get", "whoami", nil); err != nil {
			t.Fatal(err)
		}
	}
	before := writes.Load()
	const n = 200
	for range n {
		if _, err := call(context.Background(), sess, "post", "echo", []byte("small body")); err != nil {
			t.Fatal(err)
		}
	}
	per := float64(writes.Load()-before) / n
	t.Logf("%.2f TCP writes per small event from the requester", per)
	if per > 1.05 {
		t.Errorf("%.2f writes per small event, want 1 (the request frame)", per)
	}
}
