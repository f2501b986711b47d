package eventpath

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/restpipe/restpipe/proto/frame"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// serve runs a Server for h on a Unix socket in a test directory and
// returns a Client for it and the server.
func serve(t testing.TB, h HandlerFunc) (*Client, *Server, *atomic.Int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), SocketName)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	dials := new(atomic.Int64)
	counting := &countingListener{Listener: ln, n: dials}
	var protoErrs atomic.Int64
	s := NewServer(h, func(error) { protoErrs.Add(1) })
	done := make(chan error, 1)
	go func() { done <- s.Serve(counting) }()
	c := NewClient(path, 0)
	t.Cleanup(func() {
		c.Close()
		s.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve() = %v, want ErrClosed", err)
		}
	})
	return c, s, dials
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// echo answers with the request body, streamed, of the size announced.
func echo(_ context.Context, req *Request) *Response {
	return &Response{Header: &pluginv1.ReplyHeader{ContentType: req.Header.ContentType, BodySize: req.Header.BodySize}, Body: req.Body}
}

func call(t testing.TB, c *Client, hdr *pluginv1.EventHeader, body io.Reader, size int64) (*pluginv1.ReplyHeader, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := c.Do(ctx, hdr, body, size)
	if err != nil {
		return nil, nil, err
	}
	defer rep.Close()
	b, err := io.ReadAll(rep)
	return rep.Header, b, err
}

func TestRoundTripAndReuse(t *testing.T) {
	c, _, dials := serve(t, echo)
	sizes := []int{0, 1, 100, frame.SmallBody, frame.SmallBody + 1, WholeBody, WholeBody + 1, 3*frame.Chunk + 7, 1 << 20}
	for _, size := range sizes {
		for _, known := range []bool{true, false} {
			body := bytes.Repeat([]byte{'q'}, size)
			n := int64(size)
			if !known {
				n = -1
			}
			hdr, got, err := call(t, c, &pluginv1.EventHeader{Verb: "post", Noun: "echo", ContentType: "x/y"}, bytes.NewReader(body), n)
			if err != nil {
				t.Fatalf("size %d known %v: %v", size, known, err)
			}
			if !bytes.Equal(got, body) || hdr.ContentType != "x/y" {
				t.Fatalf("size %d known %v: got %d bytes, type %q", size, known, len(got), hdr.ContentType)
			}
		}
	}
	// Every event completed, so one connection carried them all.
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections for %d sequential events, want 1", n, 2*len(sizes))
	}
}

func TestHeaderFields(t *testing.T) {
	var seen *pluginv1.EventHeader
	var deadline time.Duration
	c, _, _ := serve(t, func(ctx context.Context, req *Request) *Response {
		seen = req.Header
		d, _ := ctx.Deadline()
		deadline = time.Until(d)
		return &Response{Header: &pluginv1.ReplyHeader{Status: 201, ReturnCode: 7}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := c.Do(ctx, &pluginv1.EventHeader{Id: "r1", Verb: "get", Noun: "a/b", Args: []string{"x", ""},
		Query: map[string]*pluginv1.Values{"k": {Values: []string{"1", "2"}}}, Peer: "web1"}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	rep.Close()
	if rep.Header.Status != 201 || rep.Header.ReturnCode != 7 {
		t.Errorf("reply header = %v", rep.Header)
	}
	if seen.Id != "r1" || seen.Noun != "a/b" || len(seen.Args) != 2 || seen.Peer != "web1" || seen.Query["k"].Values[1] != "2" {
		t.Errorf("handler saw %v", seen)
	}
	if deadline > 5*time.Second || deadline < 4*time.Second {
		t.Errorf("handler's deadline is %v away, want just under 5s", deadline)
	}
}

// TestCancelReachesTheHandler abandons an event in each phase: before the
// handler reads its body, while it streams its reply, and while it waits.
func TestCancelReachesTheHandler(t *testing.T) {
	causes := make(chan error, 1)
	c, s, dials := serve(t, func(ctx context.Context, req *Request) *Response {
		if req.Header.Noun == "ok" {
			return &Response{Header: &pluginv1.ReplyHeader{}}
		}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return &Response{Header: &pluginv1.ReplyHeader{}}
	})
	for _, tc := range []struct {
		name string
		body io.Reader
		size int64
	}{
		{"no body", nil, 0},
		{"small body", strings.NewReader("abc"), 3},
		{"streamed body", newBlockingBody("abc"), -1},
		{"large streamed body the handler does not read", newBlockingBody(strings.Repeat("z", 4<<20)), -1},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			rep, err := c.Do(ctx, &pluginv1.EventHeader{Verb: "get", Noun: "wait"}, tc.body, tc.size)
			if err == nil {
				rep.Close()
			}
			errc <- err
		}()
		waitFor(t, "the handler to run", func() bool { r, _, _ := s.Stats(); return r == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("%s: Do() = %v, want canceled", tc.name, err)
		}
		if cause := <-causes; !errors.Is(cause, errNodeLeft) {
			t.Errorf("%s: handler's cause = %v, want %v", tc.name, cause, errNodeLeft)
		}
		waitFor(t, "nothing running", func() bool { r, a, _ := s.Stats(); return r == 0 && a == 0 })
	}
	// A canceled event's connection is never reused: the next event dials.
	before := dials.Load()
	if _, _, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: "ok"}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if dials.Load() != before+1 {
		t.Errorf("the event after a cancel reused a connection (%d dials, want %d)", dials.Load(), before+1)
	}
}

// blockingBody yields its prefix, then blocks until closed, as a caller's
// upload that stalls does; Close interrupts the blocked Read, as the
// Client requires.
type blockingBody struct {
	r      io.Reader
	closed chan struct{}
	once   sync.Once
}

func newBlockingBody(prefix string) *blockingBody {
	return &blockingBody{r: strings.NewReader(prefix), closed: make(chan struct{})}
}

func (b *blockingBody) Read(p []byte) (int, error) {
	if n, _ := b.r.Read(p); n > 0 {
		return n, nil
	}
	<-b.closed
	return 0, errors.New("body closed")
}

func (b *blockingBody) Close() error { b.once.Do(func() { close(b.closed) }); return nil }

func TestAbandonedHandlersAreCounted(t *testing.T) {
	release := make(chan struct{})
	c, s, _ := serve(t, func(ctx context.Context, req *Request) *Response {
		<-release // ignores its context
		return &Response{Header: &pluginv1.ReplyHeader{}}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Do(ctx, &pluginv1.EventHeader{Verb: "get", Noun: "x"}, nil, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do() = %v, want the deadline", err)
	}
	waitFor(t, "the handler to count as abandoned", func() bool { r, a, _ := s.Stats(); return r == 1 && a == 1 })
	close(release)
	waitFor(t, "the handler to return", func() bool { r, a, _ := s.Stats(); return r == 0 && a == 0 })
}

func TestFailureReply(t *testing.T) {
	c, _, dials := serve(t, func(ctx context.Context, req *Request) *Response {
		return &Response{Header: &pluginv1.ReplyHeader{Failure: &pluginv1.Exception{Message: "no", Class: "ValueError"}},
			Body: strings.NewReader("ignored")}
	})
	for range 3 {
		hdr, body, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: "x"}, nil, 0)
		if err != nil || hdr.Failure.GetClass() != "ValueError" || len(body) != 0 {
			t.Fatalf("failure = %v %q %v", hdr, body, err)
		}
	}
	if dials.Load() != 1 {
		t.Errorf("failures closed their connection: %d dials", dials.Load())
	}
}

// TestBodySizeIsEnforced sends and answers bodies that do not match their
// announced size, both ways: the other side sees a failed body, never a
// short or cut one that looks complete.
func TestBodySizeIsEnforced(t *testing.T) {
	c, _, _ := serve(t, func(ctx context.Context, req *Request) *Response {
		b, err := io.ReadAll(req.Body)
		switch req.Header.Noun {
		case "read":
			if err != nil {
				return &Response{Header: &pluginv1.ReplyHeader{ContentType: "error", BodySize: int64(len(err.Error()))}, Body: strings.NewReader(err.Error())}
			}
			return &Response{Header: &pluginv1.ReplyHeader{BodySize: int64(len(b))}, Body: bytes.NewReader(b)}
		case "long":
			return &Response{Header: &pluginv1.ReplyHeader{BodySize: 5}, Body: strings.NewReader("123456")}
		default:
			return &Response{Header: &pluginv1.ReplyHeader{BodySize: 100000}, Body: strings.NewReader("short")}
		}
	})
	for _, tc := range []struct {
		name string
		body string
		size int64
	}{{"longer small", "abcdef", 5}, {"shorter small", "abc", 5}, {"longer streamed", strings.Repeat("x", 200000), 100000}, {"shorter streamed", "abc", 100000}} {
		hdr, body, err := call(t, c, &pluginv1.EventHeader{Verb: "post", Noun: "read"}, strings.NewReader(tc.body), tc.size)
		// Either the client refuses to send it, or the plugin's handler
		// reads a failed body; never a body taken as complete.
		if err == nil && hdr.ContentType != "error" {
			t.Errorf("%s: plugin read %d bytes as a complete body", tc.name, len(body))
		}
	}
	for _, noun := range []string{"long", "short"} {
		_, body, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: noun}, nil, 0)
		if err == nil {
			t.Errorf("%s reply: read %q as complete", noun, body)
		}
	}
}

// TestHandlerIgnoringALargeBody answers without reading a large upload:
// the reply arrives, the event ends, and the next events work.
func TestHandlerIgnoringALargeBody(t *testing.T) {
	c, _, _ := serve(t, func(ctx context.Context, req *Request) *Response {
		return &Response{Header: &pluginv1.ReplyHeader{BodySize: 2}, Body: strings.NewReader("ok")}
	})
	for _, size := range []int64{1 << 20, -1, 64 << 20} {
		body := io.LimitReader(zeros{}, 64<<20)
		if size > 0 {
			body = io.LimitReader(zeros{}, size)
		}
		_, got, err := call(t, c, &pluginv1.EventHeader{Verb: "post", Noun: "x"}, body, size)
		if err != nil || string(got) != "ok" {
			t.Fatalf("size %d: %q %v", size, got, err)
		}
	}
	if _, got, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: "x"}, nil, 0); err != nil || string(got) != "ok" {
		t.Fatalf("after: %q %v", got, err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestLargeBodyStreams echoes 64 MiB both ways at once and checks it.
func TestLargeBodyStreams(t *testing.T) {
	c, _, _ := serve(t, echo)
	const size = 64 << 20
	want := sha256.New()
	body := io.TeeReader(io.LimitReader(counter{}, size), want)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := c.Do(ctx, &pluginv1.EventHeader{Verb: "post", Noun: "echo"}, body, size)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	got := sha256.New()
	n, err := io.Copy(got, rep)
	rep.Close() // waits for the body sender, the only other user of want
	if err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("echoed %d bytes (%v), digests equal %v", n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
}

type counter struct{ i byte }

func (c counter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i * 7)
	}
	return len(p), nil
}

// TestPluginCrashMidEvent closes the server's side mid-reply: the event
// fails with ErrUnavailable, never as a short success.
func TestPluginCrashMidEvent(t *testing.T) {
	var srv *Server
	c, s, _ := serve(t, func(ctx context.Context, req *Request) *Response {
		pr, pw := io.Pipe()
		go func() {
			pw.Write([]byte("partial"))
			srv.Close() // the plugin goes away
			pw.CloseWithError(errors.New("gone"))
		}()
		return &Response{Header: &pluginv1.ReplyHeader{BodySize: 100}, Body: pr}
	})
	srv = s
	_, body, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: "x"}, nil, 0)
	if err == nil {
		t.Fatalf("a broken reply read as complete: %q", body)
	}
	var be *BodyError
	if !errors.Is(err, ErrUnavailable) && !errors.As(err, &be) {
		t.Errorf("error = %v, want ErrUnavailable or an incomplete body", err)
	}
}

// TestOversizedHeaderRefused sends a header over MaxHeader by hand: the
// server drops the connection without allocating for it.
func TestOversizedHeaderRefused(t *testing.T) {
	c, _, _ := serve(t, echo)
	nc, err := net.Dial("unix", c.path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(frame.AppendHeader(nil, frame.TypeHeader, 1<<30)); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); err == nil {
		t.Errorf("server answered %d bytes to a 1 GiB header", n)
	}
	if _, _, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: "x"}, nil, 0); err != nil {
		t.Errorf("an event after the oversized header failed: %v", err)
	}
}

func TestTimeoutClamp(t *testing.T) {
	if got := Timeout(1 << 62); got != MaxTimeout {
		t.Errorf("Timeout(2^62) = %v, want %v", got, MaxTimeout)
	}
	if got := Timeout(1500); got != 1500*time.Millisecond {
		t.Errorf("Timeout(1500) = %v", got)
	}
	if got := Timeout(-3); got != 0 {
		t.Errorf("Timeout(-3) = %v", got)
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var _ = fmt.Sprint

// lateTimer is a context whose deadline passes but whose timer never
// fires, as on a machine too loaded to run it in time.
type lateTimer struct {
	context.Context
	d time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.d, true }

// TestReplyAfterTheDeadlineIsATimeout: a reply that arrives once the
// event's deadline has passed is a timeout, even before the context's
// timer fires, and its connection is not reused.
func TestReplyAfterTheDeadlineIsATimeout(t *testing.T) {
	c, _, dials := serve(t, func(_ context.Context, req *Request) *Response {
		time.Sleep(150 * time.Millisecond) // past the deadline below, ignoring it
		return &Response{Header: &pluginv1.ReplyHeader{ContentType: "text/plain", BodySize: 2}, Body: strings.NewReader("ok")}
	})
	ctx := lateTimer{Context: context.Background(), d: time.Now().Add(50 * time.Millisecond)}
	if rep, err := c.Do(ctx, &pluginv1.EventHeader{Verb: "get", Noun: "late"}, nil, 0); !errors.Is(err, context.DeadlineExceeded) {
		if rep != nil {
			rep.Close()
		}
		t.Fatalf("Do() = %v, want context.DeadlineExceeded for a reply after the deadline", err)
	}
	if _, _, err := call(t, c, &pluginv1.EventHeader{Verb: "get", Noun: "late"}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if n := dials.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the late reply's connection is not reused", n)
	}
}
