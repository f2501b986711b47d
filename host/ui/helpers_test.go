package ui

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeSource is a Source the test sets.
type fakeSource struct {
	mu    sync.Mutex
	snap  Snapshot
	peers []Peer
}

func (f *fakeSource) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.Plugins = slices.Clone(s.Plugins)
	s.Events.Routes = slices.Clone(s.Events.Routes)
	s.Events.Failures = slices.Clone(s.Events.Failures)
	return s
}

func (f *fakeSource) Peers() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

func (f *fakeSource) set(fn func(s *Snapshot, peers *[]Peer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.snap, &f.peers)
}

// testStart is the fake node's start.
var testStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// manyPeers returns n peers named peer-00000 and on, with values that
// differ from peer to peer (so every sort key orders them differently).
func manyPeers(n int, servers ...string) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = Peer{
			Name:           fmt.Sprintf("peer-%05d", i),
			ConnectedSince: testStart.Add(time.Duration(i*7919%n) * time.Second),
			RemoteAddr:     fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 40000+i%20000),
			RTTMillis:      float64(i*31%997) / 10,
			BytesIn:        uint64(i * 1543 % 100003),
			BytesOut:       uint64(i * 7877 % 100019),
			EventsIn:       i % 7 / 6,
			EventsOut:      i % 11 / 10,
			LinkChanges:    1 + 2*(i*13%5),
			Software:       "restpipe v1.2.3",
		}
		if len(servers) > 0 {
			peers[i].Server = servers[i%len(servers)]
		}
	}
	return peers
}

// testSnapshot is a node with a bit of everything.
func testSnapshot() Snapshot {
	rate := make([]float64, 59)
	failed := make([]float64, 59)
	p50 := make([]float64, 59)
	p99 := make([]float64, 59)
	for i := range rate {
		rate[i] = float64(10 + i%13)
		if i%9 == 0 {
			failed[i] = 0.4
		}
		p50[i], p99[i] = 0.8+float64(i%5)/10, 3+float64(i%7)
	}
	var fails []Failure
	for i := 12; i >= 1; i-- {
		kind := "handler_failed"
		if i%3 == 0 {
			kind = "timeout"
		}
		fails = append(fails, Failure{Seq: i, Time: testStart.Add(time.Duration(i) * time.Minute), RequestID: fmt.Sprintf("req-%04d", i),
			Route: "get_cat", Peer: "peer-00001", Kind: kind, Message: fmt.Sprintf("failure number %d", i), DurationMillis: 1.5})
	}
	return Snapshot{
		Node: Node{Role: "server", Name: "server-a", Version: "v1.2.3", Commit: "0123456789abcdef", GoVersion: "go1.26",
			Started: testStart},
		Plugins: []Plugin{
			{File: "time", Name: "time", Version: "1.0.0", State: "running", Routes: []string{"get_time", "get_time_utc"}, PID: 4242},
			{File: "crash-loop", Name: "crash-loop", Version: "1", State: "quarantined", Restarts: 4,
				Reason:    "plugin crash-loop is quarantined after 5 crashes within 1m0s; replace its file to try again",
				LastError: "plugin crash-loop is quarantined after 5 crashes within 1m0s; replace its file to try again",
				Routes:    []string{}},
		},
		Events: Events{WindowSeconds: 300, StepSeconds: 5, Start: testStart.Unix(), RoutesTotal: 1,
			Routes:   []RouteSeries{{Route: "get_time", Events: 900, Failed: 3, Rate: rate, FailedRate: failed, P50: p50, P99: p99}},
			Failures: fails, FailuresTotal: 12},
	}
}

// newTestHandler returns a Handler of src, failing t on error.
func newTestHandler(t testing.TB, src Source, mod ...func(*Config)) *Handler {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Source = src
	cfg.Now = func() time.Time { return testStart.Add(time.Hour) }
	for _, m := range mod {
		m(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
