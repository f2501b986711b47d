package policy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
)

// Outcomes of a refused event, as the Observer hears of them (the outcome
// label of the node's refusal counter).
const (
	OutcomeForbidden   = "forbidden"    // no allow block lets it through
	OutcomeRateLimited = "rate_limited" // over its limit: overloaded
)

// Observer is told of every event the policy refused. Calls come from the
// goroutines that handle events: implementations must be fast and safe
// for concurrent use.
type Observer interface {
	// PolicyRefused: an event from caller for route was refused with
	// outcome, OutcomeForbidden or OutcomeRateLimited.
	PolicyRefused(caller, route, outcome string)
}

type nopObserver struct{}

func (nopObserver) PolicyRefused(string, string, string) {}

// PeerCaller is the default Config.Caller: the verified name of the peer
// the event came from.
func PeerCaller(ev *host.Event) string { return ev.Peer }

// Config configures an Enforcer. Start from DefaultConfig.
type Config struct {
	// File is the policy file. Required.
	File string
	// Next answers the events the policy lets through: the node's route
	// table. Required.
	Next host.Handler
	// Logger receives a line per refused event (at most LogRate a
	// second). Default: a null logger.
	Logger hclog.Logger
	// Observer, when set, is told of every refused event.
	Observer Observer
	// Caller returns the name the policy is checked against: by default
	// PeerCaller, the link's verified peer. In a cluster, whatever
	// forwards events between servers must supply the original caller's
	// verified name here, never a name the event's sender chose (see the
	// package documentation).
	Caller func(*host.Event) string
	// LogRate and LogBurst bound the log lines about refused events, so a
	// flood cannot fill the disk; lines beyond are counted and the count
	// appears on the next line. Default 5 a second, bursts of 20.
	LogRate  rate.Limit
	LogBurst int
}

// DefaultConfig returns the defaults; File and Next are still to be set.
func DefaultConfig() Config {
	return Config{Caller: PeerCaller, LogRate: 5, LogBurst: 20}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Caller == nil {
		c.Caller = d.Caller
	}
	if c.LogRate == 0 {
		c.LogRate = d.LogRate
	}
	if c.LogBurst == 0 {
		c.LogBurst = d.LogBurst
	}
	return c
}

// Validate reports a setting that cannot work, counting zero fields as
// their defaults. It changes nothing.
func (c Config) Validate() error {
	switch {
	case c.File == "":
		return errors.New("policy: no file")
	case c.Next == nil:
		return errors.New("policy: no handler to pass allowed events to")
	case c.LogRate < 0 || c.LogBurst < 0:
		return errors.New("policy: the log rate and burst must be positive")
	}
	return nil
}

// Enforcer is a host.Handler that lets through to Next only the events the
// current policy allows. It is the handler of the events a node's peers
// send; the node's own (local) callers never pass through it. It is safe
// for concurrent use; Reload swaps the policy atomically, and an event
// sees either the old policy or the new one. It runs no goroutine and
// needs no closing.
type Enforcer struct {
	cfg Config
	cur atomic.Pointer[Policy]

	logLimit *rate.Limiter
	unlogged atomic.Int64     // refusals not logged since the last line
	now      func() time.Time // time.Now; a test's clock

	mu        sync.Mutex // serializes Reload; guards the fields below
	reloadErr error
}

// New reads cfg.File and returns an Enforcer of its policy. A bad file
// gives a *ParseError naming every problem.
func New(cfg Config) (*Enforcer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := Load(cfg.File)
	if err != nil {
		return nil, err
	}
	e := &Enforcer{cfg: cfg, logLimit: rate.NewLimiter(cfg.LogRate, cfg.LogBurst), now: time.Now}
	e.cur.Store(p)
	return e, nil
}

// Policy returns the policy in force.
func (e *Enforcer) Policy() *Policy { return e.cur.Load() }

// Reload reads the policy file again. A good file replaces the policy at
// once (limit blocks that did not change keep their buckets) and Reload
// returns the new policy, or the current one when the file's contents are
// the same; a bad file changes nothing and Reload returns why (a
// *ParseError naming every problem, or the read error). The caller logs
// the outcome. Reload blocks while another runs.
func (e *Enforcer) Reload() (*Policy, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cur.Load()
	next, err := Load(e.cfg.File)
	e.reloadErr = err
	if err != nil {
		return nil, err
	}
	if next.sum == old.sum {
		return old, nil
	}
	next.inherit(old)
	e.cur.Store(next)
	return next, nil
}

// Status describes the policy in force, for a node's /status.
type Status struct {
	// File is the policy file, as it was named.
	File string `json:"file"`
	// SHA256 is the hex SHA-256 of the contents in force, as sha256sum
	// prints it.
	SHA256 string `json:"sha256"`
	// Rules counts the blocks: AllowRules allow blocks and LimitRules
	// limit blocks.
	Rules      int `json:"rules"`
	AllowRules int `json:"allow_rules"`
	LimitRules int `json:"limit_rules"`
	// LoadedAt is when the policy in force was loaded; a reload of the
	// same contents keeps it.
	LoadedAt time.Time `json:"loaded_at"`
	// ReloadError is why the last reload was refused (the policy in force
	// is then the one before); "" when it succeeded or none was tried.
	ReloadError string `json:"reload_error,omitempty"`
}

// Status describes the policy in force.
func (e *Enforcer) Status() Status {
	p := e.cur.Load()
	a, l := p.Rules()
	st := Status{File: p.file, SHA256: p.SHA256(), Rules: a + l, AllowRules: a, LimitRules: l, LoadedAt: p.loaded.UTC()}
	e.mu.Lock()
	if e.reloadErr != nil {
		st.ReloadError = e.reloadErr.Error()
	}
	e.mu.Unlock()
	return st
}

// Handle passes ev to Next if the policy allows its caller to call its
// route and the caller is within its limit; otherwise it returns forbidden
// or overloaded (with the truthful RetryAfter) at once, without reading
// ev.Body: whoever built the event (the link) deals with the unread body.
// A refused event is logged and reported to the Observer. An event without
// a caller is refused: the Enforcer stands only in front of peers, whose
// events always carry their verified name.
func (e *Enforcer) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	if err := e.check(e.cfg.Caller(ev), ev.Route(), ev.ID); err != nil {
		return nil, err
	}
	return e.cfg.Next.Handle(ctx, ev)
}

// check applies the current policy to one event.
func (e *Enforcer) check(caller, route, id string) error {
	d, err := e.cur.Load().check(caller, route, e.now())
	switch {
	case err == nil:
	case !d.Allowed:
		e.refused(OutcomeForbidden, caller, route, id)
	default:
		e.refused(OutcomeRateLimited, caller, route, id, "limit_line", d.LimitLine, "rate", d.limit.rateText,
			"burst", d.limit.burst, "retry_after", host.AsError(err).RetryAfter)
	}
	return err
}

// refused counts a refusal and logs it, unless too many lines went out
// lately.
func (e *Enforcer) refused(outcome, caller, route, id string, more ...any) {
	e.cfg.Observer.PolicyRefused(caller, route, outcome)
	if !e.logLimit.AllowN(e.now(), 1) {
		e.unlogged.Add(1)
		return
	}
	kv := append([]any{"peer", caller, "route", route, "request_id", id}, more...)
	if n := e.unlogged.Swap(0); n > 0 {
		kv = append(kv, "unlogged_refusals", n)
	}
	msg := "event refused by policy"
	if outcome == OutcomeRateLimited {
		msg = "event over its rate limit"
	}
	e.cfg.Logger.Warn(msg, kv...)
}
