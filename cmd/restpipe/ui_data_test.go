package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/metrics"
	"github.com/restpipe/restpipe/host/pki"
)

// The status page's data that the node keeps for it: link changes, plugin
// errors, and the conversion of metrics.Recent.

func TestUILinkChanges(t *testing.T) {
	var c linkChanges
	c.change("a", true, 1)
	c.change("b", true, 2)
	c.change("a", false, 1)
	c.change("a", true, 2)
	// A replacement: the new link came up, the old one went down, the peer
	// stays linked.
	c.change("b", true, 2)
	c.change("b", true, 2)
	if got := c.count("a"); got != 3 {
		t.Errorf("count(a) = %d, want 3 (up, down, up)", got)
	}
	if got := c.count("b"); got != 3 {
		t.Errorf("count(b) = %d, want 3", got)
	}
	if got := c.count("never"); got != 0 {
		t.Errorf("count(never) = %d, want 0", got)
	}
	last, total := c.latest()
	if total != 6 || !last.up {
		t.Errorf("latest() = %+v, %d; want up, 6 changes in all", last, total)
	}

	// Bounded: beyond linkChangesMin names, those not linked now go.
	for i := range linkChangesMin {
		name := fmt.Sprintf("gone-%d", i)
		c.change(name, true, 3)
		c.change(name, false, 2)
	}
	c.change("one-more", true, 3)
	if len(c.peers) > linkChangesMin {
		t.Errorf("%d names kept, want at most %d", len(c.peers), linkChangesMin)
	}
	for _, name := range []string{"a", "b", "one-more"} {
		if c.count(name) == 0 {
			t.Errorf("linked peer %s was forgotten", name)
		}
	}
}

func TestUILinkObserverCountsReplacements(t *testing.T) {
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := idleClient(ca, "c1", "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{metrics: metrics.New(host.Node{Role: host.RoleClient, Name: "c1"}, metrics.Options{}), client: cl}
	o := linkObserver{n}
	o.LinkUp("server", true)
	o.LinkDown("server", true, errors.New("connection lost"))
	o.LinkUp("server", true)
	if got := n.linkChanges.count("server"); got != 3 {
		t.Errorf("link changes = %d, want 3", got)
	}
	if last, _ := n.linkChanges.latest(); !last.up {
		t.Error("the latest change is not up")
	}
	o.LinkDown("server", true, fmt.Errorf("closed: %w", link.ErrReplaced))
	if last, _ := n.linkChanges.latest(); !last.up {
		t.Error("a replaced link counts the peer as gone")
	}
}

func TestUIPluginErrors(t *testing.T) {
	var p pluginErrors
	if e := p.note("x", ""); e.message != "" || !e.crash.IsZero() {
		t.Errorf("a plugin never seen failing: %+v", e)
	}
	p.crashed("x")
	e := p.note("x", "plugin x is restarting after a crash")
	if e.message != "plugin x is restarting after a crash" || e.crash.IsZero() || e.seen.IsZero() {
		t.Errorf("after a crash: %+v", e)
	}
	seen := e.seen
	time.Sleep(time.Millisecond)
	if e := p.note("x", "plugin x is restarting after a crash"); !e.seen.Equal(seen) {
		t.Errorf("the same reason again moved its time from %v to %v", seen, e.seen)
	}
	// Running again: the last error stays.
	if e := p.note("x", ""); e.message != "plugin x is restarting after a crash" {
		t.Errorf("running again: %+v, want the last error kept", e)
	}
}

func TestUIEvents(t *testing.T) {
	m := metrics.New(host.Node{Role: host.RoleServer, Name: "s"}, metrics.Options{})
	for i := range 3 {
		kind := host.Kind("")
		if i == 2 {
			kind = host.KindHandlerFailed
		}
		m.ObserveEvent(host.EventRecord{ID: fmt.Sprintf("id-%d", i), Route: "get_cat", Peer: "local", Kind: kind,
			Message: "boom", Duration: 1500 * time.Microsecond})
	}
	ev := uiEvents(m.Recent().View(0))
	if ev.StepSeconds != 5 || ev.WindowSeconds != 300 || ev.RoutesTotal != 1 || len(ev.Routes) != 1 {
		t.Fatalf("events = %+v, want one route in 300 s of 5 s steps", ev)
	}
	r := ev.Routes[0]
	// The slot still filling is left out of the lines, not of the counts.
	if len(r.Rate) != 59 || len(r.FailedRate) != 59 || len(r.P50) != 59 || len(r.P99) != 59 {
		t.Errorf("%d points, want 59 (60 slots but the one filling)", len(r.Rate))
	}
	if r.Route != "get_cat" || r.Events != 3 || r.Failed != 1 {
		t.Errorf("route %s: %d events, %d failed, want get_cat, 3, 1", r.Route, r.Events, r.Failed)
	}
	var charted float64
	for _, v := range r.Rate {
		charted += v * 5
	}
	if charted > 3 {
		t.Errorf("the lines hold %v events, more than the 3 sent", charted)
	}
	if ev.Start == 0 || ev.Start%5 != 0 {
		t.Errorf("Start = %d, want a slot's start", ev.Start)
	}
	if len(ev.Failures) != 1 || ev.FailuresTotal != 1 {
		t.Fatalf("failures = %+v (total %d), want the one", ev.Failures, ev.FailuresTotal)
	}
	f := ev.Failures[0]
	if f.Seq != 1 || f.RequestID != "id-2" || f.Kind != "handler_failed" || f.Route != "get_cat" || f.DurationMillis != 1.5 || f.Message != "boom" {
		t.Errorf("failure = %+v", f)
	}
}
