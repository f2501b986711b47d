// Package client calls a restpipe node's local gateway from Go: the
// counterpart of RestPipe's raise_for_exception. It builds event paths,
// sends requests over TCP or a Unix socket, streams bodies, and turns the
// gateway's JSON error bodies into a typed *Error.
//
//	c, _ := client.New("127.0.0.1:8081")
//	var t struct{ TimeFromServer float64 `json:"time_from_server"` }
//	err := c.JSON(ctx, "GET", client.ServerPath("time"), nil, &t)
//	var e *client.Error
//	if errors.As(err, &e) && e.Kind == rest.KindPeerUnavailable { ... }
//
// The client is a Go module of its own
// (github.com/restpipe/restpipe/host/gateway/client): it needs only the
// standard library and proto/rest (github.com/restpipe/restpipe/proto/rest),
// the gateway's protocol, whose error kinds the node uses too.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/restpipe/restpipe/proto/rest"
)

// Client calls one node's gateway. It is safe for concurrent use.
type Client struct {
	base string // scheme and host of every request
	hc   *http.Client
}

// New returns a Client for the gateway at addr: "host:port",
// "http://host:port", or "unix:/path/to.sock". The http:// form may end in
// a path prefix ("http://proxy.example/restpipe") for a gateway behind a
// reverse proxy that strips it (see docs/nginx/restpipe.conf); event paths
// are appended to it.
func New(addr string) (*Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	c := &Client{hc: &http.Client{Transport: tr}}
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if path == "" {
			return nil, errors.New("client: empty Unix socket path")
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		tr.Proxy = nil
		c.base = "http://restpipe"
	case strings.HasPrefix(addr, "http://"):
		u, err := url.Parse(addr)
		if err != nil {
			return nil, fmt.Errorf("client: address %q: %w", addr, err)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("client: address %q has no host", addr)
		}
		if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return nil, fmt.Errorf("client: address %q: want http://host[:port][/prefix], without user, query or fragment", addr)
		}
		c.base = strings.TrimSuffix(addr, "/")
	case strings.Contains(addr, "://"):
		return nil, fmt.Errorf("client: %q: the gateway speaks plain http on loopback or a Unix socket", addr)
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("client: address %q: %w", addr, err)
		}
		c.base = "http://" + addr
	}
	return c, nil
}

// ServerPath is the path of an event for the server, from a client node:
// "/server/<noun>//<arg>/<arg>...", each argument escaped.
func ServerPath(noun string, args ...string) string { return "/server/" + noun + argPath(args) }

// ClientPath is the path of an event for client name, from the server.
func ClientPath(name, noun string, args ...string) string {
	return "/client/" + url.PathEscape(name) + "/" + noun + argPath(args)
}

// LocalPath is the path of an event for the node's own handlers.
func LocalPath(noun string, args ...string) string { return "/local/" + noun + argPath(args) }

func argPath(args []string) string {
	if len(args) == 0 {
		return ""
	}
	esc := make([]string, len(args))
	for i, a := range args {
		esc[i] = url.PathEscape(a)
	}
	return "//" + strings.Join(esc, "/")
}

// Request is one event to send.
type Request struct {
	// Method is the HTTP method; default GET.
	Method string
	// Path is the event path, from ServerPath, ClientPath or LocalPath.
	Path string
	// Query is the query string, a multi-map.
	Query url.Values
	// Body is the request body, streamed; nil for none.
	Body io.Reader
	// ContentType is the body's media type.
	ContentType string
	// Timeout is the event's deadline (X-Event-Timeout); 0 leaves the
	// node's default. The context's own deadline also applies.
	Timeout time.Duration
	// Header holds any further request headers, such as X-Request-Id.
	// ContentType and Timeout, when set, replace the headers they stand
	// for.
	Header http.Header
}

// Response is a handler's reply. Its Body streams and must be closed.
type Response struct {
	Status      int
	ReturnCode  int
	ContentType string
	Header      http.Header
	Body        io.ReadCloser
}

// Error is an event's outcome that is not a handler's reply: one of the
// kinds of rest.Kind, with the gateway's message.
type Error struct {
	Kind       rest.Kind
	Message    string
	Status     int
	ReturnCode int
	// Exception is RestPipe's exception object, for handler_failed.
	Exception *rest.Exception
	// RetryAfter is the wait the node asks for, for overloaded.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("restpipe %s: %s", e.Kind, e.Message) }

// NotGatewayError is an answer that did not come from a restpipe gateway:
// it lacks X-Event-Return-Code, which a gateway sets on every answer. It
// comes from something in front of the gateway, such as a reverse proxy's
// own error (nginx's 502 while the node is down, 401 or 403 from its access
// control), and is never mistaken for a handler's reply.
type NotGatewayError struct {
	Status int
	Header http.Header
	// Body is the start of the answer's body.
	Body string
}

func (e *NotGatewayError) Error() string {
	return fmt.Sprintf("restpipe: HTTP %d %s without %s: not a restpipe gateway's answer: %.200q",
		e.Status, http.StatusText(e.Status), rest.HeaderReturnCode, e.Body)
}

// Do sends req. It returns the handler's Response, whatever its status, an
// *Error for any other outcome of the event, a *NotGatewayError for an
// answer from something other than the gateway, or a transport error.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	u := c.base + req.Path
	if len(req.Query) > 0 {
		u += "?" + req.Query.Encode()
	}
	hr, err := http.NewRequestWithContext(ctx, method, u, req.Body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			hr.Header.Add(k, v) // canonical keys, so the Sets below replace
		}
	}
	if req.ContentType != "" {
		hr.Header.Set("Content-Type", req.ContentType)
	}
	if req.Timeout > 0 {
		hr.Header.Set(rest.HeaderTimeout, req.Timeout.String())
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, err
	}
	rc := resp.Header.Get(rest.HeaderReturnCode)
	if rc == "" {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &NotGatewayError{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	}
	code, _ := strconv.Atoi(rc)
	if kind := resp.Header.Get(rest.HeaderErrorKind); kind != "" {
		defer resp.Body.Close()
		return nil, decodeError(resp, rest.Kind(kind), code)
	}
	return &Response{Status: resp.StatusCode, ReturnCode: code, ContentType: resp.Header.Get("Content-Type"),
		Header: resp.Header, Body: resp.Body}, nil
}

// decodeError reads a gateway error body.
func decodeError(resp *http.Response, kind rest.Kind, code int) *Error {
	e := &Error{Kind: kind, Status: resp.StatusCode, ReturnCode: code}
	var body rest.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) == nil {
		e.Message, e.Exception = body.Error.Message, body.Exception
	} else {
		e.Message = strings.TrimSpace(string(b))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// Call sends an event with an optional body and returns the handler's
// reply.
func (c *Client) Call(ctx context.Context, method, path string, body io.Reader) (*Response, error) {
	return c.Do(ctx, Request{Method: method, Path: path, Body: body})
}

// JSON sends in (if not nil) as a JSON body and decodes the reply into out
// (if not nil). A reply with a status of 400 or more is an error of kind
// handler_failed carrying the reply's status, code and body.
func (c *Client) JSON(ctx context.Context, method, path string, in, out any) error {
	req := Request{Method: method, Path: path}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encode request: %w", err)
		}
		req.Body, req.ContentType = bytes.NewReader(b), "application/json"
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.Status >= 400 {
		return &Error{Kind: rest.KindHandlerFailed, Status: resp.Status, ReturnCode: resp.ReturnCode,
			Message: fmt.Sprintf("handler replied %d: %s", resp.Status, strings.TrimSpace(string(b)))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("client: decode reply: %w", err)
	}
	return nil
}
