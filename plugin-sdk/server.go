package pluginsdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
	"github.com/restpipe/restpipe/proto/frame"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// SDKVersion is the version of this SDK, reported to the node.
const SDKVersion = "2.0.0"

// server serves the plugin protocol for one Plugin: the control service
// (Describe, PeerEvent, Stats) over gRPC, and events on its event socket.
type server struct {
	pluginv1.UnimplementedPluginServer
	p      *Plugin
	events *eventpath.Server
	socket string // the event socket's path

	mu         sync.Mutex
	node       Node
	configured bool
	configErr  error
}

// newServer prepares the protocol server of p; listen starts its event
// socket.
func newServer(p *Plugin) *server {
	s := &server{p: p}
	s.events = eventpath.NewServer(s.serveEvent, func(err error) {
		p.Logger().Warn("event connection refused", "error", err)
	})
	return s
}

// listen opens the event socket in dir (the plugin's private directory)
// and serves events on it until close. It returns once the socket exists.
func (s *server) listen(dir string) (closeEvents func() error, err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", "restpipe-plugin-"); err != nil {
			return nil, fmt.Errorf("make a directory for the event socket: %w", err)
		}
	}
	s.socket = filepath.Join(dir, eventpath.SocketName)
	_ = os.Remove(s.socket)
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		return nil, fmt.Errorf("listen for events: %w", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = s.events.Serve(ln) }()
	return func() error {
		err := s.events.Close()
		<-done
		return err
	}, nil
}

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
		EventSocket:     s.socket,
		Sdk:             "go/" + SDKVersion,
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

// Stats reports the plugin's handlers.
func (s *server) Stats(context.Context, *pluginv1.StatsRequest) (*pluginv1.StatsResponse, error) {
	running, abandoned, served := s.events.Stats()
	return &pluginv1.StatsResponse{Running: running, Abandoned: abandoned, Served: served}, nil
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

// serveEvent answers one event from the event socket.
func (s *server) serveEvent(ctx context.Context, req *eventpath.Request) *eventpath.Response {
	hdr := req.Header
	s.mu.Lock()
	node, described, configErr := s.node, s.configured, s.configErr
	s.mu.Unlock()
	var exc *Exception
	refused := ""
	switch r, ok := s.p.routes[RouteName(hdr.Verb, hdr.Noun)]; {
	case !described:
		refused, exc = eventpath.RefusedUnavailable, &Exception{Class: "NotReady", Message: fmt.Sprintf("plugin %s got an event before Describe", s.p.name)}
	case configErr != nil:
		refused, exc = eventpath.RefusedUnavailable, &Exception{Class: "NotConfigured", Message: fmt.Sprintf("plugin %s is not configured: %v", s.p.name, configErr)}
	case !ok:
		refused, exc = eventpath.RefusedNoRoute, &Exception{Class: "NoRoute", Message: fmt.Sprintf("plugin %s has no handler for %s", s.p.name, RouteName(hdr.Verb, hdr.Noun))}
	default:
		ev := eventFromHeader(hdr, node)
		ev.Body = req.Body
		rep, e := run(ctx, r.h, ev)
		if e == nil {
			rh, body, e := prepareReply(rep)
			if e == nil {
				return &eventpath.Response{Header: rh, Body: body}
			}
			exc = e
		} else {
			exc = e
		}
	}
	return &eventpath.Response{Header: &pluginv1.ReplyHeader{Failure: exceptionMsg(exc), Refused: refused}}
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
		closeBody(rep.Body)
	}
	return nil, exc
}

// prepareReply builds the header of rep and the body to stream after it.
// A Size left at 0 with a Body that is not empty is sent as of unknown
// length. The body's reads are guarded: a panic while the reply streams
// ends it with a failed END (the caller never takes it as complete).
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
			return hdr, nil, nil
		}
	}
	if size > 0 && size <= frame.SmallBody {
		// A small body is read before the header goes out, so that one
		// that fails, panics or does not match its size fails the event
		// as a whole rather than after its status is sent.
		b, err := readSmall(body, size)
		closeBody(rep.Body)
		if err != nil {
			return nil, nil, exceptionOf(fmt.Errorf("read reply body: %w", err))
		}
		hdr.BodySize = size
		return hdr, bytes.NewReader(b), nil
	}
	hdr.BodySize = size
	return hdr, &guardedBody{r: body, closer: rep.Body}, nil
}

// readSmall reads a body of known size up to frame.SmallBody whole, and
// makes sure it ends there.
func readSmall(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, size)
	if n, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("body of %d bytes is shorter than its announced %d", n, size)
		}
		return nil, err
	}
	var extra [1]byte
	for {
		switch n, err := r.Read(extra[:]); {
		case n > 0:
			return nil, fmt.Errorf("body is longer than its announced %d bytes", size)
		case err == io.EOF:
			return b, nil
		case err != nil:
			return nil, err
		}
	}
}

// guardedBody is a reply body whose panics become read errors, closed
// with the handler's original body.
type guardedBody struct {
	r      io.Reader
	closer io.Reader // the body the handler returned, closed if io.Closer
}

func (b *guardedBody) Read(p []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, fmt.Errorf("panic while streaming the reply: %v", r)
		}
	}()
	return b.r.Read(p)
}

func (b *guardedBody) Close() error {
	closeBody(b.closer)
	return nil
}

// closeBody closes a body that is an io.Closer.
func closeBody(b io.Reader) {
	if c, ok := b.(io.Closer); ok {
		c.Close()
	}
}

func exceptionMsg(e *Exception) *pluginv1.Exception {
	return &pluginv1.Exception{Message: e.Message, Class: e.Class, Traceback: e.Traceback}
}
