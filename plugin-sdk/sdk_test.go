package pluginsdk_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/pluginsdktest"
)

func TestRegistration(t *testing.T) {
	ok := func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) { return nil, nil }
	tests := []struct {
		name     string
		register func(p *pluginsdk.Plugin)
		want     string // in Err(); "" for none
	}{
		{"valid", func(p *pluginsdk.Plugin) {
			p.Handle("get", "time", ok)
			p.Handle("get", "time/utc", ok)
			p.Handle("delete", "a-b/c_d/E9", ok)
		}, ""},
		{"no route", func(*pluginsdk.Plugin) {}, "registers no route"},
		{"head", func(p *pluginsdk.Plugin) { p.Handle("head", "time", ok) }, "is not one of get, post"},
		{"upper-case verb", func(p *pluginsdk.Plugin) { p.Handle("GET", "time", ok) }, "is not one of get, post"},
		{"empty verb", func(p *pluginsdk.Plugin) { p.Handle("", "time", ok) }, "is not one of get, post"},
		{"empty noun", func(p *pluginsdk.Plugin) { p.Handle("get", "", ok) }, "empty noun"},
		{"leading slash", func(p *pluginsdk.Plugin) { p.Handle("get", "/time", ok) }, "has an empty segment"},
		{"trailing slash", func(p *pluginsdk.Plugin) { p.Handle("get", "time/", ok) }, "has an empty segment"},
		{"double slash", func(p *pluginsdk.Plugin) { p.Handle("get", "time//utc", ok) }, "has an empty segment"},
		{"space", func(p *pluginsdk.Plugin) { p.Handle("get", "ti me", ok) }, "only letters, digits"},
		{"dot", func(p *pluginsdk.Plugin) { p.Handle("get", "time.utc", ok) }, "only letters, digits"},
		{"non-ASCII", func(p *pluginsdk.Plugin) { p.Handle("get", "zeït", ok) }, "only letters, digits"},
		{"nil handler", func(p *pluginsdk.Plugin) { p.Handle("get", "time", nil) }, "nil handler"},
		{"duplicate", func(p *pluginsdk.Plugin) {
			p.Handle("get", "time", ok)
			p.Handle("get", "time", ok)
		}, "get_time registered twice"},
		{"same route name", func(p *pluginsdk.Plugin) {
			p.Handle("get", "time/utc", ok)
			p.Handle("get", "time_utc", ok)
		}, "get_time_utc registered twice (get time/utc and get time_utc)"},
		{"mistake among good routes", func(p *pluginsdk.Plugin) {
			p.Handle("get", "time", ok)
			p.Handle("fetch", "time", ok)
		}, `"fetch"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pluginsdk.New("test", "1.0.0")
			tt.register(p)
			err := p.Err()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Err() = %v, want %q", err, tt.want)
			}
			closeEvents, gerr := p.RegisterGRPC(grpc.NewServer(), t.TempDir())
			if (gerr == nil) != (err == nil) {
				t.Errorf("RegisterGRPC() = %v, want the error of Err(), %v", gerr, err)
			}
			if closeEvents != nil {
				closeEvents()
			}
		})
	}
}

func TestRegistrationEmptyName(t *testing.T) {
	p := pluginsdk.New("", "1.0.0")
	p.Handle("get", "time", reply(pluginsdk.Text("x")))
	if err := p.Err(); err == nil || !strings.Contains(err.Error(), "name is empty") {
		t.Errorf("Err() = %v, want the empty name reported", err)
	}
}

func TestRoutes(t *testing.T) {
	p := pluginsdk.New("test", "1.2.3")
	for _, r := range [][2]string{{"put", "b"}, {"get", "time/utc"}, {"get", "a"}} {
		p.Handle(r[0], r[1], reply(nil))
	}
	want := []string{"get_a", "get_time_utc", "put_b"}
	if got := p.Routes(); !slices.Equal(got, want) {
		t.Errorf("Routes() = %q, want %q", got, want)
	}
	h := pluginsdktest.Start(t, p, pluginsdktest.Options{})
	if got := h.Describe(); got.Name != "test" || got.Version != "1.2.3" || !slices.Equal(got.Routes, want) || got.Error != "" {
		t.Errorf("Describe() = %+v, want test 1.2.3 %q", got, want)
	}
}

func TestUnknownRoute(t *testing.T) {
	h := start(t, "get", "a", reply(nil))
	if resp, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "b"}); err == nil {
		t.Errorf("Call(get b) = %+v, want an error: the plugin has no such route", resp)
	}
}

func TestHandlerErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want pluginsdk.Exception
	}{
		{"errors.New", errors.New("boom"), pluginsdk.Exception{Class: "errors.errorString", Message: "boom"}},
		{"wrapped", fmt.Errorf("open: %w", fs.ErrNotExist), pluginsdk.Exception{Class: "fmt.wrapError", Message: "open: file does not exist"}},
		{"path error", &fs.PathError{Op: "open", Path: "x", Err: fs.ErrPermission}, pluginsdk.Exception{Class: "fs.PathError", Message: "open x: permission denied"}},
		{"context", context.DeadlineExceeded, pluginsdk.Exception{Class: "context.deadlineExceededError", Message: "context deadline exceeded"}},
		{"custom class", &pluginsdk.Exception{Class: "KeyError", Message: "'x'", Traceback: "tb"}, pluginsdk.Exception{Class: "KeyError", Message: "'x'", Traceback: "tb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, "get", "fail", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
				return pluginsdk.Text("ignored"), tt.err
			})
			resp := call(t, h, pluginsdktest.Request{Noun: "fail"})
			if resp.Exception == nil || *resp.Exception != tt.want {
				t.Errorf("handler returning %#v: exception %+v, want %+v", tt.err, resp.Exception, tt.want)
			}
		})
	}
}

// panickingHandler panics; the test looks for its name in the traceback.
func panickingHandler(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
	panic("kaboom")
}

func TestPanic(t *testing.T) {
	h := start(t, "get", "panic", panickingHandler)
	resp := call(t, h, pluginsdktest.Request{Noun: "panic"})
	e := resp.Exception
	if e == nil || e.Class != "panic" || e.Message != "kaboom" || !strings.Contains(e.Traceback, "panickingHandler") {
		t.Fatalf("panicking handler: exception %+v, want class panic, message kaboom, a traceback naming panickingHandler", e)
	}
	// The plugin goes on serving.
	if resp := call(t, h, pluginsdktest.Request{Noun: "panic"}); resp.Exception == nil {
		t.Errorf("second call: exception nil, want the panic again")
	}
}

func TestPanicInReplyBody(t *testing.T) {
	for _, size := range []int64{10, -1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			h := start(t, "get", "x", reply(pluginsdk.Stream("text/plain", panicReader{}, size)))
			resp, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "x"})
			switch {
			case size >= 0 && (err != nil || resp.Exception == nil || resp.Exception.Class != "panic"):
				t.Errorf("inline body panicking = %+v, %v; want a panic exception", resp, err)
			case size < 0 && (err == nil || !strings.Contains(err.Error(), "panic")):
				t.Errorf("streamed body panicking: error %v, want one telling of the panic", err)
			}
		})
	}
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reader exploded") }

func TestHandlerIgnoresBody(t *testing.T) {
	for _, replySize := range []int{10, 200 << 10} {
		t.Run(fmt.Sprint(replySize), func(t *testing.T) {
			want := bytes.Repeat([]byte("r"), replySize)
			h := start(t, "post", "x", reply(pluginsdk.Bytes("text/plain", want)))
			resp := call(t, h, pluginsdktest.Request{Verb: "post", Noun: "x",
				Body: io.LimitReader(rand.NewChaCha8([32]byte{}), 4<<20), Size: 4 << 20})
			if !bytes.Equal(resp.Body, want) {
				t.Errorf("reply of a handler ignoring a 4 MiB body = %d bytes, want %d", len(resp.Body), replySize)
			}
		})
	}
}

func TestReplySizes(t *testing.T) {
	tests := []struct {
		name      string
		size      int   // of the body
		announced int64 // Size
	}{
		{"empty", 0, 0},
		{"one byte", 1, 1},
		{"inline limit", 32 << 10, 32 << 10},
		{"past inline limit", 32<<10 + 1, 32<<10 + 1},
		{"several chunks", 1<<20 + 7, 1<<20 + 7},
		{"small of unknown size", 100, -1},
		{"large of unknown size", 1 << 20, -1},
		{"size left at 0", 100, 0},
		{"large size left at 0", 1 << 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := make([]byte, tt.size)
			rand.NewChaCha8([32]byte{2}).Read(body)
			h := start(t, "get", "x", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
				return &pluginsdk.Reply{ContentType: "application/octet-stream", Body: bytes.NewReader(body), Size: tt.announced}, nil
			})
			resp := call(t, h, pluginsdktest.Request{Noun: "x"})
			if !bytes.Equal(resp.Body, body) {
				t.Errorf("reply of %d bytes announced as %d arrived as %d bytes (same: %v)", tt.size, tt.announced, len(resp.Body), sha256.Sum256(resp.Body) == sha256.Sum256(body))
			}
			if resp.ContentType != "application/octet-stream" {
				t.Errorf("content type = %q, want application/octet-stream", resp.ContentType)
			}
		})
	}
}

func TestReplyBodyFailures(t *testing.T) {
	big := strings.Repeat("b", 100<<10)
	tests := []struct {
		name      string
		body      io.Reader
		announced int64
		want      string // in the error or the exception
	}{
		{"error mid-stream", io.MultiReader(strings.NewReader(big), errReader{errors.New("disk on fire")}), -1, "disk on fire"},
		{"error mid-stream of known size", io.MultiReader(strings.NewReader(big), errReader{errors.New("disk on fire")}), 200 << 10, "disk on fire"},
		{"shorter than announced", strings.NewReader(big), 200 << 10, "shorter than its announced"},
		{"longer than announced", strings.NewReader(big), 50 << 10, "longer than its announced"},
		{"small, shorter than announced", strings.NewReader("abc"), 10, "shorter than its announced"},
		{"small, longer than announced", strings.NewReader("abcdef"), 3, "longer than its announced"},
		{"small, error", errReader{errors.New("disk on fire")}, 10, "disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, "get", "x", reply(pluginsdk.Stream("text/plain", tt.body, tt.announced)))
			resp, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "x"})
			switch {
			case err != nil:
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Call() error = %v, want it to say %q", err, tt.want)
				}
			case resp.Exception != nil:
				if !strings.Contains(resp.Exception.Message, tt.want) {
					t.Errorf("exception = %+v, want it to say %q", resp.Exception, tt.want)
				}
			default:
				t.Errorf("Call() = %d bytes, no error; want %q", len(resp.Body), tt.want)
			}
		})
	}
}

func TestReplyBodyClosed(t *testing.T) {
	tests := []struct {
		name string
		rep  func(io.Reader) *pluginsdk.Reply
	}{
		{"inline", func(r io.Reader) *pluginsdk.Reply { return pluginsdk.Stream("text/plain", r, 5) }},
		{"streamed", func(r io.Reader) *pluginsdk.Reply { return pluginsdk.Stream("text/plain", r, -1) }},
		{"refused status", func(r io.Reader) *pluginsdk.Reply { return pluginsdk.Stream("text/plain", r, 5).WithStatus(42) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &closeRecorder{Reader: strings.NewReader("hello")}
			h := start(t, "get", "x", reply(tt.rep(body)))
			call(t, h, pluginsdktest.Request{Noun: "x"})
			h.Close()
			if !body.closed {
				t.Errorf("reply body not closed")
			}
		})
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestReplyStatus(t *testing.T) {
	tests := []struct {
		status, code int
		fails        bool
	}{
		{0, 0, false}, {200, 0, false}, {201, 7, false}, {404, 2, false}, {599, 255, false},
		{100, 0, true}, {199, 0, true}, {600, 0, true}, {-1, 0, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			h := start(t, "get", "x", reply(pluginsdk.Text("hi").WithStatus(tt.status).WithCode(tt.code)))
			resp := call(t, h, pluginsdktest.Request{Noun: "x"})
			if tt.fails {
				if resp.Exception == nil || !strings.Contains(resp.Exception.Message, "not a final HTTP status") {
					t.Errorf("reply with status %d: exception %+v, want one refusing the status", tt.status, resp.Exception)
				}
				return
			}
			if resp.Exception != nil || resp.Status != tt.status || resp.Code != tt.code || string(resp.Body) != "hi" {
				t.Errorf("reply with status %d code %d = %+v, want them and hi", tt.status, tt.code, resp)
			}
		})
	}
}

func TestNilReply(t *testing.T) {
	h := start(t, "get", "x", reply(nil))
	resp := call(t, h, pluginsdktest.Request{Noun: "x"})
	if resp.Exception != nil || resp.Status != 0 || resp.Code != 0 || len(resp.Body) != 0 {
		t.Errorf("nil reply = %+v, want an empty 200", resp)
	}
}

func TestJSONUnencodable(t *testing.T) {
	h := start(t, "get", "x", reply(pluginsdk.JSON(map[string]any{"c": make(chan int)})))
	resp := call(t, h, pluginsdktest.Request{Noun: "x"})
	if e := resp.Exception; e == nil || e.Class != "json.UnsupportedTypeError" || !strings.HasPrefix(e.Message, "encode reply: ") {
		t.Errorf("JSON(a channel) = exception %+v, body %s; want a json.UnsupportedTypeError", e, resp.Body)
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name      string
		config    pluginsdk.Config
		configure func(pluginsdk.Config) error
		want      string // Describe().Error; "" for none
	}{
		{"accepted", pluginsdk.Config{"k": "v"}, func(c pluginsdk.Config) error {
			if c.Get("k", "") != "v" || c.Get("other", "def") != "def" {
				return fmt.Errorf("got %v", c)
			}
			return nil
		}, ""},
		{"none given", nil, func(c pluginsdk.Config) error {
			if c == nil || len(c) != 0 {
				return fmt.Errorf("got %#v, want an empty config", c)
			}
			return nil
		}, ""},
		{"refused", pluginsdk.Config{"root": "relative"}, func(c pluginsdk.Config) error {
			return fmt.Errorf("root %q is not absolute", c["root"])
		}, `configure: root "relative" is not absolute`},
		{"panics", nil, func(pluginsdk.Config) error { panic("oops") }, "configure: panic: oops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pluginsdk.New("test", "1")
			p.Configure(tt.configure)
			p.Handle("get", "x", reply(pluginsdk.Text("hi")))
			h := pluginsdktest.Start(t, p, pluginsdktest.Options{Config: tt.config})
			if got := h.Describe().Error; got != tt.want {
				t.Fatalf("Describe().Error = %q, want %q", got, tt.want)
			}
			resp, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "x"})
			if tt.want == "" && (err != nil || string(resp.Body) != "hi") {
				t.Errorf("Call() = %+v, %v; want hi", resp, err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), "not configured")) {
				t.Errorf("Call() on a misconfigured plugin = %+v, %v; want a not configured error", resp, err)
			}
		})
	}
}

func TestConfigureOnce(t *testing.T) {
	calls := 0
	p := pluginsdk.New("test", "1")
	p.Configure(func(pluginsdk.Config) error { calls++; return nil })
	p.Handle("get", "x", reply(nil))
	pluginsdktest.Start(t, p, pluginsdktest.Options{})
	if calls != 1 {
		t.Errorf("configure called %d times, want 1", calls)
	}
}

func TestDeadlineReachesHandler(t *testing.T) {
	deadlines := make(chan time.Time, 1)
	h := start(t, "get", "x", func(ctx context.Context, _ *pluginsdk.Event) (*pluginsdk.Reply, error) {
		d, ok := ctx.Deadline()
		if !ok {
			return nil, errors.New("no deadline")
		}
		deadlines <- d
		return nil, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	want, _ := ctx.Deadline()
	if resp := call(t, h, pluginsdktest.Request{Noun: "x"}); resp.Exception != nil {
		t.Fatalf("handler without a deadline: %v", resp.Exception)
	}
	<-deadlines // the helper's own deadline
	if _, err := h.Call(ctx, pluginsdktest.Request{Noun: "x"}); err != nil {
		t.Fatal(err)
	}
	// gRPC sends the time left, so the deadline moves by the transit time.
	if got := <-deadlines; got.Sub(want).Abs() > 5*time.Second {
		t.Errorf("handler's deadline = %v, want about %v", got, want)
	}
}

func TestCancelReachesHandler(t *testing.T) {
	started, ended := make(chan struct{}), make(chan error, 1)
	h := start(t, "get", "x", func(ctx context.Context, _ *pluginsdk.Event) (*pluginsdk.Reply, error) {
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := h.Call(ctx, pluginsdktest.Request{Noun: "x"})
		errc <- err
	}()
	<-started
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Errorf("handler's ctx.Err() = %v, want context.Canceled", err)
	}
	if err := <-errc; err == nil {
		t.Errorf("canceled Call() = nil error, want one")
	}
}

func TestEventArrives(t *testing.T) {
	events := make(chan *pluginsdk.Event, 1)
	bodies := make(chan string, 1)
	record := func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		b, err := io.ReadAll(ev.Body)
		if err != nil {
			return nil, err
		}
		ev.Body = nil
		events <- ev
		bodies <- string(b)
		return nil, nil
	}
	p := pluginsdk.New("test", "1")
	p.Handle("post", "a/b", record)
	p.Handle("get", "a/b", record)
	h := pluginsdktest.Start(t, p, pluginsdktest.Options{Node: pluginsdk.Node{Role: "client", Name: "c7"}})

	tests := []struct {
		name string
		req  pluginsdktest.Request
		want pluginsdk.Event
		body string
	}{{
		name: "full",
		req: pluginsdktest.Request{ID: "ev-1", Verb: "post", Noun: "a/b", Args: []string{"x y", ""},
			Query: map[string][]string{"q": {"1", "2"}}, ContentType: "text/plain",
			Body: strings.NewReader("hello"), Size: 5, Peer: "hub"},
		want: pluginsdk.Event{ID: "ev-1", Verb: "post", Noun: "a/b", Args: []string{"x y", ""},
			Query: map[string][]string{"q": {"1", "2"}}, ContentType: "text/plain", Size: 5, Peer: "hub",
			Node: pluginsdk.Node{Role: "client", Name: "c7"}},
		body: "hello",
	}, {
		name: "streamed body of unknown size",
		req:  pluginsdktest.Request{Verb: "post", Noun: "a/b", Body: strings.NewReader(strings.Repeat("z", 50<<10)), Size: -1},
		want: pluginsdk.Event{Verb: "post", Noun: "a/b", Args: []string{}, Query: map[string][]string{}, Size: -1,
			Node: pluginsdk.Node{Role: "client", Name: "c7"}},
		body: strings.Repeat("z", 50<<10),
	}, {
		name: "empty",
		req:  pluginsdktest.Request{Noun: "a/b"},
		want: pluginsdk.Event{Verb: "get", Noun: "a/b", Args: []string{}, Query: map[string][]string{},
			Node: pluginsdk.Node{Role: "client", Name: "c7"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp := call(t, h, tt.req); resp.Exception != nil {
				t.Fatal(resp.Exception)
			}
			if got := <-events; !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("event = %+v, want %+v", *got, tt.want)
			}
			if got := <-bodies; got != tt.body {
				t.Errorf("body = %d bytes, want %d", len(got), len(tt.body))
			}
		})
	}
}

func TestEventHelpers(t *testing.T) {
	ev := &pluginsdk.Event{Verb: "get", Noun: "time/utc", Args: []string{"a", "b"}, Query: map[string][]string{"x": {"1", "2"}, "e": {}}}
	tests := []struct{ name, got, want string }{
		{"Route()", ev.Route(), "get_time_utc"},
		{"Arg(0)", ev.Arg(0), "a"},
		{"Arg(1)", ev.Arg(1), "b"},
		{"Arg(2)", ev.Arg(2), ""},
		{"Arg(-1)", ev.Arg(-1), ""},
		{`QueryValue("x")`, ev.QueryValue("x"), "1"},
		{`QueryValue("e")`, ev.QueryValue("e"), ""},
		{`QueryValue("missing")`, ev.QueryValue("missing"), ""},
		{`RouteName("delete", "a/b/c")`, pluginsdk.RouteName("delete", "a/b/c"), "delete_a_b_c"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestReadBody(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		size    int64
		max     int64
		tooBig  bool
		wantLen int
	}{
		{"at the limit", "hello", 5, 5, false, 5},
		{"under the limit", "hello", 5, 100, false, 5},
		{"announced over the limit", "hello", 5, 4, true, 0},
		{"unknown size, at the limit", "hello", -1, 5, false, 5},
		{"unknown size, over the limit", "hello", -1, 4, true, 0},
		{"size lies low", "hello", 2, 4, true, 0},
		{"empty", "", 0, 0, false, 0},
		{"no limit", "hello", -1, math.MaxInt64, false, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := &pluginsdk.Event{Body: strings.NewReader(tt.body), Size: tt.size}
			b, err := ev.ReadBody(tt.max)
			if tt.tooBig != errors.Is(err, pluginsdk.ErrBodyTooLarge) || !tt.tooBig && (err != nil || len(b) != tt.wantLen) {
				t.Errorf("ReadBody(%d) of %q (size %d) = %q, %v; want too large: %v", tt.max, tt.body, tt.size, b, err, tt.tooBig)
			}
		})
	}
	t.Run("broken body", func(t *testing.T) {
		ev := &pluginsdk.Event{Body: errReader{errors.New("cut")}, Size: -1}
		if _, err := ev.ReadBody(10); err == nil || !strings.Contains(err.Error(), "cut") {
			t.Errorf("ReadBody of a broken body = %v, want its error", err)
		}
	})
}

func TestDecodeJSON(t *testing.T) {
	type msg struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	tests := []struct {
		name string
		body io.Reader
		want msg
		err  string
	}{
		{"valid", strings.NewReader(`{"a": 1, "b": "x"}`), msg{1, "x"}, ""},
		{"invalid", strings.NewReader(`{"a": `), msg{}, "decode request body"},
		{"wrong type", strings.NewReader(`{"a": "x"}`), msg{}, "decode request body"},
		{"over 8 MiB", io.MultiReader(strings.NewReader(`"`), strings.NewReader(strings.Repeat("x", 8<<20)), strings.NewReader(`"`)), msg{}, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got msg
			err := (&pluginsdk.Event{Body: tt.body, Size: -1}).DecodeJSON(&got)
			if tt.err == "" && (err != nil || got != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("DecodeJSON() = %+v, %v; want %+v, error %q", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestDecodeJSONThroughHarness(t *testing.T) {
	h := start(t, "post", "sum", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		var xs []int
		if err := ev.DecodeJSON(&xs); err != nil {
			return nil, err
		}
		sum := 0
		for _, x := range xs {
			sum += x
		}
		return pluginsdk.JSON(map[string]int{"sum": sum}), nil
	})
	resp := call(t, h, pluginsdktest.Request{Verb: "post", Noun: "sum", ContentType: "application/json",
		Body: strings.NewReader("[1, 2, 39]"), Size: 10})
	if string(resp.Body) != "{\"sum\":42}\n" || resp.ContentType != "application/json" {
		t.Errorf("post_sum [1, 2, 39] = %q %s, want application/json {\"sum\":42}", resp.ContentType, resp.Body)
	}
}

func TestConcurrentEvents(t *testing.T) {
	p := pluginsdk.New("test", "1")
	p.Handle("post", "x", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		p.Logger().Trace("event", "id", ev.ID) // Logger is safe for concurrent use
		return pluginsdk.Stream(ev.ContentType, ev.Body, ev.Size), nil
	})
	h := pluginsdktest.Start(t, p, pluginsdktest.Options{})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			want := strings.Repeat(fmt.Sprint(i%10), 40<<10+i)
			resp, err := h.Call(context.Background(), pluginsdktest.Request{ID: fmt.Sprint(i), Verb: "post", Noun: "x",
				Body: strings.NewReader(want), Size: int64(len(want))})
			if err != nil || string(resp.Body) != want {
				t.Errorf("event %d: %v, %d bytes back, want %d", i, err, len(resp.Body), len(want))
			}
		})
	}
	wg.Wait()
}

// start serves a plugin with one handler.
func start(t testing.TB, verb, noun string, h pluginsdk.HandlerFunc) *pluginsdktest.Harness {
	t.Helper()
	p := pluginsdk.New("test", "1.0.0")
	p.Handle(verb, noun, h)
	return pluginsdktest.Start(t, p, pluginsdktest.Options{})
}

// reply is a handler that answers rep.
func reply(rep *pluginsdk.Reply) pluginsdk.HandlerFunc {
	return func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) { return rep, nil }
}

// call sends req, failing the test on a transport error.
func call(t testing.TB, h *pluginsdktest.Harness, req pluginsdktest.Request) *pluginsdktest.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Call(ctx, req)
	if err != nil {
		t.Fatalf("Call(%s %s): %v", req.Verb, req.Noun, err)
	}
	return resp
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestOnPeerHook(t *testing.T) {
	var got []pluginsdk.PeerEvent
	p := pluginsdk.New("hooks", "1")
	p.OnPeer(func(_ context.Context, ev pluginsdk.PeerEvent) error {
		if ev.Kind == "boom" {
			panic("hook exploded")
		}
		if ev.Kind == "refuse" {
			return errors.New("not today")
		}
		got = append(got, ev)
		return nil
	})
	if err := p.Err(); err != nil {
		t.Fatalf("a hooks-only plugin: Err() = %v, want nil", err)
	}
	h := pluginsdktest.Start(t, p, pluginsdktest.Options{})
	if !h.Describe().PeerEvents {
		t.Error("Describe().PeerEvents = false for a plugin with OnPeer")
	}
	ctx := context.Background()
	when := time.Unix(1700000000, 5)
	if err := h.PeerEvent(ctx, pluginsdk.PeerEvent{Kind: "connection_added", Peer: "web1", Peers: 3, Time: when}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Kind != "connection_added" || got[0].Peer != "web1" || got[0].Peers != 3 || !got[0].Time.Equal(when) {
		t.Errorf("hook got %+v", got)
	}
	if err := h.PeerEvent(ctx, pluginsdk.PeerEvent{Kind: "refuse"}); err == nil || !strings.Contains(err.Error(), "not today") {
		t.Errorf("hook error = %v, want it passed back", err)
	}
	if err := h.PeerEvent(ctx, pluginsdk.PeerEvent{Kind: "boom"}); err == nil || !strings.Contains(err.Error(), "hook exploded") {
		t.Errorf("hook panic = %v, want it reported as an error", err)
	}
	// A plugin without a hook refuses peer events.
	h2 := pluginsdktest.Start(t, newTestPluginWithRoute(), pluginsdktest.Options{})
	if h2.Describe().PeerEvents {
		t.Error("PeerEvents = true without OnPeer")
	}
	if err := h2.PeerEvent(ctx, pluginsdk.PeerEvent{Kind: "connection_added"}); err == nil {
		t.Error("a plugin without OnPeer accepted a peer event")
	}
}

func newTestPluginWithRoute() *pluginsdk.Plugin {
	p := pluginsdk.New("plain", "1")
	p.Handle("get", "x", func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) { return pluginsdk.Text("x"), nil })
	return p
}
