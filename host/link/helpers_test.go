package link

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/hosttest"
	"github.com/restpipe/restpipe/host/pki"
)

// testPKI is a CA made in memory for one test.
type testPKI struct {
	ca *pki.CA
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return &testPKI{ca: ca}
}

func (p *testPKI) cert(t testing.TB, name string, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := p.ca.IssueTLS(name, hosts...)
	if err != nil {
		t.Fatalf("IssueTLS(%q): %v", name, err)
	}
	return c
}

// serverTLS is a server configuration with a certificate for name.
func (p *testPKI) serverTLS(t testing.TB, name string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.cert(t, name, "127.0.0.1", "::1", "localhost")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
	}
}

// clientTLS is a client configuration with a certificate for name, that
// verifies the server as serverName.
func (p *testPKI) clientTLS(t testing.TB, name, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.cert(t, name)},
		RootCAs:      p.ca.Pool(),
		ServerName:   serverName,
	}
}

func testLogger(t testing.TB, name string, keep *logBuf) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: testWriter{t, keep}})
}

// testWriter sends log lines to the test's log, and keeps them if asked.
type testWriter struct {
	t    testing.TB
	keep *logBuf
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	if w.keep != nil {
		w.keep.Write(p)
	}
	return len(p), nil
}

// logBuf collects log output, safe for concurrent use.
type logBuf = hosttest.LogBuffer

// nodeHandler answers events on a test node:
//
//	get whoami        -> "<node> answers <route> from <peer>"
//	post echo         -> the request body, streamed back
//	get block         -> waits for ctx, reports ctx.Err() on blocked
//	post block        -> same, without reading the body
type nodeHandler struct {
	node    string
	blocked chan error // receives ctx's error from every block event; may be nil
	entered chan struct{}
}

func newNodeHandler(node string) *nodeHandler {
	return &nodeHandler{node: node, blocked: make(chan error, 1024), entered: make(chan struct{}, 1024)}
}

func (h *nodeHandler) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	switch ev.Route() {
	case "get_whoami":
		msg := fmt.Sprintf("%s answers %s from %s args=%s", h.node, ev.Route(), ev.Peer, strings.Join(ev.Args, ","))
		return &host.Reply{ContentType: "text/plain", Size: int64(len(msg)), Body: io.NopCloser(strings.NewReader(msg))}, nil
	case "post_echo":
		return &host.Reply{ContentType: ev.ContentType, Size: ev.Size, Body: io.NopCloser(ev.Body)}, nil
	case "get_block", "post_block":
		h.entered <- struct{}{}
		<-ctx.Done()
		h.blocked <- context.Cause(ctx)
		return nil, ctx.Err()
	case "get_fail":
		return nil, &host.Error{Kind: host.KindHandlerFailed, Message: "it broke",
			Exception: &host.Exception{Message: "it broke", Class: "ValueError"}}
	case "get_deadline":
		d, ok := ctx.Deadline()
		msg := "none"
		if ok {
			msg = time.Until(d).Round(time.Hour).String()
		}
		return &host.Reply{ContentType: "text/plain", Size: int64(len(msg)), Body: io.NopCloser(strings.NewReader(msg))}, nil
	case "get_status":
		n, _ := strconv.Atoi(ev.Args[0])
		return &host.Reply{Status: n}, nil
	case "get_long":
		// A body longer than the size it announces.
		return &host.Reply{Size: 3, Body: io.NopCloser(strings.NewReader("abcdef"))}, nil
	case "get_late":
		time.Sleep(150 * time.Millisecond) // ignoring its deadline
		return &host.Reply{ContentType: "text/plain", Size: 2, Body: io.NopCloser(strings.NewReader("ok"))}, nil
	case "get_bigtype":
		return &host.Reply{ContentType: strings.Repeat("x", 70<<10)}, nil
	}
	return nil, host.Errorf(host.KindNoRoute, "no handler for %s", ev.Route())
}

// testServer is a link server on 127.0.0.1:0.
type testServer struct {
	*Server
	addr    string
	handler *nodeHandler
	logs    *logBuf
	done    chan error
	stopped sync.Once
}

func startServer(t testing.TB, p *testPKI, mod func(*ServerConfig)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startServerOn(t, p, ln, mod)
}

func startServerOn(t testing.TB, p *testPKI, ln net.Listener, mod func(*ServerConfig)) *testServer {
	t.Helper()
	h := newNodeHandler("server")
	logs := &logBuf{}
	cfg := ServerConfig{Config: lanConfig(), TLS: p.serverTLS(t, "server")}
	cfg.Handler = h
	cfg.Logger = testLogger(t, "server", logs)
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ts := &testServer{Server: s, addr: ln.Addr().String(), handler: h, logs: logs, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop closes the server and checks Serve returned ErrServerClosed, once
// (a test may stop its server before the cleanup does).
func (ts *testServer) stop(t testing.TB) {
	ts.stopped.Do(func() {
		ts.Close()
		select {
		case err := <-ts.done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve() = %v, want ErrServerClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of Close")
		}
	})
}

// testClient is a link client running in the background.
type testClient struct {
	*Client
	handler *nodeHandler
	cancel  context.CancelFunc
	done    chan struct{}
}

func startClient(t testing.TB, p *testPKI, name, addr string, mod func(*ClientConfig)) *testClient {
	t.Helper()
	h := newNodeHandler(name)
	tlsCfg := p.clientTLS(t, name, "server")
	cfg := ClientConfig{Config: lanConfig(), Addr: addr, TLS: func() *tls.Config { return tlsCfg.Clone() }}
	cfg.Handler = h
	cfg.Logger = testLogger(t, name, nil)
	cfg.MinBackoff = 10 * time.Millisecond
	cfg.MaxBackoff = 200 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testClient{Client: c, handler: h, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tc.done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	}()
	t.Cleanup(tc.stop)
	return tc
}

// stop ends Run and waits for it.
func (tc *testClient) stop() {
	tc.cancel()
	<-tc.done
}

// waitUp waits until the client's link is up and returns its session.
func (tc *testClient) waitUp(t testing.TB, within time.Duration) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := tc.Peer(ctx)
	if err != nil {
		t.Fatalf("link not up within %v: %v", within, err)
	}
	return s
}

// serverSession waits until the server has a session for name.
func (ts *testServer) session(t testing.TB, name string, within time.Duration) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := ts.Peer(ctx, name)
	if err != nil {
		t.Fatalf("no session for %q within %v: %v", name, within, err)
	}
	return s
}

// call sends one event and reads the whole reply.
func call(ctx context.Context, h host.Handler, verb, noun string, body []byte, args ...string) (string, error) {
	ev := &host.Event{ID: "test", Verb: verb, Noun: noun, Args: args}
	if body != nil {
		ev.Body, ev.Size = bytes.NewReader(body), int64(len(body))
	}
	rep, err := h.Handle(ctx, ev)
	if err != nil {
		return "", err
	}
	defer rep.Close()
	if rep.Body == nil {
		return "", nil
	}
	b, err := io.ReadAll(rep.Body)
	return string(b), err
}

// wantKind fails unless err is an *host.Error of kind k.
func wantKind(t testing.TB, err error, k host.Kind) {
	t.Helper()
	var he *host.Error
	if !errors.As(err, &he) || he.Kind != k {
		t.Fatalf("error = %v, want kind %s", err, k)
	}
}

// waitFor polls cond until it holds or within passes.
var waitFor = hosttest.WaitFor

// goroutineBaseline returns a check that fails the test unless the number
// of goroutines goes back to what it is now (give or take slack).
func goroutineBaseline(t testing.TB) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("goroutines = %d, want at most %d as before\n%s", n, before, buf)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// cutProxy forwards TCP connections to a target and can cut them all.
type cutProxy struct {
	ln     net.Listener
	target string
	// down, when set, is the rate in bytes per second at which the proxy
	// passes what the target sends; set it before the first connection.
	down  int
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	p := &cutProxy{target: target}
	p.start(t)
	return p
}

// start listens on 127.0.0.1:0 and forwards to p.target until the test
// ends.
func (p *cutProxy) start(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(u, c); u.Close() }()
		go func() { defer p.wg.Done(); throttledCopy(c, u, p.down); c.Close() }()
	}
}

// throttledCopy copies src to dst at rate bytes per second (0: at once),
// in 4 KiB steps.
func throttledCopy(dst io.Writer, src io.Reader, rate int) {
	if rate == 0 {
		io.Copy(dst, src)
		return
	}
	buf := make([]byte, 4<<10)
	start, sent := time.Now(), 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += n
			// Rate limiting: a sleep is the point here.
			time.Sleep(time.Until(start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))))
		}
		if err != nil {
			return
		}
	}
}

// cut closes every forwarded connection.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

type tlsConfig = tls.Config

const tls12 = tls.VersionTLS12

var dialer net.Dialer

// listenAgain listens on addr again, retrying while the old socket lingers.
func listenAgain(t testing.TB, addr string) net.Listener {
	t.Helper()
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listen on %s again: %v", addr, err)
	return nil
}

// testLinkConfig is a link configuration with every default, for tests
// that speak the hello by hand.
// lanConfig is DefaultConfig with the window pinned at its smallest, so
// every test link has a LAN's shape (every stream its events need) however
// long a loaded machine makes its hello's round trip look: the tests of
// shaping itself (TestLinkShape, TestShortestRTT) set their own.
func lanConfig() Config {
	c := DefaultConfig()
	c.MaxStreamWindow = c.StreamWindow
	return c
}

func testLinkConfig() *Config {
	c := lanConfig()
	c.Handler = newNodeHandler("raw")
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		panic(err)
	}
	return &c
}
