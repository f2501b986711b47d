package link

import "errors"

// Session-level errors: each ends a whole link, and with it every event in
// flight on it. Per-event failures are *host.Error values instead.
var (
	// ErrServerClosed is returned by Server.Serve after Server.Close.
	ErrServerClosed = errors.New("link server closed")

	// ErrClosed ends a session closed by its owner.
	ErrClosed = errors.New("link closed")

	// ErrReplaced ends a session whose peer connected again: the newest
	// link for a name wins.
	ErrReplaced = errors.New("replaced by a newer link from the same peer")

	// ErrRefused means the other side refused the link handshake; the
	// error text carries its reason.
	ErrRefused = errors.New("link refused")

	// ErrKeepAlive ends a session whose peer did not answer a ping in
	// time: the link is dead or silent.
	ErrKeepAlive = errors.New("keepalive timeout: the peer stopped answering")

	// ErrTooManyStreams ends a session whose peer opened far more streams
	// than it may have events in flight.
	ErrTooManyStreams = errors.New("peer opened too many streams")

	// ErrProtocol ends a session whose peer broke the link protocol on a
	// stream (a malformed or oversized frame, a body not matching its
	// size, an event out of sequence).
	ErrProtocol = errors.New("peer broke the link protocol")

	// errTooManyFromSource refuses a connection from a source address
	// that has MaxHandshakesPerSource in handshake already, when
	// maxParked connections wait for a slot already.
	errTooManyFromSource = errors.New("too many connections in handshake from one address")

	// errConnClosed fails writes to a link's connection after it closed.
	errConnClosed = errors.New("link connection closed")

	// ErrNotConnected is returned by Lookup when no session for the name
	// registered before the context ended.
	ErrNotConnected = errors.New("peer not connected")
)
