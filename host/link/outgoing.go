package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/proto/frame"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// IdleStreamTimeout is how long a stream this side opened may wait idle
// for its next event before it is closed; the keepalive checks every
// KeepAliveInterval.
const IdleStreamTimeout = 30 * time.Second

// outStream is a stream this side opened, carrying one event at a time.
type outStream struct {
	s    *Session
	st   *yamux.Stream
	fr   *frame.Reader // reads the replies; detached while idle
	seq  uint32        // events sent on it so far
	idle time.Time     // when it went back to the pool
}

// takeStream returns an idle stream for the next event, or a new one.
// When this side has as many streams open as the peer allows (a link
// whose measured round trip gave it few streams), the event waits for one
// to come back, until ctx ends: at most MaxInFlight events wait (Handle's
// semaphore), so this is a bounded queue, like an HTTP/2 client's at
// MAX_CONCURRENT_STREAMS. A slot is reserved before the stream is opened,
// so events racing for the last ones never open more than the budget.
func (s *Session) takeStream(ctx context.Context) (*outStream, error) {
	for {
		s.mu.Lock()
		if n := len(s.pool); n > 0 {
			os := s.pool[n-1]
			s.pool[n-1] = nil
			s.pool = s.pool[:n-1]
			s.mu.Unlock()
			os.fr.Attach(os.st)
			return os, nil
		}
		freed := s.freed
		s.mu.Unlock()
		if s.opened.Add(1) <= int64(s.streamBudget()) {
			break
		}
		s.opened.Add(-1)
		s.waiting.Add(1)
		select {
		case <-freed:
			s.waiting.Add(-1)
		case <-ctx.Done():
			s.waiting.Add(-1)
			return nil, s.eventError(ctx, ctx.Err())
		case <-s.mux.CloseChan():
			s.waiting.Add(-1)
			return nil, &host.Error{Kind: host.KindPeerUnavailable, Err: fmt.Errorf("%w: %w", host.ErrNotDelivered, s.Err()),
				Message: fmt.Sprintf("the link to %s closed before the event was sent: %v", s.peer, s.Err())}
		}
	}
	st, err := s.mux.OpenStream()
	if err != nil {
		s.streamGone()
		if errors.Is(err, yamux.ErrStreamsExhausted) {
			// About two billion streams on one session: start afresh.
			s.log.Info("closing link: yamux stream ids exhausted")
			s.shutdown(err)
		}
		return nil, &host.Error{Kind: host.KindPeerUnavailable, Err: fmt.Errorf("%w: %w", host.ErrNotDelivered, err),
			Message: fmt.Sprintf("the link to %s closed before the event was sent: %v", s.peer, s.Err())}
	}
	fr := frame.NewReader(st, s.cfg.MaxHeaderSize)
	fr.Trailer = trailerError
	return &outStream{s: s, st: st, fr: fr}, nil
}

// streamGone releases a stream's slot and wakes the events waiting for one.
func (s *Session) streamGone() {
	s.opened.Add(-1)
	s.wakeWaiting()
}

// wakeWaiting wakes the events waiting in takeStream, if any.
func (s *Session) wakeWaiting() {
	if s.waiting.Load() == 0 {
		return
	}
	s.mu.Lock()
	close(s.freed)
	s.freed = make(chan struct{})
	s.mu.Unlock()
}

// streamBudget is how many streams this side opens at most for events:
// what the peer allows, less room for cancels and streams closing.
func (s *Session) streamBudget() int {
	return s.peerStreams - min(streamSlack/2, s.peerStreams/4)
}

// putStream keeps a stream whose event completed for the next event.
func (s *Session) putStream(os *outStream) {
	detached := os.fr.Detach()
	s.mu.Lock()
	if detached && !s.mux.IsClosed() && len(s.pool) < s.cfg.MaxInFlight {
		os.idle = time.Now()
		s.pool = append(s.pool, os)
		s.mu.Unlock()
		s.wakeWaiting()
		return
	}
	s.mu.Unlock()
	os.close()
}

// close closes a stream this side will not use again.
func (os *outStream) close() {
	_ = os.st.Close()
	os.fr.Release()
	os.s.streamGone()
}

// tidyIdle closes the pooled streams idle since before t, and lets yamux
// free the receive buffers of the idle streams both ways (Shrink frees
// only an empty buffer, so it is safe while a stream waits). It runs with
// the keepalive: an idle link holds no stream buffers for long, and a busy
// one reuses them.
func (s *Session) tidyIdle(t time.Time) {
	s.mu.Lock()
	var old []*outStream
	keep := s.pool[:0]
	for _, os := range s.pool {
		if os.idle.Before(t) {
			old = append(old, os)
		} else {
			keep = append(keep, os)
			os.st.Shrink()
		}
	}
	clear(s.pool[len(keep):])
	s.pool = keep
	for _, in := range s.incoming {
		if in.cancel == nil {
			in.st.Shrink()
		}
	}
	s.mu.Unlock()
	for _, os := range old {
		os.close()
	}
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
	os, err := s.takeStream(ctx)
	if err != nil {
		<-s.outSem
		return nil, err
	}
	os.seq++
	o := &outEvent{s: s, ctx: ctx, os: os, body: ev.Body, watchDone: make(chan struct{})}
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
	os   *outStream
	body io.Reader // the request body, read by run or the body writer

	stop      func() bool   // stops the context watch
	watchDone chan struct{} // closed when abort has run
	complete  atomic.Bool   // the whole reply has been read
	failed    atomic.Bool   // the stream broke: never reuse it

	writerDone chan error // the body writer's result; nil without one
	finishOnce sync.Once
}

// run writes the request and reads the reply header.
func (o *outEvent) run(ev *host.Event) (*host.Reply, error) {
	var timeout time.Duration
	if d, ok := o.ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	req := requestFromEvent(ev, timeout)
	req.Seq = o.os.seq
	hdr := &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{Request: req}}
	st := o.os.st
	if ev.Body == nil || ev.Size == 0 || (ev.Size > 0 && ev.Size <= frame.SmallBody) {
		if err := frame.WriteMessage(st, hdr, ev.Body, req.BodySize, trailerOf); err != nil {
			return nil, o.fail(err)
		}
	} else {
		if err := frame.WriteMsg(st, hdr); err != nil {
			return nil, o.fail(err)
		}
		o.writerDone = make(chan error, 1)
		go func() {
			err := frame.CopyBody(st, ev.Body, ev.Size, trailerOf)
			if err != nil {
				o.s.log.Debug("request body not fully sent", "event", ev.ID, "error", err)
			}
			o.writerDone <- err
		}()
	}

	var rep linkv1.Reply
	if err := o.os.fr.ReadMsg(&rep); err != nil {
		return nil, o.fail(err)
	}
	if d, ok := o.ctx.Deadline(); ok && !time.Now().Before(d) {
		// The reply came once the deadline had passed (a loaded machine
		// can run it before our timer): the event timed out, whatever the
		// peer said, and its stream, the reply unread, is not reused.
		o.failed.Store(true)
		o.finish()
		return nil, &host.Error{Kind: host.KindTimeout, Err: context.DeadlineExceeded,
			Message: fmt.Sprintf("the event's deadline passed before %s answered", o.s.peer)}
	}
	if rep.Error != nil {
		o.os.fr.StartBody(0)
		o.complete.Store(true)
		o.finish()
		e := errorFromWire(rep.Error)
		if o.s.forward && rep.Error.NotDelivered {
			// The other server saw none of it: the event may go elsewhere.
			e.Err = host.ErrNotDelivered
		}
		return nil, e
	}
	if err := host.CheckStatus(int(rep.Status)); err != nil {
		o.s.cfg.Observer.BadPeerReply(o.s.peer)
		o.failed.Store(true)
		o.finish()
		return nil, host.Errorf(host.KindHandlerFailed, "%s answered with a bad reply: %v", o.s.peer, err)
	}
	reply := &host.Reply{
		Status:      int(rep.Status),
		Code:        int(rep.ReturnCode),
		ContentType: rep.ContentType,
		Size:        max(rep.BodySize, -1),
		Body:        o,
	}
	o.os.fr.StartBody(rep.BodySize)
	if rep.BodySize == 0 {
		o.complete.Store(true)
		reply.Body = nil
		o.finish()
	}
	return reply, nil
}

// Read reads the reply body.
func (o *outEvent) Read(p []byte) (int, error) {
	n, err := o.os.fr.Read(p)
	switch {
	case err == io.EOF:
		o.complete.Store(true)
	case err != nil:
		o.failed.Store(true)
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
	o.failed.Store(true)
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
	_ = o.os.st.SetDeadline(past)
	o.interruptBody()
	if !o.complete.Load() && !errors.Is(o.ctx.Err(), context.DeadlineExceeded) {
		o.s.sendCancel(o.os.st.StreamID(), o.os.seq, "canceled")
	}
}

// finish releases everything the event holds, once. The stream goes back
// to the pool only when the event completed cleanly both ways: the reply
// read to its end, the request body sent to its END, nothing broken, and
// the context not ended (a canceled event's stream is never reused).
func (o *outEvent) finish() {
	o.finishOnce.Do(func() {
		reusable := !o.failed.Load()
		if o.stop() {
			// The context had not ended: abort never ran.
			close(o.watchDone)
			if !o.complete.Load() {
				reusable = false
				o.s.sendCancel(o.os.st.StreamID(), o.os.seq, "reply closed early")
			}
		} else {
			reusable = false
		}
		<-o.watchDone
		if o.writerDone != nil {
			select {
			case err := <-o.writerDone:
				reusable = reusable && err == nil
			default:
				// The body is still being sent: the reply is complete
				// without it, or the event failed. Stop sending, and wake
				// the writer if it waits for the caller's bytes.
				reusable = false
				_ = o.os.st.SetWriteDeadline(past)
				o.interruptBody()
				<-o.writerDone
			}
		}
		if reusable && o.complete.Load() {
			o.s.putStream(o.os)
		} else {
			o.os.close()
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

// sendCancel tells the peer that event seq on stream id lost its caller.
// It is best effort and does not wait for the peer; it is skipped when the
// peer already holds nearly as many streams as it may (the event's own
// stream is closed anyway, and the far handler's deadline ends it).
func (s *Session) sendCancel(id, seq uint32, reason string) {
	if s.opened.Add(1) > int64(s.peerStreams-s.peerStreams/16) {
		s.opened.Add(-1)
		s.log.Debug("cancel not sent: too many streams open", "stream", id)
		return
	}
	defer s.streamGone()
	st, err := s.mux.OpenStream()
	if err != nil {
		return
	}
	defer st.Close()
	_ = frame.WriteMsg(st, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Cancel{
		Cancel: &linkv1.Cancel{StreamId: id, Seq: seq, Reason: reason}}})
}

// trailerOf is the trailer of a body this side could not finish.
func trailerOf(err error) proto.Message { return &linkv1.Trailer{Error: errorToWire(err)} }

// trailerError turns an END trailer into the body's error.
func trailerError(payload []byte) error {
	var t linkv1.Trailer
	if err := proto.Unmarshal(payload, &t); err != nil {
		return fmt.Errorf("%w: decode trailer: %v", frame.ErrMalformed, err)
	}
	if t.Error == nil {
		return nil
	}
	return errorFromWire(t.Error)
}
