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

// Handle runs one event.
func (s *server) Handle(stream pluginv1.Plugin_HandleServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return status.Error(codes.InvalidArgument, "first message is not an event header")
	}
	s.mu.Lock()
	node, described, configErr := s.node, s.configured, s.configErr
	s.mu.Unlock()
	if !described {
		return status.Errorf(codes.FailedPrecondition, "plugin %s got an event before Describe", s.p.name)
	}
	if configErr != nil {
		return status.Errorf(codes.FailedPrecondition, "plugin %s is not configured: %v", s.p.name, configErr)
	}
	r, ok := s.p.routes[RouteName(hdr.Verb, hdr.Noun)]
	if !ok {
		return status.Errorf(codes.NotFound, "plugin %s has no handler for %s", s.p.name, RouteName(hdr.Verb, hdr.Noun))
	}
	ev := eventFromHeader(hdr, node)
	ev.Body = newRequestBody(stream, hdr)

	ctx := stream.Context()
	rep, exc := run(ctx, r.h, ev)
	if exc != nil {
		return stream.Send(failureMsg(exc))
	}
	return sendReply(stream, rep)
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

// sendReply sends the reply: its header with the body inline when the body
// is small and of known size, else the header, the body in chunks and an
// end. A body that fails, panics or does not match its announced size
// becomes a failure while the header is unsent, and an end carrying the
// error after, so the caller never mistakes it for a complete one.
func sendReply(stream pluginv1.Plugin_HandleServer, rep *Reply) (err error) {
	headerSent := false
	defer func() {
		if r := recover(); r != nil {
			if headerSent {
				err = stream.Send(endMsg(fmt.Errorf("panic while streaming the reply: %v", r)))
				return
			}
			err = stream.Send(failureMsg(&Exception{Message: fmt.Sprint(r), Class: "panic", Traceback: string(debug.Stack())}))
		}
	}()
	if c, ok := rep.Body.(io.Closer); ok {
		defer c.Close()
	}
	body, size := rep.Body, max(rep.Size, -1)
	if body != nil && size == 0 {
		// A Size left at 0 may be a forgotten one: an empty body goes as
		// empty, any other as of unknown length.
		var first [1]byte
		switch n, err := io.ReadFull(body, first[:]); {
		case n == 1:
			body, size = io.MultiReader(bytes.NewReader(first[:]), body), -1
		case err != io.EOF:
			return stream.Send(failureMsg(exceptionOf(fmt.Errorf("read reply body: %w", err))))
		}
	}
	hdr := &pluginv1.ReplyHeader{
		Status:      int32(rep.Status),
		ReturnCode:  int32(rep.Code),
		ContentType: rep.ContentType,
		BodySize:    size,
	}
	if body == nil {
		hdr.BodySize = 0
		return stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}})
	}
	if size >= 0 && size <= inlineMax {
		b, err := readSmall(body, size)
		if err != nil {
			return stream.Send(failureMsg(exceptionOf(fmt.Errorf("read reply body: %w", err))))
		}
		hdr.BodyInline, hdr.InlineBody = true, b
		return stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}})
	}
	headerSent = true
	if err := stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}}); err != nil {
		return err
	}
	var sent int64
	buf := make([]byte, chunkSize)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if size >= 0 && sent > size {
				return stream.Send(endMsg(fmt.Errorf("reply body is longer than its announced %d bytes", size)))
			}
			if err := stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Chunk{Chunk: buf[:n]}}); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF && size >= 0 && sent < size:
			return stream.Send(endMsg(fmt.Errorf("reply body is %d bytes, shorter than its announced %d", sent, size)))
		case rerr == io.EOF:
			return stream.Send(endMsg(nil))
		case rerr != nil:
			return stream.Send(endMsg(rerr))
		}
	}
}

func failureMsg(e *Exception) *pluginv1.HandleResponse {
	return &pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Failure{
		Failure: &pluginv1.Exception{Message: e.Message, Class: e.Class, Traceback: e.Traceback}}}
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
