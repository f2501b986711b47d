package policy

import (
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
)

// Policy is one compiled policy file: its allow rules, its limit rules and
// the state of its rate limiters. It is safe for concurrent use; its rules
// never change (a reload makes a new Policy).
type Policy struct {
	file   string
	sum    [32]byte
	loaded time.Time
	allow  []allowRule
	limits []*limitRule
	cache  *decisionCache
}

// allowRule is one allow block.
type allowRule struct {
	line          int
	peers, routes globs
}

// limitRule is one limit block.
type limitRule struct {
	line          int
	peers, routes globs
	rateText      string // as written: "200/s"
	limit         rate.Limit
	burst         int
	state         *limiters // shared with the same rule of the policy this one replaced
}

// key identifies a limit rule across reloads: the same peers, routes,
// rate and burst keep their buckets.
func (r *limitRule) key() string {
	return fmt.Sprintf("%q %q %v %d", r.peers.sources(), r.routes.sources(), float64(r.limit), r.burst)
}

func newPolicy(file string, sum [32]byte, allow []allowRule, limits []*limitRule) *Policy {
	for _, r := range limits {
		r.state = newLimiters(r.limit, r.burst)
	}
	return &Policy{file: file, sum: sum, loaded: time.Now(), allow: allow, limits: limits, cache: newDecisionCache()}
}

// inherit makes p's limit rules that old has too (the same peers, routes,
// rate and burst) keep old's buckets, so a reload does not hand every
// peer a fresh burst.
func (p *Policy) inherit(old *Policy) {
	if old == nil {
		return
	}
	prev := map[string]*limiters{}
	for _, r := range old.limits {
		prev[r.key()] = r.state
	}
	for _, r := range p.limits {
		if s := prev[r.key()]; s != nil {
			r.state = s
		}
	}
}

// File returns the file the policy was read from, as it was named.
func (p *Policy) File() string { return p.file }

// SHA256 returns the hex SHA-256 of the file's contents, as sha256sum
// prints it.
func (p *Policy) SHA256() string { return hex.EncodeToString(p.sum[:]) }

// Rules returns the number of allow and of limit blocks.
func (p *Policy) Rules() (allow, limit int) { return len(p.allow), len(p.limits) }

// Decision is what a policy says of one caller and route.
type Decision struct {
	// Allowed is true when an allow block matches both.
	Allowed bool
	// AllowLine is the line of the first allow block that matches; 0
	// when none does.
	AllowLine int
	// LimitLine is the line of the limit block that applies to the
	// event, the first in the file whose peers and routes match; 0 when
	// none does. It is not looked for when the event is not allowed.
	LimitLine int

	limit *limitRule
}

// Decide returns what the policy says of an event from caller (a verified
// node name: the Event's Peer, or in a cluster the original caller's name)
// for route (a route name such as get_time). It consumes nothing; see Check.
// It is safe for concurrent use, and cheap: decisions are kept in a bounded
// cache.
func (p *Policy) Decide(caller, route string) Decision {
	return p.cache.get(caller, route, p.decide)
}

// decide evaluates the rules. An event without a caller is never allowed:
// a policy stands only in front of peers, whose events always carry the
// name their certificate proves.
func (p *Policy) decide(caller, route string) Decision {
	var d Decision
	if caller == "" {
		return d
	}
	for i := range p.allow {
		r := &p.allow[i]
		if r.peers.match(caller) && r.routes.match(route) {
			d.Allowed, d.AllowLine = true, r.line
			break
		}
	}
	if !d.Allowed {
		return d
	}
	for _, r := range p.limits {
		if r.peers.match(caller) && r.routes.match(route) {
			d.limit, d.LimitLine = r, r.line
			break
		}
	}
	return d
}

// Check decides an event from caller for route at time now and, when it is
// allowed and a limit applies, takes a token from caller's bucket of that
// limit. It returns nil for an event that may go on; a *host.Error of kind
// forbidden for one no allow block lets through; and one of kind
// overloaded, with RetryAfter the time until caller's bucket has a token,
// for one over its limit. A refused event takes no token.
func (p *Policy) Check(caller, route string, now time.Time) error {
	_, err := p.check(caller, route, now)
	return err
}

// check is Check, returning the decision too.
func (p *Policy) check(caller, route string, now time.Time) (Decision, error) {
	d := p.Decide(caller, route)
	if !d.Allowed {
		return d, forbidden(caller, route)
	}
	if d.limit != nil {
		if wait := d.limit.state.take(caller, now); wait > 0 {
			return d, d.limit.overloaded(caller, wait)
		}
	}
	return d, nil
}

// forbidden is the error of an event no allow block lets through.
func forbidden(caller, route string) *host.Error {
	if caller == "" {
		return host.Errorf(host.KindForbidden, "this node's policy refuses %s without a verified caller", route)
	}
	return host.Errorf(host.KindForbidden, "this node's policy does not let %s call %s", caller, route)
}

// overloaded is the error of an event over r's limit.
func (r *limitRule) overloaded(caller string, wait time.Duration) *host.Error {
	return &host.Error{Kind: host.KindOverloaded, RetryAfter: wait,
		Message: fmt.Sprintf("%s is over its rate limit of %s (burst %d) on this node; the next event may go in %v", caller, r.rateText, r.burst, wait.Round(time.Microsecond))}
}

// MaxLimiterPeers bounds the peers with a bucket of their own in one limit
// block: beyond it, the buckets that are full again (whose peers have been
// quiet for burst/rate) are dropped, which changes nothing for those peers.
// Peers are verified names, one per certificate the CA issued, so the bound
// is reached only by a crowd of peers all busy at once.
const MaxLimiterPeers = 16384

// limiters are the buckets of one limit rule, one per peer.
type limiters struct {
	limit rate.Limit
	burst int
	m     sync.Map // peer name -> *rate.Limiter
	n     atomic.Int64
	sweep sync.Mutex
}

func newLimiters(limit rate.Limit, burst int) *limiters {
	return &limiters{limit: limit, burst: burst}
}

// take takes a token from peer's bucket at now, and returns 0; or, when the
// bucket is empty, takes none and returns how long until it has one.
func (l *limiters) take(peer string, now time.Time) time.Duration {
	lim := l.bucket(peer, now)
	if lim.AllowN(now, 1) {
		return 0 // the common case, without a Reservation to allocate
	}
	// Empty: how long until a token, as a reservation that is given back.
	// (A token that came meanwhile is taken: the event goes.)
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		// Only when 1 > burst, which the parser never allows.
		return time.Duration(float64(time.Second) / float64(l.limit))
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

// bucket returns peer's bucket, made full on first use.
func (l *limiters) bucket(peer string, now time.Time) *rate.Limiter {
	if v, ok := l.m.Load(peer); ok {
		return v.(*rate.Limiter)
	}
	if l.n.Load() >= MaxLimiterPeers {
		l.dropFull(now)
	}
	v, loaded := l.m.LoadOrStore(strings.Clone(peer), rate.NewLimiter(l.limit, l.burst))
	if !loaded {
		l.n.Add(1)
	}
	return v.(*rate.Limiter)
}

// dropFull drops the buckets that are full at now: a full bucket is what a
// new one would be.
func (l *limiters) dropFull(now time.Time) {
	l.sweep.Lock()
	defer l.sweep.Unlock()
	if l.n.Load() < MaxLimiterPeers {
		return // another sweep made room
	}
	l.m.Range(func(k, v any) bool {
		if v.(*rate.Limiter).TokensAt(now) >= float64(l.burst) {
			l.m.Delete(k)
			l.n.Add(-1)
		}
		return true
	})
}

// Cache bounds: decisions of callers and routes longer than
// maxCachedLen together are not kept.
const (
	cacheSlots   = 4096 // a power of two
	maxCachedLen = 256
)

// decisionCache keeps recent decisions, one per slot of a fixed table
// indexed by a hash of the caller and route: lock-free, never larger than
// cacheSlots entries, and a caller that sends ever new routes only
// overwrites slots.
type decisionCache struct {
	seed  maphash.Seed
	slots [cacheSlots]atomic.Pointer[cacheEntry]
}

type cacheEntry struct {
	caller, route string
	d             Decision
}

func newDecisionCache() *decisionCache { return &decisionCache{seed: maphash.MakeSeed()} }

// get returns the decision of caller and route, computing it with decide
// when it is not kept.
func (c *decisionCache) get(caller, route string, decide func(caller, route string) Decision) Decision {
	if len(caller)+len(route) > maxCachedLen {
		return decide(caller, route)
	}
	h := maphash.String(c.seed, caller)*31 + maphash.String(c.seed, route)
	slot := &c.slots[h&(cacheSlots-1)]
	if e := slot.Load(); e != nil && e.caller == caller && e.route == route {
		return e.d
	}
	d := decide(caller, route)
	slot.Store(&cacheEntry{caller: strings.Clone(caller), route: strings.Clone(route), d: d})
	return d
}
