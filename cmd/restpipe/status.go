package main

import (
	"math"
	"runtime"
	"time"

	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/metrics"
	"github.com/restpipe/restpipe/host/plugins"
	"github.com/restpipe/restpipe/host/policy"
	"github.com/restpipe/restpipe/host/ui"
)

// nodeStatus is the JSON of GET /status.
type nodeStatus struct {
	Role    string           `json:"role"`
	Name    string           `json:"name"`
	Version string           `json:"version"`
	Peers   []peerStatus     `json:"peers"`
	Plugins []plugins.Status `json:"plugins"`
	// Policy is the policy in force (--policy), null without one.
	Policy *policy.Status `json:"policy"`
	// Cluster is the cluster's members, on a server in one (SPEC §8).
	Cluster *clusterStatus `json:"cluster,omitempty"`

	// Started is when the node started, UptimeSeconds how long ago.
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
}

// peerStatus describes one live link.
type peerStatus struct {
	Name string `json:"name"`
	// Server is, in a cluster, the server holding the link: this one.
	Server         string    `json:"server,omitempty"`
	ConnectedSince time.Time `json:"connected_since"`
	RemoteAddr     string    `json:"remote_addr"`
	EventsOut      int       `json:"events_out"`
	EventsIn       int       `json:"events_in"`
	BytesIn        uint64    `json:"bytes_in"`
	BytesOut       uint64    `json:"bytes_out"`
	// RTTMillis is the round trip of the last keepalive ping.
	RTTMillis float64 `json:"rtt_ms"`
	Software  string  `json:"software"`
	// LinkChanges counts the peer's links coming up and going down since
	// the node started.
	LinkChanges int `json:"link_changes"`
}

// sessions returns the node's live links.
func (n *node) sessions() []*link.Session {
	if n.server != nil {
		return n.server.Sessions()
	}
	if s := n.client.Session(); s != nil {
		return []*link.Session{s}
	}
	return nil
}

// links returns how many peers the node is linked to.
func (n *node) links() int {
	if n.server != nil {
		return n.server.Links()
	}
	if n.client.Session() != nil {
		return 1
	}
	return 0
}

// snapshot is the node's state for the metrics scrape.
func (n *node) snapshot() metrics.Snapshot {
	snap := metrics.Snapshot{GatewayInFlight: n.gateway.InFlight()}
	for _, s := range n.sessions() {
		st := s.Stats()
		snap.Peers = append(snap.Peers, metrics.PeerState{Name: s.Peer(), BytesIn: st.BytesIn, BytesOut: st.BytesOut,
			EventsIn: st.EventsIn, EventsOut: st.EventsOut, RTT: s.RTT()})
	}
	if n.plugins != nil {
		for _, p := range n.plugins.Status() {
			snap.Plugins = append(snap.Plugins, metrics.PluginState{File: p.File, State: p.State, InFlight: p.InFlight, Restarts: p.Restarts,
				Handlers: p.Handlers, Abandoned: p.Abandoned})
		}
	}
	return snap
}

// status describes the node now.
func (n *node) status() any {
	v, _ := buildVersion()
	st := nodeStatus{Role: string(n.cfg.Role), Name: n.name, Version: v, Peers: []peerStatus{}, Plugins: []plugins.Status{}}
	for _, s := range n.sessions() {
		stats := s.Stats()
		st.Peers = append(st.Peers, peerStatus{
			Name: s.Peer(), ConnectedSince: s.Since().UTC(), RemoteAddr: s.RemoteAddr().String(),
			EventsOut: stats.EventsOut, EventsIn: stats.EventsIn, BytesIn: stats.BytesIn, BytesOut: stats.BytesOut,
			RTTMillis: float64(s.RTT().Microseconds()) / 1000, Software: s.PeerSoftware(),
			LinkChanges: n.linkChanges.count(s.Peer()),
		})
		if n.cluster != nil {
			st.Peers[len(st.Peers)-1].Server = n.name
		}
	}
	st.Cluster = n.clusterState()
	if n.plugins != nil {
		st.Plugins = n.plugins.Status()
	}
	st.Policy = n.policyStatus()
	st.Started, st.UptimeSeconds = n.started.UTC(), float64(time.Since(n.started).Milliseconds())/1000
	return st
}

// uiSource is what the status page (host/ui) shows of the node: /status's
// contents and more (uptime, link changes, plugins' last errors, the
// recent events), read at each of the page's polls.
//
// In a cluster it fills ui.Snapshot.Cluster and ui.Peer.Server.
type uiSource struct{ n *node }

// Snapshot implements ui.Source.
func (s uiSource) Snapshot() ui.Snapshot {
	n := s.n
	v, c := buildVersion()
	snap := ui.Snapshot{Node: ui.Node{
		Role: string(n.cfg.Role), Name: n.name, Version: v, Commit: c, GoVersion: runtime.Version(),
		Started: n.started.UTC(), GatewayInFlight: n.gateway.InFlight(),
	}}
	if p := n.policyStatus(); p != nil {
		snap.Node.Policy = &ui.Policy{File: p.File, SHA256: p.SHA256, Rules: p.Rules, AllowRules: p.AllowRules,
			LimitRules: p.LimitRules, LoadedAt: p.LoadedAt, ReloadError: p.ReloadError}
	}
	if n.client != nil {
		last, total := n.linkChanges.latest()
		snap.Node.Link = &ui.ClientLink{Server: n.cfg.Server, Up: n.client.Session() != nil, Since: last.last.UTC(),
			Changes: total, Dials: n.client.Stats().Dials}
	}
	if n.plugins != nil {
		for _, p := range n.plugins.Status() {
			e := n.pluginErrs.note(p.File, p.Error)
			snap.Plugins = append(snap.Plugins, ui.Plugin{File: p.File, Name: p.Name, Version: p.Version, State: p.State,
				Reason: p.Error, Restarts: p.Restarts, Routes: p.Routes, PID: p.PID, InFlight: p.InFlight, SHA256: p.SHA256,
				LastError: e.message, LastErrorAt: e.seen.UTC(), LastCrash: e.crash.UTC()})
		}
	}
	snap.Events = uiEvents(n.metrics.Recent().View(0))
	if cs := n.clusterState(); cs != nil {
		snap.Cluster = &ui.Cluster{}
		for _, m := range cs.Members {
			snap.Cluster.Members = append(snap.Cluster.Members, ui.Member{Name: m.Name, State: m.State, Self: m.Self})
		}
	}
	return snap
}

// Peers implements ui.Source.
func (s uiSource) Peers() []ui.Peer {
	sessions := s.n.sessions()
	out := make([]ui.Peer, 0, len(sessions))
	for _, ss := range sessions {
		st := ss.Stats()
		out = append(out, ui.Peer{
			Name: ss.Peer(), ConnectedSince: ss.Since().UTC(), RemoteAddr: ss.RemoteAddr().String(),
			RTTMillis: float64(ss.RTT().Microseconds()) / 1000, BytesIn: st.BytesIn, BytesOut: st.BytesOut,
			EventsIn: st.EventsIn, EventsOut: st.EventsOut, Software: ss.PeerSoftware(),
		})
		if s.n.cluster != nil {
			out[len(out)-1].Server = s.n.name
		}
	}
	s.n.linkChanges.withCounts(func(count func(string) int) {
		for i := range out {
			out[i].LinkChanges = count(out[i].Name)
		}
	})
	return out
}

// uiEvents turns the node's recent events into the page's charts. The
// newest slot is still filling, so the charts leave it out and end at the
// last complete step; the counts of events and failures include it.
func uiEvents(v metrics.RecentView) ui.Events {
	ev := ui.Events{WindowSeconds: v.WindowSeconds, StepSeconds: v.StepSeconds, RoutesTotal: len(v.Routes),
		FailuresTotal: v.FailuresTotal, Routes: make([]ui.RouteSeries, 0, len(v.Routes))}
	msec := func(s float64) float64 { return math.Round(s*1e6) / 1e3 } // to ms, µs precision
	for _, r := range v.Routes {
		points := r.Points
		if len(points) > 0 {
			points = points[:len(points)-1]
		}
		if len(points) > 0 && ev.Start == 0 {
			ev.Start = points[0].Time
		}
		rs := ui.RouteSeries{Route: r.Route, Events: r.Events, Rate: make([]float64, len(points)), FailedRate: make([]float64, len(points)),
			P50: make([]float64, len(points)), P99: make([]float64, len(points))}
		for i, p := range points {
			rs.Rate[i], rs.FailedRate[i], rs.P50[i], rs.P99[i] = p.Rate, p.Failed, msec(p.P50), msec(p.P99)
		}
		for _, p := range r.Points {
			rs.Failed += uint64(math.Round(p.Failed * float64(v.StepSeconds)))
		}
		ev.Routes = append(ev.Routes, rs)
	}
	for i, f := range v.Failures {
		ev.Failures = append(ev.Failures, ui.Failure{Seq: v.FailuresTotal - i, Time: f.Time.UTC(), RequestID: f.ID, Route: f.Route,
			Peer: f.Peer, Kind: string(f.Kind), Message: f.Message, DurationMillis: msec(f.Duration)})
	}
	return ev
}
