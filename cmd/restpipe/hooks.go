package main

import (
	"errors"
	"sync"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/metrics"
	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
)

// linkObserver passes the link's changes to the node's metrics and, as
// RestPipe's connection hooks, to the plugins that asked for them:
// connection_added and connection_removed on the server, connection_success,
// connection_lost and connection_fail on a client.
type linkObserver struct{ n *node }

func (o linkObserver) LinkUp(peer string, client bool) {
	o.n.metrics.LinkUp(peer, client)
	o.n.linkChanges.change(peer, true, o.n.links())
	kind := eventpath.PeerAdded
	if client {
		kind = eventpath.PeerSuccess
	}
	o.hook(kind, peer, nil)
}

func (o linkObserver) LinkDown(peer string, client bool, err error) {
	o.n.metrics.LinkDown(peer, client)
	// A link replaced by a newer one from the same peer is a change, but
	// the peer is still linked.
	o.n.linkChanges.change(peer, errors.Is(err, link.ErrReplaced), o.n.links())
	switch {
	case client:
		o.hook(eventpath.PeerLost, peer, err)
	case errors.Is(err, link.ErrReplaced):
		// A newer link from the same peer took over and already said
		// connection_added: the peer never left. Neither the plugins nor
		// StatsD hear of it.
	default:
		o.hook(eventpath.PeerRemoved, peer, nil)
	}
}

func (o linkObserver) LinkRefused(client bool, err error) {
	o.n.metrics.LinkRefused(client, err)
	if client {
		o.hook(eventpath.PeerFail, "", err)
	}
}

func (o linkObserver) ObserveHop(d time.Duration, kind host.Kind) { o.n.metrics.ObserveHop(d, kind) }

func (o linkObserver) BadPeerReply(peer string) { o.n.metrics.BadPeerReply(peer) }

// hook tells the plugins and StatsD about one of RestPipe's connection
// hooks: the one place that decides which changes are hooks.
func (o linkObserver) hook(kind, peer string, err error) {
	o.n.metrics.ConnectionHook(kind)
	if o.n.plugins != nil {
		o.n.plugins.PeerEvent(kind, peer, o.n.links(), err)
	}
}

// linkChanges counts, per peer name, the links that came up and went down
// since the node started, for the status page. Safe for concurrent use.
//
// It is bounded: names are verified certificate names, but over a long
// life many may come and go, so beyond max(linkChangesMin, 2×links)
// entries those of peers not linked now are forgotten.
type linkChanges struct {
	mu    sync.Mutex
	peers map[string]*peerChanges
}

// peerChanges is one peer's count.
type peerChanges struct {
	changes int
	up      bool
	last    time.Time // of the last change
}

// linkChangesMin is the size below which linkChanges forgets nothing.
const linkChangesMin = 4096

// change records a link of peer coming up or going down; up says whether
// the peer is linked after it, links how many links the node has now.
func (c *linkChanges) change(peer string, up bool, links int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers == nil {
		c.peers = map[string]*peerChanges{}
	}
	pc := c.peers[peer]
	if pc == nil {
		pc = &peerChanges{}
		c.peers[peer] = pc
	}
	pc.changes++
	pc.up, pc.last = up, time.Now()
	if limit := max(linkChangesMin, 2*links); len(c.peers) > limit {
		for name, p := range c.peers {
			if !p.up {
				delete(c.peers, name)
			}
		}
	}
}

// count returns peer's changes so far.
func (c *linkChanges) count(peer string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pc := c.peers[peer]; pc != nil {
		return pc.changes
	}
	return 0
}

// withCounts calls f with a function that returns a peer's changes, all
// under one lock (for thousands of peers at once): f must only look counts
// up.
func (c *linkChanges) withCounts(f func(count func(peer string) int)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(func(peer string) int {
		if pc := c.peers[peer]; pc != nil {
			return pc.changes
		}
		return 0
	})
}

// latest returns the most recent change of any peer (on a client: of its
// link to the server), and the sum of every peer's changes.
func (c *linkChanges) latest() (last peerChanges, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pc := range c.peers {
		total += pc.changes
		if pc.last.After(last.last) {
			last = *pc
		}
	}
	return last, total
}

// pluginObserver is the plugins' observer: the node's metrics, which it
// passes everything to, and the crash times the status page shows.
type pluginObserver struct {
	*metrics.Metrics
	errs *pluginErrors
}

func (o pluginObserver) PluginCrashed(file string) {
	o.Metrics.PluginCrashed(file)
	o.errs.crashed(file)
}

// pluginErrors remembers, per plugin file, when it last crashed and the
// last reason the node gave for it not running, after the plugin runs
// again, for the status page. Safe for concurrent use; one entry per
// plugin file seen, which the plugins directory bounds.
type pluginErrors struct {
	mu    sync.Mutex
	files map[string]*pluginError
}

type pluginError struct {
	crash   time.Time
	message string
	seen    time.Time
}

func (p *pluginErrors) entry(file string) *pluginError {
	if p.files == nil {
		p.files = map[string]*pluginError{}
	}
	e := p.files[file]
	if e == nil {
		e = &pluginError{}
		p.files[file] = e
	}
	return e
}

func (p *pluginErrors) crashed(file string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entry(file).crash = time.Now()
}

// note records the reason a plugin is not running, as its status says now
// ("" while it runs), and returns what the page shows: the last crash, the
// last reason and when it was first seen.
func (p *pluginErrors) note(file, reason string) pluginError {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entry(file)
	if reason != "" && reason != e.message {
		e.message, e.seen = reason, time.Now()
	}
	return *e
}
