// Package eventpath speaks the event connections of the restpipe plugin
// protocol (proto/plugin/v1/plugin.proto says the protocol whole): a Server
// on the plugin's side, which the Go SDK runs, and a Client on the node's
// side, which the node and pluginsdktest use. It is the one Go
// implementation of that protocol: framing (proto/frame), limits,
// cancellation and connection reuse live here and nowhere else.
//
// A Client sends one event at a time on each connection and keeps
// connections whose last event completed in an idle pool for the next
// ones; an event whose caller goes away closes its connection, which the
// Server sees and turns into the handler's context being canceled. A
// Server reads each connection on one goroutine and runs each event's
// handler on another, so that it sees the connection end while the
// handler runs.
//
// Both ends enforce the rules of proto/frame: bodies of known size exactly
// that long, headers at most MaxHeader bytes, a body that fails ended by a
// trailer rather than cut short.
package eventpath

import (
	"errors"
	"time"
)

// MaxHeader bounds the payload of a HEADER frame on an event connection,
// either way; a longer one is refused before anything is allocated for it.
const MaxHeader = 64 << 10

// WholeBody is the largest request body of known size a Server reads
// whole before it calls the handler (the node sends it with its header);
// larger bodies and bodies of unknown size stream to the handler as they
// arrive.
const WholeBody = 64 << 10

// SocketDirEnv is the environment variable through which go-plugin gives
// a plugin its private directory (mode 0700), where the SDKs create the
// event socket; SocketName is the socket's name in it.
const (
	SocketDirEnv = "PLUGIN_UNIX_SOCKET_DIR"
	SocketName   = "events.sock"
)

// The peer event kinds, RestPipe's connection hooks, as PeerEventRequest
// carries them.
const (
	// On the server node.
	PeerAdded   = "connection_added"   // a client linked
	PeerRemoved = "connection_removed" // a client's link ended
	// On a client node.
	PeerSuccess = "connection_success" // the link to the server came up
	PeerLost    = "connection_lost"    // the link to the server dropped
	PeerFail    = "connection_fail"    // an attempt to link failed
)

// The values of ReplyHeader.refused: the plugin ran no handler.
const (
	RefusedNoRoute     = "no_route"    // it serves no such route
	RefusedUnavailable = "unavailable" // not described or not configured yet
)

// MaxTimeout bounds the relative deadline an EventHeader may carry; a
// larger timeout_ms (up to 2^63) is taken as this much, instead of
// overflowing into a deadline in the past.
const MaxTimeout = 365 * 24 * time.Hour

// Timeout returns the deadline an EventHeader's timeout_ms gives, as a
// duration from now: 0 for none.
func Timeout(ms int64) time.Duration {
	if ms <= 0 {
		return 0
	}
	if ms > int64(MaxTimeout/time.Millisecond) {
		return MaxTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

// TimeoutMs is the timeout_ms of a deadline d from now: rounded up, so
// that the far side's deadline is never before the sender's, and the
// sender, which times out first, reports the timeout.
func TimeoutMs(d time.Duration) int64 {
	return max(int64((d+time.Millisecond-1)/time.Millisecond), 1)
}

// Errors of the Client. Each wraps the cause.
var (
	// ErrUnavailable means the plugin could not take the event or broke
	// off while answering it: its socket refused the connection, the
	// connection ended before the reply was complete (the plugin crashed
	// or closed it), or the plugin broke the protocol.
	ErrUnavailable = errors.New("plugin unavailable")

	// ErrClosed means the Client was closed.
	ErrClosed = errors.New("event client closed")

	// ErrHandlerDone is what a handler that returns without reading its
	// whole request body leaves for the rest of the body.
	ErrHandlerDone = errors.New("the handler has returned")
)
