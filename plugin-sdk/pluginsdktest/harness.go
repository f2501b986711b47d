// Package pluginsdktest runs a restpipe plugin inside a test: the plugin's
// gRPC service is served in the test process on a Unix socket and called
// over a real gRPC connection, exactly as a node calls a plugin process,
// without a node or a plugin binary.
//
//	func TestTime(t *testing.T) {
//		h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
//		resp := h.Get(t, "time")
//		...
//	}
package pluginsdktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// Options are what a node would tell the plugin.
type Options struct {
	// Node is the node the plugin believes it runs on. Default: role
	// "server", name "server".
	Node pluginsdk.Node
	// Config is the plugin's configuration.
	Config pluginsdk.Config
}

// Description is what the plugin said about itself.
type Description struct {
	Name, Version string
	Routes        []string
	// Error is the plugin's reason not to serve (a Configure error), or "".
	Error string
}

// Harness is a plugin served in the test process.
type Harness struct {
	client pluginv1.PluginClient
	desc   Description
}

// Start serves p and describes it, failing the test if that cannot be done.
// Everything is stopped when the test ends.
func Start(t testing.TB, p *pluginsdk.Plugin, opts Options) *Harness {
	t.Helper()
	if opts.Node == (pluginsdk.Node{}) {
		opts.Node = pluginsdk.Node{Role: "server", Name: "server"}
	}
	srv := grpc.NewServer()
	if err := p.RegisterGRPC(srv); err != nil {
		t.Fatalf("plugin cannot serve: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial plugin: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-served
	})
	h := &Harness{client: pluginv1.NewPluginClient(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := h.client.Describe(ctx, &pluginv1.DescribeRequest{
		ProtocolVersion: pluginv1.ProtocolVersion,
		Node:            &pluginv1.Node{Role: opts.Node.Role, Name: opts.Node.Name},
		Config:          opts.Config,
	})
	if err != nil {
		t.Fatalf("describe: %v", err)
	}
	h.desc = Description{Name: d.Name, Version: d.Version, Error: d.Error}
	for _, r := range d.Routes {
		h.desc.Routes = append(h.desc.Routes, r.Name)
	}
	return h
}

// Describe returns what the plugin said about itself at start.
func (h *Harness) Describe() Description { return h.desc }

// inlineMax is the largest body a node sends inside the event header.
const inlineMax = 32 << 10

// Request is an event to send to the plugin.
type Request struct {
	ID          string
	Verb        string // default "get"
	Noun        string
	Args        []string
	Query       map[string][]string
	ContentType string
	// Body is the request body, nil for none, sent in chunks as a node
	// sends it. Size is its length, -1 for unknown.
	Body io.Reader
	Size int64
	// Peer is the verified name of the sending node the plugin sees.
	Peer string
}

// Response is the plugin's answer.
type Response struct {
	Status      int // 0 means the handler left it at 200
	Code        int
	ContentType string
	Size        int64
	// Body is the whole reply body, for Call.
	Body []byte
	// Reader streams the reply body, for Open; the caller closes it.
	Reader io.ReadCloser
	// Exception is set when the handler returned an error or panicked.
	Exception *pluginsdk.Exception
}

// Call sends req and reads the whole reply. A handler failure is returned
// as a Response with Exception set, not as an error; errors are protocol
// or transport failures (such as a route the plugin does not serve).
func (h *Harness) Call(ctx context.Context, req Request) (*Response, error) {
	resp, err := h.Open(ctx, req)
	if err != nil || resp.Reader == nil {
		return resp, err
	}
	defer resp.Reader.Close()
	resp.Body, err = io.ReadAll(resp.Reader)
	resp.Reader = nil
	return resp, err
}

// Get calls verb get on noun with args, failing the test on any error
// other than a handler failure.
func (h *Harness) Get(t testing.TB, noun string, args ...string) *Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Call(ctx, Request{Verb: "get", Noun: noun, Args: args})
	if err != nil {
		t.Fatalf("get %s %v: %v", noun, args, err)
	}
	return resp
}

// Open sends req and returns once the reply header has arrived; the reply
// body streams from Response.Reader, which the caller must close. Closing it
// early cancels the event.
func (h *Harness) Open(ctx context.Context, req Request) (*Response, error) {
	if req.Verb == "" {
		req.Verb = "get"
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := h.client.Handle(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	hdr := &pluginv1.EventHeader{
		Id: req.ID, Verb: req.Verb, Noun: req.Noun, Args: req.Args,
		ContentType: req.ContentType, BodySize: req.Size, Peer: req.Peer,
	}
	for k, vs := range req.Query {
		if hdr.Query == nil {
			hdr.Query = map[string]*pluginv1.Values{}
		}
		hdr.Query[k] = &pluginv1.Values{Values: vs}
	}
	sendDone := make(chan error, 1)
	if req.Body != nil && req.Size >= 0 && req.Size <= inlineMax {
		// Small bodies travel inside the header, as a node sends them.
		b := make([]byte, req.Size)
		if _, err := io.ReadFull(req.Body, b); err != nil {
			cancel()
			return nil, fmt.Errorf("read request body: %w", err)
		}
		hdr.BodyInline, hdr.InlineBody = true, b
		req.Body = nil
	}
	if req.Body == nil {
		if !hdr.BodyInline {
			hdr.BodySize = 0
		}
		sendDone <- stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_Header{Header: hdr}})
	} else {
		if err := stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_Header{Header: hdr}}); err != nil {
			cancel()
			return nil, err
		}
		go func() { sendDone <- sendBody(stream, req.Body) }()
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		<-sendDone
		return nil, err
	}
	resp := &Response{}
	switch m := first.Msg.(type) {
	case *pluginv1.HandleResponse_Failure:
		cancel()
		<-sendDone
		resp.Exception = &pluginsdk.Exception{Message: m.Failure.Message, Class: m.Failure.Class, Traceback: m.Failure.Traceback}
		return resp, nil
	case *pluginv1.HandleResponse_Header:
		r := m.Header
		resp.Status, resp.Code, resp.ContentType, resp.Size = int(r.Status), int(r.ReturnCode), r.ContentType, r.BodySize
		switch {
		case r.BodyInline:
			cancel()
			<-sendDone
			resp.Reader = io.NopCloser(bytes.NewReader(r.InlineBody))
		case r.BodySize == 0:
			cancel()
			<-sendDone
		default:
			resp.Reader = &replyBody{stream: stream, cancel: cancel, sendDone: sendDone}
		}
		return resp, nil
	default:
		cancel()
		<-sendDone
		return nil, errors.New("plugin answered without a header")
	}
}

// sendBody sends r in chunks and an end, as a node does.
func sendBody(stream pluginv1.Plugin_HandleClient, r io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
		}
		if err == io.EOF {
			if err := stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_End{End: &pluginv1.End{}}}); err != nil {
				return err
			}
			return stream.CloseSend()
		}
		if err != nil {
			_ = stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_End{End: &pluginv1.End{Error: err.Error()}}})
			return err
		}
	}
}

// replyBody streams a reply body.
type replyBody struct {
	stream   pluginv1.Plugin_HandleClient
	cancel   context.CancelFunc
	sendDone chan error
	buf      []byte
	err      error
}

func (b *replyBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		msg, err := b.stream.Recv()
		if err != nil {
			b.err = fmt.Errorf("reply body: %w", err)
			return 0, b.err
		}
		switch m := msg.Msg.(type) {
		case *pluginv1.HandleResponse_Chunk:
			b.buf = m.Chunk
		case *pluginv1.HandleResponse_End:
			b.err = io.EOF
			if m.End.Error != "" {
				b.err = fmt.Errorf("reply body incomplete: %s", m.End.Error)
			}
		default:
			b.err = errors.New("reply body: unexpected message")
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// Close ends the event.
func (b *replyBody) Close() error {
	b.cancel()
	<-b.sendDone
	return nil
}
