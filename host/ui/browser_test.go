package ui_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/restpipe/restpipe/host/ui"
	"github.com/restpipe/restpipe/host/ui/uitest"
)

// These tests load the page in a real headless Chromium against a Handler
// whose Source the test sets, to show what a real node cannot be made to
// show on demand: a cluster, 10,000 peers, hostile text, a phone, both
// colour schemes, a node that goes away and comes back.

// source is a ui.Source the test sets.
type source struct {
	mu    sync.Mutex
	snap  ui.Snapshot
	peers []ui.Peer
}

func (s *source) Snapshot() ui.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snap
	snap.Events.Failures = append([]ui.Failure(nil), snap.Events.Failures...)
	return snap
}

func (s *source) Peers() []ui.Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ui.Peer(nil), s.peers...)
}

func (s *source) set(f func(snap *ui.Snapshot, peers *[]ui.Peer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.snap, &s.peers)
}

// serve serves h on ln until the test ends; stop stops it early.
func serve(t *testing.T, h http.Handler, ln net.Listener) (stop func()) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func newHandler(t *testing.T, src ui.Source) *ui.Handler {
	t.Helper()
	cfg := ui.DefaultConfig()
	cfg.Source = src
	h, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// hostile is text from outside that must show as text.
const (
	hostileName  = `<img src=x onerror="window.__pwned=1">evil`
	hostileError = `<script>window.__pwned=1</script><b id="injected">bold</b> & "quotes" 'too'`
)

// clusterNode is a server of a three-server cluster with hostile text in
// what comes from outside.
func clusterNode(now time.Time) (ui.Snapshot, []ui.Peer) {
	start := now.Add(-3*time.Hour - 7*time.Minute)
	n := 59
	rate, failed, p50, p99 := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range n {
		rate[i] = 20 + 15*float64(i%12)/11
		if i%10 == 3 {
			failed[i] = 1.2
		}
		p50[i], p99[i] = 0.9+0.3*float64(i%4), 4+float64(i%9)
	}
	snap := ui.Snapshot{
		Node: ui.Node{Role: "server", Name: "server-a", Version: "v1.4.0", Commit: "9f3c2a1b7d0e", GoVersion: "go1.26",
			Started: start, Policy: &ui.Policy{File: "/etc/restpipe/policy.hcl", SHA256: "b5bb9d8014a0f9b1d61e21e796d78dcc", Rules: 3,
				AllowRules: 2, LimitRules: 1, LoadedAt: start}},
		Cluster: &ui.Cluster{Members: []ui.Member{{Name: "server-a", State: "alive", Self: true}, {Name: "server-b", State: "alive"}, {Name: "server-c", State: "suspect"}}},
		Plugins: []ui.Plugin{
			{File: "time", Name: "time", Version: "1.0.0", State: "running", Routes: []string{"get_time", "get_time_utc"}, PID: 4242},
			{File: "files", Name: "files", Version: "1.0.0", State: "restarting", Restarts: 2, Reason: "plugin files is restarting after a crash",
				Routes: []string{"get_files", "put_files", "delete_files"}, LastError: "plugin files is restarting after a crash", LastErrorAt: now.Add(-time.Second), LastCrash: now.Add(-time.Second)},
			{File: "hostile", Name: "hostile", Version: "0.1", State: "quarantined", Restarts: 4, Reason: hostileError, LastError: hostileError, LastErrorAt: now.Add(-time.Minute), Routes: []string{}},
			{File: "many", Name: "many-routes", Version: "2.0", State: "running", PID: 4343, Routes: []string{"get_a", "get_b", "get_c", "get_d", "get_e", "put_a"}},
		},
		Events: ui.Events{WindowSeconds: 300, StepSeconds: 5, Start: now.Add(-300 * time.Second).Unix(), RoutesTotal: 3, FailuresTotal: 2,
			Routes: []ui.RouteSeries{
				{Route: "get_time", Events: 9000, Failed: 30, Rate: rate, FailedRate: failed, P50: p50, P99: p99},
				{Route: "get_files", Events: 300, Failed: 0, Rate: make([]float64, n), FailedRate: make([]float64, n), P50: make([]float64, n), P99: make([]float64, n)},
			},
			Failures: []ui.Failure{
				{Seq: 2, Time: now.Add(-10 * time.Second), RequestID: "req-hostile", Route: "get_time", Peer: hostileName, Kind: "handler_failed", Message: hostileError, DurationMillis: 2.5},
				{Seq: 1, Time: now.Add(-20 * time.Second), RequestID: "req-timeout", Route: "get_time", Peer: "web-1", Kind: "timeout", Message: "no reply within 1s", DurationMillis: 1000},
			}},
	}
	snap.Events.Routes[1].Rate[40], snap.Events.Routes[1].P50[40], snap.Events.Routes[1].P99[40] = 60, 3, 9
	peers := []ui.Peer{
		{Name: "web-1", Server: "server-a", ConnectedSince: now.Add(-2 * time.Hour), RemoteAddr: "10.0.0.11:50712", RTTMillis: 0.42, BytesIn: 123456, BytesOut: 7890123, EventsIn: 1, LinkChanges: 1, Software: "restpipe v1.4.0"},
		{Name: "web-2", Server: "server-b", ConnectedSince: now.Add(-90 * time.Second), RemoteAddr: "10.0.0.12:50713", RTTMillis: 12.5, BytesIn: 1024, BytesOut: 2048, LinkChanges: 7, Software: "restpipe v1.3.9"},
		{Name: hostileName, Server: "server-b", ConnectedSince: now.Add(-time.Minute), RemoteAddr: "[2001:db8::1]:7443", RTTMillis: 3, LinkChanges: 1, Software: hostileError},
	}
	return snap, peers
}

func shotDir() uitest.Options { return uitest.Options{ShotDir: os.Getenv("RESTPIPE_UI_SHOTS")} }

// TestUIPageInBrowser loads the page of a fake cluster node and checks what
// it shows, that nothing from outside became markup, and its contrast in
// both colour schemes.
func TestUIPageInBrowser(t *testing.T) {
	b := uitest.Start(t, shotDir())
	src := &source{}
	src.snap, src.peers = clusterNode(time.Now())
	ln := listen(t, "127.0.0.1:0")
	serve(t, newHandler(t, src), ln)
	url := "http://" + ln.Addr().String() + "/ui"

	tab := b.NewTab(t, 1280, 900)
	tab.Navigate(url)
	tab.WaitFor(15*time.Second, "the page to show the node", `document.getElementById('conn').textContent === 'Live'`)
	if p := tab.Problems(); len(p) > 0 {
		t.Errorf("console after loading: %s", strings.Join(p, "\n"))
	}
	if got := uitest.Eval[string](tab, `location.pathname`); got != "/ui/" {
		t.Errorf("/ui led to %s, want /ui/", got)
	}

	t.Run("polls every second", func(t *testing.T) {
		polls := `performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/api/state')).length`
		first := uitest.Eval[int](tab, polls)
		took := tab.WaitFor(6*time.Second, "three more polls", fmt.Sprintf("%s >= %d", polls, first+3))
		if took < 2*time.Second {
			t.Errorf("three polls in %v: the page polls more often than every second", took)
		}
	})

	t.Run("cluster", func(t *testing.T) {
		tab.WaitFor(15*time.Second, "the cluster", `!document.getElementById('cluster').hidden`)
		rows := uitest.Eval[[]string](tab, `[...document.querySelectorAll('#cluster-table tbody tr')].map(r => r.innerText.replace(/\s+/g, ' ').trim())`)
		want := []string{"server-a (this node) alive 1", "server-b alive 2", "server-c suspect 0"}
		if strings.Join(rows, "|") != strings.Join(want, "|") {
			t.Errorf("cluster rows = %q, want %q", rows, want)
		}
		if !uitest.Eval[bool](tab, `getComputedStyle(document.querySelector('#peers-table td.col-server')).display === 'table-cell'`) {
			t.Error("the peers table hides its Server column in a cluster")
		}
		holders := uitest.Eval[[]string](tab, `[...document.querySelectorAll('#peers-table tbody td.col-server')].map(td => td.textContent)`)
		if strings.Join(holders, ",") != "server-b,server-a,server-b" { // by name: "<img..." first
			t.Errorf("peers' servers = %q, want server-b,server-a,server-b", holders)
		}
		tab.Screenshot("cluster")
	})

	t.Run("hostile text stays text", func(t *testing.T) {
		if uitest.Eval[bool](tab, `!!window.__pwned || !!document.getElementById('injected') || document.querySelectorAll('main img, main script, main b').length > 0`) {
			t.Fatal("text from the node became markup")
		}
		for _, where := range []string{"#peers-table tbody", "#plugins-table tbody", "#failures-table tbody"} {
			text := uitest.Eval[string](tab, `document.querySelector('`+where+`').textContent`)
			for _, want := range map[string][]string{
				"#peers-table tbody":    {hostileName, hostileError},
				"#plugins-table tbody":  {hostileError},
				"#failures-table tbody": {hostileName, hostileError, "req-hostile", "req-timeout"},
			}[where] {
				if !strings.Contains(text, want) {
					t.Errorf("%s does not show %q as text: %q", where, want, text)
				}
			}
		}
		if p := tab.Problems(); len(p) > 0 {
			t.Errorf("console: %s", strings.Join(p, "\n"))
		}
	})

	t.Run("plugins and failures", func(t *testing.T) {
		states := uitest.Eval[[]string](tab, `[...document.querySelectorAll('#plugins-table tbody tr')].map(r => r.dataset.plugin + ':' + r.querySelector('.badge').textContent + ':' + r.querySelector('.badge').className)`)
		want := "time:running:badge ok|files:restarting:badge warn|hostile:quarantined:badge bad|many:running:badge ok"
		if strings.Join(states, "|") != want {
			t.Errorf("plugin states = %q, want %q", states, want)
		}
		// A long list of routes folds; opened, it stays open across polls.
		many := `document.querySelector('#plugins-table tr[data-plugin=many] details')`
		if got := uitest.Eval[string](tab, many+`.querySelector('summary').textContent`); got != "6 routes" {
			t.Errorf("many's routes fold as %q, want 6 routes", got)
		}
		tab.Click(`#plugins-table tr[data-plugin=many] summary`)
		polls := `performance.getEntriesByType('resource').filter(e => e.name.includes('/ui/api/state')).length`
		n := uitest.Eval[int](tab, polls)
		tab.WaitFor(15*time.Second, "two more polls", fmt.Sprintf("%s >= %d", polls, n+2))
		if !uitest.Eval[bool](tab, many+`.open`) {
			t.Error("the opened route list closed at the next poll")
		}
		kinds := uitest.Eval[[]string](tab, `[...document.querySelectorAll('#fail-kinds button')].map(b => b.textContent)`)
		if strings.Join(kinds, ",") != "all 2,handler_failed 1,timeout 1" {
			t.Errorf("failure kinds = %q", kinds)
		}
		tab.Click(`#fail-kinds button:nth-child(3)`)
		ids := uitest.Eval[[]string](tab, `[...document.querySelectorAll('#failures-table tbody tr')].map(r => r.dataset.requestId)`)
		if strings.Join(ids, ",") != "req-timeout" {
			t.Errorf("failures of kind timeout = %q, want req-timeout", ids)
		}
		tab.Click(`#fail-kinds button:nth-child(1)`)
		charts := uitest.Eval[[]string](tab, `[...document.querySelectorAll('#charts figure')].map(f => f.dataset.route + ':' + f.querySelectorAll('path.line').length)`)
		if strings.Join(charts, ",") != "get_time:4,get_files:3" { // rate, failed, p50, p99; no failures: no failed line
			t.Errorf("charts = %q, want get_time with 4 lines, get_files with 3", charts)
		}
		if more := uitest.Eval[string](tab, `document.getElementById('charts-more').textContent`); !strings.Contains(more, "1 quieter route") {
			t.Errorf("charts-more = %q, want the one route not charted", more)
		}
	})

	t.Run("a new failure arrives", func(t *testing.T) {
		src.set(func(s *ui.Snapshot, _ *[]ui.Peer) {
			s.Events.FailuresTotal = 3
			s.Events.Failures = append([]ui.Failure{{Seq: 3, Time: time.Now(), RequestID: "req-new", Route: "get_time", Peer: "web-2", Kind: "link_lost", Message: "the link dropped"}}, s.Events.Failures...)
		})
		took := tab.WaitFor(15*time.Second, "the new failure", `document.querySelector('#failures-table tbody tr').dataset.requestId === 'req-new'`)
		if n := uitest.Eval[int](tab, `document.querySelectorAll('#failures-table tbody tr').length`); n != 3 {
			t.Errorf("%d failures listed, want 3 (merged, none twice)", n)
		}
		t.Logf("a new failure showed after %v", took.Round(time.Millisecond))
	})

	for _, scheme := range []string{"light", "dark"} {
		t.Run("contrast "+scheme, func(t *testing.T) {
			tab.ColorScheme(scheme)
			tab.WaitFor(15*time.Second, scheme+" colours", fmt.Sprintf(`matchMedia('(prefers-color-scheme: %s)').matches`, scheme))
			bad := uitest.Eval[[]string](tab, contrastJS)
			for _, b := range bad {
				t.Errorf("%s: contrast too low: %s", scheme, b)
			}
			checked := uitest.Eval[int](tab, `window.__contrastChecked`)
			if checked < 50 {
				t.Errorf("%s: only %d elements checked", scheme, checked)
			}
			tab.Screenshot("scheme-" + scheme)
		})
	}
}

// contrastJS measures the contrast of every visible element that holds
// text (WCAG AA: 4.5:1, 3:1 for large text) and of the charts' lines
// (3:1 for graphics), and returns the failures.
const contrastJS = `(() => {
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lin = (v) => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const lum = (c) => 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
  const over = (fg, bg) => ({ r: fg.r * fg.a + bg.r * (1 - fg.a), g: fg.g * fg.a + bg.g * (1 - fg.a), b: fg.b * fg.a + bg.b * (1 - fg.a), a: 1 });
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = { r: 255, g: 255, b: 255, a: 1 };
    for (const l of layers.reverse()) bg = over(l, bg);
    return bg;
  };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const bad = [];
  let checked = 0;
  const seen = new Set();
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const el = walk.currentNode.parentElement;
    if (!walk.currentNode.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    if (el.closest('[hidden], .sr-only, noscript, script, style') || el.getClientRects().length === 0) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility !== 'visible') continue;
    const bg = background(el);
    const fg = over(parse(cs.color), bg);
    const size = parseFloat(cs.fontSize);
    const large = size >= 24 || (parseInt(cs.fontWeight, 10) >= 700 && size >= 18.66);
    const r = ratio(fg, bg);
    checked++;
    if (r < (large ? 3 : 4.5)) bad.push(r.toFixed(2) + ':1 ' + el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).replace(/ /g, '.') : '') + ' "' + el.textContent.trim().slice(0, 40) + '" ' + cs.color + ' on ' + JSON.stringify(bg));
  }
  for (const el of document.querySelectorAll('svg .line, .swatch')) {
    const cs = getComputedStyle(el);
    const c = parse(el.tagName.toLowerCase() === 'path' ? cs.stroke : cs.backgroundColor);
    const bg = background(el.closest('.pane, .chart'));
    const r = ratio(over(c, bg), bg);
    checked++;
    if (r < 3) bad.push(r.toFixed(2) + ':1 graphic ' + el.getAttribute('class'));
  }
  window.__contrastChecked = checked;
  return bad;
})()`

// TestUIManyPeers shows 10,000 peers a page at a time: the filter, the
// sort and the pager work, and the DOM holds one page.
func TestUIManyPeers(t *testing.T) {
	b := uitest.Start(t, shotDir())
	src := &source{}
	now := time.Now()
	src.snap, _ = clusterNode(now)
	src.snap.Cluster = nil
	for i := range 10000 {
		src.peers = append(src.peers, ui.Peer{Name: fmt.Sprintf("client-%05d", i), ConnectedSince: now.Add(-time.Duration(i) * time.Second),
			RemoteAddr: fmt.Sprintf("10.1.%d.%d:40000", i/256, i%256), RTTMillis: float64(i%500) / 10, BytesIn: uint64(i * 100), BytesOut: uint64(i * 10),
			LinkChanges: 1 + i%9*2, Software: "restpipe v1.4.0"})
	}
	ln := listen(t, "127.0.0.1:0")
	serve(t, newHandler(t, src), ln)
	tab := b.NewTab(t, 1280, 900)
	tab.Navigate("http://" + ln.Addr().String() + "/ui/")
	rows := `document.querySelectorAll('#peers-table tbody tr')`
	firstName := `document.querySelector('#peers-table tbody tr td').textContent`
	tab.WaitFor(15*time.Second, "the first page", rows+`.length === 50 && document.getElementById('peers-range').textContent === '1–50 of 10,000'`)
	if got := uitest.Eval[string](tab, `document.getElementById('peers-count').textContent`); got != "10,000 links" {
		t.Errorf("peers count = %q", got)
	}
	// What a browser holds and fetches with 10,000 peers.
	sizes := uitest.Eval[[]float64](tab, `[
	  performance.getEntriesByType('resource').filter(e => e.name.includes('api/state'))[0].encodedBodySize,
	  performance.getEntriesByType('resource').filter(e => e.name.includes('api/state'))[0].decodedBodySize,
	  document.getElementsByTagName('*').length,
	  performance.memory ? performance.memory.usedJSHeapSize : 0]`)
	t.Logf("with 10,000 peers: a poll is %.0f bytes (%.0f unzipped), the page %.0f elements, %.1f MiB of JavaScript heap", sizes[0], sizes[1], sizes[2], sizes[3]/(1<<20))
	if sizes[2] > 3000 {
		t.Errorf("the page has %.0f elements with 10,000 peers: it should hold one page of them", sizes[2])
	}
	tab.Screenshot("10000-peers")

	tab.Click(`#peers-next`)
	tab.WaitFor(15*time.Second, "the second page", `document.getElementById('peers-range').textContent === '51–100 of 10,000' && `+firstName+` === 'client-00050'`)
	if loc := uitest.Eval[string](tab, `location.hash`); loc != "#offset=50" {
		t.Errorf("location.hash = %q, want #offset=50 (a reload keeps the view)", loc)
	}

	tab.Click(`#peers-table button[data-sort=changes]`)
	tab.WaitFor(15*time.Second, "sorted by link changes, most first",
		`document.querySelector('#peers-table th[data-sort=changes]').getAttribute('aria-sort') === 'descending' && `+firstName+` === 'client-00008'`)

	tab.Do(5*time.Second, chromedp.SendKeys(chromedp.ID("peers-q"), "CLIENT-0999"))
	tab.WaitFor(15*time.Second, "the filter", rows+`.length === 10 && document.getElementById('peers-range').textContent.startsWith('1–10 of 10 matching')`)
	tab.Do(5*time.Second, chromedp.SetValue(chromedp.ID("peers-q"), "nobody"), chromedp.SendKeys(chromedp.ID("peers-q"), "x"))
	tab.WaitFor(15*time.Second, "no match", `!document.getElementById('peers-empty').hidden && document.getElementById('peers-empty').textContent.includes('nobodyx')`)
	tab.Screenshot("no-match")

	if p := tab.Problems(); len(p) > 0 {
		t.Errorf("console: %s", strings.Join(p, "\n"))
	}
}

// TestUIOnAPhone: the page fits a phone's width; only tables scroll
// sideways, inside their boxes.
func TestUIOnAPhone(t *testing.T) {
	b := uitest.Start(t, shotDir())
	src := &source{}
	src.snap, src.peers = clusterNode(time.Now())
	ln := listen(t, "127.0.0.1:0")
	serve(t, newHandler(t, src), ln)
	tab := b.NewTab(t, 390, 844)
	tab.Navigate("http://" + ln.Addr().String() + "/ui/")
	tab.WaitFor(15*time.Second, "the page", `document.getElementById('conn').textContent === 'Live'`)
	if w := uitest.Eval[[]int](tab, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Errorf("the page is %d px wide on a %d px phone: it scrolls sideways", w[0], w[1])
	}
	wide := uitest.Eval[[]string](tab, `[...document.querySelectorAll('main > section, header, footer')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.id || e.tagName)`)
	if len(wide) > 0 {
		t.Errorf("sticking out of the phone's width: %v", wide)
	}
	if fs := uitest.Eval[float64](tab, `parseFloat(getComputedStyle(document.querySelector('#peers-table td')).fontSize)`); fs < 14 {
		t.Errorf("table text is %v px on a phone, want at least 14", fs)
	}
	tab.Screenshot("phone")
}

// TestUIReconnects stops the node's HTTP server and starts another on the
// same address, as a restarted node would: the page says it lost the node,
// then that it is back and restarted, and shows the new run.
func TestUIReconnects(t *testing.T) {
	b := uitest.Start(t, shotDir())
	src := &source{}
	src.snap, src.peers = clusterNode(time.Now())
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	stop := serve(t, newHandler(t, src), ln)
	tab := b.NewTab(t, 1280, 900)
	tab.Navigate("http://" + addr + "/ui/")
	conn := `document.getElementById('conn').textContent`
	tab.WaitFor(15*time.Second, "the page", conn+` === 'Live'`)
	tab.WaitFor(15*time.Second, "two failures", `document.querySelectorAll('#failures-table tbody tr').length === 2`)

	stop()
	tab.WaitFor(8*time.Second, "the page to say the node is gone", conn+`.startsWith('Cannot reach the node since')`)
	tab.Screenshot("node-gone")

	// The new run: another start, one failure of its own.
	src.set(func(s *ui.Snapshot, _ *[]ui.Peer) {
		s.Node.Started = time.Now()
		s.Events.FailuresTotal = 1
		s.Events.Failures = []ui.Failure{{Seq: 1, Time: time.Now(), RequestID: "req-after-restart", Route: "get_time", Peer: "web-1", Kind: "no_route", Message: "no handler"}}
	})
	serve(t, newHandler(t, src), listen(t, addr))
	took := tab.WaitFor(15*time.Second, "the page to come back", conn+` === 'Live'`)
	notice := uitest.Eval[string](tab, `document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent`)
	if !strings.Contains(notice, "Reconnected at") || !strings.Contains(notice, "The node restarted at") {
		t.Errorf("notice = %q, want it to say the page reconnected and the node restarted", notice)
	}
	tab.WaitFor(15*time.Second, "only the new run's failures", `[...document.querySelectorAll('#failures-table tbody tr')].map(r => r.dataset.requestId).join() === 'req-after-restart'`)
	t.Logf("back %v after the new server started", took.Round(time.Millisecond))
	tab.Screenshot("node-back")
}

// TestUIPagingWhileAPollIsOnItsWay pages while a poll for the page shown
// is still on its way (a slow node: 10,000 peers on a loaded machine). Its
// answer must not take the view back to the old page: it once did, and
// the click was lost.
func TestUIPagingWhileAPollIsOnItsWay(t *testing.T) {
	b := uitest.Start(t, shotDir())
	src := &source{}
	src.snap, _ = clusterNode(time.Now())
	src.snap.Cluster = nil
	for i := range 200 {
		src.peers = append(src.peers, ui.Peer{Name: fmt.Sprintf("client-%05d", i), ConnectedSince: time.Now(), Software: "restpipe"})
	}
	// Once held is set, polls of the first page wait for release.
	var held atomic.Bool
	entered, release := make(chan struct{}, 16), make(chan struct{})
	h := newHandler(t, src)
	ln := listen(t, "127.0.0.1:0")
	serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if held.Load() && strings.HasSuffix(r.URL.Path, "/api/state") && r.URL.Query().Get("peers_offset") == "0" {
			entered <- struct{}{}
			<-release
		}
		h.ServeHTTP(w, r)
	}), ln)
	tab := b.NewTab(t, 1280, 900)
	tab.Navigate("http://" + ln.Addr().String() + "/ui/")
	firstName := `document.querySelector('#peers-table tbody tr td')?.textContent`
	tab.WaitFor(15*time.Second, "the first page", firstName+` === 'client-00000'`)

	held.Store(true)
	select {
	case <-entered: // a poll of the first page is on its way
	case <-time.After(15 * time.Second):
		t.Fatal("no poll of the first page came")
	}
	tab.Click(`#peers-next`)
	held.Store(false)
	close(release)
	tab.WaitFor(15*time.Second, "the second page", `document.getElementById('peers-range').textContent === '51–100 of 200' && `+firstName+` === 'client-00050'`)
	// And it stays: the next polls ask for the page shown.
	polls := `performance.getEntriesByType('resource').filter(e => e.name.includes('api/state')).length`
	n := uitest.Eval[int](tab, polls)
	tab.WaitFor(15*time.Second, "two more polls", fmt.Sprintf("%s >= %d", polls, n+2))
	if got := uitest.Eval[string](tab, firstName); got != "client-00050" {
		t.Errorf("after two more polls the first row is %q, want client-00050", got)
	}
}
