package pluginsdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

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
	node, configErr := s.node, s.configErr
	s.mu.Unlock()
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
		return stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Failure{Failure: exc}})
	}
	return sendReply(stream, rep)
}

// run calls h, turning an error or a panic into an exception.
func run(ctx context.Context, h HandlerFunc, ev *Event) (rep *Reply, exc *pluginv1.Exception) {
	defer func() {
		if r := recover(); r != nil {
			rep, exc = nil, &pluginv1.Exception{Message: fmt.Sprint(r), Class: "panic", Traceback: string(debug.Stack())}
		}
	}()
	rep, err := h(ctx, ev)
	if err != nil {
		e := exceptionOf(err)
		return nil, &pluginv1.Exception{Message: e.Message, Class: e.Class, Traceback: e.Traceback}
	}
	if rep == nil {
		rep = &Reply{}
	}
	return rep, nil
}

// sendReply sends the reply header and body. A body that fails mid-way
// ends with an End carrying the error, so the caller never mistakes it for
// a complete one.
func sendReply(stream pluginv1.Plugin_HandleServer, rep *Reply) (err error) {
	if c, ok := rep.Body.(io.Closer); ok {
		defer c.Close()
	}
	hdr := &pluginv1.ReplyHeader{
		Status:      int32(rep.Status),
		ReturnCode:  int32(rep.Code),
		ContentType: rep.ContentType,
		BodySize:    rep.Size,
	}
	if rep.Body == nil {
		hdr.BodySize = 0
		return stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}})
	}
	if rep.Size >= 0 && rep.Size <= inlineMax {
		b, err := readSmall(rep.Body, rep.Size)
		if err != nil {
			e := exceptionOf(fmt.Errorf("read reply body: %w", err))
			return stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Failure{
				Failure: &pluginv1.Exception{Message: e.Message, Class: e.Class}}})
		}
		hdr.BodyInline, hdr.InlineBody, hdr.BodySize = true, b, int64(len(b))
		return stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}})
	}
	if err := stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Header{Header: hdr}}); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = stream.Send(endMsg(fmt.Errorf("panic while streaming the reply: %v", r)))
		}
	}()
	buf := make([]byte, chunkSize)
	for {
		n, rerr := rep.Body.Read(buf)
		if n > 0 {
			if err := stream.Send(&pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_Chunk{Chunk: buf[:n]}}); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return stream.Send(endMsg(nil))
		}
		if rerr != nil {
			return stream.Send(endMsg(rerr))
		}
	}
}

func endMsg(err error) *pluginv1.HandleResponse {
	e := &pluginv1.End{}
	if err != nil {
		e.Error = err.Error()
	}
	return &pluginv1.HandleResponse{Msg: &pluginv1.HandleResponse_End{End: e}}
}

// readSmall reads a body of known size up to inlineMax whole.
func readSmall(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("body shorter than its announced %d bytes", size)
		}
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
