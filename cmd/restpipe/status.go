package main

import (
	"time"

	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/plugins"
)

// nodeStatus is the JSON of GET /status.
type nodeStatus struct {
	Role    string           `json:"role"`
	Name    string           `json:"name"`
	Version string           `json:"version"`
	Peers   []peerStatus     `json:"peers"`
	Plugins []plugins.Status `json:"plugins"`
}

// peerStatus describes one live link.
type peerStatus struct {
	Name           string    `json:"name"`
	ConnectedSince time.Time `json:"connected_since"`
	RemoteAddr     string    `json:"remote_addr"`
	EventsOut      int       `json:"events_out"`
	EventsIn       int       `json:"events_in"`
}

// status describes the node now.
func (n *node) status() any {
	st := nodeStatus{Role: string(n.cfg.Role), Name: n.name, Version: version, Peers: []peerStatus{}, Plugins: []plugins.Status{}}
	var sessions []*link.Session
	if n.server != nil {
		sessions = n.server.Sessions()
	} else if s := n.client.Session(); s != nil {
		sessions = []*link.Session{s}
	}
	for _, s := range sessions {
		stats := s.Stats()
		st.Peers = append(st.Peers, peerStatus{
			Name: s.Peer(), ConnectedSince: s.Since().UTC(), RemoteAddr: s.RemoteAddr().String(),
			EventsOut: stats.EventsOut, EventsIn: stats.EventsIn,
		})
	}
	if n.plugins != nil {
		st.Plugins = n.plugins.Status()
	}
	return st
}
