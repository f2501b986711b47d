package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is a node's state, read at each scrape.
type Snapshot struct {
	// GatewayInFlight counts the events being answered through the
	// gateway.
	GatewayInFlight int
	// Peers are the live links.
	Peers []PeerState
	// Plugins are the plugins of the node.
	Plugins []PluginState
}

// PeerState is one live link.
type PeerState struct {
	Name                string
	BytesIn, BytesOut   uint64        // on the wire, TLS included, since the link came up
	EventsIn, EventsOut int           // in flight now
	RTT                 time.Duration // of the last keepalive ping
}

// PluginState is one plugin.
type PluginState struct {
	File      string
	State     string // running, restarting, quarantined, ...
	InFlight  int
	Restarts  int
	Handlers  int // running in the plugin
	Abandoned int // of those, whose event already ended
}

// SetSnapshot registers f to be read at every scrape. Call it once.
func (m *Metrics) SetSnapshot(f func() Snapshot) {
	m.reg.MustRegister(&snapshotCollector{f: f, labels: m.constLabels})
}

// snapshotCollector turns a Snapshot into metrics at scrape time.
type snapshotCollector struct {
	f      func() Snapshot
	labels prometheus.Labels
}

func (c *snapshotCollector) desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, c.labels)
}

// Describe sends nothing: the collector is unchecked, its series come and
// go with peers and plugins.
func (c *snapshotCollector) Describe(chan<- *prometheus.Desc) {}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.f()
	gauge := prometheus.GaugeValue
	counter := prometheus.CounterValue
	ch <- prometheus.MustNewConstMetric(c.desc("restpipe_gateway_events_in_flight", "Events being answered through the gateway."), gauge, float64(s.GatewayInFlight))
	ch <- prometheus.MustNewConstMetric(c.desc("restpipe_links", "Live links: connected clients on the server, 0 or 1 on a client."), gauge, float64(len(s.Peers)))
	up := c.desc("restpipe_link_up", "1 for each live link, by peer.", "peer")
	bytes := c.desc("restpipe_link_bytes_total", "Bytes on a link since it came up, TLS included, by peer and direction.", "peer", "direction")
	inFlight := c.desc("restpipe_link_events_in_flight", "Events in flight on a link, by peer and direction (in: from the peer).", "peer", "direction")
	rtt := c.desc("restpipe_link_rtt_seconds", "Round trip of a link's last keepalive ping, by peer.", "peer")
	for _, p := range s.Peers {
		ch <- prometheus.MustNewConstMetric(up, gauge, 1, p.Name)
		ch <- prometheus.MustNewConstMetric(bytes, counter, float64(p.BytesIn), p.Name, "in")
		ch <- prometheus.MustNewConstMetric(bytes, counter, float64(p.BytesOut), p.Name, "out")
		ch <- prometheus.MustNewConstMetric(inFlight, gauge, float64(p.EventsIn), p.Name, "in")
		ch <- prometheus.MustNewConstMetric(inFlight, gauge, float64(p.EventsOut), p.Name, "out")
		ch <- prometheus.MustNewConstMetric(rtt, gauge, p.RTT.Seconds(), p.Name)
	}
	state := c.desc("restpipe_plugin_state", "1 for each plugin, labelled with its state.", "plugin", "state")
	pin := c.desc("restpipe_plugin_events_in_flight", "Events in flight in a plugin.", "plugin")
	restarts := c.desc("restpipe_plugin_restarts", "Restarts of a plugin after crashes.", "plugin")
	handlers := c.desc("restpipe_plugin_handlers", "Handlers running in a plugin, by state: running (all of them) and abandoned (those whose event already ended: they ignore their context).", "plugin", "state")
	for _, p := range s.Plugins {
		ch <- prometheus.MustNewConstMetric(state, gauge, 1, p.File, p.State)
		ch <- prometheus.MustNewConstMetric(pin, gauge, float64(p.InFlight), p.File)
		ch <- prometheus.MustNewConstMetric(restarts, gauge, float64(p.Restarts), p.File)
		ch <- prometheus.MustNewConstMetric(handlers, gauge, float64(p.Handlers), p.File, "running")
		ch <- prometheus.MustNewConstMetric(handlers, gauge, float64(p.Abandoned), p.File, "abandoned")
	}
}
