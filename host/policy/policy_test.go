package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// mustParse compiles src or ends the test.
func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse([]byte(src), "test.hcl")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

const decisionsPolicy = `
allow {
  peers  = ["reader"]
  routes = ["get_*"]
}
allow {
  peers  = ["team-a-*"]
  routes = ["get_*", "post_team_a_*"]
}
allow {
  peers  = ["uploader"]
  routes = ["put_files", "get_files"]
}
allow {
  peers  = ["*.ops.example.com"]
  routes = ["*"]
}
limit {
  peers  = ["team-a-batch"]
  rate   = "1/s"
}
limit {
  peers  = ["team-a-*"]
  routes = ["post_*"]
  rate   = "10/s"
}
limit {
  peers  = ["*"]
  rate   = "100/s"
}
`

func TestDecide(t *testing.T) {
	p := mustParse(t, decisionsPolicy)
	tests := []struct {
		peer, route string
		allowLine   int // 0: refused
		limitLine   int
	}{
		{"reader", "get_time", 2, 27},
		{"reader", "get_files", 2, 27},
		{"reader", "put_files", 0, 0},
		{"reader", "delete_files", 0, 0},
		{"readers", "get_time", 0, 0},
		{"team-a-1", "get_time", 6, 27},
		{"team-a-1", "post_team_a_jobs", 6, 22},
		{"team-a-1", "post_team_b_jobs", 0, 0},
		{"team-a-batch", "post_team_a_jobs", 6, 18}, // the first limit that matches wins
		{"team-b-1", "get_time", 0, 0},
		{"uploader", "put_files", 10, 27},
		{"uploader", "get_files", 10, 27},
		{"uploader", "get_time", 0, 0},
		{"uploader", "delete_files", 0, 0},
		{"a.ops.example.com", "delete_files", 14, 27},
		{"ops.example.com", "delete_files", 0, 0},
		{"", "get_time", 0, 0},
	}
	for _, tt := range tests {
		// Twice: computed, then from the cache.
		for i := 0; i < 2; i++ {
			d := p.Decide(tt.peer, tt.route)
			if d.Allowed != (tt.allowLine != 0) || d.AllowLine != tt.allowLine || d.LimitLine != tt.limitLine {
				t.Errorf("Decide(%q, %q) = allowed %v by line %d, limit line %d; want line %d, limit line %d",
					tt.peer, tt.route, d.Allowed, d.AllowLine, d.LimitLine, tt.allowLine, tt.limitLine)
			}
		}
		err := p.Check(tt.peer, tt.route, time.Now())
		if tt.allowLine == 0 {
			var he *host.Error
			if !errors.As(err, &he) || he.Kind != host.KindForbidden || !strings.Contains(he.Message, tt.route) {
				t.Errorf("Check(%q, %q) = %v, want forbidden naming the route", tt.peer, tt.route, err)
			}
		} else if err != nil {
			t.Errorf("Check(%q, %q) = %v, want nil", tt.peer, tt.route, err)
		}
	}
}

// TestDecideCache checks the cache never changes a decision, with many
// more callers and routes than it has slots, and with keys too long to be
// kept.
func TestDecideCache(t *testing.T) {
	p := mustParse(t, decisionsPolicy)
	peers := []string{"reader", "team-a-1", "team-a-batch", "uploader", "x.ops.example.com", "nobody", strings.Repeat("a", 250)}
	routes := []string{"get_time", "put_files", "post_team_a_x", "delete_files", "get_" + strings.Repeat("x", 300)}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 50000; i++ {
		peer := peers[rng.IntN(len(peers))]
		route := routes[rng.IntN(len(routes))]
		if rng.IntN(2) == 0 {
			route = fmt.Sprintf("get_r%d", rng.IntN(10000))
		}
		if got, want := p.Decide(peer, route), p.decide(peer, route); got != want {
			t.Fatalf("Decide(%q, %q) = %+v, want %+v (uncached)", peer, route, got, want)
		}
	}
}

// overloadedWait returns the RetryAfter of an overloaded error, or fails.
func overloadedWait(t *testing.T, err error) time.Duration {
	t.Helper()
	var he *host.Error
	if !errors.As(err, &he) || he.Kind != host.KindOverloaded {
		t.Fatalf("got %v, want overloaded", err)
	}
	return he.RetryAfter
}

func TestCheckLimits(t *testing.T) {
	p := mustParse(t, `
allow {
  peers  = ["*"]
  routes = ["get_*", "put_*"]
}
limit {
  peers  = ["web-*"]
  routes = ["put_*"]
  rate   = "2/s"
  burst  = 3
}
`)
	t0 := time.Unix(1_700_000_000, 0)
	// The burst, then a refusal that tells the truth: one token comes
	// every 500ms.
	for i := 0; i < 3; i++ {
		if err := p.Check("web-1", "put_files", t0); err != nil {
			t.Fatalf("event %d within the burst: %v", i+1, err)
		}
	}
	if w := overloadedWait(t, p.Check("web-1", "put_files", t0)); w != 500*time.Millisecond {
		t.Errorf("RetryAfter = %v, want 500ms", w)
	}
	// Later, the wait is shorter; refusals took no token.
	t1 := t0.Add(200 * time.Millisecond)
	w := overloadedWait(t, p.Check("web-1", "put_files", t1))
	if w != 300*time.Millisecond {
		t.Errorf("RetryAfter 200ms later = %v, want 300ms", w)
	}
	// After exactly the wait, one event goes, and the next waits a whole
	// period.
	t2 := t1.Add(w)
	if err := p.Check("web-1", "put_files", t2); err != nil {
		t.Errorf("event after RetryAfter: %v, want it to go", err)
	}
	if w := overloadedWait(t, p.Check("web-1", "put_files", t2)); w != 500*time.Millisecond {
		t.Errorf("RetryAfter = %v, want 500ms", w)
	}
	// Each peer has its own bucket; routes outside the block and peers
	// outside it are not limited.
	for i := 0; i < 3; i++ {
		if err := p.Check("web-2", "put_x", t2); err != nil {
			t.Errorf("web-2's event %d: %v, want its own bucket", i+1, err)
		}
	}
	for i := 0; i < 100; i++ {
		if err := p.Check("web-1", "get_time", t2); err != nil {
			t.Fatalf("web-1 get_time: %v, want no limit on routes outside the block", err)
		}
		if err := p.Check("db-1", "put_files", t2); err != nil {
			t.Fatalf("db-1 put_files: %v, want no limit on peers outside the block", err)
		}
	}
}

// TestRefusedTakesNoToken checks a forbidden event leaves the bucket alone.
func TestRefusedTakesNoToken(t *testing.T) {
	p := mustParse(t, `
allow {
  peers  = ["web-1"]
  routes = ["get_time"]
}
limit {
  peers = ["*"]
  rate  = "1/h"
  burst = 1
}
`)
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < 10; i++ {
		err := p.Check("web-1", "delete_everything", t0)
		if host.KindOf(err) != host.KindForbidden {
			t.Fatalf("Check(delete_everything) = %v, want forbidden", err)
		}
	}
	if err := p.Check("web-1", "get_time", t0); err != nil {
		t.Errorf("the one allowed event after refusals: %v, want it to go", err)
	}
	if w := overloadedWait(t, p.Check("web-1", "get_time", t0)); w != time.Hour {
		t.Errorf("RetryAfter = %v, want 1h", w)
	}
}

func TestLimiterBound(t *testing.T) {
	l := newLimiters(1, 1)
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < MaxLimiterPeers; i++ {
		if w := l.take(fmt.Sprintf("p%d", i), t0); w != 0 {
			t.Fatalf("first event of p%d waits %v", i, w)
		}
	}
	// Every bucket is empty: nothing can be dropped, and a new peer still
	// gets one.
	if w := l.take("late", t0); w != 0 || l.n.Load() != MaxLimiterPeers+1 {
		t.Fatalf("new peer at the bound: wait %v, %d buckets; want 0, %d", w, l.n.Load(), MaxLimiterPeers+1)
	}
	// A second later every bucket is full again: the next new peer sweeps
	// them all away, and the peers keep their truth (a full bucket).
	t1 := t0.Add(time.Second)
	if w := l.take("later", t1); w != 0 || l.n.Load() != 1 {
		t.Fatalf("new peer after the sweep: wait %v, %d buckets; want 0, 1", w, l.n.Load())
	}
	if w := l.take("p1", t1); w != 0 {
		t.Errorf("p1 after the sweep waits %v, want a full bucket", w)
	}
	if w := l.take("later", t1); w != time.Second {
		t.Errorf("later's second event waits %v, want 1s (its bucket survived)", w)
	}
}

func TestInherit(t *testing.T) {
	src := `
allow {
  peers  = ["*"]
  routes = ["*"]
}
limit {
  peers = ["*"]
  rate  = "1/h"
}
`
	t0 := time.Unix(1_700_000_000, 0)
	old := mustParse(t, src)
	if err := old.Check("web-1", "get_time", t0); err != nil {
		t.Fatal(err)
	}
	// The same limit block in a changed file keeps the empty bucket.
	same := mustParse(t, src+"\nallow {\n  peers = [\"x\"]\n  routes = [\"get_x\"]\n}\n")
	same.inherit(old)
	if err := same.Check("web-1", "get_time", t0); host.KindOf(err) != host.KindOverloaded {
		t.Errorf("after a reload keeping the limit: %v, want overloaded (the bucket is still empty)", err)
	}
	// A changed limit starts afresh.
	changed := mustParse(t, strings.Replace(src, "1/h", "2/h", 1))
	changed.inherit(old)
	if err := changed.Check("web-1", "get_time", t0); err != nil {
		t.Errorf("after a reload changing the limit: %v, want a fresh bucket", err)
	}
}
