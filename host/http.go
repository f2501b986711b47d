package host

import "github.com/restpipe/restpipe/proto/rest"

// ErrorBody is the JSON of every gateway outcome that is not a handler's
// reply (see proto/rest, where the gateway's headers are too).
type ErrorBody = rest.ErrorBody

// NewErrorBody returns the error body of e.
func NewErrorBody(e *Error) ErrorBody {
	var b ErrorBody
	b.Error.Kind, b.Error.Message, b.Error.Exception = e.Kind, e.Message, e.Exception
	b.Exception = e.Exception
	return b
}
