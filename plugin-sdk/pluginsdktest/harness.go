// Package pluginsdktest runs a restpipe plugin inside a test, without a
// node or a plugin binary, over exactly the path a node uses: the plugin's
// control service over real gRPC on a Unix socket, and its events over its
// event socket, sent by the node's own event client (plugin-sdk/eventpath).
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
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
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
	control  pluginv1.PluginClient
	events   *eventpath.Client
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
	dir := socketDir(t)
	srv := grpc.NewServer()
	closeEvents, err := p.RegisterGRPC(srv, dir)
	if err != nil {
		t.Fatalf("plugin cannot serve: %v", err)
	}
	sock := filepath.Join(dir, "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		_ = closeEvents()
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		<-served
		_ = closeEvents()
		t.Fatalf("dial plugin: %v", err)
	}
	h := &Harness{control: pluginv1.NewPluginClient(conn)}
	h.stop = func() {
		if h.events != nil {
			h.events.Close()
		}
		// Closing the event socket cancels the events still running; then
		// their handlers must return.
		_ = closeEvents()
		deadline := time.Now().Add(stopWait)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := h.control.Stats(ctx, &pluginv1.StatsRequest{})
			cancel()
			if err != nil || st.Running == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("pluginsdktest: %d handlers were still running %v after their events were canceled; a HandlerFunc must return once its ctx is done", st.Running, stopWait)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		conn.Close()
		srv.Stop()
		<-served
	}
	t.Cleanup(h.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := h.control.Describe(ctx, &pluginv1.DescribeRequest{
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
	h.events = eventpath.NewClient(d.EventSocket, 0)
	return h
}

// socketDir returns a private directory for the plugin's sockets: the
// test's own, unless its path is too long for a Unix socket (about 100
// bytes), then one under /tmp removed when the test ends.
func socketDir(t testing.TB) string {
	dir := t.TempDir()
	if len(dir)+len("/control.sock") <= 100 {
		return dir
	}
	dir, err := os.MkdirTemp("/tmp", "rp-")
	if err != nil {
		t.Fatalf("make a socket directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Close stops serving the plugin: it cancels every event still running and
// returns once their handlers have returned, failing the test if one has
// not 10 s later (a HandlerFunc must return once its context is done).
// Calls after the first do nothing.
func (h *Harness) Close() { h.stopOnce.Do(h.stop) }

// Describe returns what the plugin said about itself at start.
func (h *Harness) Describe() Description { return h.desc }

// Stats returns how many of the plugin's handlers run now and how many of
// those were abandoned, as the node sees them.
func (h *Harness) Stats(ctx context.Context) (running, abandoned int64, err error) {
	st, err := h.control.Stats(ctx, &pluginv1.StatsRequest{})
	if err != nil {
		return 0, 0, err
	}
	return st.Running, st.Abandoned, nil
}

// PeerEvent delivers a peer event to the plugin's OnPeer hook, as a node
// does, and returns the hook's error.
func (h *Harness) PeerEvent(ctx context.Context, ev pluginsdk.PeerEvent) error {
	_, err := h.control.PeerEvent(ctx, &pluginv1.PeerEventRequest{
		Kind: ev.Kind, Peer: ev.Peer, Peers: int32(ev.Peers), Error: ev.Error, UnixNano: ev.Time.UnixNano(),
	})
	return err
}

// Request is an event to send to the plugin.
type Request struct {
	ID          string
	Verb        string // default "get"
	Noun        string
	Args        []string
	Query       map[string][]string
	ContentType string
	// Body is the request body, nil for none, sent as a node sends it.
	// Size is its length, -1 for unknown. A body that does not match the
	// Size it announced reaches the plugin as a failed body, except for a
	// Size left at 0: a Body that is not empty is then sent as of unknown
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
// or transport failures.
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
	hdr := &pluginv1.EventHeader{
		Id: req.ID, Verb: req.Verb, Noun: req.Noun, Args: req.Args,
		ContentType: req.ContentType, Peer: req.Peer,
	}
	for k, vs := range req.Query {
		if hdr.Query == nil {
			hdr.Query = map[string]*pluginv1.Values{}
		}
		hdr.Query[k] = &pluginv1.Values{Values: vs}
	}
	ctx, cancel := context.WithCancel(ctx)
	rep, err := h.events.Do(ctx, hdr, req.Body, req.Size)
	if err != nil {
		cancel()
		return nil, err
	}
	resp := &Response{}
	if f := rep.Header.Failure; f != nil {
		rep.Close()
		cancel()
		if rep.Header.Refused != "" {
			return nil, fmt.Errorf("plugin refused the event (%s): %s", rep.Header.Refused, f.Message)
		}
		resp.Exception = &pluginsdk.Exception{Message: f.Message, Class: f.Class, Traceback: f.Traceback}
		return resp, nil
	}
	r := rep.Header
	resp.Status, resp.Code, resp.ContentType, resp.Size = int(r.Status), int(r.ReturnCode), r.ContentType, r.BodySize
	resp.Reader = &replyBody{rep: rep, cancel: cancel}
	return resp, nil
}

// replyBody streams a reply body; closing it ends the event.
type replyBody struct {
	rep    *eventpath.Reply
	cancel context.CancelFunc
}

func (b *replyBody) Read(p []byte) (int, error) {
	n, err := b.rep.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("reply body: %w", err)
	}
	return n, err
}

func (b *replyBody) Close() error {
	err := b.rep.Close()
	b.cancel()
	return err
}
