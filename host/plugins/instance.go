package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/restpipe/restpipe/host"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

const (
	// chunkSize is the size of the body chunks sent to a plugin.
	chunkSize = 64 << 10
	// inlineMax is the largest body of known size sent inside the header.
	inlineMax = 32 << 10
)

// handshake is what plugin processes must answer with.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  pluginv1.ProtocolVersion,
	MagicCookieKey:   pluginv1.MagicCookieKey,
	MagicCookieValue: pluginv1.MagicCookieValue,
}

// instance is one running process of a plugin file.
type instance struct {
	file     string // the plugin's file name, its identity
	version  []byte // the file version it runs (see Manager.scan)
	sum      []byte // sha256 of the binary it runs, for Status; nil if unreadable
	client   *plugin.Client
	runner   atomic.Pointer[procRunner] // set by go-plugin's start, read by a canceled start
	rpc      pluginv1.PluginClient
	desc     *pluginv1.DescribeResponse
	routes   []string
	debug    bool // keep tracebacks
	observer Observer

	mu       sync.Mutex
	inFlight int
	draining bool
	idle     chan struct{} // closed when draining and nothing is in flight

	// peers queues peer events for the plugin, delivered in order by
	// deliverPeers; nil unless the plugin asked for them.
	peers       chan *pluginv1.PeerEventRequest // guarded by mu for sending and closing
	peersClosed bool
	peersDone   chan struct{}
	peerCancel  context.CancelFunc // ends the hook call in progress
	killOnce    sync.Once
	log         hclog.Logger
}

// stopPeers ends peer event delivery: the hook call in progress is
// canceled and events still queued are dropped.
func (in *instance) stopPeers() {
	if in.peers == nil {
		return
	}
	in.mu.Lock()
	in.peersClosed = true
	close(in.peers)
	in.mu.Unlock()
	in.peerCancel()
}

// startInstance launches the plugin at path, connects to it and describes
// it. It returns once the plugin is ready for events or failed to be.
func (m *Manager) startInstance(ctx context.Context, path string, version []byte) (*instance, error) {
	started := time.Now()
	file := filepath.Base(path)
	log := m.log.Named(file)
	inst := &instance{file: file, version: version, debug: m.log.IsDebug(), observer: m.cfg.Observer, idle: make(chan struct{})}

	if m.cfg.Checksums != nil {
		// go-plugin's own check (SecureConfig) runs on the command it
		// builds, which a custom runner replaces; the same check runs
		// here, on the file as it is now, before every exec (a crash
		// restart too: the file may have been rewritten since the scan
		// hashed it).
		want, listed := m.cfg.Checksums[file]
		if !listed {
			return nil, fmt.Errorf("%w: %s is not in the checksum manifest", errPinned, file)
		}
		sum, err := hashFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errPinned, err)
		}
		if subtle.ConstantTimeCompare(sum, want) != 1 {
			return nil, fmt.Errorf("%w: sha256 of %s (%.6x...) does not match the checksum manifest (%.6x...)", errPinned, path, sum, want)
		}
		inst.sum = sum
	} else {
		// The sha256 shown in Status is computed on the other core while
		// the plugin starts, not before it.
		summed := make(chan struct{})
		go func() {
			defer close(summed)
			inst.sum, _ = hashFile(path)
		}()
		defer func() { <-summed }()
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugin.PluginSet{pluginv1.PluginName: &grpcPlugin{}},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// go-plugin hands the runner a command without a path, carrying
		// the environment it prepared (handshake cookie, mTLS certificate).
		RunnerFunc: func(l hclog.Logger, c *exec.Cmd, _ string) (runner.Runner, error) {
			cmd := exec.Command(path)
			cmd.Env = append(c.Env, pluginsdkLogLevel+"="+levelName(m.log))
			if m.cfg.GOMAXPROCS > 0 && os.Getenv("GOMAXPROCS") == "" {
				cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(m.cfg.GOMAXPROCS))
			}
			r, err := newProcRunner(l, cmd)
			if err != nil {
				return nil, err
			}
			inst.runner.Store(r)
			return r, nil
		},
		// With a RunnerFunc, go-plugin gives each plugin a private 0700
		// directory for its socket (removed when the plugin is killed):
		// what Config.AutoMTLS's default relies on.
		AutoMTLS:     m.cfg.AutoMTLS,
		StartTimeout: m.cfg.StartTimeout,
		// Flow control windows sized for streaming bodies, as the SDK's
		// server has them.
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithInitialWindowSize(1 << 20),
			grpc.WithInitialConnWindowSize(4 << 20),
		},
		Logger:     m.log,
		SyncStdout: newLineLogger(log, "stdout"),
		SyncStderr: newLineLogger(log, "stderr"),
	})
	inst.client = client

	// Starting cannot be interrupted by go-plugin itself; killing the
	// process makes it give up at once.
	stop := context.AfterFunc(ctx, func() {
		if r := inst.runner.Load(); r != nil {
			_ = r.Kill(context.Background())
		}
	})
	defer stop()

	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start: %w", err)
	}
	raw, err := rpcClient.Dispense(pluginv1.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("connect: %w", err)
	}
	inst.rpc = raw.(pluginv1.PluginClient)

	// One StartTimeout for launch, handshake and describe together.
	dctx, cancel := context.WithDeadline(ctx, started.Add(m.cfg.StartTimeout))
	defer cancel()
	desc, err := inst.rpc.Describe(dctx, &pluginv1.DescribeRequest{
		ProtocolVersion: pluginv1.ProtocolVersion,
		Node:            &pluginv1.Node{Role: string(m.cfg.Node.Role), Name: m.cfg.Node.Name},
		Config:          m.cfg.PluginConfig[file],
	})
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("describe: %w", err)
	}
	if err := checkDescription(desc); err != nil {
		client.Kill()
		if !errors.Is(err, errMisconfigured) {
			err = fmt.Errorf("%w: %w", errBadPlugin, err)
		}
		return nil, err
	}
	inst.desc = desc
	for _, r := range desc.Routes {
		inst.routes = append(inst.routes, r.Name)
	}
	inst.log = log
	if desc.PeerEvents {
		inst.peers = make(chan *pluginv1.PeerEventRequest, peerBacklog)
		inst.peersDone = make(chan struct{})
		var peerCtx context.Context
		peerCtx, inst.peerCancel = context.WithCancel(context.Background())
		go inst.deliverPeers(peerCtx)
	}
	return inst, nil
}

// peerBacklog bounds the peer events queued for a plugin; beyond it new
// ones are dropped (and logged).
const peerBacklog = 256

// peerEvent queues ev for the plugin, if it asked for peer events. It
// never blocks: a plugin that falls behind loses events.
func (in *instance) peerEvent(ev *pluginv1.PeerEventRequest) {
	if in.peers == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.peersClosed {
		return
	}
	select {
	case in.peers <- ev:
	default:
		in.observer.PeerHook(false)
		in.log.Warn("peer event dropped: the plugin's hook is behind", "kind", ev.Kind, "peer", ev.Peer, "backlog", peerBacklog)
	}
}

// deliverPeers calls the plugin's hook for each queued event, in order,
// until the queue is closed by kill.
func (in *instance) deliverPeers(base context.Context) {
	defer close(in.peersDone)
	for ev := range in.peers {
		if base.Err() != nil {
			continue // stopping: drop what is left
		}
		ctx, cancel := context.WithTimeout(base, 10*time.Second)
		_, err := in.rpc.PeerEvent(ctx, ev)
		cancel()
		in.observer.PeerHook(err == nil)
		if err != nil {
			in.log.Warn("peer hook failed", "kind", ev.Kind, "peer", ev.Peer, "error", err)
		}
	}
}

// Reasons a plugin is refused rather than retried at once.
var (
	// errMisconfigured marks a plugin that refused its configuration.
	errMisconfigured = errors.New("plugin refused its configuration")
	// errPinned marks a plugin whose checksum does not match the manifest.
	errPinned = errors.New("plugin refused by checksum pinning")
	// errBadPlugin marks a plugin whose description cannot be routed.
	errBadPlugin = errors.New("plugin description refused")
)

// pluginsdkLogLevel is the environment variable telling a plugin the node's
// log level (pluginsdk.LogLevelEnv; the host does not import the SDK).
const pluginsdkLogLevel = "RESTPIPE_PLUGIN_LOG_LEVEL"

// checkDescription refuses a description the host cannot route by.
func checkDescription(d *pluginv1.DescribeResponse) error {
	if d.ProtocolVersion != pluginv1.ProtocolVersion {
		return fmt.Errorf("plugin speaks plugin protocol %d, this node %d", d.ProtocolVersion, pluginv1.ProtocolVersion)
	}
	if d.Error != "" {
		return fmt.Errorf("%w: %s", errMisconfigured, d.Error)
	}
	if len(d.Routes) == 0 {
		return errors.New("plugin serves no route")
	}
	seen := map[string]bool{}
	for _, r := range d.Routes {
		if err := host.CheckVerb(r.Verb); err != nil {
			return fmt.Errorf("route %q: %w", r.Name, err)
		}
		if err := host.CheckNoun(r.Noun); err != nil {
			return fmt.Errorf("route %q: %w", r.Name, err)
		}
		if want := host.RouteName(r.Verb, r.Noun); r.Name != want {
			return fmt.Errorf("route %q should be named %q", r.Name, want)
		}
		if seen[r.Name] {
			return fmt.Errorf("route %q declared twice", r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// exited is closed when the plugin process has exited.
func (in *instance) exited() <-chan struct{} { return in.runner.Load().exited }

// pid returns the plugin process id.
func (in *instance) pid() int { return int(in.runner.Load().pid.Load()) }

// acquire counts one more event in flight, unless the instance drains.
func (in *instance) acquire() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.draining {
		return false
	}
	in.inFlight++
	return true
}

func (in *instance) release() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.inFlight--
	if in.draining && in.inFlight == 0 {
		close(in.idle)
	}
}

// drain refuses new events and returns a channel closed once the events in
// flight have finished.
func (in *instance) drain() <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.draining {
		in.draining = true
		if in.inFlight == 0 {
			close(in.idle)
		}
	}
	return in.idle
}

// kill stops the process: gracefully if it answers, by force otherwise.
// Peer events still queued are dropped.
func (in *instance) kill() {
	in.killOnce.Do(in.stopPeers)
	in.client.Kill()
	if r := in.runner.Load(); r != nil {
		_ = r.Kill(context.Background())
		<-r.exited
	}
	if in.peersDone != nil {
		<-in.peersDone
	}
}

// handle sends ev to the plugin. The caller has acquired the instance;
// handle releases it when the event ends (on error, or when the reply body
// is closed). An event whose body is empty or small goes by Call (one round
// trip), any other by a Handle stream.
func (in *instance) handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	ctx, cancel := context.WithCancel(ctx)
	e := &event{in: in, ctx: ctx, cancel: cancel, body: ev.Body}
	hdr := headerFromEvent(ev)
	if ev.Body != nil && ev.Size >= 0 && ev.Size <= inlineMax {
		b := make([]byte, ev.Size)
		if _, err := io.ReadFull(ev.Body, b); err != nil {
			return nil, e.fail(host.Wrap(host.KindBadRequest, err, "read request body"))
		}
		hdr.BodyInline, hdr.InlineBody = true, b
	}
	if in.desc.Call && (hdr.BodyInline || hdr.BodySize == 0) {
		return e.call(hdr)
	}

	stream, err := in.rpc.Handle(ctx)
	if err != nil {
		return nil, e.fail(err)
	}
	e.recv, e.send = stream.Recv, stream
	if err := stream.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_Header{Header: hdr}}); err != nil {
		return nil, e.fail(err)
	}
	if hdr.BodySize != 0 && !hdr.BodyInline {
		e.sent = make(chan struct{})
		go e.sendBody(ev.Body)
	} else if err := stream.CloseSend(); err != nil {
		return nil, e.fail(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, e.fail(err)
	}
	switch m := first.Msg.(type) {
	case *pluginv1.HandleResponse_Failure:
		return nil, e.fail(failureError(in.file, m.Failure, in.debug))
	case *pluginv1.HandleResponse_Header:
		return e.reply(m.Header), nil
	default:
		return nil, e.fail(host.Errorf(host.KindPluginUnavailable, "plugin %s answered without a reply header", in.file))
	}
}

// call sends an event whose body is empty or inline with Call, and fetches
// the reply body when the plugin ticketed it.
func (e *event) call(hdr *pluginv1.EventHeader) (*host.Reply, error) {
	resp, err := e.in.rpc.Call(e.ctx, &pluginv1.CallRequest{Header: hdr})
	if err != nil {
		return nil, e.fail(err)
	}
	switch r := resp.Result.(type) {
	case *pluginv1.CallResponse_Failure:
		return nil, e.fail(failureError(e.in.file, r.Failure, e.in.debug))
	case *pluginv1.CallResponse_Reply:
		if resp.Ticket != 0 && !r.Reply.BodyInline {
			fetch, err := e.in.rpc.Fetch(e.ctx, &pluginv1.FetchRequest{Ticket: resp.Ticket})
			if err != nil {
				return nil, e.fail(err)
			}
			e.recv = fetch.Recv
		}
		return e.reply(r.Reply), nil
	default:
		return nil, e.fail(host.Errorf(host.KindPluginUnavailable, "plugin %s answered without a reply", e.in.file))
	}
}

// reply builds the Reply a reply header describes; its body reads the rest
// of the event.
func (e *event) reply(r *pluginv1.ReplyHeader) *host.Reply {
	rep := &host.Reply{Status: int(r.Status), Code: int(r.ReturnCode), ContentType: r.ContentType, Size: r.BodySize}
	switch {
	case r.BodyInline:
		rep.Size = int64(len(r.InlineBody))
		rep.Body = &inlineBody{Reader: bytes.NewReader(r.InlineBody), e: e}
	case r.BodySize == 0 || e.recv == nil:
		rep.Size = 0
		e.finish()
	default:
		e.want = r.BodySize
		rep.Body = e
	}
	return rep
}

// event is one event in flight to a plugin; it is the reply body reader.
type event struct {
	in     *instance
	ctx    context.Context
	cancel context.CancelFunc
	// send is the Handle stream the request body goes on (nil for Call);
	// recv reads the reply's messages, from that stream or from Fetch.
	send pluginv1.Plugin_HandleClient
	recv func() (*pluginv1.HandleResponse, error)
	body io.Reader     // the request body
	sent chan struct{} // closed when sendBody returns; nil without it

	buf  []byte // unread part of the current reply chunk
	got  int64  // reply bytes read
	want int64  // announced reply size, -1 unknown
	err  error  // sticky read error

	once sync.Once
}

// sendBody streams the request body to the plugin, then ends it.
func (e *event) sendBody(body io.Reader) {
	defer close(e.sent)
	buf := make([]byte, chunkSize)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if serr := e.send.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				return // the plugin stopped listening: its reply tells why
			}
		}
		if err != nil {
			end := &pluginv1.End{}
			if err != io.EOF {
				end.Error = err.Error()
			}
			if e.send.Send(&pluginv1.HandleRequest{Msg: &pluginv1.HandleRequest_End{End: end}}) == nil {
				_ = e.send.CloseSend()
			}
			return
		}
	}
}

// Read reads the reply body.
func (e *event) Read(p []byte) (int, error) {
	for len(e.buf) == 0 {
		if e.err != nil {
			return 0, e.err
		}
		msg, err := e.recv()
		if err != nil {
			e.err = e.streamError(err)
			return 0, e.err
		}
		switch m := msg.Msg.(type) {
		case *pluginv1.HandleResponse_Chunk:
			e.buf = m.Chunk
			e.got += int64(len(m.Chunk))
			if e.want >= 0 && e.got > e.want {
				e.err = host.Errorf(host.KindHandlerFailed, "plugin %s sent more than the %d bytes it announced", e.in.file, e.want)
				return 0, e.err
			}
		case *pluginv1.HandleResponse_End:
			switch {
			case m.End.Error != "":
				e.err = host.Errorf(host.KindHandlerFailed, "plugin %s could not finish its reply: %s", e.in.file, m.End.Error)
			case e.want >= 0 && e.got != e.want:
				e.err = host.Errorf(host.KindHandlerFailed, "plugin %s sent %d bytes of the %d it announced", e.in.file, e.got, e.want)
			default:
				e.err = io.EOF
			}
		default:
			e.err = host.Errorf(host.KindPluginUnavailable, "plugin %s broke the protocol mid-reply", e.in.file)
		}
	}
	n := copy(p, e.buf)
	e.buf = e.buf[n:]
	return n, nil
}

// Close ends the event.
func (e *event) Close() error {
	e.finish()
	return nil
}

// fail ends the event and returns err as an *host.Error.
func (e *event) fail(err error) error {
	he := e.streamError(err)
	e.finish()
	return he
}

// finish releases the event, once: it cancels the call (closing the gRPC
// stream), stops the body sender and gives the instance back.
func (e *event) finish() {
	e.once.Do(func() {
		e.cancel()
		if e.sent != nil {
			select {
			case <-e.sent:
			default:
				if c, ok := e.body.(io.Closer); ok {
					_ = c.Close() // wake a sender waiting for the caller's bytes
				}
				<-e.sent
			}
		}
		e.in.release()
	})
}

// streamError turns a failure of the call into an *host.Error.
func (e *event) streamError(err error) error {
	var he *host.Error
	if errors.As(err, &he) {
		return he
	}
	if ctxErr := e.ctx.Err(); ctxErr != nil {
		// Our own cancel (finish) also ends ctx: report the caller's reason.
		if cause := context.Cause(e.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return host.AsError(cause)
		}
		return host.AsError(ctxErr)
	}
	// From here on our context is live: a Canceled or Unavailable code means
	// the connection to the plugin broke (it died, or go-plugin closed it).
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.NotFound:
		return host.Errorf(host.KindNoRoute, "%s", st.Message())
	case codes.DeadlineExceeded:
		return host.Errorf(host.KindTimeout, "the event's deadline passed in plugin %s", e.in.file)
	case codes.FailedPrecondition:
		return host.Errorf(host.KindPluginUnavailable, "%s", st.Message())
	}
	return &host.Error{Kind: host.KindPluginUnavailable, Err: err,
		Message: fmt.Sprintf("plugin %s failed during the event (it crashed or closed the connection): %s", e.in.file, st.Message())}
}

// inlineBody is a reply body that arrived whole in the reply header.
type inlineBody struct {
	*bytes.Reader
	e *event
}

func (b *inlineBody) Close() error {
	b.e.finish()
	return nil
}

// grpcPlugin gives go-plugin the client side of the plugin protocol.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the host never serves the plugin protocol")
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pluginv1.NewPluginClient(c), nil
}

// hashFile returns the sha256 of the file at path.
func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// shortHash is the first 12 hex digits of a hash, for logs.
func shortHash(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 12 {
		s = s[:12]
	}
	return s
}

// levelName is the name of a logger's level, for the plugin's environment.
func levelName(l hclog.Logger) string {
	return l.GetLevel().String()
}
