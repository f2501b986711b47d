package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/restpipe/restpipe/host"
)

// ClusterMetrics are the collectors of a server in a cluster (SPEC §8):
// forwarded events, presence lookups, links replaced by a newer one on
// another server, and the members up. It implements the cluster's
// Observer; its methods are safe for concurrent use.
type ClusterMetrics struct {
	m           *Metrics
	forwarded   *prometheus.CounterVec
	lookups     *prometheus.CounterVec
	lookupTimes prometheus.Histogram
	replaced    prometheus.Counter
}

// EnableCluster registers the cluster's collectors; membersUp is read at
// each scrape for restpipe_cluster_members_up.
func (m *Metrics) EnableCluster(membersUp func() int) *ClusterMetrics {
	c := &ClusterMetrics{
		m: m,
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_cluster_forwarded_events_total", ConstLabels: m.constLabels,
			Help: "Events forwarded between the cluster's servers, by direction (out: this server's gateway took it; in: delivered here to its client) and outcome.",
		}, []string{"direction", "outcome"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "restpipe_cluster_presence_lookups_total", ConstLabels: m.constLabels,
			Help: "Presence lookups (which server holds a client), by result: cached, found, absent, failed.",
		}, []string{"result"}),
		lookupTimes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "restpipe_cluster_presence_lookup_seconds", ConstLabels: m.constLabels,
			Help:    "Time of the presence lookups that went to NATS.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5, 2},
		}),
		replaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "restpipe_cluster_links_replaced_total", ConstLabels: m.constLabels,
			Help: "Client links this server ended because the client linked to another server since.",
		}),
	}
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "restpipe_cluster_members_up", ConstLabels: m.constLabels,
		Help: "Servers of the cluster up, as this one sees them (itself included unless draining).",
	}, func() float64 { return float64(membersUp()) })
	m.reg.MustRegister(c.forwarded, c.lookups, c.lookupTimes, c.replaced, up)
	return c
}

// Lookup records a presence lookup.
func (c *ClusterMetrics) Lookup(result string, d time.Duration) {
	c.lookups.WithLabelValues(result).Inc()
	if d > 0 {
		c.lookupTimes.Observe(d.Seconds())
	}
}

// Forwarded records an event forwarded between servers.
func (c *ClusterMetrics) Forwarded(direction string, kind host.Kind) {
	c.forwarded.WithLabelValues(direction, outcome(kind)).Inc()
}

// Replaced records a link ended for a newer one elsewhere.
func (c *ClusterMetrics) Replaced() { c.replaced.Inc() }

// ObserveForwardHop records the forward link's part of an event this
// server forwarded to another one: hop="forward" in the latency histogram.
func (m *Metrics) ObserveForwardHop(d time.Duration, kind host.Kind) {
	m.hop("forward", kind).Observe(d.Seconds())
}
