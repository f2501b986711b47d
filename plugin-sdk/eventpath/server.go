package eventpath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/proto/frame"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// Request is one event as a Server hands it to its handler.
type Request struct {
	// Header describes the event.
	Header *pluginv1.EventHeader
	// Body is the request body, never nil: empty when there is none. A
	// body of known size up to WholeBody is already complete; a larger
	// one streams as it arrives. It fails with the trailer's error if
	// the node could not finish it.
	Body io.Reader
}

// Response is a handler's answer. Header.Failure set means the handler
// failed; Body is then ignored. Otherwise Body (nil: none) is sent after
// the header, Header.BodySize bytes of it (-1: until EOF); if it
// implements io.Closer it is closed once sent, or when sending fails.
type Response struct {
	Header *pluginv1.ReplyHeader
	Body   io.Reader
}

// HandlerFunc answers one event. It must return once ctx is done: ctx ends
// at the event's deadline and when the node abandons the event (its caller
// went away). It must not keep req.Body past its return.
type HandlerFunc func(ctx context.Context, req *Request) *Response

// Server serves event connections to a handler. Create it with NewServer;
// its methods are safe for concurrent use.
type Server struct {
	handler HandlerFunc
	// onError, when set, hears about connections that broke the protocol.
	onError func(error)

	base   context.Context // parent of every handler's context
	cancel context.CancelFunc

	running atomic.Int64 // handlers running, abandoned ones included
	served  atomic.Int64 // events answered

	mu      sync.Mutex
	closed  bool
	lns     map[net.Listener]struct{}
	conns   map[net.Conn]*connState
	orphans map[*event]struct{} // running handlers whose connection ended
	readers sync.WaitGroup      // one per connection being read
}

// connState is what the Server knows of a connection: the event its
// handler runs, if any.
type connState struct {
	cur atomic.Pointer[event]
}

// NewServer returns a Server answering events with h. onError, when not
// nil, is called (from the connection's goroutine) with each protocol
// error a connection ends on.
func NewServer(h HandlerFunc, onError func(error)) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		handler: h, onError: onError, base: ctx, cancel: cancel,
		lns: map[net.Listener]struct{}{}, conns: map[net.Conn]*connState{}, orphans: map[*event]struct{}{},
	}
}

// Stats returns how many handlers run now, how many of them were
// abandoned (their event already ended), and how many events were answered
// so far.
func (s *Server) Stats() (running, abandoned, served int64) {
	s.mu.Lock()
	abandoned = int64(len(s.orphans))
	for _, cs := range s.conns {
		if ev := cs.cur.Load(); ev != nil && ev.ctx.Err() != nil {
			abandoned++ // past its deadline, still running
		}
	}
	s.mu.Unlock()
	return s.running.Load(), abandoned, s.served.Load()
}

// Serve accepts event connections on ln until ln fails or Close is called.
// It closes ln when it returns. Connections from another user than this
// process's are refused where the system tells who connects (Linux).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if err := checkPeer(c); err != nil {
			if s.onError != nil {
				s.onError(err)
			}
			c.Close()
			continue
		}
		cs := s.track(c)
		if cs == nil {
			c.Close()
			return ErrClosed
		}
		go s.serveConn(c, cs)
	}
}

// Close stops accepting, closes every connection (canceling the handlers
// of their events) and waits until every connection's reader is done.
// Handlers that ignore their context may still be running.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.readers.Wait()
	return nil
}

func (s *Server) track(c net.Conn) *connState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	cs := &connState{}
	s.conns[c] = cs
	s.readers.Add(1)
	return cs
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.readers.Done()
}

// errNodeLeft cancels the handler of an event whose connection the node
// closed: the node abandoned the event.
var errNodeLeft = fmt.Errorf("%w: the node abandoned the event", context.Canceled)

// serveConn reads one connection: an event's header and body, then,
// while its handler runs on the connection's runner goroutine, the end of
// the connection (the node abandoning the event) or the next event's
// header. The runner lives as long as the connection, so that an event
// costs a hand-off between two goroutines rather than a new goroutine
// (and its stack's growth).
func (s *Server) serveConn(c net.Conn, cs *connState) {
	defer s.untrack(c)
	defer c.Close()
	fr := frame.NewReader(c, MaxHeader)
	defer fr.Release()
	fr.Trailer = trailerError
	events := make(chan *event)
	defer close(events)
	go s.runner(events)
	for {
		hdr := new(pluginv1.EventHeader)
		if err := fr.ReadMsg(hdr); err != nil {
			if !isEnd(err) && s.onError != nil {
				s.onError(fmt.Errorf("event connection: %w", err))
			}
			return
		}
		ev := s.start(c, hdr)
		cs.cur.Store(ev)
		if size := hdr.BodySize; size != 0 && (size < 0 || size > WholeBody) {
			// A large body streams to the handler as it arrives.
			fr.StartBody(size)
			pr, pw := io.Pipe()
			ev.body, ev.pipe = pr, pr
			events <- ev
			stopWatch := ev.watchHangUp()
			ev.pump(fr, pw)
			stopWatch()
		} else {
			ev.body = readWhole(fr, size, &ev.bodyDone)
			events <- ev
		}
		// While the handler runs, wait for the node: more bytes are the
		// next event's header (the node sends it only once the reply is
		// complete); the end of the connection abandons the event.
		if err := fr.Peek(); err != nil {
			ev.cancel(errNodeLeft)
			s.orphan(ev)
			return
		}
		<-ev.done
		cs.cur.Store(nil)
		if !ev.reusable.Load() || !ev.bodyDone.Load() {
			return
		}
	}
}

// runner runs the handlers of one connection's events, one at a time.
func (s *Server) runner(events <-chan *event) {
	for ev := range events {
		ev.run()
	}
}

// orphan records a handler still running after its connection ended,
// until it returns.
func (s *Server) orphan(ev *event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-ev.done:
	default:
		s.orphans[ev] = struct{}{}
	}
}

// readWhole reads a body of size bytes (at most WholeBody) and its END,
// and returns it as the handler's body: complete (done set), or failing
// with the reason it could not be read.
func readWhole(fr *frame.Reader, size int64, done *atomic.Bool) io.Reader {
	if size == 0 {
		done.Store(true)
		return bytes.NewReader(nil)
	}
	fr.StartBody(size)
	b := make([]byte, size)
	_, err := io.ReadFull(fr, b)
	if err == nil {
		var one [1]byte
		_, err = fr.Read(one[:]) // the END, or a longer body's error
	}
	if err != io.EOF {
		return &failedBody{err: err}
	}
	done.Store(true)
	return bytes.NewReader(b)
}

// event is one event being answered on a connection.
type event struct {
	s      *Server
	c      net.Conn
	hdr    *pluginv1.EventHeader
	ctx    context.Context
	cancel context.CancelCauseFunc

	body     io.Reader
	pipe     *io.PipeReader // the streamed body's reader, or nil
	bodyDone atomic.Bool    // the request body was read to its END
	waiting  atomic.Int64   // since when (unix ns) the pump waits for the handler; 0: it does not

	reusable atomic.Bool // set before done: the reply went out whole
	done     chan struct{}
}

// start prepares the event a header opens: its context ends at its
// deadline, or when the node abandons it.
func (s *Server) start(c net.Conn, hdr *pluginv1.EventHeader) *event {
	ev := &event{s: s, c: c, hdr: hdr, done: make(chan struct{})}
	if d := Timeout(hdr.TimeoutMs); d > 0 {
		var cancel context.CancelFunc
		ev.ctx, cancel = context.WithTimeoutCause(s.base, d, context.DeadlineExceeded)
		ev.cancel = func(error) { cancel() }
		// A deadline passes; an abandoned event is canceled with its
		// reason, which needs a cause of its own.
		inner := ev.ctx
		var causeCancel context.CancelCauseFunc
		ev.ctx, causeCancel = context.WithCancelCause(inner)
		ev.cancel = func(cause error) { causeCancel(cause); cancel() }
	} else {
		ev.ctx, ev.cancel = context.WithCancelCause(s.base)
	}
	s.running.Add(1)
	return ev
}

// hangUpPoll is how often a streamed body's pump that waits for its
// handler checks whether the node has closed the connection.
const hangUpPoll = 100 * time.Millisecond

// watchHangUp watches the connection while the pump waits for a handler
// that does not read its body: the pump then reads nothing, so it cannot
// see the node close the connection, and the handler would never learn
// its event was abandoned. The watch asks the kernel instead (hungUp).
// The returned function stops the watch.
func (ev *event) watchHangUp() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(hangUpPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ev.ctx.Done():
				return
			case <-t.C:
				since := ev.waiting.Load()
				if since != 0 && time.Since(time.Unix(0, since)) >= hangUpPoll && hungUp(ev.c) {
					ev.cancel(errNodeLeft)
					return
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// pump copies the streamed request body from the connection into the
// handler's pipe, until its END or a failure. Once the handler has
// returned, it drops the rest of the body: the node stops sending a body
// once the reply is complete, so the connection either reaches the END
// (and may carry the next event) or ends.
func (ev *event) pump(fr *frame.Reader, pw *io.PipeWriter) {
	bp := pumpBufs.Get().(*[]byte)
	defer pumpBufs.Put(bp)
	buf := *bp
	discard := false
	for {
		n, err := fr.Read(buf)
		if n > 0 && !discard {
			ev.waiting.Store(time.Now().UnixNano())
			_, werr := pw.Write(buf[:n])
			ev.waiting.Store(0)
			if werr != nil {
				discard = true // the handler returned
			}
		}
		if err == io.EOF {
			ev.bodyDone.Store(true)
			pw.Close()
			return
		}
		if err != nil {
			pw.CloseWithError(err)
			return
		}
	}
}

var pumpBufs = sync.Pool{New: func() any { b := make([]byte, frame.Chunk); return &b }}

// run calls the handler and writes its answer.
func (ev *event) run() {
	s := ev.s
	resp := s.handler(ev.ctx, &Request{Header: ev.hdr, Body: ev.body})
	// The reply body may still read the request body (an echo does):
	// only once it is sent does the pump drop what the handler left.
	err := writeResponse(ev.c, resp)
	if ev.pipe != nil {
		ev.pipe.CloseWithError(ErrHandlerDone)
	}
	s.running.Add(-1)
	s.served.Add(1)
	// The connection can carry another event if the reply went out whole
	// (and, serveConn checks, the request body reached its END).
	ev.reusable.Store(err == nil)
	ev.cancel(context.Canceled)
	s.mu.Lock()
	delete(s.orphans, ev)
	close(ev.done)
	s.mu.Unlock()
}

// writeResponse writes a handler's answer: its header, then its body.
func writeResponse(c net.Conn, resp *Response) error {
	if resp == nil || resp.Header == nil {
		resp = &Response{Header: &pluginv1.ReplyHeader{}}
	}
	h := resp.Header
	if h.Failure != nil {
		closeBody(resp.Body)
		return frame.WriteMsg(c, &pluginv1.ReplyHeader{Failure: h.Failure, Refused: h.Refused})
	}
	size := h.BodySize
	if resp.Body == nil {
		size = 0
	}
	if size != h.BodySize {
		h = proto.Clone(h).(*pluginv1.ReplyHeader)
		h.BodySize = size
	}
	defer closeBody(resp.Body)
	return frame.WriteMessage(c, h, resp.Body, size, trailerOf)
}

// closeBody closes a body that is an io.Closer.
func closeBody(b io.Reader) {
	if c, ok := b.(io.Closer); ok {
		c.Close()
	}
}

// failedBody is a request body that failed before the handler ran.
type failedBody struct{ err error }

func (b *failedBody) Read([]byte) (int, error) { return 0, b.err }

// isEnd reports errors that just mean the connection ended.
func isEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// trailerOf is the trailer of a body that could not be finished.
func trailerOf(err error) proto.Message { return &pluginv1.Trailer{Error: err.Error()} }

// trailerError turns an END trailer into the body's error.
func trailerError(payload []byte) error {
	var t pluginv1.Trailer
	if err := proto.Unmarshal(payload, &t); err != nil {
		return fmt.Errorf("%w: decode trailer: %v", frame.ErrMalformed, err)
	}
	if t.Error == "" {
		return nil
	}
	return &BodyError{Message: t.Error}
}

// BodyError is the error of a body whose sender could not finish it, as
// its END trailer says.
type BodyError struct{ Message string }

func (e *BodyError) Error() string { return "body incomplete: " + e.Message }
