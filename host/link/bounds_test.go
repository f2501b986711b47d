package link

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/proto/frame"
	linkv1 "github.com/restpipe/restpipe/proto/link/v1"
)

// heapInUse returns the process's heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestHostilePeerMemoryIsBounded is a peer with a valid certificate that
// opens as many streams as it may; on half of them it starts an event
// whose handler never reads its body and pushes body bytes as fast as the
// window lets it, never reading a reply; on the others it sends most of a
// header and stops. What the server holds for it is at most
// Config.LinkBuffer's bound, twice the window per stream (yamux's buffer
// may have twice the room of the window it holds) plus a header buffer per
// stream, and is released within seconds of the link's end.
func TestHostilePeerMemoryIsBounded(t *testing.T) {
	const maxInFlight = 16
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) { c.MaxInFlight = maxInFlight; c.HeaderTimeout = 30 * time.Second })
	base := heapInUse()

	m, h := peerMuxHello(t, p, srv.addr, "hostile")
	var pushed atomic.Int64
	// As many as it may hold: the tolerance of the limit the server told
	// it (MaxStreams(maxInFlight) on a LAN; fewer when a loaded machine's
	// hello measured a long round trip).
	streams := streamTolerance(h.peerStreams) - 1
	chunk := make([]byte, 32<<10)
	for i := range streams {
		st, err := m.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			// A header that never completes: most of it, then nothing.
			st.Write(frame.AppendHeader(nil, frame.TypeHeader, 60<<10))
			st.Write(make([]byte, 50<<10))
			continue
		}
		// An event whose handler blocks without reading the body.
		frame.WriteMsg(st, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{
			Request: &linkv1.Request{Id: "x", Verb: "post", Noun: "block", BodySize: -1, Seq: 1}}})
		go func() {
			// Body bytes for as long as the window allows (a write that
			// blocks on the window stays blocked).
			for {
				n, err := st.Write(chunk)
				pushed.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	// Wait until the pushing stops: every window is full.
	var last int64 = -1
	for deadline := time.Now().Add(20 * time.Second); ; {
		time.Sleep(200 * time.Millisecond)
		n := pushed.Load()
		if n == last {
			break
		}
		last = n
		if time.Now().After(deadline) {
			t.Fatalf("the peer was still pushing after 20s (%d bytes): some window is not bounded", n)
		}
	}
	held := int64(heapInUse()) - int64(base)
	w := int64(DefaultConfig().StreamWindow)
	bound := int64(streams) * (2*w + 64<<10)
	t.Logf("%d streams pushed %d MiB; this process (server and attacker) holds %.1f MiB more than before; bound %.1f MiB: %d streams x (2 x the %d KiB window + a 64 KiB header)",
		streams, last>>20, float64(held)/(1<<20), float64(bound)/(1<<20), streams, w>>10)
	if held > bound+4<<20 {
		t.Errorf("the server holds %d MiB for one peer, over the bound of %d MiB (+4 MiB slack)", held>>20, bound>>20)
	}
	if last > int64(streams)*w {
		t.Errorf("the peer pushed %d MiB: more than its windows allow", last>>20)
	}
	// The link ends: everything it held goes within seconds.
	m.Close()
	waitFor(t, 10*time.Second, "the server to drop the session", func() bool { return len(srv.Sessions()) == 0 || srv.Sessions()[0].Peer() != "hostile" })
	var after int64
	waitFor(t, 15*time.Second, "the server's heap back to its baseline", func() bool {
		after = int64(heapInUse()) - int64(base)
		return after < 3<<20
	})
	t.Logf("%.1f MiB above the baseline after the link closed", float64(after)/(1<<20))
}

// TestPeerOverStreamLimitLosesItsLink checks the stream limit: a peer
// opening more streams than MaxStreams(MaxInFlight) loses its link.
func TestPeerOverStreamLimitLosesItsLink(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, func(c *ServerConfig) { c.MaxInFlight = 4; c.HeaderTimeout = 30 * time.Second })
	m := peerMux(t, p, srv.addr, "greedy")
	sess := srv.session(t, "greedy", 5*time.Second)
	incoming := func() int {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return len(sess.incoming)
	}
	for i := 0; i < streamTolerance(MaxStreams(4))+8 && !m.IsClosed(); i++ {
		if _, err := m.OpenStream(); err != nil {
			break
		}
		// One at a time, each accepted before the next: opened faster
		// than the server accepts them, streams beyond yamux's accept
		// backlog are reset by yamux itself and never count.
		waitFor(t, 5*time.Second, "the server to accept the stream", func() bool { return m.IsClosed() || incoming() == i+1 })
	}
	select {
	case <-m.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("a peer over the stream limit kept its link")
	}
	waitFor(t, 5*time.Second, "the log line", func() bool { return strings.Contains(srv.logs.String(), "too many streams") })
}

// TestBodySizeIsEnforcedOnTheLink sends bodies that do not match their
// announced size, both ways: never a success that hides a short or long
// body.
func TestBodySizeIsEnforcedOnTheLink(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "a", srv.addr, nil)
	sess := cl.waitUp(t, 5*time.Second)

	// A reply longer than it announced fails the caller's read.
	rep, err := sess.Handle(context.Background(), &host.Event{ID: "l", Verb: "get", Noun: "long"})
	if err == nil {
		b, rerr := io.ReadAll(rep.Body)
		rep.Close()
		if rerr == nil {
			t.Errorf("a reply longer than announced read as %q, complete", b)
		}
	}

	// Requests from a raw peer: longer than announced, and a small body
	// whose END never comes before the next header. Each breaks the
	// protocol: the link goes.
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"longer than announced", append(mustFrame(t, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{
			Request: &linkv1.Request{Verb: "post", Noun: "echo", BodySize: 3, Seq: 1}}}), frame.AppendEnd(frame.AppendData(nil, []byte("abcdef")), nil)...)},
		{"no END before the next header", append(append(mustFrame(t, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{
			Request: &linkv1.Request{Verb: "post", Noun: "echo", BodySize: -1, Seq: 1}}}), frame.AppendData(nil, []byte("abc"))...),
			mustFrame(t, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{Request: &linkv1.Request{Verb: "get", Noun: "whoami", Seq: 2}}})...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := peerMux(t, p, srv.addr, "sloppy")
			st, err := m.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			st.Write(tc.data)
			// Whatever the server answers, it is not the echo of a
			// complete body; and the link ends.
			fr := frame.NewReader(st, 1<<16)
			defer fr.Release()
			var r linkv1.Reply
			if err := fr.ReadMsg(&r); err == nil && r.Error == nil {
				fr.StartBody(r.BodySize)
				if b, err := io.ReadAll(fr); err == nil {
					t.Errorf("the server echoed %q as a complete body", b)
				}
			}
			select {
			case <-m.CloseChan():
			case <-time.After(10 * time.Second):
				t.Fatal("the server kept the link of a peer whose body broke its size")
			}
		})
	}
}

// rawServer is a link server written by hand: TLS, the hello, yamux, and
// then answer replies every event with what reply returns.
func rawServer(t testing.TB, p *testPKI, reply func(*linkv1.Request) *linkv1.Reply) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer raw.Close()
				tc := tls.Server(raw, p.serverTLS(t, "server"))
				if err := tc.Handshake(); err != nil {
					return
				}
				if _, err := serverHello(tc, testLinkConfig()); err != nil {
					return
				}
				cfg := yamux.DefaultConfig()
				cfg.LogOutput = io.Discard
				m, err := yamux.Server(tc, cfg)
				if err != nil {
					return
				}
				defer m.Close()
				for {
					st, err := m.AcceptStream()
					if err != nil {
						return
					}
					go func() {
						fr := frame.NewReader(st, 1<<16)
						defer fr.Release()
						for {
							var h linkv1.StreamHeader
							if fr.ReadMsg(&h) != nil || h.GetRequest() == nil {
								return
							}
							frame.WriteMsg(st, reply(h.GetRequest()))
						}
					}()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// countingObserver counts the peer replies a session refused.
type countingObserver struct {
	nopObserver
	bad atomic.Int64
}

func (o *countingObserver) BadPeerReply(string) { o.bad.Add(1) }

// TestPeerReplyStatusIsChecked has a peer answer with statuses no HTTP
// reply may carry: the caller gets handler_failed (counted), never a
// panic, a hang or a 200.
func TestPeerReplyStatusIsChecked(t *testing.T) {
	p := newPKI(t)
	addr := rawServer(t, p, func(r *linkv1.Request) *linkv1.Reply {
		n := 0
		if len(r.Args) > 0 {
			for _, c := range r.Args[0] {
				n = n*10 + int(c-'0')
			}
		}
		return &linkv1.Reply{Status: int32(n)}
	})
	obs := &countingObserver{}
	cl := startClient(t, p, "a", addr, func(c *ClientConfig) { c.Observer = obs })
	sess := cl.waitUp(t, 5*time.Second)
	for _, status := range []string{"99", "100", "101", "199", "600", "1000"} {
		_, err := call(context.Background(), sess, "get", "status", nil, status)
		wantKind(t, err, host.KindHandlerFailed)
		if err != nil && !strings.Contains(err.Error(), "not a final HTTP status") {
			t.Errorf("status %s: %v, want it to say why", status, err)
		}
	}
	if n := obs.bad.Load(); n != 6 {
		t.Errorf("bad replies counted = %d, want 6", n)
	}
	if got, err := call(context.Background(), sess, "get", "status", nil, "204"); err != nil {
		t.Errorf("status 204 = %q, %v", got, err)
	}
}

// TestRepliesThePeerWouldRefuse checks this side answers with
// handler_failed, in a frame the peer accepts, when its handler's reply
// could not cross: a bad status, a header over the link's limit.
func TestRepliesThePeerWouldRefuse(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "a", srv.addr, nil)
	sess := cl.waitUp(t, 5*time.Second)
	ss := srv.session(t, "a", time.Second)
	_ = ss
	for _, noun := range []string{"bigtype"} {
		_, err := call(context.Background(), sess, "get", noun, nil)
		wantKind(t, err, host.KindHandlerFailed)
	}
	_, err := call(context.Background(), sess, "get", "status", nil, "99")
	wantKind(t, err, host.KindHandlerFailed)
	// The link is fine afterwards.
	if _, err := call(context.Background(), sess, "get", "whoami", nil); err != nil {
		t.Errorf("event after the refused replies = %v", err)
	}
}

// TestHugeTimeoutIsClamped sends timeout_ms near 2^62: the handler gets a
// far deadline, not one in the past from an overflow.
func TestHugeTimeoutIsClamped(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	m := peerMux(t, p, srv.addr, "patient")
	st, err := m.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	frame.WriteMsg(st, &linkv1.StreamHeader{Kind: &linkv1.StreamHeader_Request{
		Request: &linkv1.Request{Id: "x", Verb: "get", Noun: "deadline", Seq: 1, TimeoutMs: 1 << 62}}})
	fr := frame.NewReader(st, 1<<16)
	defer fr.Release()
	var r linkv1.Reply
	if err := fr.ReadMsg(&r); err != nil || r.Error != nil {
		t.Fatalf("reply = %v, %v", &r, err)
	}
	fr.StartBody(r.BodySize)
	b, _ := io.ReadAll(fr)
	if want := maxTimeout.Round(time.Hour).String(); string(b) != want {
		t.Errorf("the handler's deadline is %s away, want %s", b, want)
	}
}

// TestLinkShape checks the window and stream limit a link's round trip
// gives: a LAN link keeps every stream its events may need at the smallest
// window; a long one gets a large window and fewer streams, never more than
// LinkBuffer in all.
func TestLinkShape(t *testing.T) {
	c := DefaultConfig()
	c.Handler = newNodeHandler("x")
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rtt     time.Duration
		window  uint32
		streams int
	}{
		{50 * time.Microsecond, 256 << 10, MaxStreams(c.MaxInFlight)},
		{time.Millisecond, 256 << 10, MaxStreams(c.MaxInFlight)},
		{6 * time.Millisecond, 8 << 20, minStreams},
		{10 * time.Millisecond, 8 << 20, minStreams},
		{time.Second, 8 << 20, minStreams},
	} {
		w, n := c.linkShape(tc.rtt)
		if w != tc.window || n != tc.streams {
			t.Errorf("linkShape(%v) = %d KiB, %d streams; want %d KiB, %d", tc.rtt, w>>10, n, tc.window>>10, tc.streams)
		}
		if int64(n)*2*int64(w) > c.LinkBuffer {
			t.Errorf("linkShape(%v): %d streams x 2 x %d KiB is over LinkBuffer", tc.rtt, n, w>>10)
		}
	}
}

// TestPeerSoftwareIsEscapedAndCut: the build string a peer sends in its
// hello is logged at every link up, so it arrives escaped and cut.
func TestPeerSoftwareIsEscapedAndCut(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	evil := "restpipe \x1b[2J\x1b[31mowned\r\n" + strings.Repeat("x", 60<<10)
	startClient(t, p, "c1", srv.addr, func(c *ClientConfig) { c.Software = evil })
	got := srv.session(t, "c1", 10*time.Second).software
	if len(got) > maxSoftware+len("…") || strings.ContainsAny(got, "\x1b\r\n") {
		t.Fatalf("software = %q (%d bytes), want at most %d escaped characters", got, len(got), maxSoftware)
	}
	if !strings.HasPrefix(got, `restpipe \x1b[2J`) {
		t.Errorf("software = %q, want the escaped original's start", got)
	}
}

// TestEventsWaitForAStream: on a link whose peer allows few streams (here
// a small LinkBuffer; on a loaded machine, a hello that measured a long
// round trip), events beyond this side's stream budget wait for a stream
// instead of failing, never open more streams than the budget (the peer
// would close the link), and fail with timeout when their deadline passes
// while they wait.
func TestEventsWaitForAStream(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	// 16 MiB holds 16 streams of 256 KiB windows (tolerance 32 x 2 windows).
	cl := startClient(t, p, "few", srv.addr, func(c *ClientConfig) { c.LinkBuffer = 16 << 20 })
	cl.waitUp(t, 5*time.Second)
	sess := srv.session(t, "few", time.Second)
	budget := sess.streamBudget()
	if budget < 4 || budget > 16 {
		t.Fatalf("stream budget %d toward a peer allowing %d streams", budget, sess.peerStreams)
	}

	// Many more events than streams at once: all answered, link kept.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			arg := fmt.Sprint(i)
			got, err := call(ctx, sess, "get", "whoami", nil, arg)
			if want := "few answers get_whoami from server args=" + arg; err != nil || got != want {
				errs <- fmt.Errorf("event %d: %q, %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if again := srv.session(t, "few", time.Second); again != sess || sess.Err() != nil {
		t.Fatalf("the link did not survive 200 events over %d streams: %v", budget, sess.Err())
	}

	// Every stream held by a blocked event: the next event waits, and
	// fails with timeout at its deadline, not overloaded.
	bctx, bcancel := context.WithCancel(context.Background())
	var blocked sync.WaitGroup
	for range budget {
		blocked.Add(1)
		go func() {
			defer blocked.Done()
			_, _ = call(bctx, sess, "get", "block", nil)
		}()
	}
	for range budget {
		select {
		case <-cl.handler.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the blocking events did not all reach the client")
		}
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := call(wctx, sess, "get", "whoami", nil, "late")
	wcancel()
	wantKind(t, err, host.KindTimeout)
	bcancel()
	blocked.Wait()
	// And the streams come back: the link serves again.
	if got, err := call(ctx, sess, "get", "whoami", nil, "after"); err != nil || !strings.Contains(got, "args=after") {
		t.Errorf("event after the blocked ones = %q, %v", got, err)
	}
}

func TestShortestRTT(t *testing.T) {
	for _, tc := range []struct{ hello, tls, want time.Duration }{
		{6 * time.Millisecond, time.Millisecond, time.Millisecond}, // a hello delayed by the scheduler
		{time.Millisecond, 0, time.Millisecond},                    // no TLS sample
		{time.Millisecond, 3 * time.Millisecond, time.Millisecond},
		{10 * time.Millisecond, 12 * time.Millisecond, 10 * time.Millisecond}, // a WAN: both span the path
	} {
		if got := shortestRTT(tc.hello, tc.tls); got != tc.want {
			t.Errorf("shortestRTT(%v, %v) = %v, want %v", tc.hello, tc.tls, got, tc.want)
		}
	}
}

// lateTimer is a context whose deadline passes but whose timer never
// fires, as on a machine too loaded to run it in time.
type lateTimer struct {
	context.Context
	d time.Time
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.d, true }

// TestReplyAfterTheDeadlineIsATimeout: a peer's reply that arrives once
// the event's deadline has passed is a timeout, even before the
// context's timer fires.
func TestReplyAfterTheDeadlineIsATimeout(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	cl := startClient(t, p, "late", srv.addr, nil)
	cl.waitUp(t, 5*time.Second)
	sess := srv.session(t, "late", time.Second)
	ctx := lateTimer{Context: context.Background(), d: time.Now().Add(50 * time.Millisecond)}
	_, err := call(ctx, sess, "get", "late", nil)
	wantKind(t, err, host.KindTimeout)
	// The link goes on.
	ok, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := call(ok, sess, "get", "late", nil); err != nil || got != "ok" {
		t.Errorf("next event = %q, %v", got, err)
	}
}
