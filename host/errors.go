package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/restpipe/restpipe/proto/rest"
)

// Kind is the stable name of an event's outcome when it is not a handler's
// reply; the kinds and their table (HTTP status, return code) are the
// gateway's protocol, defined once in proto/rest for the node and the Go
// client alike.
type Kind = rest.Kind

// The outcome kinds (see proto/rest).
const (
	KindBadRequest        = rest.KindBadRequest
	KindNoRoute           = rest.KindNoRoute
	KindHandlerFailed     = rest.KindHandlerFailed
	KindPluginUnavailable = rest.KindPluginUnavailable
	KindLinkLost          = rest.KindLinkLost
	KindPeerUnavailable   = rest.KindPeerUnavailable
	KindOverloaded        = rest.KindOverloaded
	KindTimeout           = rest.KindTimeout
	KindTooLarge          = rest.KindTooLarge
	KindForbidden         = rest.KindForbidden
	KindCanceled          = rest.KindCanceled
)

// Kinds returns every kind in the table, in the SPEC's order.
func Kinds() []Kind { return rest.Kinds() }

// ErrNotDelivered marks an event that never left this node: the link it was
// to take closed before it was sent. Such an event can safely be sent again
// (if its body was not read), on another link to the same peer.
var ErrNotDelivered = errors.New("event not delivered")

// Exception is RestPipe's exception object, carried by handler_failed.
type Exception = rest.Exception

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
