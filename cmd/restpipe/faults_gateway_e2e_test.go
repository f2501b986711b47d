package main

// Fault injection at the gateway: floods of local connections
// (faults_e2e_test.go says what every fault test asserts).

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFaultGatewayConnectionFlood opens 2000 silent TCP connections to a
// client node's gateway (within the descriptor limit, and its limit of 4096
// connections served at once). The node keeps serving normal requests
// meanwhile, closes each silent connection when its 10s header timeout
// passes, and the test process is back to its baseline of goroutines and
// file descriptors once they are gone.
//
// Not parallel: it counts the goroutines and descriptors of the whole test
// process.
func TestFaultGatewayConnectionFlood(t *testing.T) {
	n := soakOr(2000, 4000)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// Each connection costs two descriptors here: the caller's end and the
	// node's. Keep 512 for everything else.
	if most := (int(lim.Cur) - openFDs(t) - 512) / 2; n > most {
		t.Logf("RLIMIT_NOFILE is %d: opening %d connections instead of %d", lim.Cur, most, n)
		n = most
	}
	if n < 100 {
		t.Skipf("RLIMIT_NOFILE %d leaves room for only %d connections", lim.Cur, n)
	}
	c := startCluster(t, clusterOpts{plugins: []string{"echo"}}, "c1")
	cl := c.clients["c1"]
	call := newCaller(t, 5*time.Second, false)
	var outs []outcome
	normal := func(flow string) outcome {
		switch flow {
		case "/server/echo":
			return call.echo(flow, cl.url("/server"), "server", "")
		case "/local/echo":
			return call.echo(flow, cl.url("/local"), "c1", "")
		default:
			return call.send(flow, "GET", cl.url("/healthz"), nil, hasKey("status"))
		}
	}
	for _, f := range []string{"/server/echo", "/local/echo", "/healthz"} {
		outs = append(outs, normal(f))
	}
	baseG := settled(ownGoroutines)
	baseFD := settled(func() int { return c.ownFDs(t) })

	conns := make([]net.Conn, 0, n)
	closeAll := sync.OnceFunc(func() {
		for _, conn := range conns {
			conn.Close()
		}
	})
	t.Cleanup(closeAll)
	opened := time.Now()
	for range n {
		conn, err := net.DialTimeout("tcp", cl.httpAddr(), 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", len(conns)+1, n, err)
		}
		conns = append(conns, conn)
	}
	dialTook := time.Since(opened)
	held := func() bool { return runtime.NumGoroutine() >= baseG+n*9/10 }
	waitFor(t, 10*time.Second, "the gateway to hold the silent connections", held)

	// Normal requests meanwhile, from four callers.
	var during tally
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range soakOr(12, 60) {
				during.add(normal([]string{"/server/echo", "/local/echo", "/healthz"}[(w+i)%3]))
			}
		}()
	}
	wg.Wait()
	if !held() {
		t.Errorf("the silent connections were gone before the normal requests finished (%v after they opened): the test proves nothing", time.Since(opened))
	}
	for _, o := range during.all() {
		allow(t, o, "a normal request while silent connections are held", classOK)
	}
	outs = append(outs, during.all()...)

	// The gateway closes each silent connection 10s after accepting it.
	var first, last time.Duration
	closed := 0
	for i, conn := range conns {
		_ = conn.SetReadDeadline(opened.Add(25 * time.Second))
		_, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("silent connection %d still open 25s after it was made", i+1)
		}
		closed++
		if i == 0 {
			first = time.Since(opened)
		}
	}
	last = time.Since(opened)
	if first < 9*time.Second {
		t.Errorf("the first silent connection was closed %v after it opened, before the 10s header timeout", first)
	}
	closeAll()

	noSilentLoss(t, outs)
	g := waitBack(t, "goroutines", baseG, 5, ownGoroutines)
	fds := waitBack(t, "open file descriptors", baseFD, 3, func() int { return c.ownFDs(t) })
	ds := latencies(during.all())
	t.Logf("%d silent connections opened in %v; %d normal requests meanwhile: p50 %v, p99 %v, max %v; the gateway closed them %v..%v after they opened (%d closed); "+
		"goroutines %d -> %d, file descriptors %d -> %d",
		n, ms(dialTook), len(ds), ms(percentile(ds, 0.5)), ms(percentile(ds, 0.99)), ms(percentile(ds, 1)),
		ms(first), ms(last), closed, baseG, g, baseFD, fds)
}
