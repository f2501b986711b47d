package ui

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// Paths the Handler serves. The gateway routes Prefix and everything under
// it here.
const (
	Prefix   = "/ui"
	pagePath = Prefix + "/"
	apiState = Prefix + "/api/state"
)

// Source tells the Handler what the node is doing. cmd/restpipe implements
// it from the node's parts. Its methods are called for every request of the
// page, so they must be safe for concurrent use and cheap: no I/O, no
// waiting. Each call returns values of its own, which the caller may change.
type Source interface {
	// Snapshot returns the node, its plugins, its cluster and its recent
	// events.
	Snapshot() Snapshot
	// Peers returns every live link, in any order.
	Peers() []Peer
}

// Config configures a Handler.
type Config struct {
	// Source is what the page shows. Required.
	Source Source
	// Logger receives problems (a state that cannot be encoded).
	Logger hclog.Logger
	// Refresh is how often the page asks for the state. Default 1s,
	// between 100ms and 2s: the page must show a change within 2 s.
	Refresh time.Duration
	// PageSize is how many peers a page shows unless it asks otherwise
	// (default 50); MaxPageSize bounds what it may ask (default 200), and
	// so the size of a state with any number of peers.
	PageSize    int
	MaxPageSize int
	// MaxRoutes bounds the routes charted: the busiest ones (default 8).
	MaxRoutes int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultConfig returns a Config with every default set but Source.
func DefaultConfig() Config {
	return Config{Refresh: time.Second, PageSize: 50, MaxPageSize: 200, MaxRoutes: 8}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Refresh == 0 {
		c.Refresh = d.Refresh
	}
	if c.MaxPageSize == 0 {
		c.MaxPageSize = d.MaxPageSize
	}
	if c.PageSize == 0 {
		c.PageSize = min(d.PageSize, c.MaxPageSize)
	}
	if c.MaxRoutes == 0 {
		c.MaxRoutes = d.MaxRoutes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports what cannot work, counting zero fields as their
// defaults. It changes nothing.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Source == nil:
		return errors.New("ui: Source is required")
	case c.Refresh < 100*time.Millisecond || c.Refresh > 2*time.Second:
		return fmt.Errorf("ui: Refresh %v is outside 100ms..2s", c.Refresh)
	case c.PageSize < 1 || c.MaxPageSize < c.PageSize:
		return fmt.Errorf("ui: want 1 <= PageSize (%d) <= MaxPageSize (%d)", c.PageSize, c.MaxPageSize)
	case c.MaxRoutes < 1:
		return fmt.Errorf("ui: MaxRoutes %d must be positive", c.MaxRoutes)
	}
	return nil
}

// Handler serves the status page and its data. It is an http.Handler for
// the paths under Prefix:
//
//	GET /ui            redirects to ui/ (relative, so it works under a proxy's prefix)
//	GET /ui/           the page: one self-contained HTML document
//	GET /ui/api/state  the State, as JSON (see State for the query parameters)
//
// It keeps nothing between requests and is safe for concurrent use.
type Handler struct {
	cfg  Config
	page *page
}

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := buildPage()
	if err != nil {
		return nil, err
	}
	return &Handler{cfg: cfg, page: p}, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: the status page is read-only", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case Prefix:
		// Relative, so that /some/prefix/ui leads to /some/prefix/ui/
		// behind a proxy; http.Redirect would make it absolute.
		w.Header().Set("Location", "ui/")
		w.WriteHeader(http.StatusFound)
	case pagePath:
		h.page.serve(w, r)
	case apiState:
		h.serveState(w, r)
	default:
		http.NotFound(w, r)
	}
}

// serveState answers the page's poll. Query parameters (all optional):
//
//	peers_offset, peers_limit  the page of peers (limit at most MaxPageSize)
//	peers_sort                 name, server, since, rtt, bytes_in, bytes_out, in_flight, changes
//	peers_order                asc or desc
//	peers_q                    only peers whose name (or server) holds this, ignoring ASCII case
//	failures_after             only failures with a greater seq (the page's newest)
func (h *Handler) serveState(w http.ResponseWriter, r *http.Request) {
	st := h.State(r.URL.Query())
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(st); err != nil {
		h.cfg.Logger.Error("status page: cannot encode the state", "error", err)
		http.Error(w, "cannot encode the state", http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Vary", "Accept-Encoding")
	body := buf.Bytes()
	if acceptsGzip(r) {
		// A poll a second per viewer: about 16 KiB plain, 3 KiB gzipped.
		var zbuf bytes.Buffer
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(&zbuf)
		_, _ = zw.Write(body)
		if err := zw.Close(); err == nil {
			body = zbuf.Bytes()
			hd.Set("Content-Encoding", "gzip")
		}
		gzipWriters.Put(zw)
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// gzipWriters are the compressors of states, kept between polls (each
// holds some hundred KiB).
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// State builds the state a request of the page asks for (see serveState
// for the parameters).
func (h *Handler) State(q map[string][]string) State {
	now := h.cfg.Now()
	snap := h.cfg.Source.Snapshot()
	st := State{
		Time:          now.UTC(),
		RefreshMillis: int(h.cfg.Refresh / time.Millisecond),
		Node:          snap.Node,
		Plugins:       snap.Plugins,
		Cluster:       snap.Cluster,
		Events:        snap.Events,
	}
	if !st.Node.Started.IsZero() {
		st.Node.UptimeSeconds = float64(now.Sub(st.Node.Started).Milliseconds()) / 1000
	}
	if st.Plugins == nil {
		st.Plugins = []Plugin{}
	}
	st.Peers = pagePeers(h.cfg.Source.Peers(), h.parsePeerView(q), now)

	ev := &st.Events
	if ev.RoutesTotal < len(ev.Routes) {
		ev.RoutesTotal = len(ev.Routes)
	}
	if len(ev.Routes) > h.cfg.MaxRoutes {
		ev.Routes = ev.Routes[:h.cfg.MaxRoutes]
	}
	if ev.Routes == nil {
		ev.Routes = []RouteSeries{}
	}
	// Only the failures the page has not seen. A page whose newest is
	// beyond the node's count saw another run of the node: it gets all.
	if after, err := strconv.Atoi(first(q["failures_after"])); err == nil && after > 0 && after <= ev.FailuresTotal {
		n := 0
		for n < len(ev.Failures) && ev.Failures[n].Seq > after {
			n++
		}
		ev.Failures = ev.Failures[:n]
	}
	if ev.Failures == nil {
		ev.Failures = []Failure{}
	}
	clipState(&st)
	return st
}

// Bounds of the text a state carries: what comes from outside (a peer's
// software string, a caller's route and request id, a plugin's error) is cut
// to these many bytes, so that no one can make every poll of every viewer
// heavy.
const (
	maxName = 256
	maxText = 1024
)

// clipState cuts the text of what the page is sent.
func clipState(st *State) {
	for i := range st.Peers.Rows {
		p := &st.Peers.Rows[i]
		p.Name, p.Server, p.RemoteAddr, p.Software = clip(p.Name, maxName), clip(p.Server, maxName), clip(p.RemoteAddr, maxName), clip(p.Software, maxName)
	}
	for i := range st.Plugins {
		p := &st.Plugins[i]
		p.File, p.Name, p.Version = clip(p.File, maxName), clip(p.Name, maxName), clip(p.Version, maxName)
		p.Reason, p.LastError = clip(p.Reason, maxText), clip(p.LastError, maxText)
	}
	if st.Cluster != nil {
		for i := range st.Cluster.Members {
			m := &st.Cluster.Members[i]
			m.Name, m.State = clip(m.Name, maxName), clip(m.State, maxName)
		}
	}
	for i := range st.Events.Routes {
		st.Events.Routes[i].Route = clip(st.Events.Routes[i].Route, maxName)
	}
	for i := range st.Events.Failures {
		f := &st.Events.Failures[i]
		f.Route, f.Peer, f.RequestID, f.Kind = clip(f.Route, maxName), clip(f.Peer, maxName), clip(f.RequestID, maxName), clip(f.Kind, maxName)
		f.Message = clip(f.Message, maxText)
	}
}

// clip cuts s to at most n bytes on a character boundary, marking the cut
// with an ellipsis.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
