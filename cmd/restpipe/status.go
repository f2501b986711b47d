package main

import (
	"time"

	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/metrics"
	"github.com/restpipe/restpipe/host/plugins"
	"github.com/restpipe/restpipe/host/policy"
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
}

// peerStatus describes one live link.
type peerStatus struct {
	Name           string    `json:"name"`
	ConnectedSince time.Time `json:"connected_since"`
	RemoteAddr     string    `json:"remote_addr"`
	EventsOut      int       `json:"events_out"`
	EventsIn       int       `json:"events_in"`
	BytesIn        uint64    `json:"bytes_in"`
	BytesOut       uint64    `json:"bytes_out"`
	// RTTMillis is the round trip of the last keepalive ping.
	RTTMillis float64 `json:"rtt_ms"`
	Software  string  `json:"software"`
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
		})
	}
	if n.plugins != nil {
		st.Plugins = n.plugins.Status()
	}
	st.Policy = n.policyStatus()
	return st
}
