package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
	"github.com/restpipe/restpipe/proto/frame"
)

// past is a deadline that has already passed: setting it on a stream wakes
// every blocked Read and Write on it.
var past = time.Unix(1, 0)

// Session is one live link to a peer: a TLS 1.3 connection multiplexed by
// yamux, one stream per event in flight, streams reused for later events.
// It sends events with Handle and answers the peer's events with the
// configured Handler.
//
// A Session is created by a Server or a Client, which runs it and owns it;
// others only send events on it and may Close it. All methods are safe for
// concurrent use.
type Session struct {
	cfg      *Config
	log      hclog.Logger
	peer     string // verified name of the peer, from its certificate
	remote   net.Addr
	since    time.Time
	software string        // the peer's build, from the hello
	rtt0     time.Duration // the round trip measured in the hello
	window   uint32        // this side's stream receive window
	// maxStreams is how many streams the peer may hold open (more, and
	// the link closes), peerStreams how many this side may.
	maxStreams, peerStreams int
	// forward marks a server-to-server link of a cluster (Hello.forward),
	// on both its ends; peerServer says the peer's certificate has the
	// server role (host.HasServerRole), so it may state who an event came
	// from (Request.caller).
	forward, peerServer bool
	// handler answers the peer's events: the configured Handler, or on
	// the accepting end of a forward link the server's forward handler.
	handler host.Handler
	// warnLimit bounds the warnings about a peer's refused events; shared
	// by the sessions of one Server or Client.
	warnLimit *rate.Limiter

	mux  *yamux.Session
	conn *muxConn // under mux

	// ctx ends when the session does; it is the parent of the contexts of
	// the events the peer sends.
	ctx    context.Context
	cancel context.CancelCauseFunc

	outSem chan struct{} // one token per event sent and not finished
	opened atomic.Int64  // streams this side opened and has not closed
	// waiting counts the events waiting for a stream (takeStream); freed
	// is closed, and replaced, under mu to wake them.
	waiting atomic.Int32

	bytesIn, bytesOut atomic.Uint64 // payload bytes of the TLS connection, counted by muxConn
	rtt               atomic.Int64  // last ping's round trip, in nanoseconds

	// in counts the events received and not finished; it follows its
	// owner's gate, which refuses new events from the peer once the owner
	// drains.
	in drain.Counter

	mu       sync.Mutex
	incoming map[uint32]*inStream // streams the peer opened, by id
	pool     []*outStream         // idle streams this side opened, kept for reuse; most recent last
	freed    chan struct{}        // closed when a stream comes back or closes while events wait
	cause    error                // why the session ends, once known

	wg   sync.WaitGroup // goroutines serving incoming streams
	done chan struct{}  // closed when serve has returned
}

// newSession starts yamux on a TLS connection whose hello is done. The
// caller must run serve.
func newSession(cfg *Config, ymx *yamuxConfigs, tc *tls.Conn, server bool, peer string, h hello, gate *drain.Gate) (*Session, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	var peerServer bool
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		peerServer = host.HasServerRole(certs[0])
	}
	s := &Session{
		forward:     h.forward,
		peerServer:  peerServer,
		handler:     cfg.Handler,
		warnLimit:   ymx.warnLimit(),
		in:          drain.Counter{Gate: gate},
		cfg:         cfg,
		log:         cfg.Logger.With("peer", peer),
		peer:        peer,
		since:       time.Now(),
		software:    h.software,
		rtt0:        h.rtt,
		window:      h.window,
		maxStreams:  h.maxStreams,
		peerStreams: h.peerStreams,
		remote:      tc.RemoteAddr(),
		ctx:         ctx,
		cancel:      cancel,
		outSem:      make(chan struct{}, cfg.MaxInFlight),
		incoming:    make(map[uint32]*inStream),
		freed:       make(chan struct{}),
		done:        make(chan struct{}),
	}
	s.rtt.Store(int64(h.rtt))
	s.conn = newMuxConn(tc, &s.bytesIn, &s.bytesOut)
	yc := ymx.get(s.window)
	var err error
	if server {
		s.mux, err = yamux.Server(s.conn, yc)
	} else {
		s.mux, err = yamux.Client(s.conn, yc)
	}
	if err != nil {
		cancel(err)
		return nil, fmt.Errorf("start multiplexer: %w", err)
	}
	return s, nil
}

// Peer returns the verified name of the node at the other end.
func (s *Session) Peer() string { return s.peer }

// RemoteAddr returns the peer's network address.
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// Since returns when the link came up.
func (s *Session) Since() time.Time { return s.since }

// PeerSoftware returns the build the peer announced in the hello, made safe
// to log.
func (s *Session) PeerSoftware() string { return s.software }

// shape is the link's shape for its "link up" log line: the round trip it
// was shaped for, this side's window, and the streams each side may hold.
func (s *Session) shape() []any {
	return []any{"rtt", s.rtt0.Round(time.Microsecond), "window", s.window, "streams", s.peerStreams, "peer_streams", s.maxStreams}
}

// Window returns this side's stream receive window, sized from the round
// trip measured in the hello.
func (s *Session) Window() uint32 { return s.window }

// Done returns a channel closed as soon as the session starts to end.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Err returns why the session ended, or nil while it is live.
func (s *Session) Err() error {
	if !s.mux.IsClosed() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause != nil {
		return s.cause
	}
	return errors.New("connection lost")
}

// SessionStats counts what a session holds right now.
type SessionStats struct {
	EventsOut   int    // events sent and not finished
	EventsIn    int    // events received and not finished
	Streams     int    // yamux streams, including idle and closing ones
	IdleStreams int    // streams this side keeps for its next events
	PeerIdle    int    // streams the peer opened, waiting for its next event
	BytesIn     uint64 // read from the connection since the link came up
	BytesOut    uint64 // written to the connection since the link came up
	Window      uint32 // this side's stream receive window
}

// Stats returns the session's current counts.
func (s *Session) Stats() SessionStats {
	s.mu.Lock()
	idle, peerIdle := len(s.pool), 0
	for _, in := range s.incoming {
		if in.cancel == nil {
			peerIdle++
		}
	}
	s.mu.Unlock()
	return SessionStats{
		EventsOut:   len(s.outSem),
		EventsIn:    s.in.InFlight(),
		Streams:     s.mux.NumStreams(),
		IdleStreams: idle,
		PeerIdle:    peerIdle,
		BytesIn:     s.bytesIn.Load(),
		BytesOut:    s.bytesOut.Load(),
		Window:      s.window,
	}
}

// RTT returns the round-trip time the last keepalive ping measured, or the
// hello's before the first ping.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// Forward reports whether this is a server-to-server link of a cluster.
func (s *Session) Forward() bool { return s.forward }

// Evict starts ending the session for cause, without waiting: every event
// in flight on it fails with link_lost, and its owner logs cause as why
// the link went down. Safe to call from anywhere, any number of times.
func (s *Session) Evict(cause error) { s.shutdown(cause) }

// Close ends the session: every event in flight on it fails with link_lost.
// It waits until the session's goroutines are done, so it must not be
// called from a handler answering one of the session's events.
func (s *Session) Close() error {
	s.shutdown(ErrClosed)
	<-s.done
	return nil
}

// end ends the session on purpose, as its owner stops: the bytes already
// written (the replies of the events that finished in a drain) get up to
// settleTimeout to reach the peer, then the session shuts down with
// ErrClosed. It does not wait for serve to return.
func (s *Session) end() {
	s.conn.Settle(settleTimeout)
	s.shutdown(ErrClosed)
}

// settleTimeout bounds how long end waits for written bytes to leave: a
// healthy link sends them in microseconds, a dead one never.
const settleTimeout = time.Second

// shutdown starts ending the session with cause, without waiting.
func (s *Session) shutdown(cause error) {
	s.mu.Lock()
	if s.cause == nil {
		s.cause = cause
	}
	s.pool = nil
	s.mu.Unlock()
	_ = s.mux.Close()
}

// eventError turns a failure on an event's stream into an *host.Error.
func (s *Session) eventError(ctx context.Context, err error) error {
	var he *host.Error
	if errors.As(err, &he) {
		return he
	}
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &host.Error{Kind: host.KindTimeout, Err: err,
				Message: fmt.Sprintf("the event's deadline passed before %s answered", s.peer)}
		}
		return &host.Error{Kind: host.KindCanceled, Err: context.Cause(ctx),
			Message: fmt.Sprintf("the event was canceled: %v", context.Cause(ctx))}
	}
	if s.mux.IsClosed() {
		return &host.Error{Kind: host.KindLinkLost, Err: err,
			Message: fmt.Sprintf("the link to %s was lost with the event in flight: %v", s.peer, s.Err())}
	}
	switch {
	case errors.Is(err, frame.ErrMalformed), errors.Is(err, frame.ErrTooLarge):
		return &host.Error{Kind: host.KindLinkLost, Err: err,
			Message: fmt.Sprintf("protocol error from %s: %v", s.peer, err)}
	case errors.Is(err, yamux.ErrConnectionReset), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &host.Error{Kind: host.KindLinkLost, Err: err,
			Message: fmt.Sprintf("%s dropped the event's stream", s.peer)}
	}
	return &host.Error{Kind: host.KindLinkLost, Err: err,
		Message: fmt.Sprintf("event stream to %s failed: %v", s.peer, err)}
}

// misbehaving ends the link of a peer that broke the protocol: an
// authenticated peer never does by accident, and everything it still
// holds is released with the link.
func (s *Session) misbehaving(why string, err error) {
	if s.mux.IsClosed() {
		return
	}
	s.log.Warn("closing link: the peer broke the link protocol", "why", why, "error", err)
	s.shutdown(fmt.Errorf("%w: %s: %v", ErrProtocol, why, err))
}
