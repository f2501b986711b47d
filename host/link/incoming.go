package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/yamux"
	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/proto/frame"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// inStream is this side's record of a stream the peer opened: which event
// it carries, so that a Cancel can find it. Guarded by Session.mu.
type inStream struct {
	st       *yamux.Stream
	seq      uint32                  // the event running, or the last one
	cancel   context.CancelCauseFunc // the running event's; nil between events
	canceled uint32                  // the latest seq a Cancel named before its event began
}

// serve accepts the streams the peer opens until the session ends, then
// cancels the incoming events and waits for them. The owner runs it.
func (s *Session) serve() {
	defer close(s.done)
	defer s.startPinger().stop()
	limit := streamTolerance(s.maxStreams)
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			break
		}
		// Recorded before anything is read from it, in the order the peer
		// opened them, so a Cancel (always on a later stream) finds the
		// stream it names.
		in := &inStream{st: st}
		id := st.StreamID()
		s.mu.Lock()
		s.incoming[id] = in
		n := len(s.incoming)
		s.mu.Unlock()
		if n > limit {
			s.log.Warn("closing link: peer opened too many streams", "streams", n, "limit", limit)
			s.shutdown(fmt.Errorf("%w: %d streams, the limit is %d", ErrTooManyStreams, n, limit))
			_ = st.Close()
			break
		}
		s.wg.Add(1)
		go s.serveStream(st, in)
	}
	s.cancel(s.Err())
	s.wg.Wait()
	s.conn.wait()
}

// serveStream serves the events of one stream the peer opened, one after
// the other, until the peer closes it, a Cancel ends it, or an event on it
// fails in a way that leaves the stream unusable.
func (s *Session) serveStream(st *yamux.Stream, in *inStream) {
	defer s.wg.Done()
	id := st.StreamID()
	defer func() {
		s.mu.Lock()
		delete(s.incoming, id)
		s.mu.Unlock()
		_ = st.Close()
	}()
	fr := frame.NewReader(st, s.cfg.MaxHeaderSize)
	defer fr.Release()
	fr.Trailer = trailerError
	for first := true; ; first = false {
		if !first && fr.Detach() {
			// Idle until the peer's next event, holding no buffer of
			// ours (the keepalive shrinks yamux's while idle). When the
			// next header is already buffered, there is no wait.
			if err := fr.WaitAttach(st); err != nil {
				return // closed by the peer, or the session ended
			}
		}
		// A header must arrive whole within HeaderTimeout of the stream's
		// opening, or of its first byte on a reused stream.
		_ = st.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
		var hdr linkv1.StreamHeader
		if err := fr.ReadMsg(&hdr); err != nil {
			switch {
			case s.mux.IsClosed():
			case errors.Is(err, yamux.ErrTimeout):
				// Slow or silent: the stream goes, the link stays.
				s.log.Debug("dropping a stream whose header did not arrive in time", "stream", id, "within", s.cfg.HeaderTimeout)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, yamux.ErrConnectionReset):
			default:
				s.misbehaving("invalid stream header", err)
			}
			return
		}
		_ = st.SetReadDeadline(time.Time{})
		switch k := hdr.Kind.(type) {
		case *linkv1.StreamHeader_Request:
			if k.Request.Seq != in.seq+1 {
				s.misbehaving("event out of sequence", fmt.Errorf("stream %d: event %d after %d", id, k.Request.Seq, in.seq))
				return
			}
			if !s.serveEvent(st, fr, in, k.Request) {
				return
			}
		case *linkv1.StreamHeader_Cancel:
			if !first {
				s.misbehaving("cancel on a reused stream", fmt.Errorf("stream %d", id))
			} else {
				s.cancelEvent(k.Cancel)
			}
			return
		default:
			s.log.Debug("dropping stream with an unknown header", "stream", id)
			return
		}
	}
}

// cancelEvent cancels the event a Cancel names, or, if it has not begun
// yet on its stream, makes sure it is canceled when it does.
func (s *Session) cancelEvent(c *linkv1.Cancel) {
	s.mu.Lock()
	var cancel context.CancelCauseFunc
	if in := s.incoming[c.StreamId]; in != nil {
		switch {
		case c.Seq == in.seq && in.cancel != nil:
			cancel = in.cancel
		case c.Seq > in.seq:
			in.canceled = max(in.canceled, c.Seq)
		}
	}
	s.mu.Unlock()
	if cancel != nil {
		cancel(fmt.Errorf("%w: the caller went away (%s)", context.Canceled, sanitize(c.Reason, 64)))
	}
}

// serveEvent answers one event the peer sent on st, and reports whether
// the stream may carry the next one: the reply went out whole and the
// request body was read to its END.
//
// Reuse must be decided alike on both ends, and the sender reuses a stream
// whenever it read the whole reply and sent the whole request body
// (outEvent.finish), whatever happened to the context here. So this side
// does not close a stream because the event's context ended (at its
// deadline, say, just as the reply went out): only because the framing
// is broken, or the sender closed it (as it does after a cancel).
func (s *Session) serveEvent(st *yamux.Stream, fr *frame.Reader, in *inStream, req *linkv1.Request) (reusable bool) {
	n, accepted := s.in.Enter()
	if accepted {
		defer s.in.Leave()
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	s.mu.Lock()
	in.seq, in.cancel = req.Seq, cancel
	precanceled := in.canceled >= req.Seq
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		in.cancel = nil
		s.mu.Unlock()
	}()
	if precanceled {
		cancel(fmt.Errorf("%w: the caller went away", context.Canceled))
	}
	fr.StartBody(req.BodySize)

	refuse := func(err error) bool {
		return s.replyError(st, err) && s.drain(st, fr)
	}
	if !accepted {
		e := &host.Error{Kind: host.KindPeerUnavailable, Message: "the node is shutting down"}
		if s.forward {
			// Nothing of it was read: the forwarding server may try the
			// server its client moves to.
			e.Err = host.ErrNotDelivered
		}
		return refuse(e)
	}
	if n > s.cfg.MaxInFlight {
		return refuse(&host.Error{Kind: host.KindOverloaded, RetryAfter: s.cfg.RetryAfter,
			Message: fmt.Sprintf("node has %d events in flight from %s, the limit", s.cfg.MaxInFlight, s.peer)})
	}
	ev := eventFromRequest(req)
	ev.Peer = s.peer
	if err := checkRequest(ev); err != nil {
		return refuse(host.Errorf(host.KindBadRequest, "%v", err))
	}
	if err := s.checkOrigin(ev, req); err != nil {
		return refuse(err)
	}
	if d := requestTimeout(req.TimeoutMs); d > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeout(ctx, d)
		defer cancelTimeout()
	}
	// Once the event's context ends, nothing more is read or written on
	// its stream for the event: wake whatever is blocked on it.
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(past); close(woken) })
	if req.BodySize != 0 {
		ev.Body = &eventBody{s: s, ctx: ctx, st: st, fr: fr}
	}

	start := time.Now()
	rep, err := s.handler.Handle(ctx, ev)
	if s.log.IsDebug() {
		s.log.Debug("event from peer", "request_id", ev.ID, "route", ev.Route(), "kind", host.KindOf(err), "duration", time.Since(start))
	}
	sent := false
	if err != nil {
		sent = s.replyError(st, err)
	} else {
		sent = s.reply(st, ev, rep)
	}
	if !stop() {
		<-woken // the deadline it set is undone by drain
	}
	return sent && s.drain(st, fr)
}

// drain reads and drops what the handler left of the request body, so
// that the stream can carry the next event, and reports whether the body
// reached its END. An honest sender has sent its END already (then at
// most a window is left unread here, as it writes no further than the
// window), or closes the stream now that the reply is whole. A sender
// that does neither within HeaderTimeout loses the stream. The stream's
// deadlines are cleared afterwards.
func (s *Session) drain(st *yamux.Stream, fr *frame.Reader) bool {
	_ = st.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	done := fr.Drain(int64(s.window) + frame.Chunk)
	_ = st.SetDeadline(time.Time{})
	return done
}

// reply writes a handler's reply, and reports whether it went out whole.
// A reply the peer would refuse (an invalid status, a header over the
// limit) is answered with handler_failed instead.
func (s *Session) reply(st *yamux.Stream, ev *host.Event, rep *host.Reply) bool {
	defer rep.Close()
	hdr := replyHeader(rep)
	if err := host.CheckStatus(rep.Status); err != nil {
		return s.replyError(st, host.Errorf(host.KindHandlerFailed, "the handler's reply was refused: %v", err))
	}
	if size := proto.Size(hdr); size > s.cfg.MaxHeaderSize-frame.MaxOverhead {
		return s.replyError(st, host.Errorf(host.KindHandlerFailed, "the handler's reply header is %d bytes, over the link's %d-byte limit", size, s.cfg.MaxHeaderSize))
	}
	w := &writeTracker{w: st}
	if err := frame.WriteMessage(w, hdr, rep.Body, hdr.BodySize, trailerOf); err != nil {
		s.log.Debug("reply not fully delivered", "event", ev.ID, "route", ev.Route(), "error", err)
	}
	// A reply body that failed was ended with a trailer: the stream is
	// intact if every write went out.
	return w.err == nil
}

// writeTracker remembers whether a write to w failed.
type writeTracker struct {
	w   io.Writer
	err error
}

func (t *writeTracker) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if err != nil && t.err == nil {
		t.err = err
	}
	return n, err
}

// checkOrigin applies what a request says about where the event comes
// from and goes to (Request.caller, target and hops), or refuses it:
//
//   - on the accepting end of a forward link (a server of the cluster,
//     whose certificate has the server role), the event is for its target
//     client, and comes from caller (the forwarding server when unset); it
//     is answered by the forward handler;
//   - from a peer whose certificate has the server role (the server a
//     client links to), a caller is believed: the event's Peer is the
//     caller, its Via that server;
//   - from any other peer, a target, or a caller other than the peer's own
//     name, is refused with forbidden and logged: only servers forward.
func (s *Session) checkOrigin(ev *host.Event, req *linkv1.Request) error {
	if req.Caller != "" {
		if err := host.CheckName(req.Caller); err != nil {
			return host.Errorf(host.KindBadRequest, "caller: %v", err)
		}
	}
	if s.forward {
		if req.Target == "" {
			return host.Errorf(host.KindBadRequest, "an event on a forward link needs a target client")
		}
		if err := host.CheckName(req.Target); err != nil {
			return host.Errorf(host.KindBadRequest, "target: %v", err)
		}
		ev.Target, ev.Via, ev.Hops = req.Target, s.peer, int(min(req.Hops, 64))+1
		if req.Caller != "" {
			ev.Peer = req.Caller
		}
		return nil
	}
	switch {
	case req.Target != "":
		s.warnRefused("a peer without a forward link sent an event for another client", req)
		return host.Errorf(host.KindForbidden, "%s may not forward events: only a cluster's servers do, on a forward link", s.peer)
	case req.Caller == "" || req.Caller == s.peer:
	case s.peerServer:
		ev.Peer, ev.Via = req.Caller, s.peer
	default:
		s.warnRefused("a peer without the server role stated who an event came from", req)
		return host.Errorf(host.KindForbidden, "%s may not state who an event came from: its certificate lacks the server role", s.peer)
	}
	return nil
}

// warnRefused logs (rate-limited) an event refused for what it claimed.
func (s *Session) warnRefused(why string, req *linkv1.Request) {
	if s.warnLimit.Allow() {
		s.log.Warn("event refused: "+why, "request_id", sanitize(req.Id, 64), "caller", sanitize(req.Caller, 64), "target", sanitize(req.Target, 64))
	}
}

// checkRequest refuses an event the gateway of the peer should never have
// sent: a bad verb or noun, or strings that are not UTF-8.
func checkRequest(ev *host.Event) error {
	if err := host.CheckVerb(ev.Verb); err != nil {
		return err
	}
	if err := host.CheckNoun(ev.Noun); err != nil {
		return err
	}
	for _, a := range ev.Args {
		if !utf8.ValidString(a) {
			return errors.New("an argument is not valid UTF-8")
		}
	}
	return nil
}

// maxTimeout bounds the relative deadline a request may carry (see
// eventpath.MaxTimeout): a larger timeout_ms is taken as this much instead
// of overflowing into an instant timeout.
const maxTimeout = 365 * 24 * time.Hour

// requestTimeout returns the deadline a request's timeout_ms gives.
func requestTimeout(ms int64) time.Duration {
	if ms <= 0 {
		return 0
	}
	if ms > int64(maxTimeout/time.Millisecond) {
		return maxTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

// waitIdle waits until no event from the peer is in flight, or ctx ends.
// The owner has closed the session's gate first.
func (s *Session) waitIdle(ctx context.Context) error {
	select {
	case <-s.in.Idle():
	case <-s.Done():
	case <-ctx.Done():
		return fmt.Errorf("%d events from %s still in flight: %w", s.in.InFlight(), s.peer, ctx.Err())
	}
	return nil
}

// replyError answers an event with an error, and reports whether it went
// out. On a forward link, an error wrapping host.ErrNotDelivered says so
// (Error.not_delivered), so the forwarding server may send the event again
// elsewhere.
func (s *Session) replyError(st *yamux.Stream, err error) bool {
	w := errorToWire(err)
	w.NotDelivered = s.forward && errors.Is(err, host.ErrNotDelivered)
	if werr := frame.WriteMsg(st, &linkv1.Reply{Error: w}); werr != nil {
		s.log.Debug("error reply not delivered", "error", werr)
		return false
	}
	return true
}

// eventBody is the body of an event the peer sent, as its handler reads it.
type eventBody struct {
	s   *Session
	ctx context.Context
	st  *yamux.Stream
	fr  *frame.Reader
}

// Close interrupts a blocked Read (the host.Event contract): once the
// handler stops reading, nothing more is read from the stream, which then
// is not reused.
func (b *eventBody) Close() error {
	return b.st.SetReadDeadline(past)
}

func (b *eventBody) Read(p []byte) (int, error) {
	n, err := b.fr.Read(p)
	if err != nil && err != io.EOF {
		if errors.Is(err, frame.ErrMalformed) || errors.Is(err, frame.ErrTooLarge) {
			b.s.misbehaving("malformed request body", err)
		}
		err = b.s.eventError(b.ctx, err)
	}
	return n, err
}
