package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
)

// Peers finds the node an event is addressed to. On a client node name is
// always "" (the server); on the server it is a client's name. Peer waits
// for the peer to connect until ctx ends, then returns an error.
type Peers interface {
	Peer(ctx context.Context, name string) (host.Handler, error)
}

// Observer is told about every event the gateway answered.
// Implementations must be fast and safe for concurrent use.
type Observer interface {
	ObserveEvent(ev host.EventRecord)
}

// Config configures a Gateway.
type Config struct {
	// Node is this node: its role decides which of /server/ and
	// /client/<name>/ it serves.
	Node host.Node
	// Local answers /local/... events: the node's own route table.
	Local host.Handler
	// Peers reaches the other side. Required.
	Peers Peers
	// Logger receives a line per event at debug level, and problems.
	Logger hclog.Logger

	// DefaultTimeout is an event's deadline when the request has no
	// X-Event-Timeout header. Default 30s.
	DefaultTimeout time.Duration
	// PeerWait bounds the wait for a peer that is not connected (never
	// past the event's deadline). Default 10s.
	PeerWait time.Duration
	// MaxBody bounds a request body in bytes; 0 means no limit. Beyond it
	// the event fails with too_large.
	MaxBody int64

	// Observer, when set, is told about every event answered.
	Observer Observer

	// Status, when set, answers GET /status with its JSON encoding.
	Status func() any
	// Metrics, when set, answers /metrics.
	Metrics http.Handler
	// UI, when set, answers /ui and every path under /ui/: the status
	// page (host/ui). It gets the request's path as it came.
	UI http.Handler
}

// DefaultConfig returns a Config with every default set; the caller adds
// Node, Local and Peers (and the optional handlers).
func DefaultConfig() Config {
	return Config{Logger: hclog.NewNullLogger(), DefaultTimeout: 30 * time.Second, PeerWait: 10 * time.Second}
}

// WithDefaults returns c with every zero field set to its default (see
// DefaultConfig).
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = d.DefaultTimeout
	}
	if c.PeerWait == 0 {
		c.PeerWait = d.PeerWait
	}
	return c
}

// Validate reports what cannot work, counting zero fields as their
// defaults. It changes nothing.
func (c Config) Validate() error {
	switch {
	case c.Local == nil || c.Peers == nil:
		return errors.New("gateway: Local and Peers are required")
	case c.Node.Role != host.RoleServer && c.Node.Role != host.RoleClient:
		return fmt.Errorf("gateway: unknown node role %q", c.Node.Role)
	case c.DefaultTimeout < 0 || c.PeerWait < 0 || c.MaxBody < 0:
		return errors.New("gateway: timeouts and limits must be positive")
	}
	return nil
}

// Gateway is the http.Handler of a node's local REST API. It holds nothing
// long-lived: every request is served by its own goroutine (net/http's).
type Gateway struct {
	cfg    Config
	log    hclog.Logger
	events drain.Counter // local events being served
}

// New returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Gateway{cfg: cfg, log: cfg.Logger}, nil
}

// Drain makes the gateway refuse new events with peer_unavailable (503)
// while the ones in flight finish; /healthz then answers 503 too. The
// listener stays open, so callers get that answer rather than a refused
// connection. See WaitIdle.
func (g *Gateway) Drain() { g.events.Drain() }

// WaitIdle waits until no event is in flight through the gateway, or ctx
// ends. Call Drain first.
func (g *Gateway) WaitIdle(ctx context.Context) error {
	select {
	case <-g.events.Idle():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d local events still in flight: %w", g.events.InFlight(), ctx.Err())
	}
}

// InFlight returns the number of events being served.
func (g *Gateway) InFlight() int { return g.events.InFlight() }

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.cfg.UI != nil && isUIPath(r.URL.Path) {
		w.Header().Set(host.HeaderReturnCode, "0")
		g.cfg.UI.ServeHTTP(w, r)
		return
	}
	switch r.URL.Path {
	case "/healthz":
		g.serveHealth(w)
		return
	case "/status":
		if g.cfg.Status != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set(host.HeaderReturnCode, "0")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(g.cfg.Status())
			return
		}
	case "/metrics":
		if g.cfg.Metrics != nil {
			w.Header().Set(host.HeaderReturnCode, "0")
			g.cfg.Metrics.ServeHTTP(w, r)
			return
		}
	}
	g.serveEvent(w, r)
}

// isUIPath reports whether path is the status page's: /ui or under /ui/.
func isUIPath(path string) bool {
	return path == "/ui" || strings.HasPrefix(path, "/ui/")
}

func (g *Gateway) serveHealth(w http.ResponseWriter) {
	if g.events.Draining() {
		g.writeError(w, host.Errorf(host.KindPeerUnavailable, "this node is shutting down"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(host.HeaderReturnCode, "0")
	fmt.Fprintln(w, `{"status":"ok"}`)
}

// verbs maps the accepted methods to event verbs.
var verbs = map[string]string{
	http.MethodGet: "get", http.MethodHead: "get", http.MethodPost: "post",
	http.MethodPut: "put", http.MethodPatch: "patch", http.MethodDelete: "delete",
}

// serveEvent turns a request into an event, sends it, and writes the reply.
func (g *Gateway) serveEvent(w http.ResponseWriter, r *http.Request) {
	rec := &record{start: time.Now(), id: requestID(r)}
	defer g.done(r, rec)
	w.Header().Set(host.HeaderRequestID, rec.id)
	ev, tgt, timeout, err := g.parse(r, rec.id)
	if err != nil {
		rec.err = err
		g.writeError(w, err)
		return
	}
	rec.route, rec.peer = ev.Route(), peerLabel(tgt)
	if _, ok := g.events.Enter(); !ok {
		rec.err = host.Errorf(host.KindPeerUnavailable, "this node is shutting down")
		g.writeError(w, rec.err)
		return
	}
	defer g.events.Leave()
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	var body *requestBody
	if r.ContentLength != 0 {
		rc := http.NewResponseController(w)
		// Read the request while the reply streams back (echo).
		_ = rc.EnableFullDuplex()
		body = &requestBody{r: r.Body, rc: rc, max: g.cfg.MaxBody}
		rec.body = body
		if g.cfg.MaxBody > 0 && r.ContentLength > g.cfg.MaxBody {
			rec.err = host.Errorf(host.KindTooLarge, "request body of %d bytes is over the %d-byte limit", r.ContentLength, g.cfg.MaxBody)
			body.discard(w)
			g.writeError(w, rec.err)
			return
		}
		ev.Body, ev.Size = body, r.ContentLength
	}

	rep, err := g.send(ctx, tgt, ev, body)
	if body.overLimit() {
		// The handler saw the body fail; the caller's problem is its size.
		rep.Close()
		err = host.Errorf(host.KindTooLarge, "request body is over the %d-byte limit", g.cfg.MaxBody)
		body.discard(w)
	}
	if err != nil {
		if host.KindOf(err) == host.KindCanceled && r.Context().Err() == nil {
			err = host.AsError(context.DeadlineExceeded) // our deadline, not the caller
		}
		if host.KindOf(err) == host.KindTimeout {
			e := *host.AsError(err)
			e.Message = fmt.Sprintf("no reply within %v: %s", timeout, e.Message)
			err = &e
		}
		rec.err = err
		g.writeError(w, err)
		return
	}
	defer rep.Close()
	rec.out = g.writeReply(w, r, rep)
}

// record is what the gateway notes about an event while serving it.
type record struct {
	start       time.Time
	id          string
	route, peer string
	err         error
	body        *requestBody // nil without a request body
	out         int64        // reply body bytes written
}

// peerLabel names an event's destination in logs and metrics.
func peerLabel(t target) string {
	switch t.kind {
	case toLocal:
		return "local"
	case toServer:
		return "server"
	}
	return t.peer
}

// done logs an event (at debug level) and reports it to the observer.
func (g *Gateway) done(r *http.Request, rec *record) {
	d := time.Since(rec.start)
	var in int64
	if rec.body != nil {
		in = rec.body.n.Load()
	}
	kind := host.KindOf(rec.err)
	if g.cfg.Observer != nil {
		er := host.EventRecord{ID: rec.id, Route: rec.route, Peer: rec.peer, Kind: kind, Duration: d, BytesIn: in, BytesOut: rec.out}
		if kind != "" {
			er.Message = host.AsError(rec.err).Message
		}
		g.cfg.Observer.ObserveEvent(er)
	}
	if !g.log.IsDebug() {
		return
	}
	args := []any{"request_id", rec.id, "method", r.Method, "path", r.URL.Path, "route", rec.route, "peer", rec.peer,
		"duration", d, "bytes_in", in, "bytes_out", rec.out}
	if rec.err == nil {
		g.log.Debug("event", args...)
		return
	}
	g.log.Debug("event failed", append(args, "kind", kind, "error", rec.err)...)
}

// parse builds the event a request describes.
func (g *Gateway) parse(r *http.Request, id string) (*host.Event, target, time.Duration, error) {
	verb, ok := verbs[r.Method]
	if !ok {
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "method %s is not one of GET, HEAD, POST, PUT, PATCH, DELETE", r.Method)
	}
	tgt, err := parsePath(r.URL.EscapedPath())
	if err != nil {
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "%v", err)
	}
	switch {
	case tgt.kind == toServer && g.cfg.Node.Role != host.RoleClient:
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "this is the server node: address a client with /client/<name>/...")
	case tgt.kind == toClient && g.cfg.Node.Role != host.RoleServer:
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "this is a client node: address the server with /server/...")
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "query string: %v", err)
	}
	if err := checkUTF8(query); err != nil {
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "query string: %v", err)
	}
	if ct := r.Header.Get("Content-Type"); !utf8.ValidString(ct) || len(ct) > maxContentType {
		return nil, target{}, 0, host.Errorf(host.KindBadRequest, "Content-Type must be UTF-8 text of at most %d bytes", maxContentType)
	}
	timeout := g.cfg.DefaultTimeout
	if v := r.Header.Get(host.HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, target{}, 0, host.Errorf(host.KindBadRequest, "%s %q: want a positive Go duration such as 2s or 500ms", host.HeaderTimeout, v)
		}
		timeout = d
	}
	ev := &host.Event{
		ID:          id,
		Verb:        verb,
		Noun:        tgt.noun,
		Args:        tgt.args,
		Query:       query,
		ContentType: mediaType(r.Header.Get("Content-Type")),
	}
	return ev, tgt, timeout, nil
}

// send delivers ev to its target, waiting for an absent peer. An event
// refused with peer_unavailable before any of its body was read is sent
// again to the next link to that peer, while the wait allows.
func (g *Gateway) send(ctx context.Context, tgt target, ev *host.Event, body *requestBody) (*host.Reply, error) {
	if tgt.kind == toLocal {
		return g.cfg.Local.Handle(ctx, ev)
	}
	waitCtx, cancel := context.WithTimeout(ctx, g.cfg.PeerWait)
	defer cancel()
	start := time.Now()
	for {
		peer, err := g.cfg.Peers.Peer(waitCtx, tgt.peer)
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, host.AsError(context.Canceled) // the caller left
			}
			return nil, &host.Error{Kind: host.KindPeerUnavailable, Err: err, Message: absent(tgt, time.Since(start))}
		}
		rep, err := peer.Handle(ctx, ev)
		if errors.Is(err, host.ErrNotDelivered) && (body == nil || body.n.Load() == 0) && waitCtx.Err() == nil {
			continue // that link closed before the event left: wait for the next
		}
		return rep, err
	}
}

// absent describes a peer that did not connect in time.
func absent(t target, waited time.Duration) string {
	waited = waited.Round(100 * time.Millisecond)
	if t.kind == toServer {
		return fmt.Sprintf("the link to the server is down (waited %v)", waited)
	}
	return fmt.Sprintf("no client named %q is connected (waited %v)", t.peer, waited)
}

// writeReply writes a handler's reply: its status, return code, content
// type and body, streamed. It returns the body bytes written.
func (g *Gateway) writeReply(w http.ResponseWriter, r *http.Request, rep *host.Reply) int64 {
	h := w.Header()
	h.Set(host.HeaderReturnCode, strconv.Itoa(rep.Code))
	if rep.ContentType != "" {
		h.Set("Content-Type", rep.ContentType)
	}
	if rep.Size >= 0 && rep.Body != nil {
		h.Set("Content-Length", strconv.FormatInt(rep.Size, 10))
	} else if rep.Body == nil {
		h.Set("Content-Length", "0")
	}
	w.WriteHeader(rep.StatusOrOK())
	if rep.Body == nil || r.Method == http.MethodHead {
		return 0
	}
	n, err := copyReply(w, rep.Body, rep.Size)
	if err != nil {
		// The status is out: abort the connection so the caller sees a
		// broken transfer, not a short body.
		g.log.Warn("reply body failed mid-way; aborting the response", "request_id", w.Header().Get(host.HeaderRequestID), "error", err)
		panic(http.ErrAbortHandler)
	}
	return n
}

// copyBufs holds the buffers replies are copied through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// copyReply copies a reply body of size bytes (-1: unknown) to w,
// flushing whenever the body has no more ready at once, so slow streams
// reach the caller promptly and fast ones in large writes. A body read
// whole is not flushed: net/http sends it with the headers when the
// handler returns, in one write.
func copyReply(w http.ResponseWriter, body io.Reader, size int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	fl, _ := w.(http.Flusher)
	var total int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, nil // the caller left; nothing more to tell it
			}
			total += int64(n)
			if n < len(buf) && fl != nil && total != size {
				fl.Flush()
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// writeError writes err as the JSON error body of its kind.
func (g *Gateway) writeError(w http.ResponseWriter, err error) {
	e := host.AsError(err)
	b := host.NewErrorBody(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(host.HeaderReturnCode, strconv.Itoa(e.Kind.ReturnCode()))
	h.Set(host.HeaderErrorKind, string(e.Kind))
	if e.Kind == host.KindOverloaded {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
	w.WriteHeader(e.Kind.Status())
	_ = json.NewEncoder(w).Encode(b)
}

// maxContentType bounds a request's Content-Type.
const maxContentType = 1 << 10

// checkUTF8 refuses query keys and values that are not UTF-8 once
// decoded: events carry text, and the protocols' strings must be UTF-8.
func checkUTF8(q url.Values) error {
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return fmt.Errorf("key %q is not UTF-8 once decoded", k)
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return fmt.Errorf("the value of %q is not UTF-8 once decoded", k)
			}
		}
	}
	return nil
}

// mediaType returns a Content-Type without its parameters, lower-cased.
func mediaType(ct string) string {
	if ct == "" {
		return ""
	}
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// requestID returns the caller's X-Request-Id when it is reasonable, else a
// new random one.
func requestID(r *http.Request) string {
	if id := r.Header.Get(host.HeaderRequestID); id != "" && len(id) <= 64 && printable(id) {
		return id
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// requestBody is an event's body as read from the local request: it counts
// what was read, enforces the body limit, and can be interrupted (see
// host.Event) by expiring the connection's read deadline.
type requestBody struct {
	r   io.Reader
	rc  *http.ResponseController
	max int64
	n   atomic.Int64
	big atomic.Bool
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	total := b.n.Add(int64(n))
	if b.max > 0 && total > b.max {
		b.big.Store(true)
		return n, host.Errorf(host.KindTooLarge, "request body is over the %d-byte limit", b.max)
	}
	return n, err
}

// Close interrupts a Read blocked on the caller's connection.
func (b *requestBody) Close() error {
	return b.rc.SetReadDeadline(time.Now())
}

func (b *requestBody) overLimit() bool { return b != nil && b.big.Load() }

// discardMax bounds what discard reads of a refused body.
const discardMax = 16 << 20

// discard reads and drops some of what is left of a refused body, for a
// short while, and marks the connection to close: a caller still sending
// then reads the error reply instead of a connection reset (a body beyond
// discardMax is cut off anyway).
func (b *requestBody) discard(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = b.rc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.CopyN(io.Discard, b.r, discardMax)
}
