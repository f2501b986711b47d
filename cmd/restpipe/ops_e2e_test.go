package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// TestPeerHooks checks a plugin that asked for peer events receives
// RestPipe's connection hooks, in order, on both sides.
func TestPeerHooks(t *testing.T) {
	t.Parallel()
	opts := clusterOpts{plugins: []string{"misbehave"}}
	c := startCluster(t, opts)
	c1 := c.startNode(host.RoleClient, "c1", c.server.linkAddr(), opts)
	c.waitLinked("c1")
	c2 := c.startNode(host.RoleClient, "c2", c.server.linkAddr(), opts)
	c.waitLinked("c2")
	c1.stop(t)

	want := `[{"error":"","kind":"connection_added","peer":"c1","peers":1},{"error":"","kind":"connection_added","peer":"c2","peers":2},{"error":"","kind":"connection_removed","peer":"c1","peers":1}]`
	waitFor(t, 5*time.Second, "the server's plugin to see c1 leave", func() bool {
		return string(do(t, "GET", c.server.url("/local/misbehave/peers"), nil).body) == want+"\n" // JSON replies end with a newline
	})
	var got []map[string]any
	r := do(t, "GET", c2.url("/local/misbehave/peers"), nil)
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0]["kind"] != "connection_success" || got[0]["peer"] != "server" || fmt.Sprint(got[0]["peers"]) != "1" {
		t.Errorf("c2's plugin saw %s, want one connection_success from server", r.body)
	}
}

// TestMetricsAfterScriptedEvents scrapes /metrics after known events and
// checks the counters.
func TestMetricsAfterScriptedEvents(t *testing.T) {
	t.Parallel()
	c := startCluster(t, clusterOpts{plugins: []string{"time", "cat", "misbehave"}}, "c1")
	cl := c.clients["c1"]
	script := []struct {
		url    string
		n      int
		status int
	}{
		{cl.url("/server/time"), 3, 200},
		{cl.url("/server/nothing"), 1, 404},
		{cl.url("/server/cat//only-one"), 2, 500},
		{cl.url("/local/time"), 1, 200},
		{c.server.url("/client/c1/cat//a/b"), 4, 200},
		{cl.url("/server/misbehave/crash"), 1, 502},
	}
	for _, s := range script {
		for range s.n {
			if r := do(t, "GET", s.url, nil); r.status != s.status {
				t.Fatalf("GET %s = %d %s, want %d", s.url, r.status, r.body, s.status)
			}
		}
	}
	waitFor(t, 5*time.Second, "misbehave to restart", func() bool {
		st := getStatus(t, c.server.httpAddr())
		for _, p := range st.Plugins {
			if p.File == "misbehave" {
				return p.Restarts == 1 && p.State == "running"
			}
		}
		return false
	})

	client := scrape(t, cl.httpAddr())
	server := scrape(t, c.server.httpAddr())
	checks := []struct {
		who     string
		m       map[string]float64
		series  string
		want    float64
		atLeast bool
	}{
		{"client", client, series("restpipe_events_total", "route", "get_time", "peer", "server", "outcome", "ok"), 3, false},
		// A route no handler answered keeps no series of its own.
		{"client", client, series("restpipe_events_total", "route", "unconfirmed", "peer", "server", "outcome", "no_route"), 1, false},
		{"client", client, series("restpipe_events_total", "route", "get_cat", "peer", "server", "outcome", "handler_failed"), 2, false},
		{"client", client, series("restpipe_events_total", "route", "get_time", "peer", "local", "outcome", "ok"), 1, false},
		{"client", client, series("restpipe_events_total", "route", "get_misbehave_crash", "peer", "server", "outcome", "plugin_unavailable"), 1, false},
		{"client", client, series("restpipe_event_duration_seconds_count", "hop", "gateway", "outcome", "ok"), 4, false},
		{"client", client, series("restpipe_event_duration_seconds_count", "hop", "link", "outcome", "ok"), 3, false},
		{"client", client, series("restpipe_event_duration_seconds_count", "hop", "plugin", "outcome", "ok"), 5, false}, // /local/time + 4 cat from the server
		{"client", client, series("restpipe_link_changes_total", "change", "up"), 1, false},
		{"client", client, series("restpipe_links"), 1, false},
		{"client", client, series("restpipe_link_bytes_total", "peer", "server", "direction", "out"), 200, true},
		{"server", server, series("restpipe_events_total", "route", "get_cat", "peer", "c1", "outcome", "ok"), 4, false},
		{"server", server, series("restpipe_link_up", "peer", "c1"), 1, false},
		{"server", server, series("restpipe_plugin_changes_total", "plugin", "misbehave", "change", "crash"), 1, false},
		{"server", server, series("restpipe_plugin_changes_total", "plugin", "misbehave", "change", "start"), 2, false},
		{"server", server, series("restpipe_plugin_state", "plugin", "time", "state", "running"), 1, false},
		{"server", server, series("restpipe_plugin_restarts", "plugin", "misbehave"), 1, false},
	}
	for _, ch := range checks {
		got, ok := ch.m[ch.series]
		switch {
		case !ok:
			t.Errorf("%s /metrics has no %s", ch.who, ch.series)
		case ch.atLeast && got < ch.want, !ch.atLeast && got != ch.want:
			t.Errorf("%s %s = %v, want %v", ch.who, ch.series, got, ch.want)
		}
	}
}

// TestStatusDuringChanges reads /status continuously while a plugin
// crashes and restarts and a client comes and goes: every answer parses
// and is consistent, and the changes show.
func TestStatusDuringChanges(t *testing.T) {
	t.Parallel()
	opts := clusterOpts{plugins: []string{"time", "misbehave"}}
	c := startCluster(t, opts, "c1")
	stop := make(chan struct{})
	seen := make(chan map[string]bool, 1)
	go func() {
		states := map[string]bool{}
		defer func() { seen <- states }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			st := getStatus(t, c.server.httpAddr())
			if st.Role != "server" || st.Name != "server" {
				t.Errorf("status names %s/%s", st.Role, st.Name)
				return
			}
			for _, p := range st.Plugins {
				if p.File == "misbehave" {
					states[p.State] = true
					if p.State == "running" && (p.PID == 0 || len(p.Routes) == 0) {
						t.Errorf("running plugin without pid or routes: %+v", p)
					}
				}
			}
			for _, p := range st.Peers {
				if p.Name == "" || p.RemoteAddr == "" || p.ConnectedSince.IsZero() {
					t.Errorf("incomplete peer in /status: %+v", p)
				}
			}
		}
	}()
	do(t, "GET", c.clients["c1"].url("/server/misbehave/crash"), nil)
	waitFor(t, 5*time.Second, "misbehave restarted", func() bool {
		for _, p := range getStatus(t, c.server.httpAddr()).Plugins {
			if p.File == "misbehave" {
				return p.Restarts == 1 && p.State == "running"
			}
		}
		return false
	})
	c2 := c.startNode(host.RoleClient, "c2", c.server.linkAddr(), opts)
	c.waitLinked("c2")
	if names := peerNames(getStatus(t, c.server.httpAddr())); names != "c1,c2" {
		t.Errorf("peers with c2 = %s", names)
	}
	c2.stop(t)
	waitFor(t, 5*time.Second, "c2 gone from /status", func() bool { return peerNames(getStatus(t, c.server.httpAddr())) == "c1" })
	close(stop)
	states := <-seen
	t.Logf("misbehave states seen while polling: %v", states)
	if !states["running"] {
		t.Error("never saw misbehave running")
	}
}

func peerNames(st nodeStatus) string {
	var names []string
	for _, p := range st.Peers {
		names = append(names, p.Name)
	}
	return strings.Join(names, ",")
}

// TestStatsD checks a node with --statsd sends RestPipe-like StatsD lines
// for its events and links.
func TestStatsD(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lines := make(chan string, 1024)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				close(lines)
				return
			}
			for _, l := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
				lines <- l
			}
		}
	}()
	opts := clusterOpts{plugins: []string{"time"}, mod: func(cfg *nodeConfig) {
		cfg.StatsD, cfg.StatsDPrefix = pc.LocalAddr().String(), "rp"
	}}
	c := startCluster(t, opts, "c1")
	for range 2 {
		do(t, "GET", c.clients["c1"].url("/server/time"), nil)
	}
	do(t, "GET", c.clients["c1"].url("/server/nothing"), nil)
	want := map[string]bool{
		"rp.event.get_time.ok:1|c":          false,
		"rp.event.unconfirmed.no_route:1|c": false,
		"rp.connection_added:1|c":           false, // the server's, when c1 linked
		"rp.connection_success:1|c":         false, // the client's
	}
	timeout := time.After(10 * time.Second)
	for missing := len(want); missing > 0; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the StatsD listener closed")
			}
			if seen, known := want[l]; known && !seen {
				want[l] = true
				missing--
			}
			if strings.HasPrefix(l, "rp.event.get_time.duration:") && !strings.HasSuffix(l, "|ms") {
				t.Errorf("timer line %q, want milliseconds", l)
			}
		case <-timeout:
			t.Fatalf("StatsD lines never seen: %v", want)
		}
	}
}
