package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Config is what every forward link shares with client links. Its
	// Handler answers what the other server sends back on a forward link:
	// nothing, in this protocol (default: a handler refusing every event).
	// Its Observer hears only ObserveHop and BadPeerReply: a forward link
	// is no peer of the node.
	Config

	// TLS returns the TLS configuration for dialling the server named
	// name: TLS 1.3, this server's certificate, and the other's verified
	// against the CA and name. Called for every dial. Required.
	TLS func(name string) *tls.Config

	// Dial opens the TCP connection. Default: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// WithDefaults returns c with every zero field set to its default: a
// Handler that refuses what the far server sends back, net.Dialer.
func (c PoolConfig) WithDefaults() PoolConfig {
	if c.Handler == nil {
		c.Handler = host.HandlerFunc(refuseBackward)
	}
	c.Config = c.Config.WithDefaults()
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	return c
}

// Validate reports the first field that cannot work, counting zero fields
// as their defaults. It changes nothing.
func (c PoolConfig) Validate() error {
	c = c.WithDefaults()
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.TLS == nil {
		return errors.New("link: pool TLS is required")
	}
	return checkTLS(c.TLS("check"), false)
}

// refuseBackward answers an event the dialled end of a forward link sent:
// a forward link carries events one way.
func refuseBackward(context.Context, *host.Event) (*host.Reply, error) {
	return nil, host.Errorf(host.KindBadRequest, "a forward link carries events from the server that dialled it only")
}

// Pool keeps the forward links a server of a cluster dials to the other
// servers (SPEC §8): one per server, dialled on demand when the first
// event for one of its clients comes, kept and reused by every event after
// it, dialled again when it is lost. The other server must have the server
// role in its certificate, and takes the link only if this one has too.
//
// A Pool is safe for concurrent use. It owns its links and their
// goroutines; Close ends them.
type Pool struct {
	cfg      PoolConfig
	ymx      *yamuxConfigs
	draining drain.Gate // never closed: a forward link carries no events this way

	mu     sync.Mutex
	links  map[string]*poolLink // by server name
	closed bool
	wg     sync.WaitGroup // one per dial or link being served
}

// poolLink is the forward link to one server, or its dial in progress.
type poolLink struct {
	addr  string
	ready chan struct{} // closed when the dial is done
	sess  *Session      // set before ready closes, unless err is
	err   error
}

// ErrPoolClosed is returned by Pool.Session after Pool.Close.
var ErrPoolClosed = errors.New("link pool closed")

// NewPool returns an empty Pool.
func NewPool(cfg PoolConfig) (*Pool, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, links: map[string]*poolLink{}}
	p.ymx = &yamuxConfigs{cfg: &p.cfg.Config}
	return p, nil
}

// Session returns the live forward link to the server named name, whose
// link address is addr, dialling it when there is none (or when the one
// there is dialled at another address). Concurrent callers for one server
// share one dial, which has Config.HandshakeTimeout and goes on when a
// caller's ctx ends. A failed dial is not remembered: the next call dials
// again. The error of a failed dial wraps host.ErrNotDelivered.
func (p *Pool) Session(ctx context.Context, name, addr string) (*Session, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrPoolClosed
	}
	l := p.links[name]
	if l != nil && l.addr != addr {
		if s := l.session(); s != nil {
			s.shutdown(fmt.Errorf("%w: %s moved from %s to %s", ErrClosed, name, l.addr, addr))
		}
		l = nil
	}
	if l != nil {
		select {
		case <-l.ready:
			if l.sess == nil || l.sess.mux.IsClosed() {
				l = nil
			}
		default:
		}
	}
	if l == nil {
		l = &poolLink{addr: addr, ready: make(chan struct{})}
		p.links[name] = l
		p.wg.Add(1)
		go p.dial(name, l)
	}
	p.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: forward link to %s at %s: %w", host.ErrNotDelivered, name, addr, context.Cause(ctx))
	}
	if l.err != nil {
		return nil, l.err
	}
	return l.sess, nil
}

// session returns the link's session once dialled, or nil.
func (l *poolLink) session() *Session {
	select {
	case <-l.ready:
		return l.sess
	default:
		return nil
	}
}

// dial dials the link to name and serves it until it ends.
func (p *Pool) dial(name string, l *poolLink) {
	defer p.wg.Done()
	sess, err := p.connect(name, l.addr)
	p.mu.Lock()
	if err == nil && p.closed {
		sess.mux.Close()
		err = ErrPoolClosed
	}
	if err != nil {
		l.err = fmt.Errorf("%w: forward link to %s: %w", host.ErrNotDelivered, name, err)
		if p.links[name] == l {
			delete(p.links, name)
		}
		p.mu.Unlock()
		p.cfg.Logger.Warn("forward link failed", "server", name, "addr", l.addr, "error", err)
		close(l.ready)
		return
	}
	l.sess = sess
	p.mu.Unlock()
	p.cfg.Logger.Info("forward link up", "server", name, "addr", l.addr)
	close(l.ready)
	sess.serve()
	p.mu.Lock()
	if p.links[name] == l {
		delete(p.links, name)
	}
	p.mu.Unlock()
	p.cfg.Logger.Info("forward link down", "server", name, "addr", l.addr, "error", sess.Err())
}

// connect dials addr and checks that the server there is name, with the
// server role.
func (p *Pool) connect(name, addr string) (*Session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	defer cancel()
	tc := p.cfg.TLS(name)
	// The server is verified against its node name, which its
	// certificate carries as its first DNS name, whatever the address.
	sess, err := dialSession(ctx, &p.cfg.Config, p.ymx, p.cfg.Dial, candidate{addr: addr, host: name}, tc, true, &p.draining)
	if err != nil {
		return nil, err
	}
	switch {
	case sess.peer != name:
		err = fmt.Errorf("the server at %s is %q, not %q", addr, sess.peer, name)
	case !sess.peerServer:
		err = fmt.Errorf("the certificate of %s at %s lacks the server role (restpipe pki issue --role server)", name, addr)
	}
	if err != nil {
		sess.shutdown(err)
		sess.cancel(err)
		return nil, err
	}
	return sess, nil
}

// Drop ends the forward link to the server named name, if any (its events
// in flight fail with link_lost).
func (p *Pool) Drop(name string, cause error) {
	p.mu.Lock()
	l := p.links[name]
	delete(p.links, name)
	p.mu.Unlock()
	if l != nil {
		if s := l.session(); s != nil {
			s.shutdown(cause)
		}
	}
}

// Links returns the forward links up, sorted by server name.
func (p *Pool) Links() []*Session {
	p.mu.Lock()
	var out []*Session
	for _, l := range p.links {
		if s := l.session(); s != nil && !s.mux.IsClosed() {
			out = append(out, s)
		}
	}
	p.mu.Unlock()
	sortSessions(out)
	return out
}

// Close ends every forward link (their events in flight fail with
// link_lost) and waits until their goroutines are done.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	links := p.links
	p.links = map[string]*poolLink{}
	p.mu.Unlock()
	for _, l := range links {
		if s := l.session(); s != nil {
			s.shutdown(ErrClosed)
		}
	}
	p.wg.Wait()
	return nil
}

// sortSessions sorts sessions by peer name.
func sortSessions(ss []*Session) {
	slices.SortFunc(ss, func(a, b *Session) int { return strings.Compare(a.peer, b.peer) })
}
