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
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/restpipe/restpipe/host"
)

// Outcome is the outcome label of a successful event.
const OutcomeOK = "ok"

// Metrics holds a node's collectors. Its methods are safe for concurrent
// use and cheap enough for every event.
type Metrics struct {
	reg         *prometheus.Registry
	constLabels prometheus.Labels
	statsd      *StatsD // nil unless enabled

	events       *prometheus.CounterVec   // gateway: events by route, peer and outcome
	eventSeconds *prometheus.HistogramVec // per hop: gateway, link, plugin
	gatewayBytes *prometheus.CounterVec   // gateway: body bytes in and out
	linkEvents   *prometheus.CounterVec   // link: up, down, refused
	reconnects   prometheus.Counter       // client: links after the first
	plugin       *prometheus.CounterVec   // plugins: starts, crashes, quarantines
	peerEvents   *prometheus.CounterVec   // hooks: peer events delivered to plugins
	linksUp      atomic.Int64             // client: links established so far (for reconnects)
}

// New returns the metrics of a node, with Go runtime and process
// collectors registered too.
func New(node host.Node) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	constLabels := prometheus.Labels{"role": string(node.Role), "node": node.Name}
	m := &Metrics{
		reg:         reg,
		constLabels: constLabels,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_events_total", ConstLabels: constLabels,
			Help: "Events answered through this node's gateway, by route, peer (\"local\" for /local) and outcome (ok or an error kind).",
		}, []string{"route", "peer", "outcome"}),
		eventSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "restpipe_event_duration_seconds", ConstLabels: constLabels,
			Help:    "Time to the reply's header, by hop: gateway (the whole event, seen by the local caller), link (sent to the peer, answered), plugin (a handler plugin's call).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
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
			Help: "Plugin process starts, crashes (including failed starts) and quarantines, by plugin file.",
		}, []string{"plugin", "change"}),
		peerEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_peer_hooks_total", ConstLabels: constLabels,
			Help: "Peer events (connection_added, ...) delivered to subscribed plugins, or dropped when a plugin fell behind.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.events, m.eventSeconds, m.gatewayBytes, m.linkEvents, m.reconnects, m.plugin, m.peerEvents)
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

// outcome is the label of an event's kind.
func outcome(k host.Kind) string {
	if k == "" {
		return OutcomeOK
	}
	return string(k)
}

// ObserveEvent records an event answered through the gateway
// (gateway.Observer).
func (m *Metrics) ObserveEvent(route, peer string, kind host.Kind, d time.Duration, bytesIn, bytesOut int64) {
	o := outcome(kind)
	if route == "" {
		route = "none" // refused before it had one
	}
	m.events.WithLabelValues(route, peer, o).Inc()
	m.eventSeconds.WithLabelValues("gateway", o).Observe(d.Seconds())
	if bytesIn > 0 {
		m.gatewayBytes.WithLabelValues("in").Add(float64(bytesIn))
	}
	if bytesOut > 0 {
		m.gatewayBytes.WithLabelValues("out").Add(float64(bytesOut))
	}
	if m.statsd != nil {
		m.statsd.event(route, o, d)
	}
}

// ObserveHop records the link's part of an event this node sent
// (link.Observer).
func (m *Metrics) ObserveHop(d time.Duration, kind host.Kind) {
	m.eventSeconds.WithLabelValues("link", outcome(kind)).Observe(d.Seconds())
}

// ObservePluginCall records a plugin's part of an event (plugins.Observer).
func (m *Metrics) ObservePluginCall(d time.Duration, kind host.Kind) {
	m.eventSeconds.WithLabelValues("plugin", outcome(kind)).Observe(d.Seconds())
}

// LinkUp records a link coming up (link.Observer).
func (m *Metrics) LinkUp(peer string, client bool) {
	m.linkEvents.WithLabelValues("up").Inc()
	if client && m.linksUp.Add(1) > 1 {
		m.reconnects.Inc()
	}
	if m.statsd != nil {
		m.statsd.link(client, true)
	}
}

// LinkDown records a link going down (link.Observer).
func (m *Metrics) LinkDown(peer string, client bool, _ error) {
	m.linkEvents.WithLabelValues("down").Inc()
	if m.statsd != nil {
		m.statsd.link(client, false)
	}
}

// LinkRefused records a failed handshake or dial (link.Observer).
func (m *Metrics) LinkRefused(client bool, _ error) {
	m.linkEvents.WithLabelValues("refused").Inc()
	if m.statsd != nil && client {
		m.statsd.count("connection_fail")
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

// PeerHook records a peer event delivered to (or dropped for) a plugin.
func (m *Metrics) PeerHook(delivered bool) {
	if delivered {
		m.peerEvents.WithLabelValues("delivered").Inc()
	} else {
		m.peerEvents.WithLabelValues("dropped").Inc()
	}
}
