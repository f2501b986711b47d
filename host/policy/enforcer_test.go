package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/hosttest"
)

// next is the handler behind an Enforcer in tests: it counts the events
// it gets and reads their bodies, as a plugin would.
type next struct {
	events atomic.Int64
}

func (n *next) Handle(_ context.Context, ev *host.Event) (*host.Reply, error) {
	n.events.Add(1)
	return &host.Reply{Status: 200}, nil
}

// untouchable is a body that records any use.
type untouchable struct{ touched atomic.Bool }

func (u *untouchable) Read([]byte) (int, error) { u.touched.Store(true); return 0, errors.New("read") }
func (u *untouchable) Close() error             { u.touched.Store(true); return nil }

// observer records refusals.
type observer struct {
	mu   sync.Mutex
	seen []string // "caller route outcome"
}

func (o *observer) PolicyRefused(caller, route, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, caller+" "+route+" "+outcome)
}

func (o *observer) all() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.seen...)
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = hosttest.LogBuffer

// writePolicy writes src as the policy file path.
func writePolicy(t testing.TB, path, src string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// enforcerFixture is an Enforcer over a next, with its log and observer.
type enforcerFixture struct {
	e    *Enforcer
	next *next
	obs  *observer
	log  *syncBuffer
	file string
}

func newFixture(t testing.TB, src string, mod func(*Config)) *enforcerFixture {
	t.Helper()
	f := &enforcerFixture{next: &next{}, obs: &observer{}, log: &syncBuffer{}, file: filepath.Join(t.TempDir(), "policy.hcl")}
	writePolicy(t, f.file, src)
	cfg := DefaultConfig()
	cfg.File = f.file
	cfg.Next = f.next
	cfg.Observer = f.obs
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: f.log, Level: hclog.Info})
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.e = e
	return f
}

// event returns an event from peer for GET or PUT of noun, with a body
// that must never be touched.
func event(peer, verb, noun string) (*host.Event, *untouchable) {
	b := &untouchable{}
	return &host.Event{ID: "req-" + peer + "-" + noun, Verb: verb, Noun: noun, Peer: peer, Body: b, Size: 1 << 20}, b
}

const enforcerPolicy = `
allow {
  peers  = ["web-*"]
  routes = ["get_*"]
}
allow {
  peers  = ["uploader"]
  routes = ["put_files"]
}
limit {
  peers = ["uploader"]
  rate  = "1/h"
  burst = 2
}
`

func TestEnforcer(t *testing.T) {
	f := newFixture(t, enforcerPolicy, nil)
	ctx := context.Background()
	tests := []struct {
		peer, verb, noun string
		kind             host.Kind // "" for allowed
	}{
		{"web-1", "get", "time", ""},
		{"web-1", "put", "files", host.KindForbidden},
		{"db-1", "get", "time", host.KindForbidden},
		{"uploader", "put", "files", ""},
		{"uploader", "put", "files", ""},
		{"uploader", "put", "files", host.KindOverloaded},
		{"uploader", "get", "time", host.KindForbidden},
		{"", "get", "time", host.KindForbidden},
	}
	passed := 0
	for _, tt := range tests {
		ev, body := event(tt.peer, tt.verb, tt.noun)
		rep, err := f.e.Handle(ctx, ev)
		if got := host.KindOf(err); got != tt.kind {
			t.Errorf("Handle(%s %s_%s) = %v, want kind %q", tt.peer, tt.verb, tt.noun, err, tt.kind)
		}
		if tt.kind == "" {
			passed++
			rep.Close()
		}
		if body.touched.Load() {
			t.Errorf("Handle(%s %s_%s) touched the body", tt.peer, tt.verb, tt.noun)
		}
		if tt.kind == host.KindOverloaded {
			if w := host.AsError(err).RetryAfter; w < 59*time.Minute || w > time.Hour {
				t.Errorf("RetryAfter = %v, want about 1h", w)
			}
		}
	}
	if got := f.next.events.Load(); got != int64(passed) {
		t.Errorf("next got %d events, want the %d allowed", got, passed)
	}
	wantSeen := []string{"web-1 put_files forbidden", "db-1 get_time forbidden", "uploader put_files rate_limited", "uploader get_time forbidden", " get_time forbidden"}
	if got := f.obs.all(); strings.Join(got, ",") != strings.Join(wantSeen, ",") {
		t.Errorf("observer saw %q, want %q", got, wantSeen)
	}
	lines := f.log.Lines()
	if len(lines) != len(wantSeen) {
		t.Fatalf("log:\n%s\nwant %d lines", strings.Join(lines, "\n"), len(wantSeen))
	}
	for _, want := range []string{"event refused by policy", "peer=db-1", "route=get_time", "request_id=req-db-1-time"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("log line %q lacks %q", lines[1], want)
		}
	}
	for _, want := range []string{"event over its rate limit", "peer=uploader", "route=put_files", "limit_line=10", "rate=1/h", "burst=2", "retry_after="} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("log line %q lacks %q", lines[2], want)
		}
	}
}

// TestEnforcerCaller checks the name checked is Config.Caller's, as in a
// cluster, not the link's peer.
func TestEnforcerCaller(t *testing.T) {
	f := newFixture(t, enforcerPolicy, func(c *Config) {
		c.Caller = func(ev *host.Event) string { return ev.Query["origin"][0] }
	})
	ev, _ := event("web-1", "get", "time")
	ev.Query = map[string][]string{"origin": {"db-1"}}
	if _, err := f.e.Handle(context.Background(), ev); host.KindOf(err) != host.KindForbidden {
		t.Errorf("Handle from web-1 on behalf of db-1 = %v, want forbidden (db-1 is checked)", err)
	}
	ev.Query["origin"][0] = "web-2"
	ev.Peer = "db-1"
	if _, err := f.e.Handle(context.Background(), ev); err != nil {
		t.Errorf("Handle from db-1 on behalf of web-2 = %v, want it allowed (web-2 is checked)", err)
	}
}

// TestEnforcerLogBound checks a flood of refusals logs at most the burst
// of lines, and the next line says how many went unlogged.
func TestEnforcerLogBound(t *testing.T) {
	f := newFixture(t, enforcerPolicy, func(c *Config) {
		c.LogRate, c.LogBurst = rate.Every(time.Minute), 3
	})
	clock := time.Unix(1_700_000_000, 0)
	f.e.now = func() time.Time { return clock }
	for i := 0; i < 1000; i++ {
		ev, _ := event("db-1", "get", "time")
		if _, err := f.e.Handle(context.Background(), ev); host.KindOf(err) != host.KindForbidden {
			t.Fatal(err)
		}
	}
	if n := len(f.log.Lines()); n != 3 {
		t.Fatalf("1000 refusals logged %d lines, want 3", n)
	}
	if n := len(f.obs.all()); n != 1000 {
		t.Errorf("observer saw %d refusals, want all 1000", n)
	}
	clock = clock.Add(time.Minute)
	ev, _ := event("db-1", "get", "time")
	f.e.Handle(context.Background(), ev)
	lines := f.log.Lines()
	if len(lines) != 4 || !strings.Contains(lines[3], "unlogged_refusals=997") {
		t.Errorf("the line after the pause = %q, want it to count the 997 unlogged refusals", lines[len(lines)-1])
	}
}

func TestEnforcerReload(t *testing.T) {
	f := newFixture(t, enforcerPolicy, nil)
	ctx := context.Background()
	first := f.e.Status()
	if first.File != f.file || first.Rules != 3 || first.AllowRules != 2 || first.LimitRules != 1 || len(first.SHA256) != 64 || first.ReloadError != "" {
		t.Errorf("Status() = %+v", first)
	}
	// Unchanged: the same policy.
	p0 := f.e.Policy()
	if p, err := f.e.Reload(); err != nil || p != p0 {
		t.Errorf("Reload(unchanged) = %p, %v; want the policy in force, %p", p, err, p0)
	}
	// Use up the uploader's burst.
	for i := 0; i < 2; i++ {
		ev, _ := event("uploader", "put", "files")
		if _, err := f.e.Handle(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// A good new file: db-1 may now read; the uploader's limit is the
	// same block, and its bucket stays empty.
	writePolicy(t, f.file, enforcerPolicy+"allow {\n  peers = [\"db-1\"]\n  routes = [\"get_time\"]\n}\n")
	if _, err := f.e.Reload(); err != nil {
		t.Fatalf("Reload(good) = %v", err)
	}
	ev, _ := event("db-1", "get", "time")
	if _, err := f.e.Handle(ctx, ev); err != nil {
		t.Errorf("db-1 after the reload: %v, want allowed", err)
	}
	ev, _ = event("uploader", "put", "files")
	if _, err := f.e.Handle(ctx, ev); host.KindOf(err) != host.KindOverloaded {
		t.Errorf("uploader after the reload: %v, want still overloaded", err)
	}
	second := f.e.Status()
	if second.SHA256 == first.SHA256 || second.AllowRules != 3 || second.ReloadError != "" {
		t.Errorf("Status() after a good reload = %+v", second)
	}
	// A bad file: refused with its problems, the policy in force stays.
	writePolicy(t, f.file, "allow {\n  peers = [\"Web-*\"]\n}\n")
	_, err := f.e.Reload()
	var pe *ParseError
	if !errors.As(err, &pe) || len(pe.Problems) != 2 || !strings.Contains(err.Error(), f.file+":2: allow.peers") {
		t.Fatalf("Reload(bad) = %v, want both problems with the file and line", err)
	}
	ev, _ = event("db-1", "get", "time")
	if _, err := f.e.Handle(ctx, ev); err != nil {
		t.Errorf("db-1 after a bad reload: %v, want the previous policy to still allow it", err)
	}
	third := f.e.Status()
	if third.SHA256 != second.SHA256 || !strings.Contains(third.ReloadError, "allow.peers") {
		t.Errorf("Status() after a bad reload = %+v, want the previous policy and the reason", third)
	}
	// A missing file too.
	os.Remove(f.file)
	if _, err := f.e.Reload(); err == nil || f.e.Status().SHA256 != second.SHA256 {
		t.Errorf("Reload(missing) = %v, want an error and the previous policy", err)
	}
}

// TestEnforcerConcurrent handles events while the policy is reloaded back
// and forth (run with -race): each event sees one policy or the other.
func TestEnforcerConcurrent(t *testing.T) {
	a := "allow {\n  peers = [\"web-*\"]\n  routes = [\"get_*\"]\n}\n"
	b := "allow {\n  peers = [\"web-*\"]\n  routes = [\"get_*\"]\n}\nlimit {\n  peers = [\"*\"]\n  rate = \"1000000/s\"\n}\n"
	f := newFixture(t, a, nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ev, _ := event("web-1", "get", "time")
				if _, err := f.e.Handle(context.Background(), ev); err != nil {
					t.Errorf("Handle during reloads: %v", err)
					return
				}
			}
		})
	}
	for i := 0; i < 50; i++ {
		src := a
		if i%2 == 0 {
			src = b
		}
		writePolicy(t, f.file, src)
		if _, err := f.e.Reload(); err != nil {
			t.Fatal(err)
		}
		_ = f.e.Status()
	}
	close(stop)
	wg.Wait()
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err == nil {
		t.Error("Validate() without a file = nil, want an error")
	}
	c.File = "x"
	if err := c.Validate(); err == nil {
		t.Error("Validate() without a next handler = nil, want an error")
	}
	c.Next = &next{}
	c.Caller = nil
	if err := c.Validate(); err != nil || c.Caller != nil {
		t.Errorf("Validate() = %v (Caller set: %t), want nil and an unset Caller: zero fields are defaults, and Validate changes nothing", err, c.Caller != nil)
	}
	if d := c.WithDefaults(); d.Caller == nil || d.Logger == nil || d.Observer == nil {
		t.Errorf("WithDefaults() = %+v, want defaults filled in", d)
	}
	if _, err := New(Config{File: filepath.Join(t.TempDir(), "none.hcl"), Next: &next{}}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New(missing file) = %v, want the read error", err)
	}
}
