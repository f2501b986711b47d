package main

import (
	"errors"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/plugin-sdk/eventpath"
)

// linkObserver passes the link's changes to the node's metrics and, as
// RestPipe's connection hooks, to the plugins that asked for them:
// connection_added and connection_removed on the server, connection_success,
// connection_lost and connection_fail on a client.
type linkObserver struct{ n *node }

func (o linkObserver) LinkUp(peer string, client bool) {
	o.n.metrics.LinkUp(peer, client)
	kind := eventpath.PeerAdded
	if client {
		kind = eventpath.PeerSuccess
	}
	o.hook(kind, peer, nil)
}

func (o linkObserver) LinkDown(peer string, client bool, err error) {
	o.n.metrics.LinkDown(peer, client)
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
