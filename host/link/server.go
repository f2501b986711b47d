package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Config

	// TLS is the server's TLS configuration. It must require TLS 1.3 and
	// verify client certificates (or build such configs per handshake in
	// GetConfigForClient, which is checked on every handshake). Required.
	TLS *tls.Config

	// Registry records the live sessions by peer name. Default: a new
	// MemRegistry.
	Registry Registry

	// MaxHandshakes bounds the connections that have not finished the TLS
	// handshake and hello. Beyond it new connections wait in the kernel's
	// accept queue (its length is the system's somaxconn) until a slot is
	// free, so silent or slow connections cannot pile up in the process,
	// and a reconnect storm is served at the rate handshakes complete.
	// Default 1024.
	//
	// When every slot is taken, the oldest connection that has not sent a
	// byte yet (and is older than silentGrace) is closed to make room, so
	// a flood of silent connections delays a real client by little.
	MaxHandshakes int

	// MaxHandshakesPerSource bounds the connections one source address
	// may have in handshake at once, so that one address cannot take
	// every slot: the others keep MaxHandshakes - MaxHandshakesPerSource
	// for themselves. Beyond it a new connection from that address waits,
	// unread, for the address's next finished handshake to hand it its
	// slot, in the order they came, at most maxParked in all. Beyond that,
	// and after half of HandshakeTimeout waiting (its client is about to
	// give up, and a handshake then would be wasted), it is closed and
	// its client retries with its backoff. Default: three quarters of
	// MaxHandshakes, so that the clients of one NAT gateway reconnecting
	// together (or a load test from one machine) are served nearly as
	// fast as without it, and every other address finds a slot at once.
	// (With a quarter, and at most 1,024 waiting per address, 10,000
	// clients of one address took 52 s
	// to relink instead of 30 s, in 92,000 attempts instead of 14,000.)
	MaxHandshakesPerSource int

	// FirstByteTimeout is how long a new connection has to send its first
	// byte (a TLS ClientHello is sent at once); the rest of the handshake
	// then has until HandshakeTimeout. Default 3s.
	FirstByteTimeout time.Duration

	// Forward, when set, makes this server take forward links: the
	// server-to-server links of a cluster (SPEC §8), which another server
	// dials to hand over events for the clients this one holds
	// (Request.target). Only a peer whose certificate has the server role
	// (host.HasServerRole) gets one; any other is refused with a log line.
	// Forward answers their events, each with Target set, Peer the node
	// that made it and Via the forwarding server. A forward link is never
	// in the Registry, and the Observer does not hear of it. Nil: forward
	// links are refused (a single server).
	Forward host.Handler
}

// silentGrace is how old a silent connection must be before it can be
// closed to make room for another.
const silentGrace = 100 * time.Millisecond

// WithDefaults returns c with every zero field set to its default: a new
// Registry, 1024 handshakes (three quarters of them per source address), 3s
// for the first byte (at most HandshakeTimeout).
func (c ServerConfig) WithDefaults() ServerConfig {
	c.Config = c.Config.WithDefaults()
	if c.Registry == nil {
		c.Registry = NewRegistry()
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = 1024
	}
	if c.MaxHandshakesPerSource == 0 {
		c.MaxHandshakesPerSource = max(1, c.MaxHandshakes*3/4)
	}
	setDuration(&c.FirstByteTimeout, 3*time.Second)
	c.FirstByteTimeout = min(c.FirstByteTimeout, c.HandshakeTimeout)
	return c
}

// Validate reports the first field that cannot work, counting zero fields
// as their defaults. It changes nothing.
func (c ServerConfig) Validate() error {
	c = c.WithDefaults()
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := checkTLS(c.TLS, true); err != nil {
		return err
	}
	if c.MaxHandshakes < 1 || c.MaxHandshakesPerSource < 1 {
		return fmt.Errorf("link: MaxHandshakes %d and MaxHandshakesPerSource %d must be at least 1", c.MaxHandshakes, c.MaxHandshakesPerSource)
	}
	return nil
}

// Server accepts links from client nodes. Each client is known by the name
// its certificate carries; a new link for a name replaces the older one.
type Server struct {
	cfg        ServerConfig
	log        hclog.Logger
	tls        *tls.Config
	ymx        *yamuxConfigs // shared by every session
	handshakes chan struct{} // one token per connection in handshake
	closing    chan struct{} // closed by Close
	logLimit   *rate.Limiter // bounds log lines about refused connections
	draining   drain.Gate    // closed: refuse new events from every peer

	mu        sync.Mutex
	closed    bool
	noAccept  bool // CloseListeners was called
	listeners map[net.Listener]struct{}
	pending   map[net.Conn]*pendingConn // connections in handshake
	bySource  map[string]int            // connections in handshake, by source address
	parked    map[string][]parkedConn   // connections waiting for their source's slot, oldest first
	nParked   int                       // connections in parked
	sessions  map[*Session]struct{}     // live sessions
	wg        sync.WaitGroup            // one per connection being served
}

// NewServer returns a Server; call Serve to accept links.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg,
		log: cfg.Logger,

		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		closing:    make(chan struct{}),
		logLimit:   rate.NewLimiter(rate.Limit(5), 20),
		listeners:  make(map[net.Listener]struct{}),
		pending:    make(map[net.Conn]*pendingConn),
		bySource:   make(map[string]int),
		parked:     make(map[string][]parkedConn),
		sessions:   make(map[*Session]struct{}),
	}
	s.ymx = &yamuxConfigs{cfg: &s.cfg.Config}
	s.tls = enforceServerTLS(cfg.TLS)
	return s, nil
}

// enforceServerTLS returns a copy of c whose per-handshake configurations
// are checked as well, so no GetConfigForClient can weaken the link.
func enforceServerTLS(c *tls.Config) *tls.Config {
	c = c.Clone()
	if inner := c.GetConfigForClient; inner != nil {
		c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := inner(hi)
			if err != nil || cc == nil {
				return cc, err
			}
			if cc.MinVersion != tls.VersionTLS13 || cc.ClientAuth != tls.RequireAndVerifyClientCert || cc.InsecureSkipVerify {
				return nil, errors.New("link: refusing a TLS config that is not TLS 1.3 with verified client certificates")
			}
			return cc, nil
		}
	}
	return c
}

// Registry returns the server's registry of live sessions.
func (s *Server) Registry() Registry { return s.cfg.Registry }

// Peer returns the live session of the client named name, waiting for it
// to connect until ctx ends.
func (s *Server) Peer(ctx context.Context, name string) (*Session, error) {
	return s.cfg.Registry.Lookup(ctx, name)
}

// Serve accepts links on ln until Close, and then returns ErrServerClosed.
// It closes ln when it returns. Serve may be called for several listeners.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var delay time.Duration // backoff on temporary accept errors, as net/http
	for {
		// Accept, then wait for a handshake slot: at most one connection
		// waits here, the next ones in the kernel's accept queue. Closing
		// connections over the limit instead would make every client of
		// a reconnect storm pay for failed attempts and back off. While a
		// connection waits, silent ones make room: a flood of them must
		// not hold every slot for a whole handshake timeout.
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		delay = 0
		source := sourceOf(conn)
		if parked, err := s.park(conn, source); parked {
			if err != nil {
				conn.Close()
				s.refused(conn, err)
			}
			continue
		}
		if !s.acquireSlot() {
			conn.Close()
			return ErrServerClosed
		}
		pc, err := s.track(conn, source)
		if err != nil {
			<-s.handshakes
			conn.Close()
			return err
		}
		go s.serveConn(pc)
	}
}

// acquireSlot waits for a handshake slot, closing silent connections
// (see evictSilent) while it waits; false once the server is closing.
func (s *Server) acquireSlot() bool {
	select {
	case s.handshakes <- struct{}{}:
		return true
	default:
	}
	t := time.NewTicker(silentGrace / 2)
	defer t.Stop()
	for {
		s.evictSilent()
		select {
		case s.handshakes <- struct{}{}:
			return true
		case <-t.C:
		case <-s.closing:
			return false
		}
	}
}

// pendingConn is a connection in handshake: it notes when its peer first
// spoke, and moves the deadline from FirstByteTimeout to the handshake's.
type pendingConn struct {
	net.Conn
	start    time.Time
	source   string
	deadline time.Time   // the whole handshake's
	spoke    atomic.Bool // a byte arrived
}

func (c *pendingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.spoke.Load() {
		c.spoke.Store(true)
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
	return n, err
}

// evictSilent closes the oldest connection in handshake that has not sent
// a byte yet, if one is older than silentGrace.
func (s *Server) evictSilent() {
	s.mu.Lock()
	var oldest *pendingConn
	for _, pc := range s.pending {
		if !pc.spoke.Load() && time.Since(pc.start) >= silentGrace && (oldest == nil || pc.start.Before(oldest.start)) {
			oldest = pc
		}
	}
	s.mu.Unlock()
	if oldest != nil {
		oldest.Conn.Close()
	}
}

// isTemporary reports errors such as EMFILE that may go away by waiting.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.noAccept
}

// sourceOf returns the address a connection comes from, without its port.
func sourceOf(conn net.Conn) string {
	source := conn.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(source); err == nil {
		source = h
	}
	return source
}

// parkedConn is a connection waiting for a handshake slot of its source.
type parkedConn struct {
	conn net.Conn
	at   time.Time
}

// maxParked bounds the connections waiting for their source's handshake
// slot, across all sources: each holds a file descriptor and nothing else.
const maxParked = 8192

// park makes conn wait for a slot of its source when the source holds
// MaxHandshakesPerSource already, and reports whether it did; with an
// error when conn must be closed instead (too many wait already, or the
// server is closed).
func (s *Server) park(conn net.Conn, source string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true, ErrServerClosed
	}
	if s.bySource[source] < s.cfg.MaxHandshakesPerSource {
		return false, nil
	}
	if s.nParked >= maxParked {
		return true, fmt.Errorf("%w: %s has %d connections in handshake and %d waiting (%d in all)",
			errTooManyFromSource, source, s.bySource[source], len(s.parked[source]), s.nParked)
	}
	s.parked[source] = append(s.parked[source], parkedConn{conn: conn, at: time.Now()})
	s.nParked++
	return true, nil
}

// refused counts and logs (rate-limited) a connection closed before its
// handshake, unless the server is closing.
func (s *Server) refused(conn net.Conn, err error) {
	if errors.Is(err, ErrServerClosed) {
		return
	}
	s.cfg.Observer.LinkRefused(false, err)
	if s.logLimit.Allow() {
		s.log.Warn("link refused", "remote", conn.RemoteAddr(), "error", err)
	}
}

// track records a connection in handshake, or returns ErrServerClosed
// once the server is closed.
func (s *Server) track(conn net.Conn, source string) (*pendingConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrServerClosed
	}
	return s.trackLocked(conn, source), nil
}

func (s *Server) trackLocked(conn net.Conn, source string) *pendingConn {
	now := time.Now()
	pc := &pendingConn{Conn: conn, start: now, source: source, deadline: now.Add(s.cfg.HandshakeTimeout)}
	s.pending[conn] = pc
	s.bySource[source]++
	s.wg.Add(1)
	return pc
}

// untrack forgets a connection whose handshake ended. When a connection
// from the same source is parked, it takes the slot: untrack returns it,
// tracked, for the caller to serve; the caller keeps the handshake token.
// Parked connections older than half of HandshakeTimeout are closed on
// the way.
func (s *Server) untrack(pc *pendingConn) *pendingConn {
	delete(s.pending, pc.Conn)
	if s.bySource[pc.source]--; s.bySource[pc.source] <= 0 {
		delete(s.bySource, pc.source)
	}
	q := s.parked[pc.source]
	for len(q) > 0 {
		p := q[0]
		q[0] = parkedConn{}
		q = q[1:]
		s.nParked--
		if s.closed || time.Since(p.at) > s.cfg.HandshakeTimeout/2 {
			p.conn.Close()
			continue
		}
		s.setParked(pc.source, q)
		return s.trackLocked(p.conn, pc.source)
	}
	s.setParked(pc.source, q)
	return nil
}

func (s *Server) setParked(source string, q []parkedConn) {
	if len(q) == 0 {
		delete(s.parked, source)
	} else {
		s.parked[source] = q
	}
}

// serveConn authenticates one connection and serves its session.
func (s *Server) serveConn(pc *pendingConn) {
	defer s.wg.Done()
	conn := pc.Conn
	sess, err := s.handshake(pc)
	s.mu.Lock()
	next := s.untrack(pc)
	if err == nil && s.closed {
		err = ErrServerClosed
	}
	if err == nil {
		s.sessions[sess] = struct{}{}
	}
	s.mu.Unlock()
	if next != nil {
		go s.serveConn(next) // it takes this handshake's slot
	} else {
		<-s.handshakes
	}
	if err != nil {
		conn.Close()
		if sess != nil {
			sess.mux.Close()
		}
		s.refused(conn, err)
		return
	}

	if sess.forward {
		s.serveForward(sess)
		return
	}
	if old := s.cfg.Registry.Register(sess); old != nil {
		s.log.Info("link replaced by a newer one", "peer", sess.peer, "old_remote", old.remote, "remote", sess.remote)
		old.shutdown(ErrReplaced)
	}
	s.log.Info("link up", append([]any{"peer", sess.peer, "remote", sess.remote, "software", sess.software}, sess.shape()...)...)
	s.cfg.Observer.LinkUp(sess.peer, false)
	sess.serve()
	s.cfg.Registry.Unregister(sess)
	s.cfg.Observer.LinkDown(sess.peer, false, sess.Err())
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.log.Info("link down", "peer", sess.peer, "remote", sess.remote, "error", sess.Err(), "after", time.Since(sess.since).Round(time.Millisecond))
}

// handshake runs TLS and the hello on a new connection and returns its
// session, not yet serving.
func (s *Server) handshake(conn *pendingConn) (*Session, error) {
	ctx, cancel := context.WithDeadline(context.Background(), conn.deadline)
	defer cancel()
	_ = conn.SetWriteDeadline(conn.deadline)
	_ = conn.SetReadDeadline(conn.start.Add(s.cfg.FirstByteTimeout))
	tc := tls.Server(&batchConn{Conn: conn}, s.tls)
	tlsStart := time.Now()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	tlsTime := time.Since(tlsStart)
	state := tc.ConnectionState()
	if len(state.PeerCertificates) == 0 || len(state.VerifiedChains) == 0 {
		return nil, errors.New("client presented no verified certificate")
	}
	name, err := host.CertName(state.PeerCertificates[0])
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	hello, err := serverHelloCheck(tc, &s.cfg.Config, func() string {
		switch {
		case s.cfg.Forward == nil:
			return "this server is not a member of a cluster: it takes no forward link"
		case !host.HasServerRole(state.PeerCertificates[0]):
			return fmt.Sprintf("a forward link needs a certificate with the server role (restpipe pki issue --role server); that of %q has none", name)
		}
		return ""
	}, tlsTime)
	if err != nil {
		return nil, fmt.Errorf("hello from %s: %w", name, err)
	}
	_ = conn.SetDeadline(time.Time{})
	sess, err := newSession(&s.cfg.Config, s.ymx, tc, true, name, hello, &s.draining)
	if err == nil && sess.forward {
		sess.handler = s.cfg.Forward
	}
	return sess, err
}

// serveForward serves a forward link from another server of the cluster:
// not registered, not observed, logged.
func (s *Server) serveForward(sess *Session) {
	s.log.Info("forward link up", "server", sess.peer, "remote", sess.remote, "software", sess.software)
	sess.serve()
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.log.Info("forward link down", "server", sess.peer, "remote", sess.remote, "error", sess.Err(), "after", time.Since(sess.since).Round(time.Millisecond))
}

// Sessions returns the live sessions of clients, sorted by peer name.
func (s *Server) Sessions() []*Session { return s.cfg.Registry.Sessions() }

// Forwards returns the forward links other servers opened to this one,
// sorted by peer name.
func (s *Server) Forwards() []*Session {
	s.mu.Lock()
	var out []*Session
	for sess := range s.sessions {
		if sess.forward {
			out = append(out, sess)
		}
	}
	s.mu.Unlock()
	sortSessions(out)
	return out
}

// CloseListeners stops accepting connections (Serve returns
// ErrServerClosed once Close is called); links already up are untouched.
// A draining member of a cluster calls it, so that its clients relink to
// another server rather than to this one.
func (s *Server) CloseListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noAccept = true
	for ln := range s.listeners {
		ln.Close()
	}
}

// EvictIdle ends, for cause, every client link that has no event in flight
// either way, and returns how many client links are left. A draining
// member of a cluster calls it until none is left, so that its clients
// relink to the other servers as soon as their events are done. Forward
// links are left alone.
func (s *Server) EvictIdle(cause error) int {
	s.mu.Lock()
	var idle []*Session
	left := 0
	for sess := range s.sessions {
		if sess.forward || sess.mux.IsClosed() {
			continue
		}
		st := sess.Stats()
		if st.EventsIn == 0 && st.EventsOut == 0 {
			idle = append(idle, sess)
		} else {
			left++
		}
	}
	s.mu.Unlock()
	for _, sess := range idle {
		sess.shutdown(cause)
	}
	return left
}

// Links returns how many clients are linked: len(Sessions()), without
// building the sorted list.
func (s *Server) Links() int { return s.cfg.Registry.Len() }

// Drain makes every link refuse new events from its peer with
// peer_unavailable ("shutting down"); events already in flight go on, and
// this node can still send events. See WaitIdle.
func (s *Server) Drain() { s.draining.Close() }

// WaitIdle waits until no event from any peer is in flight on this server,
// or ctx ends. Call Drain first. It waits on every session this server
// serves, including replaced ones still winding down, which the Registry
// no longer lists.
func (s *Server) WaitIdle(ctx context.Context) error {
	s.mu.Lock()
	sessions := make([]*Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		if err := sess.waitIdle(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every listener, ends every link (their events in flight fail
// with link_lost; what was already written, such as the last replies of a
// drain, gets up to a second to reach the peer) and waits until all of it
// is done.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		close(s.closing)
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.pending {
		c.Close()
	}
	for source, q := range s.parked {
		for _, p := range q {
			p.conn.Close()
		}
		delete(s.parked, source)
	}
	s.nParked = 0
	var ending sync.WaitGroup
	for sess := range s.sessions {
		ending.Go(sess.end)
	}
	s.mu.Unlock()
	ending.Wait()
	s.wg.Wait()
	return nil
}
