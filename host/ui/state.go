package ui

import "time"

// State is the JSON of GET /ui/api/state: everything the page shows, for one
// view of the peers (a page of them, filtered and sorted as asked) and the
// failures the page has not seen yet.
type State struct {
	// Time is the node's clock when the state was read; the page measures
	// uptime and ages against it, not against the viewer's clock.
	Time time.Time `json:"time"`
	// RefreshMillis is how often the page asks again.
	RefreshMillis int `json:"refresh_ms"`

	Node    Node     `json:"node"`
	Peers   PeerPage `json:"peers"`
	Plugins []Plugin `json:"plugins"`
	// Cluster is absent on a node outside a cluster.
	Cluster *Cluster `json:"cluster,omitempty"`
	Events  Events   `json:"events"`
}

// Snapshot is what a Source tells about the node besides its peers.
type Snapshot struct {
	Node    Node
	Plugins []Plugin
	// Cluster is nil outside a cluster.
	Cluster *Cluster
	Events  Events
}

// Node is the node itself.
type Node struct {
	Role      string `json:"role"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"go_version,omitempty"`
	// Started is when the node started; a new value tells the page the node
	// restarted.
	Started time.Time `json:"started"`
	// UptimeSeconds is Time - Started, for readers other than the page.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Policy is the policy in force (--policy); nil without one.
	Policy *Policy `json:"policy"`
	// GatewayInFlight counts the events being answered through the gateway.
	GatewayInFlight int `json:"gateway_in_flight"`
	// Link is a client node's link to the server; nil on a server.
	Link *ClientLink `json:"link,omitempty"`
}

// Policy describes the policy in force.
type Policy struct {
	File        string    `json:"file"`
	SHA256      string    `json:"sha256"`
	Rules       int       `json:"rules"`
	AllowRules  int       `json:"allow_rules"`
	LimitRules  int       `json:"limit_rules"`
	LoadedAt    time.Time `json:"loaded_at"`
	ReloadError string    `json:"reload_error,omitempty"`
}

// ClientLink is a client node's link to the server.
type ClientLink struct {
	// Server is the address the client dials (--server).
	Server string `json:"server"`
	Up     bool   `json:"up"`
	// Since is when the link last came up or went down; zero before the
	// first change.
	Since time.Time `json:"since,omitzero"`
	// Changes counts the link's ups and downs since the node started.
	Changes int `json:"changes"`
	// Dials counts connection attempts.
	Dials int `json:"dials"`
}

// Peer is one live link.
type Peer struct {
	Name string `json:"name"`
	// Server is, in a cluster, the server that holds the link; "" outside one.
	Server         string    `json:"server,omitempty"`
	ConnectedSince time.Time `json:"connected_since"`
	RemoteAddr     string    `json:"remote_addr"`
	// RTTMillis is the round trip of the link's last keepalive ping.
	RTTMillis float64 `json:"rtt_ms"`
	// BytesIn and BytesOut count the bytes on the link since it came up.
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	// EventsIn and EventsOut count the events in flight: from the peer, to it.
	EventsIn  int `json:"events_in"`
	EventsOut int `json:"events_out"`
	// LinkChanges counts the peer's links coming up and going down since
	// the node started (1 for a peer that linked once and stayed).
	LinkChanges int    `json:"link_changes"`
	Software    string `json:"software,omitempty"`
}

// PeerPage is one page of the peers, as the page asked for it, with a
// summary of all of them.
type PeerPage struct {
	// Total counts every live link; Matched those that pass Query.
	Total   int `json:"total"`
	Matched int `json:"matched"`
	// Offset, Limit, Sort, Order and Query are the view served (the
	// request's, clamped to what exists).
	Offset  int         `json:"offset"`
	Limit   int         `json:"limit"`
	Sort    string      `json:"sort"`
	Order   string      `json:"order"`
	Query   string      `json:"q"`
	Rows    []Peer      `json:"rows"`
	Summary PeerSummary `json:"summary"`
}

// PeerSummary sums up every peer, whatever the page shows.
type PeerSummary struct {
	// Busy counts the peers with events in flight.
	Busy      int    `json:"busy"`
	EventsIn  int    `json:"events_in"`
	EventsOut int    `json:"events_out"`
	BytesIn   uint64 `json:"bytes_in"`
	BytesOut  uint64 `json:"bytes_out"`
	// RTTMedianMillis and RTTMaxMillis are over the peers' last pings.
	RTTMedianMillis float64 `json:"rtt_median_ms"`
	RTTMaxMillis    float64 `json:"rtt_max_ms"`
	// Relinked counts the peers whose link came up more than once.
	Relinked int `json:"relinked"`
	// Fresh counts the peers linked within the last FreshWindow.
	Fresh int `json:"fresh"`
	// ByServer counts, in a cluster, the peers each server holds.
	ByServer map[string]int `json:"by_server,omitempty"`
}

// FreshWindow is how recent a link counts as fresh in PeerSummary.
const FreshWindow = 5 * time.Minute

// Plugin is one plugin of the node.
type Plugin struct {
	// File is the plugin's file name, its identity.
	File    string `json:"file"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// State is one word: running, restarting, quarantined, ...
	State string `json:"state"`
	// Reason is why the plugin is not running, when it is not.
	Reason   string   `json:"reason,omitempty"`
	Restarts int      `json:"restarts"`
	Routes   []string `json:"routes"`
	PID      int      `json:"pid,omitempty"`
	InFlight int      `json:"in_flight"`
	SHA256   string   `json:"sha256,omitempty"`
	// LastError is the last reason the node gave for the plugin not
	// running, kept after it runs again, and LastErrorAt when it was seen.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// LastCrash is when the plugin last crashed or failed to start.
	LastCrash time.Time `json:"last_crash,omitzero"`
}

// Cluster is the cluster of servers a server node belongs to.
type Cluster struct {
	Members []Member `json:"members"`
}

// Member is one server of a cluster.
type Member struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Self marks the node serving the page.
	Self bool `json:"self,omitempty"`
}

// Events is the node's recent events: a chart per route and the latest
// failures.
type Events struct {
	// WindowSeconds is the span of the charts, StepSeconds the width of
	// one point, Start the Unix time of the first point's start.
	WindowSeconds int   `json:"window_seconds"`
	StepSeconds   int   `json:"step_seconds"`
	Start         int64 `json:"start"`
	// Routes are the busiest routes' charts, busiest first; RoutesTotal
	// counts every route with events in the window.
	Routes      []RouteSeries `json:"routes"`
	RoutesTotal int           `json:"routes_total"`
	// Failures are the latest failed events, newest first: in a State,
	// only those after the request's failures_after. FailuresTotal counts
	// every failure since the node started, so it is the Seq of the
	// newest one.
	Failures      []Failure `json:"failures"`
	FailuresTotal int       `json:"failures_total"`
}

// RouteSeries is one route's chart: one value per step, oldest first.
type RouteSeries struct {
	Route  string `json:"route"`
	Events uint64 `json:"events"` // in the window
	Failed uint64 `json:"failed"` // in the window
	// Rate and FailedRate are events per second; P50 and P99 latency
	// percentiles in milliseconds (0 for a step without events).
	Rate       []float64 `json:"rate"`
	FailedRate []float64 `json:"failed_rate"`
	P50        []float64 `json:"p50_ms"`
	P99        []float64 `json:"p99_ms"`
}

// Failure is one failed event.
type Failure struct {
	// Seq numbers the node's failures from 1, in order.
	Seq            int       `json:"seq"`
	Time           time.Time `json:"time"`
	RequestID      string    `json:"request_id"`
	Route          string    `json:"route"`
	Peer           string    `json:"peer"`
	Kind           string    `json:"kind"`
	Message        string    `json:"message"`
	DurationMillis float64   `json:"duration_ms"`
}
