package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
)

// roleCert is a certificate for name with the server role.
func (p *testPKI) roleCert(t testing.TB, name string, hosts ...string) tls.Certificate {
	t.Helper()
	c, err := p.ca.IssueTLSWith(name, hosts, pki.LeafOptions{ServerRole: true})
	if err != nil {
		t.Fatalf("IssueTLSWith(%q): %v", name, err)
	}
	return c
}

// roleServerTLS is a server configuration for name, with the server role
// when role is set.
func (p *testPKI) roleServerTLS(t testing.TB, name string, role bool) *tls.Config {
	c := p.serverTLS(t, name)
	if role {
		c.Certificates = []tls.Certificate{p.roleCert(t, name, "127.0.0.1")}
	}
	return c
}

// startPool starts a pool of forward links for a server named name, with
// the server role when role is set.
func startPool(t testing.TB, p *testPKI, name string, role bool, logs *logBuf) *Pool {
	t.Helper()
	cert := p.cert(t, name)
	if role {
		cert = p.roleCert(t, name)
	}
	cfg := PoolConfig{Config: DefaultConfig(), TLS: func(server string) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: p.ca.Pool(), ServerName: server}
	}}
	cfg.Logger = testLogger(t, name, logs)
	pool, err := NewPool(cfg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() { pool.Close() })
	return pool
}

// seenEvent is what a forward handler was handed.
type seenEvent struct{ peer, via, target string }

// recordingForward answers forwarded events with what it saw of them, and
// can be told to refuse them as never delivered.
type recordingForward struct {
	mu       sync.Mutex
	seen     []seenEvent
	refusing bool
}

func (f *recordingForward) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	f.mu.Lock()
	f.seen = append(f.seen, seenEvent{ev.Peer, ev.Via, ev.Target})
	refusing := f.refusing
	f.mu.Unlock()
	if refusing {
		return nil, &host.Error{Kind: host.KindPeerUnavailable, Message: "not held here", Err: host.ErrNotDelivered}
	}
	msg := fmt.Sprintf("for %s from %s via %s hops %d", ev.Target, ev.Peer, ev.Via, ev.Hops)
	return &host.Reply{Size: int64(len(msg)), Body: io.NopCloser(strings.NewReader(msg))}, nil
}

func TestForwardLink(t *testing.T) {
	p := newPKI(t)
	fwd := &recordingForward{}
	srv := startServer(t, p, func(c *ServerConfig) {
		c.TLS = p.roleServerTLS(t, "b", true)
		c.Forward = fwd
	})
	pool := startPool(t, p, "a", true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := pool.Session(ctx, "b", srv.addr)
	if err != nil {
		t.Fatalf("Session: %v", err)
	}
	if !sess.Forward() || sess.Peer() != "b" {
		t.Errorf("Forward() = %v, Peer() = %q, want a forward link to b", sess.Forward(), sess.Peer())
	}
	// Kept and reused.
	if again, err := pool.Session(ctx, "b", srv.addr); err != nil || again != sess {
		t.Errorf("second Session = %p, %v; want the same link %p", again, err, sess)
	}

	for _, tt := range []struct {
		ev   host.Event
		want string
	}{
		{host.Event{Target: "x"}, "for x from a via a hops 1"},
		{host.Event{Target: "x", Peer: "origin", Hops: 1}, "for x from origin via a hops 2"},
	} {
		ev := tt.ev
		ev.ID, ev.Verb, ev.Noun = "f1", "get", "whoami"
		rep, err := sess.Handle(ctx, &ev)
		if err != nil {
			t.Fatalf("Handle(%+v): %v", tt.ev, err)
		}
		b, _ := io.ReadAll(rep.Body)
		rep.Close()
		if string(b) != tt.want {
			t.Errorf("forwarded %+v: %q, want %q", tt.ev, b, tt.want)
		}
	}
	// The forward link is no client of b.
	if n := len(srv.Sessions()); n != 0 || len(srv.Forwards()) != 1 {
		t.Errorf("Sessions() = %d, Forwards() = %d; want 0 and 1", n, len(srv.Forwards()))
	}
	if len(pool.Links()) != 1 {
		t.Errorf("pool.Links() = %d, want 1", len(pool.Links()))
	}

	// An event without a target is refused on a forward link.
	_, err = call(ctx, sess, "get", "whoami", nil)
	wantKind(t, err, host.KindBadRequest)

	// Not delivered there: said so across the link, so the forwarding
	// server may try elsewhere.
	fwd.mu.Lock()
	fwd.refusing = true
	fwd.mu.Unlock()
	_, err = sess.Handle(ctx, &host.Event{ID: "f2", Verb: "get", Noun: "whoami", Target: "x"})
	wantKind(t, err, host.KindPeerUnavailable)
	if !errors.Is(err, host.ErrNotDelivered) {
		t.Errorf("refused forward: %v, want it to wrap ErrNotDelivered", err)
	}

	// A lost forward link is dialled again by the next event.
	sess.Evict(errors.New("test"))
	waitFor(t, 5*time.Second, "the forward link to end", func() bool { return len(pool.Links()) == 0 })
	s2, err := pool.Session(ctx, "b", srv.addr)
	if err != nil || s2 == sess {
		t.Fatalf("Session after loss = %p, %v; want a new link", s2, err)
	}
}

func TestForwardLinkRefused(t *testing.T) {
	p := newPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("dialler without the role", func(t *testing.T) {
		srv := startServer(t, p, func(c *ServerConfig) {
			c.TLS = p.roleServerTLS(t, "b", true)
			c.Forward = &recordingForward{}
		})
		pool := startPool(t, p, "c1", false, nil)
		_, err := pool.Session(ctx, "b", srv.addr)
		if !errors.Is(err, ErrRefused) || !errors.Is(err, host.ErrNotDelivered) {
			t.Fatalf("Session = %v, want a refusal", err)
		}
		waitFor(t, 5*time.Second, "the refusal in b's log", func() bool {
			return strings.Contains(srv.logs.String(), "link refused") && strings.Contains(srv.logs.String(), "needs a certificate with the server role")
		})
		if len(srv.Forwards()) != 0 {
			t.Error("a forward link is up")
		}
	})
	t.Run("a single server", func(t *testing.T) {
		srv := startServer(t, p, func(c *ServerConfig) { c.TLS = p.roleServerTLS(t, "b", true) })
		pool := startPool(t, p, "a", true, nil)
		if _, err := pool.Session(ctx, "b", srv.addr); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not a member of a cluster") {
			t.Fatalf("Session = %v, want a refusal", err)
		}
	})
	t.Run("dialled server without the role", func(t *testing.T) {
		srv := startServer(t, p, func(c *ServerConfig) {
			c.TLS = p.roleServerTLS(t, "b", false)
			c.Forward = &recordingForward{}
		})
		logs := &logBuf{}
		pool := startPool(t, p, "a", true, logs)
		if _, err := pool.Session(ctx, "b", srv.addr); err == nil || !strings.Contains(err.Error(), "lacks the server role") {
			t.Fatalf("Session = %v, want a refusal", err)
		}
		if !strings.Contains(logs.String(), "forward link failed") {
			t.Errorf("no log line: %s", logs.String())
		}
	})
	t.Run("another server at the address", func(t *testing.T) {
		srv := startServer(t, p, func(c *ServerConfig) {
			c.TLS = p.roleServerTLS(t, "b", true)
			c.Forward = &recordingForward{}
		})
		pool := startPool(t, p, "a", true, nil)
		// Verified against the name asked for: b's certificate is not c's.
		if _, err := pool.Session(ctx, "c", srv.addr); err == nil {
			t.Fatal("a forward link to c reached b")
		}
	})
}

// TestCallerAndTarget checks who may say where an event comes from and
// goes to: only a server-role peer may state a caller, and targets travel
// on forward links only.
func TestCallerAndTarget(t *testing.T) {
	p := newPKI(t)
	for _, role := range []bool{true, false} {
		t.Run(fmt.Sprintf("server role %v", role), func(t *testing.T) {
			srv := startServer(t, p, func(c *ServerConfig) { c.TLS = p.roleServerTLS(t, "server", role) })
			cl := startClient(t, p, "c1", srv.addr, nil)
			cs := cl.waitUp(t, 10*time.Second)
			ss := srv.session(t, "c1", 10*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// The server relays an event a's gateway took: the client
			// believes it only from a server-role certificate.
			got, err := whoami(ctx, ss, host.Event{Peer: "a", Via: "a", Hops: 1})
			if role {
				if err != nil || !strings.Contains(got, "from a ") {
					t.Errorf("relayed event: %q, %v; want it from a", got, err)
				}
			} else {
				wantKind(t, err, host.KindForbidden)
			}
			// Its own name is always fine.
			if got, err := whoami(ctx, ss, host.Event{Peer: "server"}); err != nil || !strings.Contains(got, "from server ") {
				t.Errorf("event stating its own name: %q, %v", got, err)
			}

			// A client (no role) may neither state a caller nor forward.
			for _, ev := range []host.Event{{Peer: "a"}, {Target: "c2"}} {
				_, err := whoami(ctx, cs, ev)
				wantKind(t, err, host.KindForbidden)
			}
			waitFor(t, 5*time.Second, "the refusals in the server's log", func() bool {
				l := srv.logs.String()
				return strings.Contains(l, "event refused: a peer without the server role stated who an event came from") &&
					strings.Contains(l, "event refused: a peer without a forward link sent an event for another client")
			})
			if got, err := whoami(ctx, cs, host.Event{Peer: "c1"}); err != nil || !strings.Contains(got, "from c1 ") {
				t.Errorf("client stating its own name: %q, %v", got, err)
			}
		})
	}
}

// whoami sends get_whoami with the given origin fields.
func whoami(ctx context.Context, s *Session, ev host.Event) (string, error) {
	ev.ID, ev.Verb, ev.Noun = "w", "get", "whoami"
	rep, err := s.Handle(ctx, &ev)
	if err != nil {
		return "", err
	}
	defer rep.Close()
	b, err := io.ReadAll(rep.Body)
	return string(b), err
}

// TestNotDeliveredStaysOnForwardLinks checks a client link never carries
// not_delivered: only a forward link's sender retries elsewhere.
func TestNotDeliveredStaysOnForwardLinks(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) {
		c.Handler = host.HandlerFunc(func(context.Context, *host.Event) (*host.Reply, error) {
			return nil, &host.Error{Kind: host.KindPeerUnavailable, Message: "gone", Err: host.ErrNotDelivered}
		})
	})
	cl := startClient(t, p, "c1", srv.addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := call(ctx, cl.waitUp(t, 10*time.Second), "get", "x", nil)
	wantKind(t, err, host.KindPeerUnavailable)
	if errors.Is(err, host.ErrNotDelivered) {
		t.Errorf("%v wraps ErrNotDelivered on a client link", err)
	}
}

// TestClientSeveralServers checks a client of several servers links to one
// of them and, when it loses it, to another.
func TestClientSeveralServers(t *testing.T) {
	p := newPKI(t)
	s1 := startServer(t, p, nil)
	s2 := startServer(t, p, nil)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there any more
	cl := startClient(t, p, "c1", "", func(c *ClientConfig) { c.Addrs = []string{deadAddr, s1.addr, s2.addr} })
	holder := func() *testServer {
		for _, s := range []*testServer{s1, s2} {
			if len(s.Sessions()) == 1 {
				return s
			}
		}
		return nil
	}
	for i := range 4 {
		cl.waitUp(t, 10*time.Second)
		var h *testServer
		waitFor(t, 10*time.Second, "a server holding c1", func() bool { h = holder(); return h != nil })
		// Losing it, the client links to the other one first.
		h.Sessions()[0].Evict(errors.New("test"))
		waitFor(t, 10*time.Second, fmt.Sprintf("c1 on the other server (round %d)", i), func() bool {
			n := holder()
			return n != nil && n != h
		})
	}
}

// TestClientResolvesEveryAddress checks a host name with several
// addresses is several servers, each verified against the name.
func TestClientResolvesEveryAddress(t *testing.T) {
	p := newPKI(t)
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln1.Addr().String())
	ln2, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		ln1.Close()
		t.Skipf("no second loopback address: %v", err)
	}
	named := func(c *ServerConfig) {
		c.TLS.Certificates = []tls.Certificate{p.cert(t, "server", "servers.test")}
	}
	s1, s2 := startServerOn(t, p, ln1, named), startServerOn(t, p, ln2, named)
	var resolved sync.Map
	cl := startClient(t, p, "c1", "servers.test:"+port, func(c *ClientConfig) {
		tc := p.clientTLS(t, "c1", "")
		c.TLS = func() *tls.Config { return tc.Clone() }
		c.Resolve = func(_ context.Context, host string) ([]string, error) {
			resolved.Store(host, true)
			return []string{"127.0.0.1", "127.0.0.2"}, nil
		}
	})
	seen := map[*testServer]bool{}
	for i := 0; i < 10 && len(seen) < 2; i++ {
		cl.waitUp(t, 10*time.Second)
		var h *testServer
		waitFor(t, 10*time.Second, "a server holding c1", func() bool {
			for _, s := range []*testServer{s1, s2} {
				if len(s.Sessions()) == 1 {
					h = s
					return true
				}
			}
			return false
		})
		seen[h] = true
		h.Sessions()[0].Evict(errors.New("test"))
		waitFor(t, 5*time.Second, "the link to end", func() bool { return len(h.Sessions()) == 0 })
	}
	if len(seen) != 2 {
		t.Errorf("c1 linked to %d of the 2 addresses of servers.test", len(seen))
	}
	if _, ok := resolved.Load("servers.test"); !ok {
		t.Error("servers.test was never resolved")
	}
}

func TestEvictIdle(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	busy := startClient(t, p, "busy", srv.addr, nil)
	idle := startClient(t, p, "idle", srv.addr, func(c *ClientConfig) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Minute })
	busy.waitUp(t, 10*time.Second)
	idle.waitUp(t, 10*time.Second)
	ss := srv.session(t, "busy", 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := call(ctx, ss, "get", "block", nil); done <- err }()
	<-busy.handler.entered

	if left := srv.EvictIdle(errors.New("draining")); left != 1 {
		t.Errorf("EvictIdle() = %d, want 1 (the busy link)", left)
	}
	waitFor(t, 5*time.Second, "the idle link to end", func() bool { return len(srv.Sessions()) == 1 })
	if srv.Sessions()[0] != ss {
		t.Errorf("left %q, want busy", srv.Sessions()[0].Peer())
	}
	if ss.Err() != nil {
		t.Fatalf("the busy link ended: %v", ss.Err())
	}
	cancel()
	<-done
	waitFor(t, 5*time.Second, "the busy link to be evicted once idle", func() bool {
		return srv.EvictIdle(errors.New("draining")) == 0 && ss.Err() != nil
	})
}
