package metrics

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/restpipe/restpipe/host"
)

// Recent keeps what the status page charts, from the node itself rather
// than from a Prometheus server: per route, events, failures and latency
// percentiles over the last RecentWindow in RecentStep slots, and the last
// RecentFailures failed events with their request ids. Its memory is
// bounded: routes are the bounded labels of Metrics (at most
// MaxRouteSeries plus the few catch-all values), each costs
// RecentWindow/RecentStep slots of a fixed-size latency histogram (about
// 7 KiB), and the failures are a ring.
type Recent struct {
	mu       sync.Mutex
	routes   map[string]*routeRing
	failures []Failure // a ring of RecentFailures
	next     int       // where the next failure goes
	total    int       // failures recorded since start
	now      func() time.Time
}

// The shape of Recent.
const (
	RecentWindow   = 5 * time.Minute
	RecentStep     = 5 * time.Second
	RecentFailures = 100
	recentSlots    = int(RecentWindow / RecentStep)
)

// latency buckets: upper bounds growing by sqrt(2) from 25 µs, the last
// one open.
var latencyBounds = func() []float64 {
	b := make([]float64, 0, 32)
	for v := 25e-6; len(b) < 31; v *= math.Sqrt2 {
		b = append(b, v)
	}
	return b
}()

type slot struct {
	start  int64 // unix seconds of the slot's start, 0: empty
	events uint32
	failed uint32
	hist   [32]uint32
}

type routeRing struct {
	slots [recentSlots]slot
}

// Failure is one failed event, as the status page lists it.
type Failure struct {
	Time     time.Time `json:"time"`
	ID       string    `json:"request_id"`
	Route    string    `json:"route"`
	Peer     string    `json:"peer"`
	Kind     host.Kind `json:"kind"`
	Message  string    `json:"message"`
	Duration float64   `json:"duration_seconds"`
}

func newRecent() *Recent {
	return &Recent{routes: map[string]*routeRing{}, failures: make([]Failure, RecentFailures), now: time.Now}
}

// add records one event under its (bounded) route label.
func (r *Recent) add(route string, ev host.EventRecord) {
	now := r.now()
	start := now.Truncate(RecentStep).Unix()
	idx := int(start/int64(RecentStep/time.Second)) % recentSlots
	d := ev.Duration.Seconds()
	b, _ := slices.BinarySearch(latencyBounds, d)
	r.mu.Lock()
	defer r.mu.Unlock()
	rr := r.routes[route]
	if rr == nil {
		rr = &routeRing{}
		r.routes[route] = rr
	}
	s := &rr.slots[idx]
	if s.start != start {
		*s = slot{start: start}
	}
	s.events++
	s.hist[b]++
	if ev.Kind != "" {
		s.failed++
		r.failures[r.next] = Failure{Time: now, ID: ev.ID, Route: ev.Route, Peer: ev.Peer, Kind: ev.Kind,
			Message: truncate(ev.Message, 300), Duration: d}
		r.next = (r.next + 1) % RecentFailures
		r.total++
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// RoutePoint is one slot of one route's chart.
type RoutePoint struct {
	Time   int64   `json:"t"` // unix seconds of the slot's start
	Rate   float64 `json:"rate"`
	Failed float64 `json:"failed_rate"`
	P50    float64 `json:"p50"` // seconds; 0 without events
	P99    float64 `json:"p99"`
}

// RouteSeries is one route's chart.
type RouteSeries struct {
	Route  string       `json:"route"`
	Events uint64       `json:"events"` // in the window
	Points []RoutePoint `json:"points"`
}

// RecentView is what the status page shows of Recent.
type RecentView struct {
	WindowSeconds int           `json:"window_seconds"`
	StepSeconds   int           `json:"step_seconds"`
	Routes        []RouteSeries `json:"routes"`
	Failures      []Failure     `json:"failures"` // newest first
	FailuresTotal int           `json:"failures_total"`
}

// View returns the charts of the routes with events in the window (the
// busiest maxRoutes, 0: all) and the recent failures.
func (r *Recent) View(maxRoutes int) RecentView {
	now := r.now().Truncate(RecentStep).Unix()
	step := int64(RecentStep / time.Second)
	oldest := now - int64(recentSlots-1)*step
	r.mu.Lock()
	defer r.mu.Unlock()
	v := RecentView{WindowSeconds: int(RecentWindow / time.Second), StepSeconds: int(step), FailuresTotal: r.total}
	for route, rr := range r.routes {
		rs := RouteSeries{Route: route}
		for t := oldest; t <= now; t += step {
			s := &rr.slots[int(t/step)%recentSlots]
			p := RoutePoint{Time: t}
			if s.start == t && s.events > 0 {
				p.Rate = float64(s.events) / float64(step)
				p.Failed = float64(s.failed) / float64(step)
				p.P50, p.P99 = quantile(&s.hist, s.events, 0.50), quantile(&s.hist, s.events, 0.99)
				rs.Events += uint64(s.events)
			}
			rs.Points = append(rs.Points, p)
		}
		if rs.Events > 0 {
			v.Routes = append(v.Routes, rs)
		}
	}
	slices.SortFunc(v.Routes, func(a, b RouteSeries) int {
		if a.Events != b.Events {
			if a.Events > b.Events {
				return -1
			}
			return 1
		}
		if a.Route < b.Route {
			return -1
		}
		return 1
	})
	if maxRoutes > 0 && len(v.Routes) > maxRoutes {
		v.Routes = v.Routes[:maxRoutes]
	}
	for i := 1; i <= min(r.total, RecentFailures); i++ {
		v.Failures = append(v.Failures, r.failures[(r.next-i+RecentFailures)%RecentFailures])
	}
	return v
}

// quantile estimates a quantile of a slot's latencies: the upper bound of
// the bucket it falls in (the open last bucket reports its lower bound).
func quantile(h *[32]uint32, n uint32, q float64) float64 {
	want := uint32(math.Ceil(q * float64(n)))
	var seen uint32
	for i, c := range h {
		seen += c
		if seen >= want && c > 0 {
			if i < len(latencyBounds) {
				return latencyBounds[i]
			}
			return latencyBounds[len(latencyBounds)-1]
		}
	}
	return 0
}
