package plugins

import (
	"context"
	"time"

	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// This file is the queue of peer events (RestPipe's connection hooks) of
// one plugin process.

// stopPeers ends peer event delivery: the hook call in progress is
// canceled and events still queued are dropped.
func (in *instance) stopPeers() {
	if in.peers == nil {
		return
	}
	in.mu.Lock()
	in.peersClosed = true
	close(in.peers)
	in.mu.Unlock()
	in.peerCancel()
}

// peerBacklog bounds the peer events queued for a plugin; beyond it new
// ones are dropped (and logged).
const peerBacklog = 256

// peerEvent queues ev for the plugin, if it asked for peer events. It
// never blocks: a plugin that falls behind loses events.
func (in *instance) peerEvent(ev *pluginv1.PeerEventRequest) {
	if in.peers == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.peersClosed {
		return
	}
	select {
	case in.peers <- ev:
	default:
		in.observer.PeerHook(false)
		in.log.Warn("peer event dropped: the plugin's hook is behind", "kind", ev.Kind, "peer", ev.Peer, "backlog", peerBacklog)
	}
}

// deliverPeers calls the plugin's hook for each queued event, in order,
// until the queue is closed by kill.
func (in *instance) deliverPeers(base context.Context) {
	defer close(in.peersDone)
	for ev := range in.peers {
		if base.Err() != nil {
			continue // stopping: drop what is left
		}
		ctx, cancel := context.WithTimeout(base, 10*time.Second)
		_, err := in.rpc.PeerEvent(ctx, ev)
		cancel()
		in.observer.PeerHook(err == nil)
		if err != nil {
			in.log.Warn("peer hook failed", "kind", ev.Kind, "peer", ev.Peer, "error", err)
		}
	}
}
