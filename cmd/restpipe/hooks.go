package main

import (
	"errors"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
)

// linkObserver passes the link's changes to the node's metrics and, as
// RestPipe's connection hooks, to the plugins that asked for them:
// connection_added and connection_removed on the server, connection_success,
// connection_lost and connection_fail on a client.
type linkObserver struct{ n *node }

func (o linkObserver) LinkUp(peer string, client bool) {
	o.n.metrics.LinkUp(peer, client)
	kind := "connection_added"
	if client {
		kind = "connection_success"
	}
	o.hook(kind, peer, nil)
}

func (o linkObserver) LinkDown(peer string, client bool, err error) {
	o.n.metrics.LinkDown(peer, client, err)
	switch {
	case client:
		o.hook("connection_lost", peer, err)
	case errors.Is(err, link.ErrReplaced):
		// A newer link from the same peer took over and already said
		// connection_added: the peer never left.
	default:
		o.hook("connection_removed", peer, nil)
	}
}

func (o linkObserver) LinkRefused(client bool, err error) {
	o.n.metrics.LinkRefused(client, err)
	if client {
		o.hook("connection_fail", "", err)
	}
}

func (o linkObserver) ObserveHop(d time.Duration, kind host.Kind) { o.n.metrics.ObserveHop(d, kind) }

func (o linkObserver) hook(kind, peer string, err error) {
	if o.n.plugins != nil {
		o.n.plugins.PeerEvent(kind, peer, o.n.links(), err)
	}
}
