// Package dispatch is a node's route table: it answers each event with the
// handler that claimed its route name, under the event's deadline and a
// bound on the events in flight per owner.
//
// Owners (plugins) claim routes with Set and give them up with Remove; two
// owners never share a route. Reads are lock-free: each change publishes a
// new immutable table.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/restpipe/restpipe/host"
)

// ErrConflict is returned by Set when another owner holds a route.
var ErrConflict = errors.New("route already claimed")

// Config configures a Table.
type Config struct {
	// DefaultTimeout is the deadline of an event whose context has none.
	// Default 30s.
	DefaultTimeout time.Duration
	// MaxInFlight bounds the events in flight per owner; beyond it an event
	// fails at once with overloaded. Default 256.
	MaxInFlight int
	// RetryAfter is the wait suggested to callers refused with overloaded.
	// Default 1s.
	RetryAfter time.Duration
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{DefaultTimeout: 30 * time.Second, MaxInFlight: 256, RetryAfter: time.Second}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = d.DefaultTimeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = d.RetryAfter
	}
	return c
}

// Validate reports a setting that cannot work, counting zero fields as
// their defaults. It changes nothing.
func (c Config) Validate() error {
	if c.DefaultTimeout < 0 || c.MaxInFlight < 0 || c.RetryAfter < 0 {
		return errors.New("dispatch: timeouts and limits must be positive")
	}
	return nil
}

// Table routes events by route name. It is safe for concurrent use.
type Table struct {
	cfg Config

	mu  sync.Mutex             // serializes changes
	cur atomic.Pointer[routes] // the published table
}

// routes is one immutable version of the table.
type routes struct {
	byRoute map[string]*owner
	owners  map[string]*owner
}

// owner is one claimant of routes and its in-flight bound.
type owner struct {
	name     string
	h        host.Handler
	inFlight *atomic.Int64 // shared across versions of the same owner
}

// New returns an empty table.
func New(cfg Config) (*Table, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Table{cfg: cfg}
	t.cur.Store(&routes{byRoute: map[string]*owner{}, owners: map[string]*owner{}})
	return t, nil
}

// Set makes h serve routes on behalf of name, replacing what name served
// before. If another owner holds one of the routes, Set changes nothing
// and returns an error wrapping ErrConflict that names both owners.
func (t *Table) Set(name string, rs []string, h host.Handler) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	for _, r := range rs {
		if o := old.byRoute[r]; o != nil && o.name != name {
			return fmt.Errorf("%w: %s is served by %q; %q cannot claim it", ErrConflict, r, o.name, name)
		}
	}
	counter := new(atomic.Int64)
	if prev := old.owners[name]; prev != nil {
		counter = prev.inFlight
	}
	o := &owner{name: name, h: h, inFlight: counter}
	next := old.without(name)
	next.owners[name] = o
	for _, r := range rs {
		next.byRoute[r] = o
	}
	t.cur.Store(next)
	return nil
}

// Remove withdraws every route of name.
func (t *Table) Remove(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cur.Store(t.cur.Load().without(name))
}

// without returns a copy of rt without owner name.
func (rt *routes) without(name string) *routes {
	next := &routes{byRoute: make(map[string]*owner, len(rt.byRoute)), owners: make(map[string]*owner, len(rt.owners))}
	for r, o := range rt.byRoute {
		if o.name != name {
			next.byRoute[r] = o
		}
	}
	for n, o := range rt.owners {
		if n != name {
			next.owners[n] = o
		}
	}
	return next
}

// Routes returns every route and its owner.
func (t *Table) Routes() map[string]string {
	cur := t.cur.Load()
	out := make(map[string]string, len(cur.byRoute))
	for r, o := range cur.byRoute {
		out[r] = o.name
	}
	return out
}

// InFlight returns the number of events in flight for owner name.
func (t *Table) InFlight(name string) int {
	if o := t.cur.Load().owners[name]; o != nil {
		return int(o.inFlight.Load())
	}
	return 0
}

// Handle answers ev with the handler of its route: no_route when nobody
// claimed it, overloaded when its owner has MaxInFlight events in flight.
// An event without a deadline gets DefaultTimeout.
func (t *Table) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	route := ev.Route()
	o := t.cur.Load().byRoute[route]
	if o == nil {
		return nil, host.Errorf(host.KindNoRoute, "no handler for route %s on this node", route)
	}
	if n := o.inFlight.Add(1); n > int64(t.cfg.MaxInFlight) {
		o.inFlight.Add(-1)
		return nil, &host.Error{Kind: host.KindOverloaded, RetryAfter: t.cfg.RetryAfter,
			Message: fmt.Sprintf("plugin %s has %d events in flight, the limit", o.name, t.cfg.MaxInFlight)}
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, t.cfg.DefaultTimeout)
	}
	rep, err := o.h.Handle(ctx, ev)
	if err != nil {
		cancel()
		o.inFlight.Add(-1)
		if ctx.Err() != nil && host.KindOf(err) == host.KindHandlerFailed {
			// The handler reported its context ending as a failure.
			err = host.AsError(ctx.Err())
		}
		return nil, err
	}
	done := func() { cancel(); o.inFlight.Add(-1) }
	if rep.Body == nil {
		done()
		return rep, nil
	}
	rep.Body = &trackedBody{ReadCloser: rep.Body, done: done}
	return rep, nil
}

// trackedBody ends its event's bookkeeping when closed.
type trackedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}
