package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// TestRestPipeExamples checks RestPipe's four examples, in both directions.
func TestRestPipeExamples(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{}, "c1")
	cl := c.clients["c1"]
	tests := []struct {
		url, key string
		want     any // nil: any float
	}{
		{cl.url("/server/time"), "time_from_server", nil},
		{c.server.url("/client/c1/time"), "time_from_client", nil},
		{c.server.url("/client/c1/cat//hello%20/world"), "result_from_client", "hello world"},
		{cl.url("/server/cat//hello%20/world"), "result_from_server", "hello world"},
	}
	for _, tt := range tests {
		r := do(t, "GET", tt.url, nil)
		if r.status != 200 || r.code != "0" || r.header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d code %q type %q: %s", tt.url, r.status, r.code, r.header.Get("Content-Type"), r.body)
			continue
		}
		v := r.json(t)
		if len(v) != 1 {
			t.Errorf("GET %s = %s, want exactly the key %s", tt.url, r.body, tt.key)
		}
		got, ok := v[tt.key]
		switch {
		case !ok:
			t.Errorf("GET %s = %s, want key %s", tt.url, r.body, tt.key)
		case tt.want == nil:
			if f, ok := got.(float64); !ok || time.Since(time.Unix(int64(f), 0)).Abs() > time.Minute {
				t.Errorf("GET %s: %s = %v, want the epoch time as a float", tt.url, tt.key, got)
			}
		case got != tt.want:
			t.Errorf("GET %s: %s = %v, want %v", tt.url, tt.key, got, tt.want)
		}
	}
}

// TestEchoShowsTheEvent checks what a handler sees, both ways.
func TestEchoShowsTheEvent(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{}, "c1")
	cl := c.clients["c1"]
	tests := []struct {
		url, peer, role, name string
	}{
		{cl.url("/server/echo//a%2Fb/%20c?x=1&x=2&y=z"), "c1", "server", "server"},
		{c.server.url("/client/c1/echo//a%2Fb/%20c?x=1&x=2&y=z"), "server", "client", "c1"},
		{cl.url("/local/echo//a%2Fb/%20c?x=1&x=2&y=z"), "", "client", "c1"},
	}
	for _, tt := range tests {
		r := do(t, "GET", tt.url, nil, "Content-Type", "Text/Plain; charset=utf-8")
		v := r.json(t)
		want := fmt.Sprintf(`map[args:[a/b  c] content_type:text/plain node:map[name:%s role:%s] noun:echo peer:%s query:map[x:[1 2] y:[z]] verb:get]`, tt.name, tt.role, tt.peer)
		if got := fmt.Sprint(v); got != want {
			t.Errorf("GET %s =\n%s\nwant\n%s", tt.url, got, want)
		}
	}
	// post_echo streams the body back with its content type.
	r := do(t, "POST", cl.url("/server/echo"), strings.NewReader("some bytes"), "Content-Type", "application/x-thing")
	if r.status != 200 || string(r.body) != "some bytes" || r.header.Get("Content-Type") != "application/x-thing" {
		t.Errorf("POST echo = %d %q %q", r.status, r.body, r.header.Get("Content-Type"))
	}
	// HEAD is get, without the body.
	r = do(t, "HEAD", cl.url("/server/time"), nil)
	if r.status != 200 || len(r.body) != 0 || r.code != "0" {
		t.Errorf("HEAD time = %d %q code %s", r.status, r.body, r.code)
	}
}

// TestEveryErrorKind produces each row of the SPEC's error table with a
// real scenario.
func TestEveryErrorKind(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{mod: func(cfg *nodeConfig) {
		cfg.MaxBody = 1 << 20
		cfg.MaxInFlight = 4
		cfg.PeerWait = 300 * time.Millisecond
	}}, "c1", "gone")
	cl := c.clients["c1"]

	t.Run("bad_request", func(t *testing.T) {
		for _, r := range []*reply{
			do(t, "GET", cl.url("/nowhere/time"), nil),
			do(t, "GET", cl.url("/server/bad%20noun"), nil),
			do(t, "GET", cl.url("/client/c1/time"), nil), // a client node has no /client/
			do(t, "GET", c.server.url("/server/time"), nil),
			do(t, "GET", cl.url("/server/time"), nil, "X-Event-Timeout", "soon"),
			do(t, "GET", cl.url("/server/time"), nil, "X-Event-Timeout", "-1s"),
			do(t, "OPTIONS", cl.url("/server/time"), nil),
			do(t, "GET", cl.url("/server/time?%zz"), nil),
			// Text that is not UTF-8 once decoded: the caller's mistake.
			do(t, "GET", cl.url("/server/cat//%ff/x"), nil),
			do(t, "GET", cl.url("/server/echo?x=%ff"), nil),
			do(t, "GET", cl.url("/server/echo?%fe=1"), nil),
			do(t, "GET", cl.url("/local/echo//%c3"), nil),
			do(t, "POST", cl.url("/server/echo"), strings.NewReader("x"), "Content-Type", "text/\xff"),
		} {
			wantError(t, r, host.KindBadRequest)
		}
	})
	t.Run("no_route", func(t *testing.T) {
		v := wantError(t, do(t, "GET", cl.url("/server/unknown/thing"), nil), host.KindNoRoute)
		if msg := v["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "get_unknown_thing") {
			t.Errorf("message %q, want the route name", msg)
		}
	})
	t.Run("handler_failed", func(t *testing.T) {
		v := wantError(t, do(t, "GET", cl.url("/server/cat//only-one"), nil), host.KindHandlerFailed)
		exc, _ := v["exception"].(map[string]any)
		if exc["class"] != "TypeError" || !strings.Contains(exc["message"].(string), "exactly 2 arguments") {
			t.Errorf("exception = %v, want RestPipe's TypeError", v["exception"])
		}
		if _, ok := exc["traceback"]; ok {
			t.Errorf("traceback sent without debug logging: %v", exc)
		}
	})
	t.Run("plugin_unavailable", func(t *testing.T) {
		wantError(t, do(t, "GET", cl.url("/server/misbehave/crash"), nil), host.KindPluginUnavailable)
	})
	t.Run("link_lost", func(t *testing.T) {
		res := goDo(t, "GET", c.server.url("/client/gone/misbehave/slow?ms=60000"), nil)
		waitFor(t, 5*time.Second, "the event to reach gone", func() bool {
			return c.clients["gone"].table.InFlight("misbehave") == 1
		})
		c.clients["gone"].stop(t) // the client node goes away mid-event
		wantError(t, res.wait(t), host.KindLinkLost)
	})
	t.Run("peer_unavailable", func(t *testing.T) {
		v := wantError(t, do(t, "GET", c.server.url("/client/nobody/time"), nil), host.KindPeerUnavailable)
		if msg := v["error"].(map[string]any)["message"].(string); !strings.Contains(msg, `no client named "nobody"`) {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("overloaded", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, err := tryDo(http.DefaultClient, "GET", cl.url("/server/misbehave/slow?ms=1500"), nil); err != nil {
					t.Error(err)
				} else if r.status != 200 {
					t.Errorf("slow event = %d %s", r.status, r.body)
				}
			}()
		}
		waitFor(t, 5*time.Second, "4 events in flight", func() bool { return c.server.table.InFlight("misbehave") == 4 })
		r := do(t, "GET", cl.url("/server/time"), nil)
		wantError(t, r, host.KindOverloaded)
		if r.header.Get("Retry-After") != "1" {
			t.Errorf("Retry-After = %q, want 1", r.header.Get("Retry-After"))
		}
		wg.Wait()
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		v := wantError(t, do(t, "GET", cl.url("/server/echo?sleep=10s"), nil, "X-Event-Timeout", "300ms"), host.KindTimeout)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("timeout took %v for a 300ms deadline", d)
		}
		if msg := v["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "300ms") {
			t.Errorf("message %q, want the deadline", msg)
		}
	})
	t.Run("too_large", func(t *testing.T) {
		wantError(t, do(t, "POST", cl.url("/server/echo"), strings.NewReader(strings.Repeat("x", 2<<20))), host.KindTooLarge)
		// Chunked, of unknown length: refused once it passes the limit,
		// and the upload leaves nothing behind.
		wantError(t, do(t, "PUT", cl.url("/server/files//big.bin"), io.MultiReader(strings.NewReader(strings.Repeat("y", 2<<20)))), host.KindTooLarge)
		if _, err := os.Stat(filepath.Join(c.server.files, "big.bin")); !os.IsNotExist(err) {
			t.Errorf("the refused upload left a file: %v", err)
		}
	})
}

// TestTracebackOnlyAtDebug checks handler_failed carries a traceback when
// the receiving node logs at debug level.
func TestTracebackOnlyAtDebug(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{debug: true, plugins: []string{"echo"}}, "c1")
	r := do(t, "GET", c.clients["c1"].url("/server/echo?sleep=bogus"), nil)
	v := wantError(t, r, host.KindHandlerFailed)
	if exc, _ := v["exception"].(map[string]any); exc["class"] != "ValueError" {
		t.Errorf("exception = %v", v["exception"])
	}
}

// TestDeadlineAndCancelReachTheFarPlugin checks the caller's deadline and
// hang-up reach the handler's context on the other node. The hang-up is
// sent only once the far handler has started (it logs "slow event
// started"): a hang-up that wins the race to the plugin ends the event
// before any handler runs, which TestHangUpBeforeTheHandlerStarts covers.
func TestDeadlineAndCancelReachTheFarPlugin(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"misbehave"}}, "c1")
	cl := c.clients["c1"]
	v := do(t, "GET", cl.url("/server/misbehave/ok"), nil, "X-Event-Timeout", "5s").json(t)
	if ms := v["deadline_ms"].(float64); ms > 5000 || ms < 4000 {
		t.Errorf("the plugin's deadline is %vms away, want just under 5000", ms)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", cl.url("/server/misbehave/slow?ms=60000"), nil)
	req.Header.Set("X-Request-Id", "hang-up-test")
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, 10*time.Second, "the far handler to start", func() bool {
		return logHas(c.server.logs.String(), "slow event started", "id=hang-up-test")
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("caller's request = %v", err)
	}
	waitFor(t, 10*time.Second, "the plugin to see the cancellation", func() bool {
		return logHas(c.server.logs.String(), "slow event canceled", "id=hang-up-test", `error="context canceled"`)
	})
	waitFor(t, 10*time.Second, "nothing in flight", func() bool { return c.server.table.InFlight("misbehave") == 0 })
}

// TestHangUpBeforeTheHandlerStarts hangs up at once, again and again, so
// that the hang-up sometimes reaches the far node before the event reaches
// its handler and sometimes after. Either order must end well: the caller
// gets its error, a handler that started sees the cancellation, nothing
// stays in flight, and the next event is served.
func TestHangUpBeforeTheHandlerStarts(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"misbehave"}}, "c1")
	cl := c.clients["c1"]
	const rounds = 20
	started := 0
	for i := range rounds {
		id := fmt.Sprintf("early-hang-up-%d", i)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", cl.url("/server/misbehave/slow?ms=60000"), nil)
		req.Header.Set("X-Request-Id", id)
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		// Hang up after a delay that grows from nothing to 2ms over the
		// rounds: the early ones end the event on this node or on its way,
		// the late ones in the far handler. The delay is the experiment,
		// not a wait for a condition.
		time.Sleep(time.Duration(i) * 100 * time.Microsecond)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("round %d: caller's request = %v", i, err)
		}
		waitFor(t, 10*time.Second, "nothing in flight on either node", func() bool {
			return c.server.table.InFlight("misbehave") == 0 && cl.gateway.InFlight() == 0
		})
		logs := c.server.logs.String()
		if logHas(logs, "slow event started", "id="+id) {
			started++
			waitFor(t, 10*time.Second, "the started handler to see the cancellation", func() bool {
				return logHas(c.server.logs.String(), "slow event canceled", "id="+id)
			})
		}
	}
	t.Logf("%d of %d handlers had started when the hang-up arrived", started, rounds)
	if r := do(t, "GET", cl.url("/server/misbehave/ok"), nil); r.status != 200 {
		t.Errorf("event after the hang-ups = %d %s", r.status, r.body)
	}
}

// TestConcurrentSlowEvents sends 200 events of 300ms each at once: they run
// side by side, not one after another.
func TestConcurrentSlowEvents(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"echo"}}, "c1")
	cl := c.clients["c1"]
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := tryDo(http.DefaultClient, "GET", cl.url(fmt.Sprintf("/server/echo//%d?sleep=300ms", i)), nil)
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%d: %v", i, err))
				mu.Unlock()
				return
			}
			if r.status != 200 || !strings.Contains(string(r.body), fmt.Sprintf(`"args":["%d"]`, i)) {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%d: %d %s", i, r.status, r.body))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("200 events of 300ms each took %v together", elapsed.Round(time.Millisecond))
	for _, f := range failed {
		t.Error(f) // a reply reaching the wrong caller shows here too
	}
	// One after another would take 60 s. A link whose hello measured a long
	// round trip (a loaded machine) has 16 streams, 12 of them for events:
	// 200 events then take 5 s, in turns of 12.
	if elapsed > 20*time.Second {
		t.Errorf("200 events of 300ms took %v: they did not run concurrently", elapsed)
	}
}

// TestPeerWait checks an event waits for a peer that connects within the
// wait, and for a client's link that comes up.
func TestPeerWait(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"time"}})
	res := goDo(t, "GET", c.server.url("/client/late/time"), nil)
	// The client connects only once the event is waiting for it.
	waitFor(t, 10*time.Second, "the event to wait for its peer", func() bool { return c.server.gateway.InFlight() == 1 })
	c.clients["late"] = c.startNode(host.RoleClient, "late", c.server.linkAddr(), clusterOpts{plugins: []string{"time"}})
	if r := res.wait(t); r.status != 200 || !strings.Contains(string(r.body), "time_from_client") {
		t.Errorf("event for a late client = %d %s", r.status, r.body)
	}
}

// TestOversizedHeaders checks request headers over the gateway's 1 MiB
// limit are refused and the node goes on serving. net/http answers 431 and
// closes the connection; a caller still sending its headers may see the
// connection reset before it reads the 431.
func TestOversizedHeaders(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"time"}}, "c1")
	cl := c.clients["c1"]
	req, _ := http.NewRequest("GET", cl.url("/server/time"), nil)
	req.Header.Set("X-Huge", strings.Repeat("h", 1<<20+8<<10))
	resp, err := http.DefaultClient.Do(req)
	switch {
	case err != nil:
		t.Logf("oversized headers: the connection was cut (%v)", err)
	case resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge:
		t.Errorf("oversized headers = %d, want 431", resp.StatusCode)
	default:
		resp.Body.Close()
		t.Logf("oversized headers: 431")
	}
	if r := do(t, "GET", cl.url("/server/time"), nil); r.status != 200 {
		t.Errorf("event after the oversized request = %d %s", r.status, r.body)
	}
}
