package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/proto/frame"

	"github.com/restpipe/restpipe/host"
)

func TestEventsReachTheirClientOnly(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	names := []string{"a", "b", "c"}
	clients := map[string]*testClient{}
	for _, n := range names {
		clients[n] = startClient(t, p, n, srv.addr, nil)
		clients[n].waitUp(t, 5*time.Second)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for _, n := range names {
		sess := srv.session(t, n, time.Second)
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				arg := fmt.Sprintf("%s-%d", n, i)
				got, err := call(ctx, sess, "get", "whoami", nil, arg)
				want := fmt.Sprintf("%s answers get_whoami from server args=%s", n, arg)
				if err != nil || got != want {
					errs <- fmt.Errorf("event to %s: got %q, %v; want %q", n, got, err, want)
				}
			}()
		}
	}
	// And each client to the server: the server sees the client's name.
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := call(ctx, clients[n].Session(), "get", "whoami", nil)
			if want := "server answers get_whoami from " + n + " args="; err != nil || got != want {
				errs <- fmt.Errorf("event from %s: got %q, %v; want %q", n, got, err, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// b leaves while a and c carry events; they lose none.
	var loadWG sync.WaitGroup
	stopLoad := make(chan struct{})
	var fails sync.Map
	for _, n := range []string{"a", "c"} {
		sess := srv.session(t, n, time.Second)
		loadWG.Add(1)
		go func() {
			defer loadWG.Done()
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				body := []byte(fmt.Sprintf("%s payload %d", n, i))
				got, err := call(ctx, sess, "post", "echo", body)
				if err != nil || got != string(body) {
					fails.Store(fmt.Sprintf("%s/%d", n, i), fmt.Sprintf("%q %v", got, err))
				}
			}
		}()
	}
	clients["b"].stop()
	waitFor(t, 5*time.Second, "server to drop b", func() bool {
		for _, s := range srv.Sessions() {
			if s.Peer() == "b" {
				return false
			}
		}
		return true
	})
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := srv.Peer(short, "b")
	cancelShort()
	if !errors.Is(err, ErrNotConnected) {
		t.Errorf("Peer(b) after b left = %v, want ErrNotConnected", err)
	}
	close(stopLoad)
	loadWG.Wait()
	fails.Range(func(k, v any) bool {
		t.Errorf("event %v failed while b left: %v", k, v)
		return true
	})
}

func TestTLSRefusals(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	srv := startServer(t, p, nil)

	tests := []struct {
		name string
		cfg  func() ClientConfig
		want string // in the client's error
	}{
		{"client cert from another CA", func() ClientConfig {
			c := other.clientTLS(t, "a", "server")
			c.RootCAs = p.ca.Pool()
			return ClientConfig{TLS: func() *tlsConfig { return c }}
		}, "certificate"},
		{"server cert from another CA", func() ClientConfig {
			c := other.clientTLS(t, "a", "server")
			return ClientConfig{TLS: func() *tlsConfig { return c }}
		}, "certificate signed by unknown authority"},
		{"wrong server name", func() ClientConfig {
			c := p.clientTLS(t, "a", "not-the-server")
			return ClientConfig{TLS: func() *tlsConfig { return c }}
		}, "not-the-server"},
		{"no client certificate", func() ClientConfig {
			c := p.clientTLS(t, "a", "server")
			c.Certificates = nil
			return ClientConfig{TLS: func() *tlsConfig { return c }}
		}, "certificate required"},
		{"TLS 1.2", func() ClientConfig {
			c := p.clientTLS(t, "a", "server")
			c.MinVersion, c.MaxVersion = tls12, tls12
			return ClientConfig{TLS: func() *tlsConfig { return c }}
		}, "protocol version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg()
			cfg.Config = DefaultConfig()
			cfg.Handler = newNodeHandler("a")
			cfg.Addr = srv.addr
			c := &Client{cfg: cfg, changed: make(chan struct{})}
			// Validate would refuse the TLS 1.2 config itself: fill the
			// defaults in and skip it, to reach the server with it.
			cfg.Config = cfg.Config.WithDefaults()
			c.cfg.Config = cfg.Config
			c.cfg.Dial = dialer.DialContext
			sess, err := c.connect(context.Background())
			if err == nil {
				sess.mux.Close()
				t.Fatal("connect succeeded, want refusal")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("connect() = %v, want it to mention %q", err, tt.want)
			}
			if n := len(srv.Sessions()); n != 0 {
				t.Errorf("server has %d sessions, want 0", n)
			}
		})
	}
}

func TestClientValidateRefusesTLS12(t *testing.T) {
	p := newPKI(t)
	c := p.clientTLS(t, "a", "server")
	c.MinVersion = tls12
	cfg := ClientConfig{Config: DefaultConfig(), Addr: "127.0.0.1:1", TLS: func() *tlsConfig { return c }}
	cfg.Handler = newNodeHandler("a")
	if _, err := NewClient(cfg); err == nil || !strings.Contains(err.Error(), "TLS 1.3") {
		t.Errorf("NewClient with TLS 1.2 = %v, want a TLS 1.3 error", err)
	}
}

func TestLinkDeathFailsEventsInFlight(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	proxy := startCutProxy(t, srv.addr)
	cl := startClient(t, p, "a", proxy.addr(), func(c *ClientConfig) { c.MinBackoff = time.Hour; c.MaxBackoff = time.Hour })
	cs := cl.waitUp(t, 5*time.Second)
	ss := srv.session(t, "a", time.Second)
	baseline := goroutineBaseline(t)

	const n = 20
	results := make(chan error, 2*n)
	ctx := context.Background()
	for range n {
		go func() { _, err := call(ctx, ss, "get", "block", nil); results <- err }()
		go func() { _, err := call(ctx, cs, "post", "block", bytes.Repeat([]byte("x"), 100<<10)); results <- err }()
	}
	for range 2 * n {
		select {
		case <-cl.handler.entered:
		case <-srv.handler.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("events did not reach their handlers")
		}
	}
	if s := ss.Stats(); s.EventsOut != n || s.EventsIn != n {
		t.Fatalf("server session stats = %+v, want %d out and %d in", s, n, n)
	}

	cutAt := time.Now()
	proxy.cut()
	for range 2 * n {
		select {
		case err := <-results:
			wantKind(t, err, host.KindLinkLost)
		case <-time.After(5 * time.Second):
			t.Fatal("an event hung after the link died")
		}
	}
	t.Logf("events failed within %v of the cut", time.Since(cutAt))
	if d := time.Since(cutAt); d > time.Second {
		t.Errorf("events failed %v after the cut, want within 1s", d)
	}
	// The handlers on both sides saw their contexts end.
	for range 2 * n {
		select {
		case <-cl.handler.blocked:
		case <-srv.handler.blocked:
		case <-time.After(5 * time.Second):
			t.Fatal("a handler was never canceled")
		}
	}
	for _, s := range []*Session{cs, ss} {
		waitFor(t, 2*time.Second, "nothing in flight after the cut", func() bool {
			st := s.Stats()
			return st.EventsIn == 0 && st.EventsOut == 0
		})
	}
	cl.stop()
	waitFor(t, 5*time.Second, "server to drop the session", func() bool { return len(srv.Sessions()) == 0 })
	baseline()
}

func TestNewestLinkWins(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	first := startClient(t, p, "a", srv.addr, nil)
	firstSess := first.waitUp(t, 5*time.Second)
	old := srv.session(t, "a", time.Second)

	res := make(chan error, 1)
	go func() { _, err := call(context.Background(), old, "get", "block", nil); res <- err }()
	<-first.handler.entered

	second := startClient(t, p, "a", srv.addr, nil)
	second.waitUp(t, 5*time.Second)
	select {
	case err := <-res:
		wantKind(t, err, host.KindLinkLost)
		if !strings.Contains(err.Error(), "newer link") {
			t.Errorf("error = %v, want it to say a newer link replaced it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event on the replaced link hung")
	}
	if !errors.Is(old.Err(), ErrReplaced) {
		t.Errorf("old session Err() = %v, want ErrReplaced", old.Err())
	}
	_ = firstSess
	// Events for "a" now reach the second client. The first one keeps
	// reconnecting and may win again; stop it first.
	first.stop()
	waitFor(t, 5*time.Second, "the second client to own a", func() bool {
		s := second.Session()
		return s != nil && len(srv.Sessions()) == 1
	})
	sess := srv.session(t, "a", 5*time.Second)
	got, err := call(context.Background(), sess, "get", "whoami", nil)
	if err != nil || !strings.HasPrefix(got, "a answers") {
		t.Errorf("event to a = %q, %v", got, err)
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	addr := srv.addr
	cl := startClient(t, p, "a", addr, func(c *ClientConfig) {
		c.MinBackoff = 5 * time.Millisecond
		c.MaxBackoff = 100 * time.Millisecond
	})
	cl.waitUp(t, 5*time.Second)

	for round := range 3 {
		srv.stop(t)
		waitFor(t, 5*time.Second, "the client to notice", func() bool { return cl.Session() == nil })
		// Let the client fail many times, long enough to reach its cap.
		dials := cl.Stats().Dials
		waitFor(t, 10*time.Second, "30 failed dials", func() bool { return cl.Stats().Dials >= dials+30 })
		if got := cl.backoff(1000); got > cl.cfg.MaxBackoff+time.Millisecond {
			t.Fatalf("backoff after 1000 attempts = %v, want at most %v", got, cl.cfg.MaxBackoff)
		}
		ln := listenAgain(t, addr)
		restarted := time.Now()
		srv = startServerOn(t, p, ln, nil)
		cl.waitUp(t, 5*time.Second)
		srv.session(t, "a", 5*time.Second)
		t.Logf("round %d: back %v after the restart", round, time.Since(restarted).Round(time.Millisecond))
	}
}

func TestStreamingBothWays(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "a", srv.addr, nil)
	sess := cl.waitUp(t, 5*time.Second)

	for _, size := range []int64{0, 1, 1000, frame.Chunk, frame.Chunk + 1, 8 << 20} {
		for _, known := range []bool{true, false} {
			t.Run(fmt.Sprintf("%d/known=%v", size, known), func(t *testing.T) {
				sum := sha256.New()
				body := io.TeeReader(io.LimitReader(rand.Reader, size), sum)
				ev := &host.Event{ID: "s", Verb: "post", Noun: "echo", Body: body, Size: -1, ContentType: "application/x-test"}
				if known {
					ev.Size = size
				}
				rep, err := sess.Handle(context.Background(), ev)
				if err != nil {
					t.Fatal(err)
				}
				defer rep.Close()
				back := sha256.New()
				var n int64
				if rep.Body != nil {
					n, err = io.Copy(back, rep.Body)
				}
				if err != nil || n != size {
					t.Fatalf("reply body: %d bytes, %v; want %d", n, err, size)
				}
				if !bytes.Equal(sum.Sum(nil), back.Sum(nil)) {
					t.Error("reply body differs from the request body")
				}
				if rep.ContentType != "application/x-test" {
					t.Errorf("content type = %q", rep.ContentType)
				}
			})
		}
	}
}

func TestDeadlineAndCancelReachTheFarHandler(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "a", srv.addr, nil)
	sess := cl.waitUp(t, 5*time.Second)

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := call(ctx, sess, "get", "block", nil)
		wantKind(t, err, host.KindTimeout)
		<-srv.handler.entered
		if cause := <-srv.handler.blocked; !errors.Is(cause, context.DeadlineExceeded) {
			t.Errorf("far handler saw %v, want its deadline", cause)
		}
	})
	t.Run("caller cancels, body unread", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan error, 1)
		// A body larger than the stream window, which the handler never reads.
		go func() { _, err := call(ctx, sess, "post", "block", make([]byte, 4<<20)); res <- err }()
		<-srv.handler.entered
		cancel()
		wantKind(t, <-res, host.KindCanceled)
		select {
		case cause := <-srv.handler.blocked:
			if !errors.Is(cause, context.Canceled) || !strings.Contains(cause.Error(), "caller went away") {
				t.Errorf("far handler saw %v, want the caller's cancellation", cause)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("far handler never saw the cancellation")
		}
	})
	waitFor(t, 5*time.Second, "nothing in flight", func() bool {
		s := srv.session(t, "a", time.Second).Stats()
		return s.EventsIn == 0 && sess.Stats().EventsOut == 0
	})
}

func TestErrorsCrossTheLink(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "a", srv.addr, nil)
	sess := cl.waitUp(t, 5*time.Second)
	_, err := call(context.Background(), sess, "get", "fail", nil)
	wantKind(t, err, host.KindHandlerFailed)
	var he *host.Error
	errors.As(err, &he)
	if he.Exception == nil || he.Exception.Class != "ValueError" || he.Message != "it broke" {
		t.Errorf("error = %+v, want the exception to survive", he)
	}
	_, err = call(context.Background(), sess, "get", "nothing", nil)
	wantKind(t, err, host.KindNoRoute)
	_, err = call(context.Background(), sess, "get", "bad noun!", nil)
	wantKind(t, err, host.KindBadRequest)
}

func TestOverloaded(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "a", srv.addr, func(c *ClientConfig) { c.MaxInFlight = 2 })
	sess := cl.waitUp(t, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		go call(ctx, sess, "get", "block", nil)
		<-srv.handler.entered
	}
	_, err := call(context.Background(), sess, "get", "whoami", nil)
	wantKind(t, err, host.KindOverloaded)
	var he *host.Error
	errors.As(err, &he)
	if he.RetryAfter <= 0 {
		t.Errorf("RetryAfter = %v, want it set", he.RetryAfter)
	}
	cancel()
	waitFor(t, 5*time.Second, "the slots to free", func() bool { return sess.Stats().EventsOut == 0 })
	if _, err := call(context.Background(), sess, "get", "whoami", nil); err != nil {
		t.Errorf("event after the load went = %v", err)
	}
}

func TestIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	p := newPKI(t)
	srv := startServerOn(t, p, ln, nil)
	cl := startClient(t, p, "a", srv.addr, func(c *ClientConfig) {
		tlsCfg := p.clientTLS(t, "a", "::1") // verified against the IP SAN
		c.TLS = func() *tls.Config { return tlsCfg }
	})
	sess := cl.waitUp(t, 5*time.Second)
	if got, err := call(context.Background(), sess, "get", "whoami", nil); err != nil || got != "server answers get_whoami from a args=" {
		t.Errorf("event over IPv6 = %q, %v", got, err)
	}
}
