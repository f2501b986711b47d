package pluginsdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Node is the node a plugin runs on.
type Node struct {
	// Role is "server" or "client".
	Role string
	// Name is the node's name, from its certificate.
	Name string
}

// Event is one request for a handler.
type Event struct {
	// ID identifies the event in the logs of every node it crosses.
	ID string
	// Verb is the lower-case HTTP method: get, post, put, patch or delete.
	// A HEAD request arrives as get.
	Verb string
	// Noun is the route's noun, such as "time/utc".
	Noun string
	// Args are the arguments after the first "//" of the path, each
	// percent-decoded: GET /server/cat//hello%20/world has Args
	// ["hello ", "world"].
	Args []string
	// Query is the query string as a multi-map.
	Query map[string][]string
	// ContentType is the request body's media type, without parameters.
	ContentType string
	// Body is the request body, streamed as it arrives. It is never nil:
	// an event without a body reads as empty.
	Body io.Reader
	// Size is the body's length, or -1 when unknown (a chunked upload).
	Size int64
	// Peer is the verified name of the node that sent the event, taken from
	// its certificate; "" for a caller on this node (/local/...).
	Peer string
	// Node is the node this plugin runs on.
	Node Node
}

// Route returns the event's route name, such as "get_time_utc".
func (e *Event) Route() string { return RouteName(e.Verb, e.Noun) }

// Arg returns argument i, or "" when there are fewer arguments.
func (e *Event) Arg(i int) string {
	if i < 0 || i >= len(e.Args) {
		return ""
	}
	return e.Args[i]
}

// QueryValue returns the first value of query key k, or "".
func (e *Event) QueryValue(k string) string {
	if vs := e.Query[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// ErrBodyTooLarge is returned by ReadBody when the body exceeds its limit.
var ErrBodyTooLarge = errors.New("request body too large")

// ReadBody reads the whole body, refusing one longer than max bytes with
// ErrBodyTooLarge. Prefer reading Body as a stream for bodies that may be
// large.
func (e *Event) ReadBody(max int64) ([]byte, error) {
	if e.Size > max {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrBodyTooLarge, e.Size, max)
	}
	limit := max
	if limit < math.MaxInt64 {
		limit++ // one byte more tells a body over max from one of max
	}
	b, err := io.ReadAll(io.LimitReader(e.Body, limit))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, max)
	}
	return b, nil
}

// DecodeJSON decodes the body, as JSON of at most 8 MiB, into v.
func (e *Event) DecodeJSON(v any) error {
	b, err := e.ReadBody(8 << 20)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}
