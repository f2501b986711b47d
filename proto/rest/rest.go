// Package rest is the gateway's HTTP protocol, the one definition the node
// (package host and its gateway) and the Go client (host/gateway/client, a
// module of its own) both use: the headers, the error kinds with their
// HTTP status and return code (the SPEC's error table), and the error body.
package rest

// The gateway's headers.
const (
	HeaderTimeout    = "X-Event-Timeout"     // the event's deadline, a Go duration
	HeaderReturnCode = "X-Event-Return-Code" // on every response: the handler's code, or the kind's
	HeaderErrorKind  = "X-Event-Error-Kind"  // on an error body: its kind
	HeaderRequestID  = "X-Request-Id"        // the event's request id, kept or made by the gateway
)

// Kind is the stable name of an event's outcome when it is not a handler's
// reply. Kinds are part of the product contract: callers match on them.
type Kind string

// The outcome kinds, as the SPEC's error table lists them.
const (
	KindBadRequest        Kind = "bad_request"
	KindNoRoute           Kind = "no_route"
	KindHandlerFailed     Kind = "handler_failed"
	KindPluginUnavailable Kind = "plugin_unavailable"
	KindLinkLost          Kind = "link_lost"
	KindPeerUnavailable   Kind = "peer_unavailable"
	KindOverloaded        Kind = "overloaded"
	KindTimeout           Kind = "timeout"
	KindTooLarge          Kind = "too_large"
	// KindForbidden is the outcome of an event the receiving node's
	// policy does not let its peer send (SPEC §9).
	KindForbidden Kind = "forbidden"

	// KindCanceled is the outcome of an event whose caller went away. No
	// caller ever sees it (there is nobody left to answer); it appears in
	// logs and metrics only.
	KindCanceled Kind = "canceled"
)

// kindInfo is one row of the error table.
type kindInfo struct {
	status int // HTTP status
	code   int // X-Event-Return-Code
}

// kindTable is the one table of every kind with its HTTP status and
// return code, in the SPEC's order. The gateway, the Go client and the
// docs all read it from here (Kinds, Status, ReturnCode).
var kindTable = []struct {
	kind Kind
	kindInfo
}{
	{KindBadRequest, kindInfo{400, 250}},
	{KindNoRoute, kindInfo{404, 255}},
	{KindHandlerFailed, kindInfo{500, 251}},
	{KindPluginUnavailable, kindInfo{502, 252}},
	{KindLinkLost, kindInfo{502, 253}},
	{KindPeerUnavailable, kindInfo{503, 254}},
	{KindOverloaded, kindInfo{503, 249}},
	{KindTimeout, kindInfo{504, 248}},
	{KindTooLarge, kindInfo{413, 247}},
	{KindForbidden, kindInfo{403, 245}},
	{KindCanceled, kindInfo{499, 246}},
}

// kinds indexes kindTable.
var kinds = func() map[Kind]kindInfo {
	m := make(map[Kind]kindInfo, len(kindTable))
	for _, k := range kindTable {
		m[k.kind] = k.kindInfo
	}
	return m
}()

// Kinds returns every kind in the table, in the SPEC's order.
func Kinds() []Kind {
	ks := make([]Kind, len(kindTable))
	for i, k := range kindTable {
		ks[i] = k.kind
	}
	return ks
}

// Known reports whether k is in the error table.
func (k Kind) Known() bool { _, ok := kinds[k]; return ok }

// Status returns the HTTP status for k; 500 for an unknown kind.
func (k Kind) Status() int {
	if i, ok := kinds[k]; ok {
		return i.status
	}
	return 500
}

// ReturnCode returns the X-Event-Return-Code for k; that of handler_failed
// for an unknown kind.
func (k Kind) ReturnCode() int {
	if i, ok := kinds[k]; ok {
		return i.code
	}
	return kinds[KindHandlerFailed].code
}

// Exception is RestPipe's exception object, carried by handler_failed.
type Exception struct {
	Message   string `json:"message"`
	Class     string `json:"class"`
	Traceback string `json:"traceback,omitempty"`
}

// ErrorBody is the JSON of every gateway outcome that is not a handler's
// reply: {"error": {"kind", "message", "exception"}}, with RestPipe's
// exception object also at the top level for handler_failed.
type ErrorBody struct {
	Error struct {
		Kind      Kind       `json:"kind"`
		Message   string     `json:"message"`
		Exception *Exception `json:"exception,omitempty"`
	} `json:"error"`
	Exception *Exception `json:"exception,omitempty"`
}
