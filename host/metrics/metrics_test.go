package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// TestCallerChosenLabelsAreBounded is the attack of issue 16 §4: callers
// choose nouns and a crowd of peers comes and goes, and neither grows
// /metrics (or the node's memory) without bound: routes no handler
// confirmed share one series, confirmed routes past MaxRouteSeries share
// "other", peers past MaxPeerSeries share "other", and a peer's series go
// when its link does.
func TestCallerChosenLabelsAreBounded(t *testing.T) {
	m := New(host.Node{Role: host.RoleServer, Name: "srv"}, Options{MaxPeerSeries: 8, MaxRouteSeries: 16})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	before := len(scrape())

	// 20,000 nouns nobody serves, then 2,000 that some handler answered.
	for i := range 20000 {
		m.ObserveEvent(host.EventRecord{Route: fmt.Sprintf("get_noun%d", i), Peer: "local", Kind: host.KindNoRoute, Duration: time.Millisecond})
	}
	for i := range 2000 {
		m.ObserveEvent(host.EventRecord{Route: fmt.Sprintf("get_real%d", i), Peer: "local", Duration: time.Millisecond})
	}
	// 100 peers link and call; then they leave.
	for i := range 100 {
		peer := fmt.Sprintf("c%d", i)
		m.LinkUp(peer, false)
		m.ObserveEvent(host.EventRecord{Route: "get_real0", Peer: peer, Duration: time.Millisecond})
	}
	out := scrape()
	series := countSeries(out, "restpipe_events_total{")
	// local: unconfirmed + 16 routes + other; peers: 8 with their own, plus other.
	if want := 1 + 16 + 1 + 8 + 1; series != want {
		t.Errorf("restpipe_events_total has %d series, want %d:\n%s", series, want, grep(out, "restpipe_events_total{"))
	}
	for _, want := range []string{`route="unconfirmed"`, `route="other"`, `peer="other"`, `route="get_real0"`} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics has no %s series", want)
		}
	}
	if strings.Contains(out, "noun1234") || strings.Contains(out, "get_real1999") || strings.Contains(out, `peer="c99"`) {
		t.Error("a label past its bound has a series of its own")
	}
	for i := range 100 {
		m.LinkDown(fmt.Sprintf("c%d", i), false)
	}
	out = scrape()
	if strings.Contains(out, `peer="c0"`) {
		t.Error("a peer's series outlived its link")
	}
	if grew := len(out) - before; grew > 64<<10 {
		t.Errorf("/metrics grew by %d bytes over 22,000 routes and 100 peers, want at most 64 KiB", grew)
	}
	t.Logf("/metrics: %d bytes before, %d after 22,000 routes and 100 peers", before, len(out))
}

func countSeries(out, prefix string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func grep(out, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
