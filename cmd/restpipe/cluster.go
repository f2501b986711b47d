package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/restpipe/restpipe/host"
	hcluster "github.com/restpipe/restpipe/host/cluster"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/metrics"
)

// clusterConfig is a server's membership of a cluster (SPEC §8,
// docs/cluster.md): set by --cluster-listen, --cluster-join and
// --cluster-nats.
type clusterConfig struct {
	// Listen is the embedded NATS server's route address; Join the
	// others'.
	Listen string
	Join   []string
	// NATS are the URLs of an external NATS cluster, instead of an
	// embedded one.
	NATS []string
	// Advertise is the link address the other servers dial for forward
	// links; default: --listen, its host taken from this machine's name
	// when it is unspecified.
	Advertise string
	// RouteAdvertise is the route address the other members are told to
	// dial; default: the one they reach.
	RouteAdvertise string
}

// enabled reports whether the server is a member of a cluster.
func (c clusterConfig) enabled() bool { return c.Listen != "" || len(c.NATS) > 0 }

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// clusterRegistry is the link server's registry of a cluster member: the
// in-memory registry of this server's clients, whose changes the cluster
// learns (and announces in NATS).
type clusterRegistry struct {
	*link.MemRegistry
	c *hcluster.Cluster
}

func (r clusterRegistry) Register(s *link.Session) *link.Session {
	old := r.MemRegistry.Register(s)
	r.c.Claim(s.Peer(), s)
	return old
}

func (r clusterRegistry) Unregister(s *link.Session) {
	r.MemRegistry.Unregister(s)
	r.c.Release(s.Peer(), s)
}

// clusterPeers reaches a client wherever it is linked in the cluster.
type clusterPeers struct{ c *hcluster.Cluster }

func (p clusterPeers) Peer(ctx context.Context, name string) (host.Handler, error) {
	return p.c.Peer(ctx, name)
}

// poolForwarder sends forwarded events on the link Pool's forward links.
type poolForwarder struct{ pool *link.Pool }

func (f poolForwarder) Forward(ctx context.Context, server, addr string, ev *host.Event) (*host.Reply, error) {
	s, err := f.pool.Session(ctx, server, addr)
	if err != nil {
		return nil, &host.Error{Kind: host.KindPeerUnavailable, Message: fmt.Sprintf("server %s holding %s is unreachable", server, ev.Target), Err: err}
	}
	return s.Handle(ctx, ev)
}

// forwardObserver passes what forward links observe to the metrics: their
// hop is "forward".
type forwardObserver struct{ m *metrics.Metrics }

func (o forwardObserver) LinkUp(string, bool)                        {}
func (o forwardObserver) LinkDown(string, bool, error)               {}
func (o forwardObserver) LinkRefused(bool, error)                    {}
func (o forwardObserver) ObserveHop(d time.Duration, kind host.Kind) { o.m.ObserveForwardHop(d, kind) }
func (o forwardObserver) BadPeerReply(peer string)                   { o.m.BadPeerReply(peer) }

// advertisedLink returns the link address other servers dial: explicit,
// else the bound link address with an unspecified host replaced by this
// machine's name.
func advertisedLink(explicit string, bound net.Addr) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	h, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
		if h, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("advertise the link address: %w", err)
		}
	}
	return net.JoinHostPort(h, port), nil
}

// joinCluster makes the server node a member of its cluster: the forward
// links' pool, the cluster (NATS), and the registry and peers that route
// through it. It is called once the link listener is bound.
func (n *node) joinCluster(lc link.Config) (link.Registry, host.Handler, error) {
	cc := n.cfg.Cluster
	id := n.cfg.Store.Identity()
	if !host.HasServerRole(id.Leaf) {
		return nil, nil, fmt.Errorf("a member of a cluster needs a certificate with the server role: %s has none (restpipe pki issue --role server)", n.name)
	}
	pc := link.PoolConfig{Config: lc, TLS: func(name string) *tls.Config { return n.cfg.Store.ClientTLS(name) }}
	pc.Handler = nil
	pc.Logger = n.log.Named("forward")
	pc.Observer = forwardObserver{n.metrics}
	pool, err := link.NewPool(pc)
	if err != nil {
		return nil, nil, err
	}
	addr, err := advertisedLink(cc.Advertise, n.linkLn.Addr())
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	var members func() int
	obs := n.metrics.EnableCluster(func() int { return members() })
	cfg := hcluster.DefaultConfig()
	cfg.Name = n.name
	cfg.LinkAddr = addr
	cfg.Listen, cfg.Join, cfg.NATS, cfg.Advertise = cc.Listen, cc.Join, cc.NATS, cc.RouteAdvertise
	cfg.Certificate = func() *tls.Certificate { c := n.cfg.Store.Identity().Cert; return &c }
	cfg.Roots = id.Roots
	cfg.Forwarder = poolForwarder{pool}
	cfg.Logger = n.log.Named("cluster")
	cfg.Observer = obs
	c, err := hcluster.New(cfg)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	members = c.MembersUp
	n.cluster, n.pool = c, pool
	return clusterRegistry{MemRegistry: link.NewRegistry(), c: c}, c.Incoming(), nil
}

// leaveCluster is the first part of a member's drain: it leaves the
// cluster (no more lookups answered, no forwarded events taken), stops
// accepting links, and ends its clients' links as soon as each has no
// event in flight, so that they relink to the other servers; it returns
// when none is left or ctx ends.
func (n *node) leaveCluster(ctx context.Context) {
	n.cluster.Leave()
	n.server.CloseListeners()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		if n.server.EvictIdle(errLeaving) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errLeaving ends a draining member's client links.
var errLeaving = errors.New("the server is leaving the cluster: relink to another")

// closeCluster ends the forward links and the membership.
func (n *node) closeCluster() {
	if n.pool != nil {
		n.pool.Close()
	}
	if n.cluster != nil {
		n.cluster.Close()
	}
}

// clusterStatus is /status's cluster field.
type clusterStatus struct {
	Members []memberStatus `json:"members"`
}

// memberStatus is one server of the cluster in /status.
type memberStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Clients  int    `json:"clients"`
	LinkAddr string `json:"link_addr,omitempty"`
	Self     bool   `json:"self,omitempty"`
}

// clusterState describes the cluster for /status; nil outside one.
func (n *node) clusterState() *clusterStatus {
	if n.cluster == nil {
		return nil
	}
	st := &clusterStatus{Members: []memberStatus{}}
	for _, m := range n.cluster.Members() {
		st.Members = append(st.Members, memberStatus{Name: m.Name, State: m.State, Clients: m.Clients, LinkAddr: m.LinkAddr, Self: m.Self})
	}
	return st
}
