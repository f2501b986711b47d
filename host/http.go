package host

// The gateway's HTTP protocol, the one definition the gateway and its Go
// client (host/gateway/client) both use: its headers and its error body.
const (
	HeaderTimeout    = "X-Event-Timeout"     // the event's deadline, a Go duration
	HeaderReturnCode = "X-Event-Return-Code" // on every response: the handler's code, or the kind's
	HeaderErrorKind  = "X-Event-Error-Kind"  // on an error body: its kind
	HeaderRequestID  = "X-Request-Id"        // the event's request id, kept or made by the gateway
)

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

// NewErrorBody returns the error body of e.
func NewErrorBody(e *Error) ErrorBody {
	var b ErrorBody
	b.Error.Kind, b.Error.Message, b.Error.Exception = e.Kind, e.Message, e.Exception
	b.Exception = e.Exception
	return b
}
