package dispatch

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// echoName answers with its own name; block waits for ctx.
type named struct {
	name    string
	block   bool
	started chan struct{}
}

func (n *named) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	if n.block {
		n.started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	dl, _ := ctx.Deadline()
	body := n.name + " " + ev.Route() + " " + time.Until(dl).Round(time.Second).String()
	return &host.Reply{Body: io.NopCloser(strings.NewReader(body)), Size: int64(len(body))}, nil
}

func call(t testing.TB, tb *Table, ctx context.Context, verb, noun string) (string, error) {
	t.Helper()
	rep, err := tb.Handle(ctx, &host.Event{Verb: verb, Noun: noun})
	if err != nil {
		return "", err
	}
	defer rep.Close()
	b, err := io.ReadAll(rep.Body)
	return string(b), err
}

func newTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestRouting(t *testing.T) {
	tb := newTable(t, DefaultConfig())
	if err := tb.Set("time", []string{"get_time", "get_time_utc"}, &named{name: "time"}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Set("cat", []string{"get_cat"}, &named{name: "cat"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		verb, noun, want string
		kind             host.Kind
	}{
		{"get", "time", "time get_time 30s", ""},
		{"get", "time/utc", "time get_time_utc 30s", ""},
		{"get", "cat", "cat get_cat 30s", ""},
		{"post", "cat", "", host.KindNoRoute},
		{"get", "dog", "", host.KindNoRoute},
	}
	for _, tt := range tests {
		got, err := call(t, tb, context.Background(), tt.verb, tt.noun)
		if host.KindOf(err) != tt.kind || got != tt.want {
			t.Errorf("%s %s = %q, %v; want %q, kind %q", tt.verb, tt.noun, got, err, tt.want, tt.kind)
		}
	}
	// A context with a deadline keeps it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, _ := call(t, tb, ctx, "get", "time"); got != "time get_time 5s" {
		t.Errorf("with a 5s deadline: %q", got)
	}
}

func TestConflictNamesBothAndChangesNothing(t *testing.T) {
	tb := newTable(t, DefaultConfig())
	tb.Set("time", []string{"get_time"}, &named{name: "time"})
	err := tb.Set("clock", []string{"get_clock", "get_time"}, &named{name: "clock"})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `get_time is served by "time"; "clock" cannot claim it`) {
		t.Fatalf("Set = %v, want a conflict naming both", err)
	}
	if r := tb.Routes(); len(r) != 1 || r["get_time"] != "time" {
		t.Errorf("routes after the refused Set = %v, want only time's", r)
	}
	// An owner replacing its own routes is no conflict; dropped routes go.
	if err := tb.Set("time", []string{"get_time_utc"}, &named{name: "time2"}); err != nil {
		t.Fatal(err)
	}
	if r := tb.Routes(); len(r) != 1 || r["get_time_utc"] != "time" {
		t.Errorf("routes = %v", r)
	}
	tb.Remove("time")
	if err := tb.Set("clock", []string{"get_time"}, &named{name: "clock"}); err != nil {
		t.Errorf("Set after the owner left = %v", err)
	}
}

func TestInFlightBound(t *testing.T) {
	tb := newTable(t, Config{MaxInFlight: 2, RetryAfter: 3 * time.Second})
	h := &named{name: "slow", block: true, started: make(chan struct{}, 2)}
	tb.Set("slow", []string{"get_slow"}, h)
	tb.Set("fast", []string{"get_fast"}, &named{name: "fast"})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); call(t, tb, ctx, "get", "slow") }()
		<-h.started
	}
	_, err := call(t, tb, context.Background(), "get", "slow")
	var he *host.Error
	if !errors.As(err, &he) || he.Kind != host.KindOverloaded || he.RetryAfter != 3*time.Second {
		t.Fatalf("third event = %v, want overloaded with Retry-After 3s", err)
	}
	// Another owner is not affected.
	if _, err := call(t, tb, context.Background(), "get", "fast"); err != nil {
		t.Errorf("other owner = %v", err)
	}
	cancel()
	wg.Wait()
	if n := tb.InFlight("slow"); n != 0 {
		t.Errorf("in flight after the events ended = %d", n)
	}
	// The count is released only when the reply body is closed.
	rep, err := tb.Handle(context.Background(), &host.Event{Verb: "get", Noun: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	if n := tb.InFlight("fast"); n != 1 {
		t.Errorf("in flight with an open reply = %d, want 1", n)
	}
	rep.Close()
	if n := tb.InFlight("fast"); n != 0 {
		t.Errorf("in flight after Close = %d, want 0", n)
	}
}

func TestConcurrentChanges(t *testing.T) {
	tb := newTable(t, DefaultConfig())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if got, err := call(t, tb, context.Background(), "get", "x"); err == nil && !strings.HasPrefix(got, "x") {
					t.Errorf("got %q", got)
				}
			}
		}()
	}
	for i := range 1000 {
		if i%2 == 0 {
			tb.Set("x", []string{"get_x"}, &named{name: "x"})
		} else {
			tb.Remove("x")
		}
	}
	close(stop)
	wg.Wait()
}
