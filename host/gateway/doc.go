// Package gateway is a node's local REST API: plain HTTP/1.1 on loopback or
// a Unix socket, through which any program on the node sends events to the
// other side (or to this node's own handlers) and reads their replies.
//
//	GET  /server/time                      from a client node, to the server
//	GET  /client/web1/cat//hello%20/world  from the server, to client web1
//	POST /local/echo                       to this node's own handlers
//	GET  /healthz, /status, /metrics       the node itself
//	GET  /ui/                              the node's status page, for people
//
// The path grammar is in parsePath; the verb is the lower-case method (HEAD
// is sent as get and its body dropped), the query string travels as a
// multi-map, the Content-Type without its parameters, and the body streams
// both ways, as it arrives, with flow control end to end.
//
// Every response carries X-Event-Return-Code. A handler's reply keeps its
// status, content type and body. Any other outcome is a JSON error body
//
//	{"error": {"kind": "timeout", "message": "..."}}
//
// with the status and return code of its kind (host.Kind), and the header
// X-Event-Error-Kind, so a client can tell a gateway error from a handler's
// own error reply. A handler_failed error also carries RestPipe's exception
// object, at the top level of the body as RestPipe had it.
//
// Deadlines: the X-Event-Timeout header (a Go duration) or the node's
// default sets the event's deadline; it travels with the event, and the
// caller hanging up cancels the event wherever it runs. A peer that is not
// connected is waited for (PeerWait, within the deadline), then the event
// fails with peer_unavailable.
//
// A reply body that fails after its status was sent cannot change the
// status any more: the gateway then aborts the connection, so the caller
// sees a truncated transfer, never a short body passed off as complete.
package gateway
