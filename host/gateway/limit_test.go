package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// TestIdleConnectionsNeverLockOutNewCallers fills the gateway's connection
// limit with idle keep-alive connections, each after one request, and
// checks that new callers (and /healthz) are served at once, the idlest
// connections making room, while a connection in the middle of a request
// is never shed.
func TestIdleConnectionsNeverLockOutNewCallers(t *testing.T) {
	const limit = 32
	release := make(chan struct{})
	local := host.HandlerFunc(func(ctx context.Context, ev *host.Event) (*host.Reply, error) {
		if ev.Noun == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return &host.Reply{ContentType: "text/plain", Body: io.NopCloser(strings.NewReader("ok")), Size: 2}, nil
	})
	g, err := New(Config{Node: host.Node{Role: host.RoleServer, Name: "s"}, Local: local, Peers: noPeers{}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0", limit)
	if err != nil {
		t.Fatal(err)
	}
	srv := g.HTTPServer(ln)
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()

	// One connection busy with a slow event: it must survive the shedding.
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	fmt.Fprintf(busy, "GET /local/slow HTTP/1.1\r\nHost: x\r\n\r\n")

	// The rest of the limit: idle keep-alive connections after one request.
	var idle []net.Conn
	for i := 0; i < limit-1; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := get(t, c, "/local/x"); got != 200 {
			t.Fatalf("idle connection %d: first request = %d", i, got)
		}
		idle = append(idle, c)
	}

	// net/http marks a connection idle just after writing its reply: wait
	// until it has, for all of them.
	lim := ln.(*limitListener)
	for deadline := time.Now().Add(10 * time.Second); ; {
		lim.mu.Lock()
		n := 0
		for c := range lim.conns {
			if !c.idleSince.IsZero() {
				n++
			}
		}
		lim.mu.Unlock()
		if n == len(idle) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections idle after 10s", n, len(idle))
		}
		time.Sleep(time.Millisecond)
	}

	// New callers, as many as the limit, each keeping its connection
	// open: each is served promptly, the idlest connection making room.
	for i := 0; i < limit; i++ {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		path := "/local/x"
		if i%2 == 1 {
			path = "/healthz"
		}
		if got := get(t, c, path); got != 200 {
			t.Errorf("new caller %d: GET %s = %d", i, path, got)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("new caller %d waited %v", i, d)
		}
		defer c.Close()
	}
	// Every first idle connection was shed (the new callers, idle since,
	// shed each other after them).
	shed := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			shed++
		}
	}
	if shed != len(idle) {
		t.Errorf("%d of %d idle connections shed for %d new callers beyond the limit, want all", shed, len(idle), limit)
	}
	// The busy connection still gets its reply.
	close(release)
	busy.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("the connection busy with an event was cut: %v", err)
	}
	t.Logf("%d of %d idle connections shed for %d new callers", shed, len(idle), limit)
}

// get sends one keep-alive GET on c and returns the status.
func get(t testing.TB, c net.Conn, path string) int {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

type noPeers struct{}

func (noPeers) Peer(context.Context, string) (host.Handler, error) {
	return nil, fmt.Errorf("no peers here")
}
