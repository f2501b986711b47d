package host

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/restpipe/restpipe/proto/route"
)

// Verbs are the event verbs, the lower-case HTTP methods a gateway accepts.
// HEAD is delivered as "get" and its reply body dropped. (The route
// grammar is proto/route's, which the plugin SDK shares.)
var Verbs = route.Verbs

// Role is the part a node plays on the link.
type Role string

// The two roles. Clients dial out to the one server.
const (
	RoleServer Role = "server"
	RoleClient Role = "client"
)

// Node names a node: its role and the name its certificate carries.
type Node struct {
	Role Role
	Name string
}

// Event is one request travelling from a caller to a handler, on this node or
// across the link. The deadline and the caller's cancellation travel in the
// context passed alongside it, never in the Event.
type Event struct {
	// ID identifies the event in the logs of every node it crosses.
	ID string
	// Verb is the lower-case HTTP method, one of Verbs.
	Verb string
	// Noun is one or more '/'-separated segments, such as "time/utc".
	Noun string
	// Args are the arguments after the first "//" of the path, each
	// percent-decoded after splitting.
	Args []string
	// Query is the request's query string as a multi-map. It may be nil.
	Query map[string][]string
	// ContentType is the body's media type without parameters, or "".
	ContentType string
	// Body is the request body, or nil when there is none. A handler reads it
	// at its own pace and never closes it: whoever built the Event does.
	//
	// If Body also implements io.Closer, its Close interrupts: a component
	// that stops reading early (the event failed or its context ended) may
	// call it, from any goroutine, to make a blocked Read return promptly.
	// Such a Close must be safe to call concurrently with Read.
	Body io.Reader
	// Size is the body's length in bytes, or -1 when unknown (a chunked
	// upload). It is 0 when Body is nil.
	Size int64
	// Peer is the verified name of the node the event came from, taken from
	// that node's certificate by the receiving link; "" for a local caller.
	// For an event a cluster's servers forwarded (SPEC §8), it is the name
	// of the node whose gateway took the event, as the first server's link
	// verified it, carried by server-to-server hops that only certificates
	// with the server role may make (see Via).
	Peer string

	// Via is, on the node receiving a forwarded event, the verified name of
	// the server that relayed it here (Peer then being the node the event
	// came from); "" when the event came straight from its maker.
	Via string

	// Target is the client a server forwards the event to, on a link
	// between two servers of a cluster; "" everywhere else. Only links of
	// certificates with the server role carry it.
	Target string

	// Hops counts the server-to-server links a forwarded event crossed to
	// reach this node: 0 on the server whose gateway took it, 1 once
	// forwarded. A cluster bounds it so that an event is relayed at most
	// once more when presence is out of date.
	Hops int
}

// Route returns the event's route name, see RouteName.
func (e *Event) Route() string { return RouteName(e.Verb, e.Noun) }

// RouteName returns RestPipe's route name for a verb and a noun: the verb, an
// underscore, and the noun with '/' turned into '_' ("get", "time/utc" gives
// "get_time_utc").
func RouteName(verb, noun string) string { return route.Name(verb, noun) }

// CheckVerb returns nil if verb is one of Verbs.
func CheckVerb(verb string) error { return route.CheckVerb(verb) }

// CheckNoun returns nil if noun is one or more '/'-separated segments, each
// made of ASCII letters, digits, '-' and '_'.
func CheckNoun(noun string) error { return route.CheckNoun(noun) }

// CheckStatus returns nil for a status a reply may carry: 0 (meaning 200)
// or a final HTTP status, 200 to 599. Nodes check every reply that crosses
// a process boundary (from a plugin, from a peer) against it: anything
// else would break or hang the caller's HTTP connection.
func CheckStatus(status int) error {
	if status == 0 || status >= 200 && status <= 599 {
		return nil
	}
	return fmt.Errorf("reply status %d is not a final HTTP status (200 to 599)", status)
}

// Reply is a handler's answer to an Event.
type Reply struct {
	// Status is the HTTP status to give the caller; 0 means 200.
	Status int
	// Code is the X-Event-Return-Code; 0 by default.
	Code int
	// ContentType is the reply body's media type, or "".
	ContentType string
	// Size is the body's length in bytes, or -1 when unknown.
	Size int64
	// Body is the reply body, or nil when there is none. Whoever receives
	// the Reply from Handle must Close Body (when not nil), even without
	// reading it: closing ends the event and releases what it holds.
	Body io.ReadCloser
}

// StatusOrOK returns r.Status, or 200 when it is unset.
func (r *Reply) StatusOrOK() int {
	if r.Status == 0 {
		return 200
	}
	return r.Status
}

// Close closes the reply body if there is one. It is safe to call on a nil
// Reply.
func (r *Reply) Close() error {
	if r == nil || r.Body == nil {
		return nil
	}
	return r.Body.Close()
}

// Handler answers events. Handle returns either a Reply, whose Body the
// caller must close, or an error, best an *Error of a stable Kind. It must
// return promptly once ctx is done. Implementations are safe for concurrent
// use.
type Handler interface {
	Handle(ctx context.Context, ev *Event) (*Reply, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, ev *Event) (*Reply, error)

// Handle calls f(ctx, ev).
func (f HandlerFunc) Handle(ctx context.Context, ev *Event) (*Reply, error) { return f(ctx, ev) }

// EventRecord describes an event a gateway answered, for its observers
// (metrics, the status page).
type EventRecord struct {
	// ID is the event's request id.
	ID string
	// Route is the event's route name, "" when it was refused before it
	// had one.
	Route string
	// Peer is where it went: "local", "server", or a client's name.
	Peer string
	// Kind is the outcome: "" for a handler's reply, else an error kind;
	// Message says why.
	Kind    Kind
	Message string
	// Duration is from the request's arrival to the end of the reply.
	Duration time.Duration
	// BytesIn and BytesOut count the request and reply body bytes.
	BytesIn, BytesOut int64
}
