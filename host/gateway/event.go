package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/proto/rest"
)

// verbs maps the accepted methods to event verbs.
var verbs = map[string]string{
	http.MethodGet: "get", http.MethodHead: "get", http.MethodPost: "post",
	http.MethodPut: "put", http.MethodPatch: "patch", http.MethodDelete: "delete",
}

// serveEvent turns a request into an event, sends it, and writes the reply.
func (g *Gateway) serveEvent(w http.ResponseWriter, r *http.Request) {
	rec := &record{start: time.Now(), id: requestID(r)}
	defer g.done(r, rec)
	w.Header().Set(rest.HeaderRequestID, rec.id)
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
	if v := r.Header.Get(rest.HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, target{}, 0, host.Errorf(host.KindBadRequest, "%s %q: want a positive Go duration such as 2s or 500ms", rest.HeaderTimeout, v)
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
	if id := r.Header.Get(rest.HeaderRequestID); id != "" && len(id) <= 64 && printable(id) {
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
