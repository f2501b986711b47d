package gateway_test

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
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/gateway"
	"github.com/restpipe/restpipe/host/gateway/client"
)

// routes is a tiny dispatch table: route name -> handler. An unknown route
// fails with no_route, as a node's table does.
type routes map[string]host.HandlerFunc

// Handle implements host.Handler.
func (rs routes) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	h, ok := rs[ev.Route()]
	if !ok {
		return nil, host.Errorf(host.KindNoRoute, "no handler for route %s", ev.Route())
	}
	return h(ctx, ev)
}

// seen is what a handler saw of an event: the test handlers answer with
// it, as JSON.
type seen struct {
	By          string              `json:"by"` // the name of the handlers' node
	ID          string              `json:"id"`
	Verb        string              `json:"verb"`
	Noun        string              `json:"noun"`
	Args        []string            `json:"args"`
	Query       map[string][]string `json:"query"`
	ContentType string              `json:"content_type"`
	Body        string              `json:"body"`
	Size        int64               `json:"size"`
	DeadlineMS  int64               `json:"deadline_ms"` // -1 without a deadline
}

// handlers returns the handlers of the node called by:
//
//	get|post|put_echo  -> the event as seen (200, code 0, JSON)
//	get_missing        -> the handler's own 404 reply, code 7, text
//	get_fail           -> handler_failed with a ValueError exception
//	get_busy           -> overloaded, retry after 2.5s
//	get_slow           -> waits for the event's context to end
//	get_kind//<kind>   -> an error of that kind
//	post_sum           -> {"sum": a+b} for a JSON {"a", "b"}
//	get_cat//<a>/<b>   -> {"result_from_<by>": a+b}, RestPipe's example
func handlers(by string) routes {
	echo := func(ctx context.Context, ev *host.Event) (*host.Reply, error) {
		s := seen{By: by, ID: ev.ID, Verb: ev.Verb, Noun: ev.Noun, Args: ev.Args, Query: ev.Query,
			ContentType: ev.ContentType, Size: ev.Size, DeadlineMS: -1}
		if d, ok := ctx.Deadline(); ok {
			s.DeadlineMS = time.Until(d).Milliseconds()
		}
		if ev.Body != nil {
			b, err := io.ReadAll(ev.Body)
			if err != nil {
				return nil, err
			}
			s.Body = string(b)
		}
		return jsonReply(s), nil
	}
	return routes{
		"get_echo":  echo,
		"post_echo": echo,
		"put_echo":  echo,
		"get_missing": func(context.Context, *host.Event) (*host.Reply, error) {
			return textReply(404, 7, "nothing here"), nil
		},
		"get_fail": func(context.Context, *host.Event) (*host.Reply, error) {
			return nil, &host.Error{Kind: host.KindHandlerFailed, Message: "bad value: 42",
				Exception: &host.Exception{Class: "ValueError", Message: "bad value: 42"}}
		},
		"get_busy": func(context.Context, *host.Event) (*host.Reply, error) {
			return nil, &host.Error{Kind: host.KindOverloaded, Message: "too many events in flight", RetryAfter: 2500 * time.Millisecond}
		},
		"get_slow": func(ctx context.Context, _ *host.Event) (*host.Reply, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"get_kind": func(_ context.Context, ev *host.Event) (*host.Reply, error) {
			return nil, host.Errorf(host.Kind(ev.Args[0]), "made to fail with %s", ev.Args[0])
		},
		"post_sum": func(_ context.Context, ev *host.Event) (*host.Reply, error) {
			var in struct{ A, B int }
			if err := json.NewDecoder(ev.Body).Decode(&in); err != nil {
				return textReply(400, 1, "want {\"a\": int, \"b\": int}"), nil
			}
			return jsonReply(map[string]int{"sum": in.A + in.B}), nil
		},
		"get_cat": func(_ context.Context, ev *host.Event) (*host.Reply, error) {
			if len(ev.Args) != 2 {
				return nil, &host.Error{Kind: host.KindHandlerFailed, Message: "cat takes exactly 2 arguments",
					Exception: &host.Exception{Class: "TypeError", Message: "cat takes exactly 2 arguments"}}
			}
			return jsonReply(map[string]string{"result_from_" + by: ev.Args[0] + ev.Args[1]}), nil
		},
	}
}

// jsonReply is a 200 reply with v as its JSON body.
func jsonReply(v any) *host.Reply {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return &host.Reply{ContentType: "application/json", Size: int64(len(b)), Body: io.NopCloser(bytes.NewReader(b))}
}

// textReply is a text/plain reply of the given status and return code.
func textReply(status, code int, text string) *host.Reply {
	return &host.Reply{Status: status, Code: code, ContentType: "text/plain", Size: int64(len(text)),
		Body: io.NopCloser(strings.NewReader(text))}
}

// peers is a fake gateway.Peers: the connected peers by name ("" is the
// server, for a client node). Any other name is not connected.
type peers map[string]host.Handler

// Peer implements gateway.Peers.
func (p peers) Peer(_ context.Context, name string) (host.Handler, error) {
	if h, ok := p[name]; ok {
		return h, nil
	}
	return nil, fmt.Errorf("peer %q is not connected", name)
}

// clientNode is the gateway configuration of client node c1: its own
// handlers on /local/, the server's on /server/.
func clientNode() gateway.Config {
	return gateway.Config{
		Node:  host.Node{Role: host.RoleClient, Name: "c1"},
		Local: handlers("client"),
		Peers: peers{"": handlers("server")},
	}
}

// serverNode is the gateway configuration of the server: client web1 is
// connected, no other.
func serverNode() gateway.Config {
	return gateway.Config{
		Node:  host.Node{Role: host.RoleServer, Name: "server"},
		Local: handlers("server"),
		Peers: peers{"web1": handlers("web1")},
	}
}

// serve serves a gateway made from cfg on a TCP port of 127.0.0.1 (network
// "tcp") or on a Unix socket in dir (network "unix") and returns the
// address for client.New and a function that stops serving and returns
// once the server has.
func serve(network, dir string, cfg gateway.Config) (addr string, stop func() error, err error) {
	g, err := gateway.New(cfg)
	if err != nil {
		return "", nil, err
	}
	listen := "127.0.0.1:0"
	if network == "unix" {
		listen = "unix:" + dir + "/gw.sock"
	}
	ln, err := gateway.Listen(listen, 0)
	if err != nil {
		return "", nil, err
	}
	addr = ln.Addr().String()
	if network == "unix" {
		addr = listen
	}
	srv := g.HTTPServer(ln)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return addr, func() error {
		err := srv.Close()
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			return serr
		}
		return err
	}, nil
}

// startGateway serves a gateway made from cfg for the test and returns a
// Client for it.
func startGateway(t testing.TB, network string, cfg gateway.Config) *client.Client {
	t.Helper()
	addr, stop, err := serve(network, t.TempDir(), cfg)
	if err != nil {
		t.Fatalf("serve(%s): %v", network, err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the gateway: %v", err)
		}
	})
	c, err := client.New(addr)
	if err != nil {
		t.Fatalf("client.New(%q) = %v", addr, err)
	}
	return c
}

// networks are the two ways to reach a gateway.
var networks = []string{"tcp", "unix"}

// call sends req and returns what the handler saw, failing the test on
// anything but a 200 reply.
func call(t testing.TB, c *client.Client, req client.Request) seen {
	t.Helper()
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatalf("Do(%s %s) = %v", req.Method, req.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("Do(%s %s): reading the reply: %v", req.Method, req.Path, err)
	}
	if resp.Status != 200 || resp.ReturnCode != 0 {
		t.Fatalf("Do(%s %s) = %d code %d %q, want 200 code 0", req.Method, req.Path, resp.Status, resp.ReturnCode, b)
	}
	var s seen
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("Do(%s %s) = %q: %v", req.Method, req.Path, b, err)
	}
	return s
}

func TestPaths(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{client.ServerPath("time"), "/server/time"},
		{client.ServerPath("time/utc"), "/server/time/utc"},
		{client.ServerPath("cat", "hello ", "world"), "/server/cat//hello%20/world"},
		{client.ServerPath("cat", "a/b", "100%", "✓"), "/server/cat//a%2Fb/100%25/%E2%9C%93"},
		{client.ServerPath("cat", ""), "/server/cat//"},
		{client.ServerPath("cat", "", ""), "/server/cat///"},
		{client.ClientPath("web1", "cat", "x?y#z", "a;b,c"), "/client/web1/cat//x%3Fy%23z/a%3Bb%2Cc"},
		{client.LocalPath("echo"), "/local/echo"},
		{client.LocalPath("files", "dir/file name.txt"), "/local/files//dir%2Ffile%20name.txt"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("path = %q, want %q", tt.got, tt.want)
		}
	}
}

// TestPathsRoundTrip checks every argument reaches the handler exactly as
// it was given, whatever it holds, over TCP and a Unix socket.
func TestPathsRoundTrip(t *testing.T) {
	args := [][]string{
		nil,
		{""},
		{"", ""},
		{"hello ", "world"},
		{"a/b", "/", "//", "a//b/"},
		{" ", "  two  ", "tab\there"},
		{"%", "100%", "%2F", "%zz", "%%"},
		{"naïve", "日本語", "✓", "emoji 🙂"},
		{"?x=1", "#frag", "a;b", "a,b", "a+b", "a&b=c", "@:$!'()*~"},
		{".", "..", "...", "a/../b"},
		{`"quoted"`, `back\slash`, "<>{}|^`[]"},
	}
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			cl := startGateway(t, network, clientNode())
			sv := startGateway(t, network, serverNode())
			for _, a := range args {
				paths := []struct {
					c        *client.Client
					path, by string
				}{
					{cl, client.ServerPath("echo", a...), "server"},
					{cl, client.LocalPath("echo", a...), "client"},
					{sv, client.ClientPath("web1", "echo", a...), "web1"},
					{sv, client.ClientPath("WEB1", "echo", a...), "web1"},
				}
				for _, p := range paths {
					s := call(t, p.c, client.Request{Path: p.path})
					// No arguments: no "//", and the handler sees none.
					if s.By != p.by || s.Noun != "echo" || !reflect.DeepEqual(s.Args, a) {
						t.Errorf("GET %s: handler %s saw noun %q args %q, want handler %s, noun echo, args %q", p.path, s.By, s.Noun, s.Args, p.by, a)
					}
				}
			}
		})
	}
}

// TestDo checks what a request carries to the handler: method, noun, body,
// content type, query, request ID and deadline.
func TestDo(t *testing.T) {
	for _, network := range networks {
		t.Run(network, func(t *testing.T) {
			cfg := clientNode()
			cfg.DefaultTimeout = 7 * time.Second
			c := startGateway(t, network, cfg)
			query := url.Values{"x": {"1", "2"}, "y": {"a b&c=d"}, "ünï": {"çödé", ""}, "empty": {""}}
			tests := []struct {
				name string
				req  client.Request
				want seen // DeadlineMS: the most; Size -1: unknown
			}{
				{"plain get", client.Request{Path: client.ServerPath("echo")},
					seen{Verb: "get", Noun: "echo", DeadlineMS: 7000}},
				{"explicit GET", client.Request{Method: "GET", Path: client.ServerPath("echo", "a")},
					seen{Verb: "get", Noun: "echo", Args: []string{"a"}, DeadlineMS: 7000}},
				{"post with body and type", client.Request{Method: "POST", Path: client.ServerPath("echo"),
					Body: strings.NewReader("some bytes"), ContentType: "Text/Plain; charset=utf-8"},
					seen{Verb: "post", Noun: "echo", Body: "some bytes", Size: 10, ContentType: "text/plain", DeadlineMS: 7000}},
				{"put streamed, unknown length", client.Request{Method: "PUT", Path: client.LocalPath("echo"),
					Body: io.MultiReader(strings.NewReader("part one, "), strings.NewReader("part two")), ContentType: "application/octet-stream"},
					seen{Verb: "put", Noun: "echo", Body: "part one, part two", Size: -1, ContentType: "application/octet-stream", DeadlineMS: 7000}},
				{"query multi-map", client.Request{Path: client.ServerPath("echo"), Query: query},
					seen{Verb: "get", Noun: "echo", Query: query, DeadlineMS: 7000}},
				{"timeout", client.Request{Path: client.ServerPath("echo"), Timeout: 2 * time.Second},
					seen{Verb: "get", Noun: "echo", DeadlineMS: 2000}},
				{"sub-second timeout", client.Request{Path: client.ServerPath("echo"), Timeout: 1500 * time.Millisecond},
					seen{Verb: "get", Noun: "echo", DeadlineMS: 1500}},
				{"request id header", client.Request{Path: client.ServerPath("echo"), Header: http.Header{"X-Request-Id": {"req-42"}}},
					seen{ID: "req-42", Verb: "get", Noun: "echo", DeadlineMS: 7000}},
				{"timeout header", client.Request{Path: client.ServerPath("echo"), Header: http.Header{"X-Event-Timeout": {"3s"}}},
					seen{Verb: "get", Noun: "echo", DeadlineMS: 3000}},
				{"Timeout and ContentType replace their headers", client.Request{Method: "POST", Path: client.ServerPath("echo"),
					Body: strings.NewReader("x"), ContentType: "text/csv", Timeout: 2 * time.Second,
					Header: http.Header{"x-event-timeout": {"9s"}, "content-type": {"image/png"}}},
					seen{Verb: "post", Noun: "echo", Body: "x", Size: 1, ContentType: "text/csv", DeadlineMS: 2000}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					s := call(t, c, tt.req)
					if s.DeadlineMS > tt.want.DeadlineMS || s.DeadlineMS < tt.want.DeadlineMS-1000 {
						t.Errorf("Do(%s): the handler's deadline is %dms away, want just under %dms", tt.name, s.DeadlineMS, tt.want.DeadlineMS)
					}
					if tt.want.ID == "" {
						if s.ID == "" {
							t.Errorf("Do(%s): the event has no ID", tt.name)
						}
						tt.want.ID = s.ID
					}
					tt.want.By, tt.want.DeadlineMS = "server", s.DeadlineMS
					if strings.HasPrefix(tt.req.Path, "/local/") {
						tt.want.By = "client"
					}
					if tt.want.Query == nil {
						tt.want.Query = map[string][]string{}
					}
					if s.Query == nil {
						s.Query = map[string][]string{}
					}
					if !reflect.DeepEqual(s, tt.want) {
						t.Errorf("Do(%s): the handler saw\n%+v\nwant\n%+v", tt.name, s, tt.want)
					}
				})
			}
		})
	}
}

// TestDoReply checks a handler's reply comes back whole, whatever its
// status: a 404 from a handler is a Response, not an error.
func TestDoReply(t *testing.T) {
	c := startGateway(t, "tcp", clientNode())
	ctx := context.Background()

	resp, err := c.Do(ctx, client.Request{Path: client.ServerPath("missing"), Header: http.Header{"X-Request-Id": {"r-404"}}})
	if err != nil {
		t.Fatalf("Do(missing) = %v, want the handler's 404 reply", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 404 || resp.ReturnCode != 7 || resp.ContentType != "text/plain" || string(b) != "nothing here" {
		t.Errorf("Do(missing) = %d code %d type %q %q, want 404 code 7 type text/plain %q", resp.Status, resp.ReturnCode, resp.ContentType, b, "nothing here")
	}
	if got := resp.Header.Get("X-Request-Id"); got != "r-404" {
		t.Errorf("Do(missing) X-Request-Id = %q, want r-404", got)
	}

	// HEAD is get without the body.
	resp, err = c.Do(ctx, client.Request{Method: "HEAD", Path: client.ServerPath("echo")})
	if err != nil {
		t.Fatalf("Do(HEAD echo) = %v", err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Status != 200 || resp.ReturnCode != 0 || len(b) != 0 {
		t.Errorf("Do(HEAD echo) = %d code %d %q, want 200 code 0 and no body", resp.Status, resp.ReturnCode, b)
	}

	// Call is Do with a method, a path and a body.
	resp, err = c.Call(ctx, "POST", client.LocalPath("echo", "x"), strings.NewReader("abc"))
	if err != nil {
		t.Fatalf("Call(POST echo) = %v", err)
	}
	var s seen
	err = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if err != nil || s.By != "client" || s.Verb != "post" || s.Body != "abc" || !reflect.DeepEqual(s.Args, []string{"x"}) {
		t.Errorf("Call(POST echo) = %+v, %v; want the local handler to see post [x] %q", s, err, "abc")
	}
}

// TestErrorKinds produces each kind of the error table through a real
// gateway and checks the client turns it into an *Error with the table's
// status and return code.
func TestErrorKinds(t *testing.T) {
	cfg := clientNode()
	cfg.MaxBody = 1 << 10
	c := startGateway(t, "unix", cfg)
	sv := startGateway(t, "tcp", serverNode())
	tests := []struct {
		name string
		c    *client.Client
		req  client.Request
		kind host.Kind
		msg  string // in the message
		// check looks further at the error.
		check func(t *testing.T, e *client.Error)
	}{
		{"malformed path", c, client.Request{Path: "/server//x"}, host.KindBadRequest, "empty noun", nil},
		{"unknown target", c, client.Request{Path: "/nowhere/time"}, host.KindBadRequest, "want /local/", nil},
		{"bad noun", c, client.Request{Path: client.ServerPath("bad noun")}, host.KindBadRequest, "may hold only", nil},
		{"client path on a client node", c, client.Request{Path: client.ClientPath("web1", "echo")}, host.KindBadRequest, "client node", nil},
		{"server path on the server", sv, client.Request{Path: client.ServerPath("echo")}, host.KindBadRequest, "server node", nil},
		{"bad timeout header", c, client.Request{Path: client.ServerPath("echo"), Header: http.Header{"X-Event-Timeout": {"soon"}}}, host.KindBadRequest, "X-Event-Timeout", nil},
		{"bad method", c, client.Request{Method: "OPTIONS", Path: client.ServerPath("echo")}, host.KindBadRequest, "OPTIONS", nil},
		{"no route", c, client.Request{Path: client.ServerPath("nothing/here")}, host.KindNoRoute, "get_nothing_here", nil},
		{"no route for the verb", c, client.Request{Method: "DELETE", Path: client.LocalPath("echo")}, host.KindNoRoute, "delete_echo", nil},
		{"handler failed", c, client.Request{Path: client.ServerPath("fail")}, host.KindHandlerFailed, "bad value: 42",
			func(t *testing.T, e *client.Error) {
				want := &host.Exception{Class: "ValueError", Message: "bad value: 42"}
				if !reflect.DeepEqual(e.Exception, want) {
					t.Errorf("Exception = %+v, want %+v", e.Exception, want)
				}
			}},
		{"plugin unavailable", c, client.Request{Path: client.ServerPath("kind", "plugin_unavailable")}, host.KindPluginUnavailable, "made to fail", nil},
		{"link lost", c, client.Request{Path: client.ServerPath("kind", "link_lost")}, host.KindLinkLost, "made to fail", nil},
		{"peer unavailable", sv, client.Request{Path: client.ClientPath("nobody", "echo")}, host.KindPeerUnavailable, `no client named "nobody"`, nil},
		{"overloaded", c, client.Request{Path: client.ServerPath("busy")}, host.KindOverloaded, "too many",
			func(t *testing.T, e *client.Error) {
				if e.RetryAfter != 3*time.Second {
					t.Errorf("RetryAfter = %v, want 3s (2.5s rounded up to whole seconds)", e.RetryAfter)
				}
			}},
		{"timeout", c, client.Request{Path: client.ServerPath("slow"), Timeout: 200 * time.Millisecond}, host.KindTimeout, "200ms", nil},
		{"too large", c, client.Request{Method: "POST", Path: client.ServerPath("echo"), Body: strings.NewReader(strings.Repeat("x", 2<<10))}, host.KindTooLarge, "1024-byte limit", nil},
		{"forbidden", c, client.Request{Path: client.ServerPath("kind", "forbidden")}, host.KindForbidden, "made to fail", nil},
		{"too large, streamed", c, client.Request{Method: "POST", Path: client.ServerPath("echo"), Body: io.MultiReader(strings.NewReader(strings.Repeat("x", 2<<10)))}, host.KindTooLarge, "1024-byte limit", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.c.Do(context.Background(), tt.req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("Do(%s %s) = reply %d %q, want a %s error", tt.req.Method, tt.req.Path, resp.Status, b, tt.kind)
			}
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("Do(%s %s) = %T %v, want a *client.Error", tt.req.Method, tt.req.Path, err, err)
			}
			if e.Kind != tt.kind || e.Status != tt.kind.Status() || e.ReturnCode != tt.kind.ReturnCode() {
				t.Errorf("Do(%s %s) = kind %s status %d code %d, want kind %s status %d code %d", tt.req.Method, tt.req.Path,
					e.Kind, e.Status, e.ReturnCode, tt.kind, tt.kind.Status(), tt.kind.ReturnCode())
			}
			if !strings.Contains(e.Message, tt.msg) {
				t.Errorf("Do(%s %s) message = %q, want it to mention %q", tt.req.Method, tt.req.Path, e.Message, tt.msg)
			}
			if want := "restpipe " + string(tt.kind) + ": " + e.Message; e.Error() != want {
				t.Errorf("Error() = %q, want %q", e.Error(), want)
			}
			if tt.kind != host.KindHandlerFailed && e.Exception != nil {
				t.Errorf("Exception = %+v, want none for %s", e.Exception, tt.kind)
			}
			if tt.kind != host.KindOverloaded && e.RetryAfter != 0 {
				t.Errorf("RetryAfter = %v, want 0 for %s", e.RetryAfter, tt.kind)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
	// Every kind a caller can see is covered above.
	covered := map[host.Kind]bool{}
	for _, tt := range tests {
		covered[tt.kind] = true
	}
	for _, k := range host.Kinds() {
		if k != host.KindCanceled && !covered[k] {
			t.Errorf("kind %s is not produced by any case", k)
		}
	}
}

// TestCallerCancels checks the caller's context ends the request and the
// handler's event.
func TestCallerCancels(t *testing.T) {
	started, handled := make(chan struct{}), make(chan error, 1)
	cfg := clientNode()
	cfg.Peers = peers{"": host.HandlerFunc(func(ctx context.Context, _ *host.Event) (*host.Reply, error) {
		close(started)
		<-ctx.Done()
		handled <- ctx.Err()
		return nil, ctx.Err()
	})}
	c := startGateway(t, "unix", cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(ctx, client.Request{Path: client.ServerPath("slow"), Timeout: time.Minute})
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Do(slow) with a canceled context = %v, want context.Canceled", err)
	}
	if err := <-handled; !errors.Is(err, context.Canceled) {
		t.Errorf("the handler's context ended with %v, want context.Canceled", err)
	}
}

func TestJSON(t *testing.T) {
	c := startGateway(t, "tcp", clientNode())
	ctx := context.Background()

	t.Run("in and out", func(t *testing.T) {
		var out struct{ Sum int }
		if err := c.JSON(ctx, "POST", client.ServerPath("sum"), map[string]int{"a": 2, "b": 40}, &out); err != nil || out.Sum != 42 {
			t.Errorf("JSON(POST sum, 2+40) = %+v, %v; want sum 42", out, err)
		}
	})
	t.Run("request is JSON", func(t *testing.T) {
		var s seen
		if err := c.JSON(ctx, "PUT", client.LocalPath("echo"), []string{"x", "y"}, &s); err != nil {
			t.Fatalf("JSON(PUT echo) = %v", err)
		}
		if s.ContentType != "application/json" || s.Body != `["x","y"]` || s.Verb != "put" {
			t.Errorf("JSON(PUT echo): handler saw %s %q %q, want put application/json %q", s.Verb, s.ContentType, s.Body, `["x","y"]`)
		}
	})
	t.Run("no body, no output", func(t *testing.T) {
		if err := c.JSON(ctx, "GET", client.ServerPath("echo"), nil, nil); err != nil {
			t.Errorf("JSON(GET echo, nil, nil) = %v, want nil", err)
		}
	})
	t.Run("4xx reply is an error", func(t *testing.T) {
		var out any
		err := c.JSON(ctx, "GET", client.ServerPath("missing"), nil, &out)
		var e *client.Error
		if !errors.As(err, &e) {
			t.Fatalf("JSON(GET missing) = %v, want a *client.Error", err)
		}
		if e.Kind != host.KindHandlerFailed || e.Status != 404 || e.ReturnCode != 7 || !strings.Contains(e.Message, "nothing here") {
			t.Errorf("JSON(GET missing) = %+v, want kind handler_failed, the handler's status 404, code 7 and body", e)
		}
		if out != nil {
			t.Errorf("JSON(GET missing) decoded %v, want nothing", out)
		}
	})
	t.Run("handler's 400 to bad input", func(t *testing.T) {
		err := c.JSON(ctx, "POST", client.ServerPath("sum"), "not an object", nil)
		var e *client.Error
		if !errors.As(err, &e) || e.Kind != host.KindHandlerFailed || e.Status != 400 || e.ReturnCode != 1 {
			t.Errorf("JSON(POST sum, a string) = %v, want a handler_failed *Error of status 400 code 1", err)
		}
	})
	t.Run("gateway error", func(t *testing.T) {
		err := c.JSON(ctx, "GET", client.ServerPath("nothing"), nil, nil)
		var e *client.Error
		if !errors.As(err, &e) || e.Kind != host.KindNoRoute || e.Status != 404 || e.ReturnCode != 255 {
			t.Errorf("JSON(GET nothing) = %v, want a no_route *Error", err)
		}
	})
	t.Run("unencodable input", func(t *testing.T) {
		err := c.JSON(ctx, "POST", client.ServerPath("sum"), func() {}, nil)
		if err == nil || !strings.Contains(err.Error(), "encode request") {
			t.Errorf("JSON(POST sum, a func) = %v, want an encode error", err)
		}
	})
	t.Run("reply is not what out wants", func(t *testing.T) {
		var out []int
		err := c.JSON(ctx, "GET", client.ServerPath("echo"), nil, &out)
		if err == nil || !strings.Contains(err.Error(), "decode reply") {
			t.Errorf("JSON(GET echo, &[]int) = %v, want a decode error", err)
		}
	})
}

func TestNew(t *testing.T) {
	// A gateway on a Unix socket and one on TCP, reached by every form.
	sock := t.TempDir()
	unixAddr, stop, err := serve("unix", sock, clientNode())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	tcpAddr, stopTCP, err := serve("tcp", "", clientNode())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stopTCP(); err != nil {
			t.Error(err)
		}
	}()
	for _, addr := range []string{
		tcpAddr,
		"http://" + tcpAddr,
		"http://" + tcpAddr + "/",
		"localhost:" + tcpAddr[strings.LastIndex(tcpAddr, ":")+1:],
		unixAddr,
	} {
		t.Run(addr, func(t *testing.T) {
			c, err := client.New(addr)
			if err != nil {
				t.Fatalf("New(%q) = %v", addr, err)
			}
			var s seen
			if err := c.JSON(context.Background(), "GET", client.ServerPath("echo", "ok"), nil, &s); err != nil || s.By != "server" {
				t.Errorf("New(%q): GET echo = %+v, %v", addr, s, err)
			}
		})
	}

	refused := []struct {
		addr, err string
	}{
		{"https://x", "plain http"},
		{"https://127.0.0.1:443", "plain http"},
		{"ftp://x:21", "plain http"},
		{"host-without-port", "missing port"},
		{"", "missing port"},
		{"unix:", "empty Unix socket path"},
		{"http://", "no host"},
		{"http://host:port:x", "http://host:port:x"},
		{"http://x:1?q=1", "query"},
	}
	for _, tt := range refused {
		c, err := client.New(tt.addr)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("New(%q) = %v, %v; want an error mentioning %q", tt.addr, c, err, tt.err)
		}
	}
}

// TestNotGateway checks an answer without X-Event-Return-Code, such as a
// reverse proxy's own error page, is a *NotGatewayError, never a handler's
// reply.
func TestNotGateway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/server/ok" {
			fmt.Fprintln(w, "some other web server")
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintln(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	c, err := client.New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path   string
		status int
		body   string
	}{
		{client.ServerPath("time"), 502, "502 Bad Gateway"},
		{client.ServerPath("ok"), 200, "some other web server"},
	} {
		_, err := c.Do(context.Background(), client.Request{Path: tt.path})
		var e *client.NotGatewayError
		if !errors.As(err, &e) || e.Status != tt.status || !strings.Contains(e.Body, tt.body) || !strings.Contains(err.Error(), "X-Event-Return-Code") {
			t.Errorf("Do(%s) = %v, want a *NotGatewayError of status %d with the body", tt.path, err, tt.status)
		}
		if err := c.JSON(context.Background(), "GET", tt.path, nil, nil); !errors.As(err, &e) {
			t.Errorf("JSON(GET %s) = %v, want a *NotGatewayError", tt.path, err)
		}
	}

	// The gateway's own answers all carry the return code.
	cfg := clientNode()
	cfg.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "# metrics") })
	gc := startGateway(t, "tcp", cfg)
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := gc.Do(context.Background(), client.Request{Path: path})
		if err != nil {
			t.Errorf("Do(%s) on a gateway = %v, want its answer", path, err)
			continue
		}
		resp.Body.Close()
		if resp.Status != 200 || resp.ReturnCode != 0 {
			t.Errorf("Do(%s) on a gateway = %d code %d, want 200 code 0", path, resp.Status, resp.ReturnCode)
		}
	}
}

// TestUnixSocketMode checks the gateway's socket is group-accessible and
// no more: the clients of a node are its user and group.
func TestUnixSocketMode(t *testing.T) {
	dir := t.TempDir()
	_, stop, err := serve("unix", dir, clientNode())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	st, err := os.Stat(dir + "/gw.sock")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v, want a socket with mode 0660", st.Mode())
	}
}
