package host

import (
	"context"
	"errors"
	"fmt"
	"time"
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

// ErrNotDelivered marks an event that never left this node: the link it was
// to take closed before it was sent. Such an event can safely be sent again
// (if its body was not read), on another link to the same peer.
var ErrNotDelivered = errors.New("event not delivered")

// Exception is RestPipe's exception object, carried by handler_failed.
type Exception struct {
	Message   string `json:"message"`
	Class     string `json:"class"`
	Traceback string `json:"traceback,omitempty"`
}

// Error is an event's failure with a stable Kind. It is what every component
// returns for an event that did not get a handler's reply.
type Error struct {
	Kind    Kind
	Message string // a human sentence, without the kind
	// Exception is set for handler_failed when the handler raised one.
	Exception *Exception
	// RetryAfter is how long an overloaded caller should wait; 0 if unset.
	RetryAfter time.Duration
	// Err is the underlying cause, if any; it is not shown to callers.
	Err error
}

// Errorf returns an *Error of kind k with a formatted message.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of kind k whose message is msg followed by err's
// text, keeping err as its cause.
func Wrap(k Kind, err error, msg string) *Error {
	return &Error{Kind: k, Message: msg + ": " + err.Error(), Err: err}
}

func (e *Error) Error() string { return string(e.Kind) + ": " + e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// AsError returns err as an *Error: itself if it is one (or wraps one),
// timeout for a passed deadline, canceled for a canceled context, and
// handler_failed for anything else. It returns nil for a nil err.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Kind: KindTimeout, Message: "the event's deadline passed", Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Kind: KindCanceled, Message: "the caller went away", Err: err}
	default:
		return &Error{Kind: KindHandlerFailed, Message: err.Error(), Err: err}
	}
}

// KindOf returns the kind of err as AsError sees it, or "" for a nil err.
func KindOf(err error) Kind {
	if e := AsError(err); e != nil {
		return e.Kind
	}
	return ""
}
