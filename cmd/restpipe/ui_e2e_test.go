package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/ui/uitest"
)

// The status page (/ui) of real nodes in a real headless Chromium: a client
// linking, a plugin crash-looping into quarantine, a failed event with its
// request id, the page behind the shipped nginx example, and a node
// restarting under the page. Screenshots of each state go to the test's
// temporary directory, or to $RESTPIPE_UI_SHOTS to keep them; their paths
// are logged.

func uiBrowser(t *testing.T) *uitest.Browser {
	t.Helper()
	return uitest.Start(t, uitest.Options{ShotDir: os.Getenv("RESTPIPE_UI_SHOTS")})
}

// JavaScript conditions on what the page shows.
const (
	jsLive = `document.getElementById('conn').textContent === 'Live'`
)

func jsPeerRow(name string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#peers-table tbody tr td:first-child')].some(td => td.textContent === %q)`, name)
}

func jsPlugin(file string) string {
	return fmt.Sprintf(`document.querySelector('#plugins-table tbody tr[data-plugin=%q]')`, file)
}

func jsFailure(id string) string {
	return fmt.Sprintf(`document.querySelector('#failures-table tbody tr[data-request-id=%q]')`, id)
}

// noProblems fails t if the page wrote errors or warnings to its console.
func noProblems(t *testing.T, tab *uitest.Tab, when string) {
	t.Helper()
	if p := tab.Problems(); len(p) > 0 {
		t.Errorf("console %s:\n%s", when, strings.Join(p, "\n"))
	}
}

// TestUIServer watches a server node's page while a client links, a plugin
// crash-loops and events fail.
func TestUIServer(t *testing.T) {
	t.Parallel()
	b := uiBrowser(t)
	opts := clusterOpts{plugins: []string{"time", "cat", "misbehave"}}
	c := startCluster(t, opts)
	tab := b.NewTab(t, 1280, 900)
	tab.Navigate(c.server.url("/ui"))
	tab.WaitFor(15*time.Second, "the page to show the node", jsLive)
	noProblems(t, tab, "after loading")
	facts := uitest.Eval[string](tab, `document.getElementById('node-facts').innerText`)
	for _, want := range []string{"Role\nserver", "Name\nserver", "Policy\nnone"} {
		if !strings.Contains(facts, want) {
			t.Errorf("node facts %q lack %q", facts, want)
		}
	}
	for _, p := range []string{"time", "cat", "misbehave"} {
		tab.WaitFor(15*time.Second, p+" running", jsPlugin(p)+`?.querySelector('.badge').textContent === 'running'`)
	}
	if empty := uitest.Eval[string](tab, `document.getElementById('peers-empty').textContent`); empty != "No client is linked." {
		t.Errorf("peers with none linked: %q", empty)
	}
	tab.Screenshot("loaded")

	t.Run("a client links", func(t *testing.T) {
		start := time.Now()
		c1 := c.startNode(host.RoleClient, "c1", c.server.linkAddr(), opts)
		c.waitLinked("c1")
		took := tab.WaitFor(15*time.Second, "c1 in the peers", jsPeerRow("c1"))
		t.Logf("c1 showed %v after the server had its link (%v after starting the client node)",
			took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		row := uitest.Eval[[]string](tab, `[...document.querySelector('#peers-table tbody tr').cells].map(td => td.textContent)`)
		if len(row) < 9 || row[0] != "c1" || !strings.HasSuffix(row[2], "ago") || row[7] != "1" || !strings.HasPrefix(row[8], "127.0.0.1:") {
			t.Errorf("c1's row = %q, want name, age, 1 link change, its address", row)
		}
		if got := uitest.Eval[string](tab, `document.getElementById('peers-count').textContent`); got != "1 link" {
			t.Errorf("peers count = %q, want 1 link", got)
		}
		tab.Screenshot("client-linked")

		// And its own page shows its link to the server.
		ctab := b.NewTab(t, 1280, 900)
		ctab.Navigate(c1.url("/ui/"))
		ctab.WaitFor(15*time.Second, "the client's page", jsLive+` && `+jsPeerRow("server"))
		link := uitest.Eval[string](ctab, `[...document.querySelectorAll('#node-facts div')].find(d => d.querySelector('dt').textContent === 'Link to the server').innerText`)
		if !strings.Contains(link, "up") || !strings.Contains(link, c.server.linkAddr()) || !strings.Contains(link, "1 change") {
			t.Errorf("the client's link fact = %q, want up, the server's address, 1 change", link)
		}
		noProblems(t, ctab, "on the client's page")
		ctab.Screenshot("client-page")
	})

	t.Run("a plugin crash-loops into quarantine", func(t *testing.T) {
		installPlugin(t, pluginBin("misbehave"), filepath.Join(c.server.plugins, "crash-loop"))
		row := jsPlugin("crash-loop")
		took := tab.WaitFor(45*time.Second, "crash-loop quarantined", row+`?.querySelector('.badge').textContent === 'quarantined'`)
		cells := uitest.Eval[[]string](tab, `[...`+row+`.cells].map(td => td.textContent)`)
		// Plugin, State, Why, Restarts, Routes, PID, Version, In flight, Last error.
		if len(cells) != 9 || !strings.Contains(cells[2], "quarantined after 5 crashes") || cells[3] != "4" || cells[5] != "—" || !strings.Contains(cells[8], "last crash") {
			t.Errorf("crash-loop's row = %q, want quarantined after 5 crashes, 4 restarts, no pid, its last crash", cells)
		}
		if cls := uitest.Eval[string](tab, row+`.querySelector('.badge').className`); cls != "badge bad" {
			t.Errorf("the quarantined badge's class = %q, want badge bad", cls)
		}
		for _, p := range []string{"time", "cat", "misbehave"} {
			if st := uitest.Eval[string](tab, jsPlugin(p)+`.querySelector('.badge').textContent`); st != "running" {
				t.Errorf("%s is %s while crash-loop is quarantined, want running", p, st)
			}
		}
		t.Logf("quarantined %v after its file appeared", took.Round(time.Millisecond))
		tab.Screenshot("quarantined")
	})

	t.Run("a failed event with its request id", func(t *testing.T) {
		const id = "ui-e2e-failure-1"
		for range 5 {
			if r := do(t, "GET", c.server.url("/client/c1/time"), nil); r.status != 200 {
				t.Fatalf("GET /client/c1/time = %d %s", r.status, r.body)
			}
		}
		r := do(t, "GET", c.server.url("/client/c1/cat//only-one"), nil, "X-Request-Id", id)
		wantError(t, r, host.KindHandlerFailed)
		row := jsFailure(id)
		tab.WaitFor(15*time.Second, "the failure in the list", row)
		cells := uitest.Eval[[]string](tab, `[...`+row+`.cells].map(td => td.textContent)`)
		// Time, Kind, Route, Peer, Request id, Took, Message.
		if len(cells) != 7 || cells[1] != "handler_failed" || cells[2] != "get_cat" || cells[3] != "c1" || cells[4] != id || !strings.Contains(cells[6], "exactly 2 arguments") {
			t.Errorf("the failure's row = %q, want handler_failed get_cat c1 %s and the handler's message", cells, id)
		}
		if kinds := uitest.Eval[string](tab, `document.getElementById('fail-kinds').textContent`); !strings.Contains(kinds, "handler_failed 1") {
			t.Errorf("failure kinds = %q, want handler_failed 1", kinds)
		}
		tab.WaitFor(15*time.Second, "get_time and get_cat counted", `document.querySelector('#charts figure[data-route=get_time] figcaption')?.textContent === 'get_time5 events, 0 failed' && `+
			`document.querySelector('#charts figure[data-route=get_cat] figcaption')?.textContent === 'get_cat1 event, 1 failed'`)
		// The lines end at the last complete 5 s step: wait for it. The
		// five events may straddle two steps (then the peak is 0.6/s, not
		// 1/s: seen once in a soak), so the line only has to rise.
		tab.WaitFor(15*time.Second, "get_time's line to rise", `document.querySelector('#charts figure[data-route=get_time] .readout') && `+
			`/at most (?!0\/s)/.test(document.querySelector('#charts figure[data-route=get_time] svg').getAttribute('aria-label'))`)
		tab.Screenshot("failure")
	})
	noProblems(t, tab, "at the end")
}

// TestUIBehindNginx loads a client node's page through the shipped nginx
// example, under its /restpipe/ prefix.
func TestUIBehindNginx(t *testing.T) {
	t.Parallel()
	bin := findNginx(t)
	b := uiBrowser(t)
	sock := filepath.Join(t.TempDir(), "gw.sock")
	startCluster(t, clusterOpts{plugins: []string{"time"}, mod: func(cfg *nodeConfig) {
		if cfg.Role == host.RoleClient {
			cfg.HTTP = "unix:" + sock
		}
	}}, "c1")
	ng := startNginx(t, bin, sock)

	tab := b.NewTab(t, 1280, 900)
	tab.Navigate(ng.url + "/restpipe/ui")
	tab.WaitFor(15*time.Second, "the page through nginx", jsLive+` && `+jsPeerRow("server"))
	if p := uitest.Eval[string](tab, `location.pathname`); p != "/restpipe/ui/" {
		t.Errorf("/restpipe/ui led to %s, want /restpipe/ui/ (under the prefix)", p)
	}
	if title := uitest.Eval[string](tab, `document.title`); title != "c1 (client) · restpipe" {
		t.Errorf("title = %q", title)
	}
	// An event through nginx fails; the page, through nginx, lists it.
	const id = "through-nginx-failure"
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: time.Minute}
	t.Cleanup(hc.CloseIdleConnections)
	r := doWith(t, hc, "GET", ng.url+"/restpipe/server/nothing", nil, "X-Request-Id", id)
	wantError(t, r, host.KindNoRoute)
	tab.WaitFor(15*time.Second, "the failure through nginx", jsFailure(id))
	links := uitest.Eval[[]string](tab, `[...document.querySelectorAll('footer a')].map(a => a.href)`)
	if strings.Join(links, " ") != ng.url+"/restpipe/status "+ng.url+"/restpipe/metrics" {
		t.Errorf("footer links = %q, want /status and /metrics under the prefix", links)
	}
	noProblems(t, tab, "behind nginx")
	tab.Screenshot("behind-nginx")
}

// TestUINodeRestart stops a node under its page and starts another on the
// same gateway address: the page says it lost the node, comes back by
// itself and says the node restarted.
func TestUINodeRestart(t *testing.T) {
	t.Parallel()
	b := uiBrowser(t)
	opts := clusterOpts{plugins: []string{"time"}}
	c := startCluster(t, opts)
	addr := c.server.httpAddr()
	tab := b.NewTab(t, 1280, 900)
	tab.Navigate(c.server.url("/ui/"))
	tab.WaitFor(15*time.Second, "the page", jsLive)
	do(t, "GET", c.server.url("/local/nothing"), nil, "X-Request-Id", "before-restart")
	tab.WaitFor(15*time.Second, "the first run's failure", jsFailure("before-restart"))
	started := uitest.Eval[string](tab, `document.querySelector('#node-facts div:nth-child(4) dd span').title`)

	c.server.stop(t)
	conn := `document.getElementById('conn').textContent`
	tab.WaitFor(8*time.Second, "the page to say the node is gone", conn+`.startsWith('Cannot reach the node since')`)
	tab.Screenshot("node-stopped")

	opts.mod = func(cfg *nodeConfig) { cfg.HTTP = addr }
	again := c.startNode(host.RoleServer, "server", "", opts)
	took := tab.WaitFor(15*time.Second, "the page to come back", jsLive)
	notice := uitest.Eval[string](tab, `document.getElementById('notice').textContent`)
	if !strings.Contains(notice, "Reconnected at") || !strings.Contains(notice, "The node restarted at") {
		t.Errorf("notice = %q, want it to say it reconnected and the node restarted", notice)
	}
	tab.WaitFor(15*time.Second, "the first run's failures gone", `!`+jsFailure("before-restart"))
	if now := uitest.Eval[string](tab, `document.querySelector('#node-facts div:nth-child(4) dd span').title`); now == started {
		t.Errorf("uptime still says %s after the restart", now)
	}
	t.Logf("the page was back %v after the new node started on %s", took.Round(time.Millisecond), again.httpAddr())
	for _, m := range tab.Console() {
		if m.Type == chromedp.ConsoleException {
			t.Errorf("exception: %s", m.Text)
		}
	}
	tab.Screenshot("node-restarted")
}
