package pluginsdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

const (
	// chunkSize is the size of the body chunks the plugin sends.
	chunkSize = 64 << 10
	// inlineMax is the largest body sent inline in its header.
	inlineMax = 32 << 10
)

// server serves the plugin protocol for one Plugin.
type server struct {
	pluginv1.UnimplementedPluginServer
	p *Plugin

	mu         sync.Mutex
	node       Node
	configured bool
	configErr  error
	parked     map[uint64]*parked // ticketed replies waiting for Fetch
	nextTicket uint64
}

func newServer(p *Plugin) *server { return &server{p: p} }

// Describe configures the plugin and lists its routes.
func (s *server) Describe(_ context.Context, req *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.node = Node{Role: req.GetNode().GetRole(), Name: req.GetNode().GetName()}
	if !s.configured {
		s.configured = true
		if s.p.configure != nil {
			s.configErr = callConfigure(s.p.configure, Config(req.Config))
		}
	}
	resp := &pluginv1.DescribeResponse{
		Name:            s.p.name,
		Version:         s.p.version,
		ProtocolVersion: pluginv1.ProtocolVersion,
		PeerEvents:      s.p.onPeer != nil,
		Call:            true,
	}
	if s.configErr != nil {
		resp.Error = "configure: " + s.configErr.Error()
	}
	for _, name := range s.p.Routes() {
		r := s.p.routes[name]
		resp.Routes = append(resp.Routes, &pluginv1.Route{Verb: r.verb, Noun: r.noun, Name: name})
	}
	return resp, nil
}

// PeerEvent hands a peer event to the plugin's hook.
func (s *server) PeerEvent(ctx context.Context, req *pluginv1.PeerEventRequest) (*pluginv1.PeerEventResponse, error) {
	if s.p.onPeer == nil {
		return nil, status.Error(codes.Unimplemented, "this plugin registered no peer hook")
	}
	ev := PeerEvent{Kind: req.Kind, Peer: req.Peer, Peers: int(req.Peers), Error: req.Error, Time: time.Unix(0, req.UnixNano)}
	if err := callPeer(ctx, s.p.onPeer, ev); err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &pluginv1.PeerEventResponse{}, nil
}

// callPeer runs f, turning a panic into an error.
func callPeer(ctx context.Context, f PeerFunc, ev PeerEvent) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in peer hook: %v", r)
		}
	}()
	return f(ctx, ev)
}

// callConfigure runs f, turning a panic into an error.
func callConfigure(f func(Config) error, c Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	if c == nil {
		c = Config{}
	}
	return f(c)
}

// Handle runs one event, its bodies streamed.
func (s *server) Handle(stream pluginv1.Plugin_HandleServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return status.Error(codes.InvalidArgument, "first message is not an event header")
	}
	r, node, err := s.lookup(hdr)
	if err != nil {
		return err
	}
	ev := eventFromHeader(hdr, node)
	ev.Body = newRequestBody(stream, hdr)
	rep, exc := run(stream.Context(), r.h, ev)
	if exc != nil {
		return stream.Send(failureMsg(exc))
	}
	return sendReply(stream, rep)
}

// lookup finds the handler of an event, once the plugin is described and
// configured.
func (s *server) lookup(hdr *pluginv1.EventHeader) (route, Node, error) {
	s.mu.Lock()
	node, described, configErr := s.node, s.configured, s.configErr
	s.mu.Unlock()
	if !described {
		return route{}, node, status.Errorf(codes.FailedPrecondition, "plugin %s got an event before Describe", s.p.name)
	}
	if configErr != nil {
		return route{}, node, status.Errorf(codes.FailedPrecondition, "plugin %s is not configured: %v", s.p.name, configErr)
	}
	r, ok := s.p.routes[RouteName(hdr.Verb, hdr.Noun)]
	if !ok {
		return route{}, node, status.Errorf(codes.NotFound, "plugin %s has no handler for %s", s.p.name, RouteName(hdr.Verb, hdr.Noun))
	}
	return r, node, nil
}

// Call runs one event whose request body is inline or empty, in one round
// trip. A reply too large to come back inline is parked under a ticket
// for Fetch; its handler's context lives on until the Fetch ends (or the
// deadline passes), so a streaming body can still use it.
func (s *server) Call(ctx context.Context, req *pluginv1.CallRequest) (*pluginv1.CallResponse, error) {
	hdr := req.GetHeader()
	if hdr == nil {
		return nil, status.Error(codes.InvalidArgument, "call without an event header")
	}
	if !hdr.BodyInline && hdr.BodySize != 0 {
		return nil, status.Error(codes.InvalidArgument, "call with a streamed body; use Handle")
	}
	r, node, err := s.lookup(hdr)
	if err != nil {
		return nil, err
	}
	ev := eventFromHeader(hdr, node)
	ev.Body = bytes.NewReader(hdr.InlineBody)

	// The handler's context: the call's deadline and, while the call runs,
	// its cancellation; past the call, the Fetch's.
	deadline, hasDeadline := ctx.Deadline()
	if !hasDeadline {
		deadline = time.Now().Add(maxParked)
	}
	hctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	stop := context.AfterFunc(ctx, cancel)

	rep, exc := run(hctx, r.h, ev)
	if exc != nil {
		stop()
		cancel()
		return &pluginv1.CallResponse{Result: &pluginv1.CallResponse_Failure{Failure: exceptionMsg(exc)}}, nil
	}
	rhdr, body, exc := prepareReply(rep)
	if exc != nil || body == nil {
		stop()
		cancel()
		if exc != nil {
			return &pluginv1.CallResponse{Result: &pluginv1.CallResponse_Failure{Failure: exceptionMsg(exc)}}, nil
		}
		return &pluginv1.CallResponse{Result: &pluginv1.CallResponse_Reply{Reply: rhdr}}, nil
	}
	if !stop() {
		// The caller went away while the handler ran.
		closeBody(body)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	ticket := s.park(body, rhdr.BodySize, cancel, deadline)
	return &pluginv1.CallResponse{Result: &pluginv1.CallResponse_Reply{Reply: rhdr}, Ticket: ticket}, nil
}

// maxParked bounds how long a ticketed reply of an event without a
// deadline waits for its Fetch.
const maxParked = time.Minute

// parked is a ticketed reply waiting for its Fetch.
type parked struct {
	body   io.Reader
	size   int64
	cancel context.CancelFunc // ends the handler's context
	timer  *time.Timer        // drops the reply when nobody fetches it
}

// park keeps a reply body for Fetch until deadline and returns its ticket.
func (s *server) park(body io.Reader, size int64, cancel context.CancelFunc, deadline time.Time) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parked == nil {
		s.parked = make(map[uint64]*parked)
	}
	s.nextTicket++
	t := s.nextTicket
	p := &parked{body: body, size: size, cancel: cancel}
	p.timer = time.AfterFunc(time.Until(deadline), func() {
		if q := s.unpark(t); q != nil {
			q.cancel()
			closeBody(q.body)
		}
	})
	s.parked[t] = p
	return t
}

// unpark takes the reply parked under ticket t, or nil.
func (s *server) unpark(t uint64) *parked {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.parked[t]
	if p != nil {
		delete(s.parked, t)
		p.timer.Stop()
	}
	return p
}

// Fetch streams the body of a ticketed reply.
func (s *server) Fetch(req *pluginv1.FetchRequest, stream pluginv1.Plugin_FetchServer) error {
	p := s.unpark(req.GetTicket())
	if p == nil {
		return status.Errorf(codes.NotFound, "no reply waits under ticket %d: it was fetched, or its deadline passed", req.GetTicket())
	}
	defer p.cancel()
	stop := context.AfterFunc(stream.Context(), p.cancel)
	defer stop()
	return streamBody(stream.Send, p.body, p.size)
}

// run calls h, turning an error, a panic or an unusable reply into an
// exception. When it returns an exception it has closed the reply's body.
func run(ctx context.Context, h HandlerFunc, ev *Event) (rep *Reply, exc *Exception) {
	defer func() {
		if r := recover(); r != nil {
			rep, exc = nil, &Exception{Message: fmt.Sprint(r), Class: "panic", Traceback: string(debug.Stack())}
		}
	}()
	rep, err := h(ctx, ev)
	switch {
	case err != nil:
		exc = exceptionOf(err)
	case rep == nil:
		return &Reply{}, nil
	case rep.exc != nil:
		exc = rep.exc
	case rep.Status != 0 && (rep.Status < 200 || rep.Status > 599):
		exc = exceptionOf(fmt.Errorf("reply status %d is not a final HTTP status (200 to 599)", rep.Status))
	default:
		return rep, nil
	}
	if rep != nil {
		if c, ok := rep.Body.(io.Closer); ok {
			c.Close()
		}
	}
	return nil, exc
}

// sendReply sends the reply on a Handle stream: its header with the body
// inline when the body is small and of known size, else the header, the
// body in chunks and an end (see prepareReply and streamBody).
func sendReply(stream pluginv1.Plugin_HandleServer, rep *Reply) error {
	hdr, body, exc := prepareReply(rep)
	if exc != nil {
		return stream.Send(failureMsg(exc))
	}
	if err := stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}}); err != nil {
		closeBody(body)
		return err
	}
	if body == nil {
		return nil
	}
	return streamBody(stream.Send, body, hdr.BodySize)
}

// prepareReply builds the header of rep. A body that is empty or small and
// of known size goes inline in the header and is closed: body is then nil.
// Otherwise body is what streamBody must send (and close). A body that
// fails, panics or does not match its announced size before the header is
// built becomes an exception instead (and is closed).
func prepareReply(rep *Reply) (hdr *pluginv1.ReplyHeader, body io.Reader, exc *Exception) {
	defer func() {
		if r := recover(); r != nil {
			closeBody(rep.Body)
			hdr, body, exc = nil, nil, &Exception{Message: fmt.Sprint(r), Class: "panic", Traceback: string(debug.Stack())}
		}
	}()
	body, size := rep.Body, max(rep.Size, -1)
	hdr = &pluginv1.ReplyHeader{Status: int32(rep.Status), ReturnCode: int32(rep.Code), ContentType: rep.ContentType}
	if body == nil {
		return hdr, nil, nil
	}
	if size == 0 {
		// A Size left at 0 may be a forgotten one: an empty body goes as
		// empty, any other as of unknown length.
		var first [1]byte
		switch n, err := io.ReadFull(body, first[:]); {
		case n == 1:
			body, size = io.MultiReader(bytes.NewReader(first[:]), body), -1
		case err != io.EOF:
			closeBody(rep.Body)
			return nil, nil, exceptionOf(fmt.Errorf("read reply body: %w", err))
		default:
			closeBody(rep.Body)
			hdr.BodyInline = true // a body, empty
			return hdr, nil, nil
		}
	}
	if size >= 0 && size <= inlineMax {
		b, err := readSmall(body, size)
		closeBody(rep.Body)
		if err != nil {
			return nil, nil, exceptionOf(fmt.Errorf("read reply body: %w", err))
		}
		hdr.BodyInline, hdr.InlineBody, hdr.BodySize = true, b, size
		return hdr, nil, nil
	}
	hdr.BodySize = size
	if c, ok := rep.Body.(io.Closer); ok && body != rep.Body {
		body = readCloser{body, c} // keep the Close of the original body
	}
	return hdr, body, nil
}

// readCloser pairs a reader with the Close of another.
type readCloser struct {
	io.Reader
	io.Closer
}

// closeBody closes a body that is an io.Closer.
func closeBody(b io.Reader) {
	if c, ok := b.(io.Closer); ok {
		c.Close()
	}
}

// streamBody sends body as chunks and an end, then closes it. A body that
// fails, panics or does not match size (-1: unknown) ends with an end
// carrying the error, so the caller never mistakes it for a complete one.
func streamBody(send func(*pluginv1.HandleResponse) error, body io.Reader, size int64) (err error) {
	defer closeBody(body)
	defer func() {
		if r := recover(); r != nil {
			err = send(endMsg(fmt.Errorf("panic while streaming the reply: %v", r)))
		}
	}()
	var sent int64
	buf := make([]byte, chunkSize)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if size >= 0 && sent > size {
				return send(endMsg(fmt.Errorf("reply body is longer than its announced %d bytes", size)))
			}
			if err := send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Chunk{Chunk: buf[:n]}}); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF && size >= 0 && sent < size:
			return send(endMsg(fmt.Errorf("reply body is %d bytes, shorter than its announced %d", sent, size)))
		case rerr == io.EOF:
			return send(endMsg(nil))
		case rerr != nil:
			return send(endMsg(rerr))
		}
	}
}

func failureMsg(e *Exception) *pluginv1.HandleResponse {
	return &pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Failure{Failure: exceptionMsg(e)}}
}

func exceptionMsg(e *Exception) *pluginv1.Exception {
	return &pluginv1.Exception{Message: e.Message, Class: e.Class, Traceback: e.Traceback}
}

func endMsg(err error) *pluginv1.HandleResponse {
	e := &pluginv1.End{}
	if err != nil {
		e.Error = err.Error()
	}
	return &pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_End{End: e}}
}

// readSmall reads a body of known size up to inlineMax whole, and makes
// sure it ends there.
func readSmall(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("body shorter than its announced %d bytes", size)
		}
		return nil, err
	}
	var extra [1]byte
	switch n, err := io.ReadFull(r, extra[:]); {
	case n > 0:
		return nil, fmt.Errorf("body longer than its announced %d bytes", size)
	case err != io.EOF:
		return nil, err
	}
	return b, nil
}

// requestBody reads the request body from the stream.
type requestBody struct {
	stream pluginv1.Plugin_HandleServer
	buf    []byte // unread part of the current chunk
	err    error  // sticky
}

func newRequestBody(stream pluginv1.Plugin_HandleServer, hdr *pluginv1.EventHeader) io.Reader {
	switch {
	case hdr.BodyInline:
		return bytes.NewReader(hdr.InlineBody)
	case hdr.BodySize == 0:
		return bytes.NewReader(nil)
	}
	return &requestBody{stream: stream}
}

func (b *requestBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		msg, err := b.stream.Recv()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = fmt.Errorf("read request body: %w", err)
			return 0, b.err
		}
		switch m := msg.Msg.(type) {
		case *pluginv1.HandleRequest_Chunk:
			b.buf = m.Chunk
		case *pluginv1.HandleRequest_End:
			if m.End.Error != "" {
				b.err = fmt.Errorf("request body incomplete: %s", m.End.Error)
			} else {
				b.err = io.EOF
			}
		default:
			b.err = errors.New("read request body: unexpected message")
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}
