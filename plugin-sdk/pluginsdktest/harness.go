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
	"sync"
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
	// PeerEvents says the plugin asked for peer events (OnPeer).
	PeerEvents bool
}

// Harness is a plugin served in the test process. Its methods are safe for
// concurrent use.
type Harness struct {
	client   pluginv1.PluginClient
	desc     Description
	stopOnce sync.Once
	stop     func()
}

// stopWait is how long the harness waits, when the test ends, for handlers
// to return after their events were canceled.
const stopWait = 10 * time.Second

// Start serves p and describes it, failing the test if that cannot be done.
// Everything is stopped by Close, which runs when the test ends.
func Start(t testing.TB, p *pluginsdk.Plugin, opts Options) *Harness {
	t.Helper()
	if opts.Node == (pluginsdk.Node{}) {
		opts.Node = pluginsdk.Node{Role: "server", Name: "server"}
	}
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	if err := p.RegisterGRPC(srv); err != nil {
		t.Fatalf("plugin cannot serve: %v", err)
	}
	ln, target, err := listen(t)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		<-served
		t.Fatalf("dial plugin: %v", err)
	}
	h := &Harness{client: pluginv1.NewPluginClient(conn)}
	h.stop = func() {
		conn.Close()
		stopped := make(chan struct{})
		go func() { defer close(stopped); srv.Stop(); <-served }()
		timer := time.NewTimer(stopWait)
		defer timer.Stop()
		select {
		case <-stopped:
		case <-timer.C:
			t.Errorf("pluginsdktest: a handler was still running %v after its event was canceled; a HandlerFunc must return once its ctx is done", stopWait)
		}
	}
	t.Cleanup(h.Close)
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
	h.desc = Description{Name: d.Name, Version: d.Version, Error: d.Error, PeerEvents: d.PeerEvents}
	for _, r := range d.Routes {
		h.desc.Routes = append(h.desc.Routes, r.Name)
	}
	return h
}

// listen listens on a Unix socket in a test directory, as go-plugin does,
// and returns the listener and its gRPC target. A socket path is limited to
// about 100 bytes, which a long test name under a long TMPDIR can exceed;
// then it listens on loopback TCP instead.
func listen(t testing.TB) (net.Listener, string, error) {
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	if len(sock) <= 100 {
		ln, err := net.Listen("unix", sock)
		return ln, "unix://" + sock, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	return ln, ln.Addr().String(), nil
}

// Close stops serving the plugin: it cancels every event still running and
// returns once their handlers have returned, failing the test if one has
// not 10 s later (a HandlerFunc must return once its context is done).
// Calls after the first do nothing.
func (h *Harness) Close() { h.stopOnce.Do(h.stop) }

// Describe returns what the plugin said about itself at start.
func (h *Harness) Describe() Description { return h.desc }

// PeerEvent delivers a peer event to the plugin's OnPeer hook, as a node
// does, and returns the hook's error.
func (h *Harness) PeerEvent(ctx context.Context, ev pluginsdk.PeerEvent) error {
	_, err := h.client.PeerEvent(ctx, &pluginv1.PeerEventRequest{
		Kind: ev.Kind, Peer: ev.Peer, Peers: int32(ev.Peers), Error: ev.Error, UnixNano: ev.Time.UnixNano(),
	})
	return err
}

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
	// Body is the request body, nil for none, sent as a node sends it:
	// inline when it is small and of known size, else in chunks. Size is
	// its length, -1 for unknown. A body that does not match the Size it
	// announced reaches the plugin as an incomplete body, except for a Size
	// left at 0: a Body that is not empty is then sent as of unknown
	// length.
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
	req.Size = max(req.Size, -1)
	if req.Body != nil && req.Size == 0 {
		// A Size left at 0 may be a forgotten one: an empty body goes as
		// empty, any other as of unknown length.
		var first [1]byte
		switch n, err := io.ReadFull(req.Body, first[:]); {
		case n == 1:
			req.Body, req.Size = io.MultiReader(bytes.NewReader(first[:]), req.Body), -1
		case err == io.EOF:
			req.Body = nil
		default:
			return nil, fmt.Errorf("read request body: %w", err)
		}
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
		// One byte more than announced tells a body of Size bytes, which
		// ReadFull ends with ErrUnexpectedEOF, from a longer one.
		b := make([]byte, req.Size+1)
		n, err := io.ReadFull(req.Body, b)
		if int64(n) != req.Size || err != io.ErrUnexpectedEOF {
			cancel()
			return nil, fmt.Errorf("read request body: announced %d bytes, read %d (%v)", req.Size, n, err)
		}
		b = b[:n]
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
		go func() { sendDone <- sendBody(stream, req.Body, req.Size) }()
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
			resp.Reader = &replyBody{stream: stream, cancel: cancel, sendDone: sendDone, want: r.BodySize}
		}
		return resp, nil
	default:
		cancel()
		<-sendDone
		return nil, errors.New("plugin answered without a header")
	}
}

// sendBody sends r, announced as size bytes (-1: unknown), in chunks and
// an end, as a node does. A body that fails or does not match its size ends
// with an error in the end.
func sendBody(stream pluginv1.Plugin_HandleClient, r io.Reader, size int64) error {
	fail := func(err error) error {
		_ = stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_End{End: &pluginv1.End{Error: err.Error()}}})
		return err
	}
	var sent int64
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			sent += int64(n)
			if size >= 0 && sent > size {
				return fail(fmt.Errorf("request body is longer than its announced %d bytes", size))
			}
			if serr := stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
		}
		switch {
		case err == io.EOF && size >= 0 && sent < size:
			return fail(fmt.Errorf("request body is %d bytes, shorter than its announced %d", sent, size))
		case err == io.EOF:
			if err := stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_End{End: &pluginv1.End{}}}); err != nil {
				return err
			}
			return stream.CloseSend()
		case err != nil:
			return fail(err)
		}
	}
}

// replyBody streams a reply body, making sure it is as long as the plugin
// announced.
type replyBody struct {
	stream   pluginv1.Plugin_HandleClient
	cancel   context.CancelFunc
	sendDone chan error
	want     int64 // announced size, -1 for unknown
	got      int64
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
			b.got += int64(len(m.Chunk))
			if b.want >= 0 && b.got > b.want {
				b.buf, b.err = nil, fmt.Errorf("reply body is longer than its announced %d bytes", b.want)
			}
		case *pluginv1.HandleResponse_End:
			switch {
			case m.End.Error != "":
				b.err = fmt.Errorf("reply body incomplete: %s", m.End.Error)
			case b.want >= 0 && b.got != b.want:
				b.err = fmt.Errorf("reply body is %d bytes, not its announced %d", b.got, b.want)
			default:
				b.err = io.EOF
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
