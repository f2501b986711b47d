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

	"github.com/restpipe/restpipe/host"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// past is a deadline that has already passed: setting it on a stream wakes
// every blocked Read and Write on it.
var past = time.Unix(1, 0)

// Session is one live link to a peer: a TLS 1.3 connection multiplexed by
// yamux, one stream per event. It sends events with Handle and answers the
// peer's events with the configured Handler.
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
	software string // the peer's build, from the hello

	mux *yamux.Session

	// ctx ends when the session does; it is the parent of the contexts of
	// the events the peer sends.
	ctx    context.Context
	cancel context.CancelCauseFunc

	outSem chan struct{} // one token per event sent and not finished
	inN    atomic.Int64  // events received and not finished

	bytesIn, bytesOut atomic.Uint64 // payload bytes of the TLS connection, counted by muxConn
	rtt               atomic.Int64  // last ping's round trip, in nanoseconds

	// draining refuses new events from the peer; idle is poked whenever an
	// event from the peer finishes while draining.
	draining *atomic.Bool
	idle     chan struct{}

	mu       sync.Mutex
	incoming map[uint32]context.CancelCauseFunc // streams the peer opened, by id
	cause    error                              // why the session ends, once known

	wg   sync.WaitGroup // goroutines serving incoming streams
	done chan struct{}  // closed when serve has returned
}

// newSession starts yamux, configured by ymx (one per Server or Client,
// shared by its sessions), on a TLS connection whose hello is done. The
// caller must run serve.
func newSession(cfg *Config, ymx *yamux.Config, tc *tls.Conn, server bool, peer, software string, draining *atomic.Bool) (*Session, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &Session{
		draining: draining,
		idle:     make(chan struct{}, 1),
		cfg:      cfg,
		log:      cfg.Logger.With("peer", peer),
		peer:     peer,
		since:    time.Now(),
		software: software,
		remote:   tc.RemoteAddr(),
		ctx:      ctx,
		cancel:   cancel,
		outSem:   make(chan struct{}, cfg.MaxInFlight),
		incoming: make(map[uint32]context.CancelCauseFunc),
		done:     make(chan struct{}),
	}
	conn := &muxConn{Conn: tc, in: &s.bytesIn, out: &s.bytesOut}
	var err error
	if server {
		s.mux, err = yamux.Server(conn, ymx)
	} else {
		s.mux, err = yamux.Client(conn, ymx)
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

// PeerSoftware returns the build the peer announced in the hello.
func (s *Session) PeerSoftware() string { return s.software }

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
	EventsOut int    // events sent and not finished
	EventsIn  int    // events received and not finished
	Streams   int    // yamux streams, including ones closing
	BytesIn   uint64 // read from the connection since the link came up
	BytesOut  uint64 // written to the connection since the link came up
}

// Stats returns the session's current counts.
func (s *Session) Stats() SessionStats {
	return SessionStats{
		EventsOut: len(s.outSem),
		EventsIn:  int(s.inN.Load()),
		Streams:   s.mux.NumStreams(),
		BytesIn:   s.bytesIn.Load(),
		BytesOut:  s.bytesOut.Load(),
	}
}

// RTT returns the round-trip time the last keepalive ping measured, 0
// before the first.
func (s *Session) RTT() time.Duration { return time.Duration(s.rtt.Load()) }

// pinger pings the peer every KeepAliveInterval and ends the session when
// an answer takes longer than KeepAliveTimeout (yamux's Ping waits that
// long), so a dead or silent link is detected within their sum. It records
// each round trip for RTT.
//
// It runs on a timer rather than in a goroutine of its own: a goroutine
// exists only while a ping is out, which saves a parked stack per idle
// link (a server holds thousands).
type pinger struct {
	s     *Session
	timer *time.Timer

	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup // a ping in progress
}

// startPinger starts pinging s until stop.
func (s *Session) startPinger() *pinger {
	p := &pinger{s: s}
	// Under mu, which ping takes first: the timer may fire before
	// AfterFunc has returned.
	p.mu.Lock()
	p.timer = time.AfterFunc(s.cfg.KeepAliveInterval, p.ping)
	p.mu.Unlock()
	return p
}

// ping runs on the timer's goroutine: one ping, then the next timer.
func (p *pinger) ping() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.running.Add(1)
	p.mu.Unlock()
	defer p.running.Done()

	s := p.s
	rtt, err := s.mux.Ping()
	if err != nil {
		if !s.mux.IsClosed() {
			s.log.Warn("closing link: the peer stopped answering pings", "error", err)
			s.shutdown(fmt.Errorf("%w (%v)", ErrKeepAlive, err))
		}
		return
	}
	s.rtt.Store(int64(rtt))
	p.mu.Lock()
	if !p.stopped {
		p.timer.Reset(s.cfg.KeepAliveInterval)
	}
	p.mu.Unlock()
}

// stop ends the pings and waits for one in progress (which the session's
// end cuts short).
func (p *pinger) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.timer.Stop()
	p.running.Wait()
}

// Close ends the session: every event in flight on it fails with link_lost.
// It waits until the session's goroutines are done, so it must not be
// called from a handler answering one of the session's events.
func (s *Session) Close() error {
	s.shutdown(ErrClosed)
	<-s.done
	return nil
}

// shutdown starts ending the session with cause, without waiting.
func (s *Session) shutdown(cause error) {
	s.mu.Lock()
	if s.cause == nil {
		s.cause = cause
	}
	s.mu.Unlock()
	_ = s.mux.Close()
}

// serve accepts the streams the peer opens until the session ends, then
// cancels the incoming events and waits for them. The owner runs it.
func (s *Session) serve() {
	defer close(s.done)
	defer s.startPinger().stop()
	// A peer may hold a few streams per event (request, cancel, closing
	// ones); far more than that is abuse, and ends the link.
	streamLimit := 8*s.cfg.MaxInFlight + 64
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			break
		}
		ctx, cancel := context.WithCancelCause(s.ctx)
		id := st.StreamID()
		s.mu.Lock()
		s.incoming[id] = cancel
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveStream(ctx, cancel, st)
		if n := s.mux.NumStreams(); n > streamLimit {
			s.log.Warn("closing link: peer opened too many streams", "streams", n, "limit", streamLimit)
			s.shutdown(fmt.Errorf("%w: %d streams", ErrTooManyStreams, n))
		}
	}
	s.cancel(s.Err())
	s.wg.Wait()
}

// serveStream reads one incoming stream's header and acts on it.
func (s *Session) serveStream(ctx context.Context, cancel context.CancelCauseFunc, st *yamux.Stream) {
	defer s.wg.Done()
	id := st.StreamID()
	defer func() {
		s.mu.Lock()
		delete(s.incoming, id)
		s.mu.Unlock()
		cancel(nil)
		_ = st.Close()
	}()
	fr := newFrameReader(st, s.cfg.MaxHeaderSize)
	defer fr.release()

	_ = st.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	var hdr linkv1.StreamHeader
	if err := fr.readMsg(&hdr); err != nil {
		if !s.mux.IsClosed() {
			s.log.Debug("dropping stream without a valid header", "stream", id, "error", err)
		}
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	switch k := hdr.Kind.(type) {
	case *linkv1.StreamHeader_Request:
		s.serveEvent(ctx, st, fr, k.Request)
	case *linkv1.StreamHeader_Cancel:
		s.mu.Lock()
		c := s.incoming[k.Cancel.StreamId]
		s.mu.Unlock()
		if c != nil {
			c(fmt.Errorf("%w: the caller went away (%s)", context.Canceled, k.Cancel.Reason))
		}
	default:
		s.log.Debug("dropping stream with an unknown header", "stream", id)
	}
}

// serveEvent answers one event the peer sent.
func (s *Session) serveEvent(ctx context.Context, st *yamux.Stream, fr *frameReader, req *linkv1.Request) {
	n := s.inN.Add(1)
	defer s.finishIncoming()
	if s.draining.Load() {
		s.replyError(st, &host.Error{Kind: host.KindPeerUnavailable, Message: "the node is shutting down"})
		return
	}
	if n > int64(s.cfg.MaxInFlight) {
		s.replyError(st, &host.Error{Kind: host.KindOverloaded, RetryAfter: s.cfg.RetryAfter,
			Message: fmt.Sprintf("node has %d events in flight from %s, the limit", s.cfg.MaxInFlight, s.peer)})
		return
	}
	ev := eventFromRequest(req)
	ev.Peer = s.peer
	if err := host.CheckVerb(ev.Verb); err != nil {
		s.replyError(st, host.Errorf(host.KindBadRequest, "%v", err))
		return
	}
	if err := host.CheckNoun(ev.Noun); err != nil {
		s.replyError(st, host.Errorf(host.KindBadRequest, "%v", err))
		return
	}
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	// Once the event's context ends, nothing more is read or written on
	// its stream: wake whatever is blocked on it.
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(past) })
	defer stop()
	if req.BodySize != 0 {
		fr.startBody(req.BodySize)
		fr.trailer = func(e *linkv1.Error) error { return errorFromWire(e) }
		ev.Body = &eventBody{s: s, ctx: ctx, st: st, fr: fr}
	}

	start := time.Now()
	rep, err := s.cfg.Handler.Handle(ctx, ev)
	if s.log.IsDebug() {
		s.log.Debug("event from peer", "request_id", ev.ID, "route", ev.Route(), "kind", host.KindOf(err), "duration", time.Since(start))
	}
	if err != nil {
		s.replyError(st, err)
		return
	}
	defer rep.Close()
	if err := writeMessage(st, replyHeader(rep), rep.Body, rep.Size, errorToWire); err != nil {
		s.log.Debug("reply not fully delivered", "event", ev.ID, "route", ev.Route(), "error", err)
	}
}

// finishIncoming counts an event from the peer as done.
func (s *Session) finishIncoming() {
	if s.inN.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}

// waitIdle waits until no event from the peer is in flight, or ctx ends.
// The owner has set draining first.
func (s *Session) waitIdle(ctx context.Context) error {
	for s.inN.Load() > 0 {
		select {
		case <-s.idle:
		case <-s.Done():
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%d events from %s still in flight: %w", s.inN.Load(), s.peer, ctx.Err())
		}
	}
	return nil
}

// replyError answers an event with an error.
func (s *Session) replyError(st *yamux.Stream, err error) {
	if werr := writeMsg(st, &linkv1.Reply{Error: errorToWire(err)}); werr != nil {
		s.log.Debug("error reply not delivered", "error", werr)
	}
}

// eventBody is the body of an event the peer sent, as its handler reads it.
type eventBody struct {
	s   *Session
	ctx context.Context
	st  *yamux.Stream
	fr  *frameReader
}

// Close interrupts a blocked Read (the host.Event contract): once the
// handler stops reading, nothing more is read from the stream.
func (b *eventBody) Close() error {
	return b.st.SetReadDeadline(past)
}

func (b *eventBody) Read(p []byte) (int, error) {
	n, err := b.fr.Read(p)
	if err != nil && err != io.EOF {
		err = b.s.eventError(b.ctx, err)
	}
	return n, err
}

// Handle sends ev to the peer and returns its reply, whose Body the caller
// must close; or an *host.Error: overloaded when MaxInFlight events are
// already in flight to the peer, peer_unavailable when the session ended
// before the event left, link_lost when it ended with the event in flight,
// timeout or canceled when ctx ended first.
//
// ev.Body is read concurrently with the reply, so a handler can stream its
// reply while the request still arrives. ctx governs the whole event, reply
// body included.
func (s *Session) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	select {
	case s.outSem <- struct{}{}:
	default:
		return nil, &host.Error{Kind: host.KindOverloaded, RetryAfter: s.cfg.RetryAfter,
			Message: fmt.Sprintf("%d events already in flight to %s, the limit", cap(s.outSem), s.peer)}
	}
	if err := ctx.Err(); err != nil {
		<-s.outSem
		return nil, s.eventError(ctx, err)
	}
	st, err := s.mux.OpenStream()
	if err != nil {
		<-s.outSem
		if errors.Is(err, yamux.ErrStreamsExhausted) {
			// About two billion events on one session: start afresh.
			s.log.Info("closing link: yamux stream ids exhausted")
			s.shutdown(err)
		}
		return nil, &host.Error{Kind: host.KindPeerUnavailable, Err: fmt.Errorf("%w: %w", host.ErrNotDelivered, err),
			Message: fmt.Sprintf("the link to %s closed before the event was sent: %v", s.peer, s.Err())}
	}
	o := &outEvent{s: s, ctx: ctx, st: st, body: ev.Body, watchDone: make(chan struct{})}
	o.stop = context.AfterFunc(ctx, o.abort)
	start := time.Now()
	rep, err := o.run(ev)
	s.cfg.Observer.ObserveHop(time.Since(start), host.KindOf(err))
	return rep, err
}

// outEvent is one event this side sent, until its reply is closed.
type outEvent struct {
	s    *Session
	ctx  context.Context
	st   *yamux.Stream
	fr   *frameReader
	body io.Reader // the request body, read by run or the body writer

	stop      func() bool   // stops the context watch
	watchDone chan struct{} // closed when abort has run
	complete  atomic.Bool   // the whole reply has been read

	writerDone chan struct{} // closed when the body writer is done; nil without one
	finishOnce sync.Once
}

// run writes the request and reads the reply header.
func (o *outEvent) run(ev *host.Event) (*host.Reply, error) {
	var timeout time.Duration
	if d, ok := o.ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	req := &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{Request: requestFromEvent(ev, timeout)}}
	if ev.Body == nil || ev.Size == 0 || (ev.Size > 0 && ev.Size <= dataChunk) {
		if err := writeMessage(o.st, req, ev.Body, ev.Size, errorToWire); err != nil {
			return nil, o.fail(err)
		}
	} else {
		if err := writeMsg(o.st, req); err != nil {
			return nil, o.fail(err)
		}
		o.writerDone = make(chan struct{})
		go func() {
			defer close(o.writerDone)
			if err := copyBody(o.st, ev.Body, errorToWire); err != nil {
				o.s.log.Debug("request body not fully sent", "event", ev.ID, "error", err)
			}
		}()
	}

	o.fr = newFrameReader(o.st, o.s.cfg.MaxHeaderSize)
	var rep linkv1.Reply
	if err := o.fr.readMsg(&rep); err != nil {
		return nil, o.fail(err)
	}
	if rep.Error != nil {
		o.complete.Store(true)
		o.finish()
		return nil, errorFromWire(rep.Error)
	}
	reply := &host.Reply{
		Status:      int(rep.Status),
		Code:        int(rep.ReturnCode),
		ContentType: rep.ContentType,
		Size:        rep.BodySize,
		Body:        o,
	}
	o.fr.startBody(rep.BodySize)
	o.fr.trailer = func(e *linkv1.Error) error { return errorFromWire(e) }
	if rep.BodySize == 0 {
		o.complete.Store(true)
	}
	return reply, nil
}

// Read reads the reply body.
func (o *outEvent) Read(p []byte) (int, error) {
	n, err := o.fr.Read(p)
	switch {
	case err == io.EOF:
		o.complete.Store(true)
	case err != nil:
		err = o.s.eventError(o.ctx, err)
	}
	return n, err
}

// fail ends the event on err and returns it as an *host.Error. The error is
// classified before the event is finished: finishing interrupts the
// request body, which can end the local caller's context as a side effect
// and make a lost link look like a caller who went away.
func (o *outEvent) fail(err error) error {
	he := o.s.eventError(o.ctx, err)
	o.finish()
	return he
}

// Close ends the event. Closing before the reply body was read to its end
// tells the peer that the caller went away.
func (o *outEvent) Close() error {
	o.finish()
	return nil
}

// abort runs once when the event's context ends first: it wakes every
// Read and Write on the stream, and tells the peer when the caller left.
func (o *outEvent) abort() {
	defer close(o.watchDone)
	_ = o.st.SetDeadline(past)
	o.interruptBody()
	if !o.complete.Load() && !errors.Is(o.ctx.Err(), context.DeadlineExceeded) {
		o.s.sendCancel(o.st.StreamID(), "canceled")
	}
}

// finish releases everything the event holds, once.
func (o *outEvent) finish() {
	o.finishOnce.Do(func() {
		if o.stop() {
			// The context had not ended: abort never ran.
			close(o.watchDone)
			if !o.complete.Load() {
				o.s.sendCancel(o.st.StreamID(), "reply closed early")
			}
		}
		<-o.watchDone
		if o.writerDone != nil {
			select {
			case <-o.writerDone:
			default:
				// The body is still being sent: stop sending, and wake
				// the writer if it waits for the caller's bytes.
				_ = o.st.SetWriteDeadline(past)
				_ = o.st.Close()
				o.interruptBody()
				<-o.writerDone
			}
		}
		_ = o.st.Close()
		if o.fr != nil {
			o.fr.release()
		}
		<-o.s.outSem
	})
}

// interruptBody makes a blocked Read of the request body return, when the
// body supports it (see host.Event).
func (o *outEvent) interruptBody() {
	if c, ok := o.body.(io.Closer); ok {
		_ = c.Close()
	}
}

// sendCancel tells the peer that the event on stream id lost its caller.
// It is best effort and does not wait for the peer.
func (s *Session) sendCancel(id uint32, reason string) {
	st, err := s.mux.OpenStream()
	if err != nil {
		return
	}
	defer st.Close()
	_ = writeMsg(st, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Cancel{
		Cancel: &linkv1.Cancel{StreamId: id, Reason: reason}}})
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
	case errors.Is(err, ErrBadFrame), errors.Is(err, ErrFrameTooLarge):
		return &host.Error{Kind: host.KindLinkLost, Err: err,
			Message: fmt.Sprintf("protocol error from %s: %v", s.peer, err)}
	case errors.Is(err, yamux.ErrConnectionReset), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &host.Error{Kind: host.KindLinkLost, Err: err,
			Message: fmt.Sprintf("%s dropped the event's stream", s.peer)}
	}
	return &host.Error{Kind: host.KindLinkLost, Err: err,
		Message: fmt.Sprintf("event stream to %s failed: %v", s.peer, err)}
}
