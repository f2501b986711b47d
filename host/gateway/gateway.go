package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
	"github.com/restpipe/restpipe/proto/rest"
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
		w.Header().Set(rest.HeaderReturnCode, "0")
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
			w.Header().Set(rest.HeaderReturnCode, "0")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(g.cfg.Status())
			return
		}
	case "/metrics":
		if g.cfg.Metrics != nil {
			w.Header().Set(rest.HeaderReturnCode, "0")
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
	w.Header().Set(rest.HeaderReturnCode, "0")
	fmt.Fprintln(w, `{"status":"ok"}`)
}
