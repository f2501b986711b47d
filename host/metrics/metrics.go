// Package metrics measures a node: Prometheus collectors in a registry the
// node owns (no global registry), served on /metrics, and optionally the
// same events as StatsD lines for RestPipe's users.
//
// The components under host/ do not import this package: each declares the
// small observer interface it calls, and *Metrics implements them all;
// cmd/restpipe wires them. Values that are state rather than events (bytes
// on each link, events in flight, plugin states) are read at scrape time
// from a Snapshot function, not pushed on every event.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/restpipe/restpipe/host"
)

// OutcomeOK is the outcome label of a successful event.
const OutcomeOK = "ok"

// Label values that stand for many.
const (
	// RouteUnconfirmed labels the events of a route no handler has
	// answered yet (on this node, or, for events sent to a peer, on the
	// peer): a caller chooses nouns freely, so only routes that exist get
	// a series of their own.
	RouteUnconfirmed = "unconfirmed"
	// RouteNone labels events refused before they had a route.
	RouteNone = "none"
	// PeerOther labels the events of peers beyond MaxPeerSeries, and of
	// peer names that never linked.
	PeerOther = "other"
	// RouteOther labels the routes beyond MaxRouteSeries.
	RouteOther = "other"
)

// Defaults of the series bounds (see Options).
const (
	DefaultMaxPeerSeries  = 256
	DefaultMaxRouteSeries = 512
)

// Options bounds the label values a node's metrics may hold, so that
// neither callers (who choose nouns and peer names) nor a crowd of peers
// can grow /metrics and the node's memory without bound.
type Options struct {
	// MaxPeerSeries bounds the peers with series of their own in
	// restpipe_events_total; a peer gets one when it links while fewer
	// are taken, and gives it up when its link ends. Others count as
	// "other". Default 256.
	MaxPeerSeries int
	// MaxRouteSeries bounds the confirmed routes with series of their
	// own. Default 512.
	MaxRouteSeries int
}

// Metrics holds a node's collectors. Its methods are safe for concurrent
// use and cheap enough for every event: the series of an event are looked
// up once per label combination and kept.
type Metrics struct {
	reg         *prometheus.Registry
	constLabels prometheus.Labels
	statsd      *StatsD // nil unless enabled
	opts        Options

	events       *prometheus.CounterVec   // gateway: events by route, peer and outcome
	eventSeconds *prometheus.HistogramVec // per hop: gateway, link, plugin
	gatewayBytes *prometheus.CounterVec   // gateway: body bytes in and out
	linkEvents   *prometheus.CounterVec   // link: up, down, refused
	reconnects   prometheus.Counter       // client: links after the first
	plugin       *prometheus.CounterVec   // plugins: starts, crashes, quarantines
	peerEvents   *prometheus.CounterVec   // hooks: peer events delivered to plugins
	badReplies   *prometheus.CounterVec   // replies refused at the node's boundary
	linksUp      atomic.Int64             // client: links established so far (for reconnects)

	bytesIn, bytesOut prometheus.Counter
	hops              sync.Map // hopKey -> prometheus.Observer
	series            sync.Map // seriesKey -> prometheus.Counter

	mu     sync.Mutex
	peers  map[string]int  // peers with series of their own, by name: links up
	routes map[string]bool // confirmed routes
	recent *Recent
}

type hopKey struct{ hop, outcome string }

type seriesKey struct{ route, peer, outcome string }

// New returns the metrics of a node, with Go runtime and process
// collectors registered too.
func New(node host.Node, opts Options) *Metrics {
	if opts.MaxPeerSeries <= 0 {
		opts.MaxPeerSeries = DefaultMaxPeerSeries
	}
	if opts.MaxRouteSeries <= 0 {
		opts.MaxRouteSeries = DefaultMaxRouteSeries
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	constLabels := prometheus.Labels{"role": string(node.Role), "node": node.Name}
	m := &Metrics{
		reg:         reg,
		constLabels: constLabels,
		opts:        opts,
		peers:       map[string]int{},
		routes:      map[string]bool{},
		recent:      newRecent(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_events_total", ConstLabels: constLabels,
			Help: "Events answered through this node's gateway, by route (\"unconfirmed\" until a handler answered it), peer (\"local\" for /local, \"other\" beyond the series bound) and outcome (ok or an error kind).",
		}, []string{"route", "peer", "outcome"}),
		eventSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "restpipe_event_duration_seconds", ConstLabels: constLabels,
			Help:    "Time to the reply's header, by hop: gateway (the whole event, seen by the local caller), link (sent to the peer, answered), forward (sent to another server of a cluster, answered), plugin (a handler plugin's call).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"hop", "outcome"}),
		gatewayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_gateway_body_bytes_total", ConstLabels: constLabels,
			Help: "Body bytes through the gateway: in (from local callers) and out (to them).",
		}, []string{"direction"}),
		linkEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_link_changes_total", ConstLabels: constLabels,
			Help: "Link state changes: up, down, and refused (failed handshakes on the server, failed dials on a client).",
		}, []string{"change"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "restpipe_link_reconnects_total", ConstLabels: constLabels,
			Help: "Links established after the first one (a client node).",
		}),
		plugin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_plugin_changes_total", ConstLabels: constLabels,
			Help: "Plugin process starts, crashes (including failed starts), quarantines and restarts for abandoned handlers, by plugin file.",
		}, []string{"plugin", "change"}),
		peerEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_peer_hooks_total", ConstLabels: constLabels,
			Help: "Peer events (connection_added, ...) delivered to subscribed plugins, or dropped when a plugin fell behind.",
		}, []string{"result"}),
		badReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_bad_replies_total", ConstLabels: constLabels,
			Help: "Replies refused at this node's boundary (an invalid status, an oversized header), by where they came from: plugin or peer. Their callers got handler_failed.",
		}, []string{"from"}),
	}
	m.bytesIn = m.gatewayBytes.WithLabelValues("in")
	m.bytesOut = m.gatewayBytes.WithLabelValues("out")
	reg.MustRegister(m.events, m.eventSeconds, m.gatewayBytes, m.linkEvents, m.reconnects, m.plugin, m.peerEvents, m.badReplies)
	return m
}

// Registry returns the node's registry, for further collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// SetStatsD sends every event to s as well.
func (m *Metrics) SetStatsD(s *StatsD) { m.statsd = s }

// Recent returns the node's recent events, for the status page.
func (m *Metrics) Recent() *Recent { return m.recent }

// outcome is the label of an event's kind.
func outcome(k host.Kind) string {
	if k == "" {
		return OutcomeOK
	}
	return string(k)
}

// hop returns the histogram of a hop and outcome.
func (m *Metrics) hop(hop string, kind host.Kind) prometheus.Observer {
	k := hopKey{hop, outcome(kind)}
	if o, ok := m.hops.Load(k); ok {
		return o.(prometheus.Observer)
	}
	o := m.eventSeconds.WithLabelValues(k.hop, k.outcome)
	m.hops.Store(k, o)
	return o
}

// labels returns the bounded route and peer labels of an event.
func (m *Metrics) labels(route, peer string, kind host.Kind) (string, string) {
	if route == "" {
		route = RouteNone
	}
	// A handler's reply, or the word of the node that owns the route.
	confirmed := kind == "" || kind == host.KindHandlerFailed || kind == host.KindPluginUnavailable
	m.mu.Lock()
	defer m.mu.Unlock()
	if route != RouteNone && !m.routes[route] {
		switch {
		case !confirmed:
			route = RouteUnconfirmed
		case len(m.routes) >= m.opts.MaxRouteSeries:
			route = RouteOther
		default:
			m.routes[route] = true
		}
	}
	if peer != "local" && peer != "server" {
		if _, ok := m.peers[peer]; !ok {
			peer = PeerOther
		}
	}
	return route, peer
}

// ObserveEvent records an event answered through the gateway
// (gateway.Observer).
func (m *Metrics) ObserveEvent(ev host.EventRecord) {
	o := outcome(ev.Kind)
	route, peer := m.labels(ev.Route, ev.Peer, ev.Kind)
	k := seriesKey{route, peer, o}
	c, ok := m.series.Load(k)
	if !ok {
		c, _ = m.series.LoadOrStore(k, m.events.WithLabelValues(route, peer, o))
	}
	c.(prometheus.Counter).Inc()
	m.hop("gateway", ev.Kind).Observe(ev.Duration.Seconds())
	if ev.BytesIn > 0 {
		m.bytesIn.Add(float64(ev.BytesIn))
	}
	if ev.BytesOut > 0 {
		m.bytesOut.Add(float64(ev.BytesOut))
	}
	m.recent.add(route, ev)
	if m.statsd != nil {
		m.statsd.event(route, o, ev.Duration)
	}
}

// ObserveHop records the link's part of an event this node sent
// (link.Observer).
func (m *Metrics) ObserveHop(d time.Duration, kind host.Kind) {
	m.hop("link", kind).Observe(d.Seconds())
}

// ObservePluginCall records a plugin's part of an event (plugins.Observer).
func (m *Metrics) ObservePluginCall(d time.Duration, kind host.Kind) {
	m.hop("plugin", kind).Observe(d.Seconds())
}

// BadReply records a plugin's reply refused at the node (plugins.Observer).
func (m *Metrics) BadReply(string) { m.badReplies.WithLabelValues("plugin").Inc() }

// BadPeerReply records a peer's reply refused at the node (link.Observer).
func (m *Metrics) BadPeerReply(string) { m.badReplies.WithLabelValues("peer").Inc() }

// peerUp gives a linked peer series of its own while there is room.
func (m *Metrics) peerUp(peer string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n, ok := m.peers[peer]; ok {
		m.peers[peer] = n + 1
		return
	}
	if len(m.peers) < m.opts.MaxPeerSeries {
		m.peers[peer] = 1
	}
}

// peerDown gives up a peer's series once its last link ended.
func (m *Metrics) peerDown(peer string) {
	m.mu.Lock()
	n, ok := m.peers[peer]
	switch {
	case !ok:
		m.mu.Unlock()
		return
	case n > 1:
		m.peers[peer] = n - 1
		m.mu.Unlock()
		return
	}
	delete(m.peers, peer)
	m.mu.Unlock()
	m.events.DeletePartialMatch(prometheus.Labels{"peer": peer})
	m.series.Range(func(k, _ any) bool {
		if k.(seriesKey).peer == peer {
			m.series.Delete(k)
		}
		return true
	})
}

// LinkUp records a link coming up (link.Observer, through cmd/restpipe).
func (m *Metrics) LinkUp(peer string, client bool) {
	m.linkEvents.WithLabelValues("up").Inc()
	if !client {
		m.peerUp(peer)
	}
	if client && m.linksUp.Add(1) > 1 {
		m.reconnects.Inc()
	}
}

// LinkDown records a link going down.
func (m *Metrics) LinkDown(peer string, client bool) {
	m.linkEvents.WithLabelValues("down").Inc()
	if !client {
		m.peerDown(peer)
	}
}

// LinkRefused records a failed handshake or dial.
func (m *Metrics) LinkRefused(bool, error) {
	m.linkEvents.WithLabelValues("refused").Inc()
}

// ConnectionHook records one of RestPipe's connection hooks
// (connection_added, ...), as StatsD counts them.
func (m *Metrics) ConnectionHook(kind string) {
	if m.statsd != nil {
		m.statsd.count(bucket(kind))
	}
}

// PluginStarted, PluginCrashed and PluginQuarantined record plugin process
// changes (plugins.Observer).
func (m *Metrics) PluginStarted(file string) { m.plugin.WithLabelValues(file, "start").Inc() }

func (m *Metrics) PluginCrashed(file string) {
	m.plugin.WithLabelValues(file, "crash").Inc()
	if m.statsd != nil {
		m.statsd.count("plugin." + bucket(file) + ".crash")
	}
}

func (m *Metrics) PluginQuarantined(file string) { m.plugin.WithLabelValues(file, "quarantine").Inc() }

// PluginRefreshed records a restart for abandoned handlers.
func (m *Metrics) PluginRefreshed(file string) {
	m.plugin.WithLabelValues(file, "abandoned_restart").Inc()
}

// PeerHook records a peer event delivered to (or dropped for) a plugin.
func (m *Metrics) PeerHook(delivered bool) {
	if delivered {
		m.peerEvents.WithLabelValues("delivered").Inc()
	} else {
		m.peerEvents.WithLabelValues("dropped").Inc()
	}
}
