package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/host"
	clusterv1 "github.com/restpipe/restpipe/proto/cluster/v1"
)

// Errors of the package.
var (
	// ErrNotMember is returned for a peer whose certificate lacks the
	// server role: only servers are members of a cluster.
	ErrNotMember = errors.New("cluster: not a member: the certificate lacks the server role")
	// ErrAbsent is returned by Peer when no server of the cluster holds
	// the client before ctx ends.
	ErrAbsent = errors.New("cluster: no server holds the client")
	// ErrReplaced ends a client's link on this server when the client
	// linked to another server since (the newest link wins).
	ErrReplaced = errors.New("cluster: the client linked to another server since")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: closed")
)

// Member states, as Members reports them.
const (
	StateUp       = "up"
	StateDraining = "draining"
	StateDown     = "down" // answered a poll once, not the last one
)

// MemberStatus is one server of the cluster as this one sees it.
type MemberStatus struct {
	Name     string
	State    string
	LinkAddr string
	Clients  int
	Self     bool
	// LastSeen is when it last answered a poll (now for this server).
	LastSeen time.Time
}

// Cluster is this server's membership of a cluster of servers (SPEC §8):
// it announces the clients linked here in NATS, finds the server holding
// any other client, and answers the events other servers forward here.
//
// A Cluster is safe for concurrent use. It owns its NATS server (when
// embedded), its connection and its goroutines; Close ends them.
type Cluster struct {
	cfg         Config
	log         hclog.Logger
	refuseLimit *rate.Limiter
	eng         *engine
	started     time.Time
	draining    atomic.Bool

	memberSub *nats.Subscription
	stop      chan struct{}
	wg        sync.WaitGroup

	mu      sync.Mutex
	held    map[string]*holding // the clients linked here
	cache   map[string]cached   // holders learnt from lookups
	refused map[string]refusal  // client -> a holder that just refused it
	members map[string]*MemberStatus
	changed chan struct{} // closed and replaced at every local claim
	closed  bool
}

// holding is a client linked to this server.
type holding struct {
	link   Link
	holder *clusterv1.Holder
	sub    *nats.Subscription // its presence subject; nil once released
}

// cached is a holder learnt from a lookup.
type cached struct {
	holder  *clusterv1.Holder
	expires time.Time
}

// refusal is a holder that refused (or failed) an event for a client: it
// is not used again for that client until the time passes.
type refusal struct {
	server string
	until  time.Time
}

// refusalTime is how long a holder that refused an event for a client is
// not used for it: about the time a route to a dead server takes to close,
// at worst, spread over a few retries.
const refusalTime = time.Second

// memberWindow is how long a members poll collects answers.
const memberWindow = 300 * time.Millisecond

// forgetDown is how long a member that stopped answering is still listed,
// as down.
const forgetDown = 5 * time.Minute

// missedPolls is how many members polls in a row a member must miss to be
// down: one missed window (300 ms) is a busy machine, not a dead server
// (under load, TestClusterEveryServerReachesEveryClient saw a live member
// down). Routing does not wait for it: a dead server's presence goes with
// its NATS routes, and a forward it cannot take is looked up again.
const missedPolls = 2

// New starts this server's membership: the embedded NATS server (or the
// connection to the external one) and the members poll. It returns once
// NATS is connected; the routes to the other servers come up in the
// background.
func New(cfg Config) (*Cluster, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:         cfg,
		log:         cfg.Logger,
		refuseLimit: rate.NewLimiter(2, 5),
		started:     time.Now(),
		stop:        make(chan struct{}),
		held:        map[string]*holding{},
		cache:       map[string]cached{},
		refused:     map[string]refusal{},
		members:     map[string]*MemberStatus{},
		changed:     make(chan struct{}),
	}
	eng, err := c.startEngine()
	if err != nil {
		return nil, err
	}
	c.eng = eng
	c.memberSub, err = eng.nc.Subscribe(c.subject("members"), c.answerMembers)
	if err != nil {
		eng.close()
		return nil, fmt.Errorf("cluster: subscribe to the members subject: %w", err)
	}
	if eng.nc.IsConnected() {
		// The subscription is at the server before New returns; without a
		// connection yet (an external NATS retried), it is sent on connect.
		if err := eng.nc.FlushTimeout(cfg.LookupTimeout); err != nil {
			c.log.Warn("NATS flush at start", "error", err)
		}
	}
	c.wg.Add(1)
	go c.pollMembers()
	c.log.Info("joined the cluster", "name", cfg.Name, "routes", eng.routeAddr(), "join", cfg.Join, "nats", cfg.NATS)
	return c, nil
}

// RouteAddr returns the address the embedded NATS server's route listener
// is bound to, or "" with an external NATS.
func (c *Cluster) RouteAddr() string { return c.eng.routeAddr() }

// subject returns the NATS subject of the given tokens under the prefix.
func (c *Cluster) subject(tokens ...string) string {
	s := c.cfg.Subjects
	for _, t := range tokens {
		s += "." + t
	}
	return s
}

// presence is the presence subject of a client: its name's labels are
// tokens of it, which CheckName keeps free of wildcards and spaces.
func (c *Cluster) presence(client string) string { return c.subject("presence", client) }

// Claim records that client is linked to this server now, on l: the
// cluster learns it (its presence subject is subscribed at once, and the
// claim published), and an older link for it on another server is ended
// there. It does not block on the network. Call Release when l ends.
func (c *Cluster) Claim(client string, l Link) {
	now := time.Now()
	h := &holding{link: l, holder: &clusterv1.Holder{Client: client, Server: c.cfg.Name, LinkAddr: c.cfg.LinkAddr,
		SinceUnixNano: now.UnixNano(), Epoch: 1}}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if old := c.held[client]; old != nil {
		h.holder.Epoch = old.holder.Epoch + 1
		if old.sub != nil {
			_ = old.sub.Unsubscribe()
			old.sub = nil
		}
	}
	c.held[client] = h
	delete(c.cache, client)
	delete(c.refused, client)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()

	if c.draining.Load() {
		return // a draining server answers no lookups: its clients move
	}
	sub, err := c.eng.nc.Subscribe(c.presence(client), func(m *nats.Msg) { c.onPresence(client, h, m) })
	if err != nil {
		c.log.Warn("presence: subscribe", "client", client, "error", err)
		return
	}
	c.mu.Lock()
	if c.held[client] != h || c.closed {
		c.mu.Unlock()
		_ = sub.Unsubscribe()
		return
	}
	h.sub = sub
	c.mu.Unlock()
	c.wg.Add(1)
	go c.announce(client, h)
}

// announce learns the epoch of the client's current holder elsewhere, if
// any, takes one more, and publishes the claim, which ends the older link.
func (c *Cluster) announce(client string, h *holding) {
	defer c.wg.Done()
	if prev, err := c.ask(client, c.cfg.LookupTimeout); err == nil && prev.Server != c.cfg.Name {
		c.mu.Lock()
		if prev.Epoch >= h.holder.Epoch {
			h.holder.Epoch = prev.Epoch + 1
		}
		c.mu.Unlock()
	}
	c.publishClaim(client, h)
}

// publishClaim publishes h's claim on the client's presence subject.
func (c *Cluster) publishClaim(client string, h *holding) {
	c.mu.Lock()
	if c.held[client] != h || c.closed {
		c.mu.Unlock()
		return
	}
	data, err := proto.Marshal(h.holder)
	c.mu.Unlock()
	if err == nil {
		err = c.eng.nc.Publish(c.presence(client), data)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		c.log.Warn("presence: publish a claim", "client", client, "error", err)
	}
}

// onPresence handles a message on the presence subject of a client held
// here: a lookup (with a reply subject) is answered with the holder; a
// claim by another server ends this link if that one is newer, and is
// answered with this server's claim if not.
func (c *Cluster) onPresence(client string, h *holding, m *nats.Msg) {
	c.mu.Lock()
	current := c.held[client] == h
	mine := proto.Clone(h.holder).(*clusterv1.Holder)
	c.mu.Unlock()
	if !current {
		return
	}
	if m.Reply != "" {
		if data, err := proto.Marshal(mine); err == nil {
			_ = m.Respond(data)
		}
		return
	}
	var other clusterv1.Holder
	if err := proto.Unmarshal(m.Data, &other); err != nil || other.Client != client || other.Server == c.cfg.Name {
		return
	}
	if !newer(&other, mine) {
		c.publishClaim(client, h) // ours is newer: tell the other
		return
	}
	c.mu.Lock()
	if c.held[client] == h {
		delete(c.held, client)
		if h.sub != nil {
			_ = h.sub.Unsubscribe()
			h.sub = nil
		}
		c.cache[client] = cached{holder: &other, expires: time.Now().Add(c.cfg.CacheTTL)}
	} else {
		current = false
	}
	c.mu.Unlock()
	if current {
		c.log.Info("client linked to another server since: ending its link here", "client", client, "server", other.Server)
		c.cfg.Observer.Replaced()
		h.link.Evict(fmt.Errorf("%w (%s)", ErrReplaced, other.Server))
	}
}

// newer reports whether holder a's link is newer than b's: a higher epoch,
// else a later since, else the greater server name, so that both sides
// always agree.
func newer(a, b *clusterv1.Holder) bool {
	switch {
	case a.Epoch != b.Epoch:
		return a.Epoch > b.Epoch
	case a.SinceUnixNano != b.SinceUnixNano:
		return a.SinceUnixNano > b.SinceUnixNano
	default:
		return a.Server > b.Server
	}
}

// Release records that l, the link of client, ended. It is a no-op when l
// is no longer the client's link here (a newer one claimed it since).
func (c *Cluster) Release(client string, l Link) {
	c.mu.Lock()
	h := c.held[client]
	if h == nil || h.link != l {
		c.mu.Unlock()
		return
	}
	delete(c.held, client)
	sub := h.sub
	h.sub = nil
	c.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

// Holds returns the link of client on this server, or nil.
func (c *Cluster) Holds(client string) Link {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h := c.held[client]; h != nil {
		return h.link
	}
	return nil
}

// Held returns how many clients are linked to this server.
func (c *Cluster) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

// ask sends one lookup for client on its presence subject and returns the
// first holder to answer. NATS answers at once with no responders when no
// server is subscribed: the lookup costs one round trip either way.
func (c *Cluster) ask(client string, timeout time.Duration) (*clusterv1.Holder, error) {
	m, err := c.eng.nc.Request(c.presence(client), nil, timeout)
	if err != nil {
		return nil, err
	}
	var h clusterv1.Holder
	if err := proto.Unmarshal(m.Data, &h); err != nil {
		return nil, fmt.Errorf("cluster: lookup of %s: bad answer: %w", client, err)
	}
	if h.Client != client || h.Server == "" {
		return nil, fmt.Errorf("cluster: lookup of %s: answer for %q from %q", client, h.Client, h.Server)
	}
	return &h, nil
}

// Lookup returns the server that holds client, from the cache or from one
// lookup in NATS; ErrAbsent when none answers. A holder that refused an
// event for client within the last second is taken as absent.
func (c *Cluster) Lookup(ctx context.Context, client string) (*clusterv1.Holder, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.cache[client]
	ref, refusedNow := c.refused[client]
	if refusedNow && now.After(ref.until) {
		delete(c.refused, client)
		refusedNow = false
	}
	c.mu.Unlock()
	if ok && now.Before(e.expires) && !(refusedNow && ref.server == e.holder.Server) {
		c.cfg.Observer.Lookup(LookupCached, 0)
		return e.holder, nil
	}
	timeout := c.cfg.LookupTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), time.Millisecond)
	}
	h, err := c.ask(client, timeout)
	d := time.Since(now)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		c.cfg.Observer.Lookup(LookupAbsent, d)
		return nil, fmt.Errorf("%w: %s", ErrAbsent, client)
	case err != nil:
		c.cfg.Observer.Lookup(LookupFailed, d)
		return nil, fmt.Errorf("%w: %s: lookup: %w", ErrAbsent, client, err)
	}
	c.cfg.Observer.Lookup(LookupFound, d)
	if refusedNow && ref.server == h.Server {
		return nil, fmt.Errorf("%w: %s: its holder %s just refused it", ErrAbsent, client, h.Server)
	}
	c.mu.Lock()
	if len(c.cache) >= c.cfg.CacheSize {
		for k := range c.cache { // map order: a random victim
			delete(c.cache, k)
			break
		}
	}
	c.cache[client] = cached{holder: h, expires: now.Add(c.cfg.CacheTTL)}
	c.mu.Unlock()
	return h, nil
}

// forget drops the cached holder of client when it is server, and keeps
// server from being used for client for a moment: it refused or failed an
// event for it.
func (c *Cluster) forget(client, server string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cache[client]; ok && e.holder.Server == server {
		delete(c.cache, client)
	}
	c.refused[client] = refusal{server: server, until: time.Now().Add(refusalTime)}
}

// forgetServer drops every cached holder that is server.
func (c *Cluster) forgetServer(server string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.cache {
		if e.holder.Server == server {
			delete(c.cache, k)
		}
	}
}

// Peer returns the handler that reaches client: its link when it is linked
// here, else a forwarder to the server holding it. While no server holds
// it, Peer waits (looking up again at least every WaitPoll, at once when a
// link for it comes up here) until ctx ends, then returns an error wrapping
// ErrAbsent.
func (c *Cluster) Peer(ctx context.Context, client string) (host.Handler, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if h := c.held[client]; h != nil {
			c.mu.Unlock()
			return h.link, nil
		}
		changed := c.changed
		c.mu.Unlock()
		h, err := c.Lookup(ctx, client)
		if err == nil {
			return &forwarder{c: c, client: client, holder: h}, nil
		}
		// A little jitter: waiters for one client do not ask together.
		wait := c.cfg.WaitPoll/2 + rand.N(c.cfg.WaitPoll/2+1)
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %s: %w", ErrAbsent, client, context.Cause(ctx))
		}
		t.Stop()
	}
}

// forwarder sends events for a client to the server holding it.
type forwarder struct {
	c      *Cluster
	client string
	holder *clusterv1.Holder
}

// Handle implements host.Handler: ev goes to the holder on a forward link,
// with its target set; ev itself is left as it was. An event the holder
// did not take (it no longer holds the client, it is draining, or it
// cannot be reached) fails with an error wrapping host.ErrNotDelivered,
// and that holder is not used for the client for a moment, so that the
// gateway's retry looks again.
func (f *forwarder) Handle(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	fe := *ev
	fe.Target = f.client
	rep, err := f.c.cfg.Forwarder.Forward(ctx, f.holder.Server, f.holder.LinkAddr, &fe)
	if errors.Is(err, host.ErrNotDelivered) {
		f.c.forget(f.client, f.holder.Server)
	}
	f.c.cfg.Observer.Forwarded(ForwardOut, host.KindOf(err))
	return rep, err
}

// Incoming answers the events other servers forward here (the link
// package's ServerConfig.Forward): each goes to the link of its target
// client. An event for a client not linked here, or arriving while this
// server drains, is refused as not delivered, unread, so that the
// forwarding server looks again.
func (c *Cluster) Incoming() host.Handler { return host.HandlerFunc(c.incoming) }

func (c *Cluster) incoming(ctx context.Context, ev *host.Event) (*host.Reply, error) {
	client := ev.Target
	l := c.Holds(client)
	if l == nil || c.draining.Load() {
		why := "not linked here"
		if l != nil {
			why = "this server is leaving the cluster"
		}
		c.cfg.Observer.Forwarded(ForwardIn, host.KindPeerUnavailable)
		return nil, &host.Error{Kind: host.KindPeerUnavailable, Message: fmt.Sprintf("client %q is %s (%s)", client, why, c.cfg.Name),
			Err: host.ErrNotDelivered}
	}
	fe := *ev
	fe.Target = ""
	rep, err := l.Handle(ctx, &fe)
	c.cfg.Observer.Forwarded(ForwardIn, host.KindOf(err))
	return rep, err
}

// Leave starts leaving the cluster: this server answers no more lookups
// (other servers find its clients absent until they relink elsewhere),
// refuses forwarded events as not delivered, and says draining in the
// members poll. Its clients' links are left to the caller to end. Leave
// does not block.
func (c *Cluster) Leave() {
	if c.draining.Swap(true) {
		return
	}
	c.mu.Lock()
	var subs []*nats.Subscription
	for _, h := range c.held {
		if h.sub != nil {
			subs = append(subs, h.sub)
			h.sub = nil
		}
	}
	c.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	if c.eng.nc.IsConnected() {
		if err := c.eng.nc.FlushTimeout(c.cfg.LookupTimeout); err != nil {
			c.log.Warn("NATS flush while leaving", "error", err)
		}
	}
	c.log.Info("left the cluster: its clients are told to relink elsewhere", "clients", len(subs))
}

// reclaimAll publishes again the claim of every client held here: after
// NATS reconnected, or a member appeared (a healed partition), so that a
// duplicate link made meanwhile is ended on one side.
func (c *Cluster) reclaimAll() {
	if c.draining.Load() {
		return
	}
	c.mu.Lock()
	hs := make(map[string]*holding, len(c.held))
	for k, h := range c.held {
		hs[k] = h
	}
	c.mu.Unlock()
	for k, h := range hs {
		c.publishClaim(k, h)
	}
}

// answerMembers answers a members poll with this server.
func (c *Cluster) answerMembers(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	data, err := proto.Marshal(c.self())
	if err == nil {
		_ = m.Respond(data)
	}
}

// self describes this server as a member.
func (c *Cluster) self() *clusterv1.Member {
	st := StateUp
	if c.draining.Load() {
		st = StateDraining
	}
	return &clusterv1.Member{Name: c.cfg.Name, LinkAddr: c.cfg.LinkAddr, State: st, Clients: uint32(c.Held()),
		StartedUnixNano: c.started.UnixNano()}
}

// pollMembers polls the members every MemberPoll until Close.
func (c *Cluster) pollMembers() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.MemberPoll)
	defer t.Stop()
	for {
		c.pollOnce()
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

// pollOnce asks every member to describe itself, collects the answers for
// memberWindow and updates the members: one that appeared makes this
// server claim its clients again (a healed partition); one that stopped
// answering has its clients forgotten from the cache.
func (c *Cluster) pollOnce() {
	inbox := c.eng.nc.NewRespInbox()
	answers := make(chan *nats.Msg, 256)
	sub, err := c.eng.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.eng.nc.PublishRequest(c.subject("members"), inbox, nil); err != nil {
		return
	}
	seen := map[string]*clusterv1.Member{}
	timer := time.NewTimer(memberWindow)
	defer timer.Stop()
collect:
	for {
		select {
		case m := <-answers:
			var mb clusterv1.Member
			if proto.Unmarshal(m.Data, &mb) == nil && host.CheckName(mb.Name) == nil && mb.Name != c.cfg.Name {
				seen[mb.Name] = &mb
			}
		case <-timer.C:
			break collect
		case <-c.stop:
			return
		}
	}
	now := time.Now()
	var appeared, gone []string
	c.mu.Lock()
	for name, mb := range seen {
		old := c.members[name]
		if old == nil || old.State == StateDown {
			appeared = append(appeared, name)
		}
		c.members[name] = &MemberStatus{Name: name, State: mb.State, LinkAddr: mb.LinkAddr, Clients: int(mb.Clients), LastSeen: now}
	}
	for name, m := range c.members {
		if _, ok := seen[name]; ok {
			continue
		}
		if m.State != StateDown && now.Sub(m.LastSeen) > missedPolls*c.cfg.MemberPoll {
			m.State = StateDown
			gone = append(gone, name)
		}
		if now.Sub(m.LastSeen) > forgetDown {
			delete(c.members, name)
		}
	}
	c.mu.Unlock()
	for _, name := range appeared {
		c.log.Info("member up", "server", name)
	}
	for _, name := range gone {
		c.log.Warn("member no longer answers", "server", name)
		c.forgetServer(name)
	}
	if len(appeared) > 0 {
		c.reclaimAll()
	}
}

// Members returns the servers of the cluster, this one included, sorted by
// name: those that answered the last poll with their state, and those that
// stopped answering within the last minutes as down.
func (c *Cluster) Members() []MemberStatus {
	s := c.self()
	out := []MemberStatus{{Name: s.Name, State: s.State, LinkAddr: s.LinkAddr, Clients: int(s.Clients), Self: true, LastSeen: time.Now()}}
	c.mu.Lock()
	for _, m := range c.members {
		out = append(out, *m)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// MembersUp counts the members up (this one included, unless draining).
func (c *Cluster) MembersUp() int {
	n := 0
	for _, m := range c.Members() {
		if m.State == StateUp {
			n++
		}
	}
	return n
}

// Close leaves the cluster at once: the NATS connection closes (and with
// it every presence subscription), the embedded NATS server stops, and
// Close returns when every goroutine of the cluster is done. Links are
// not ended: they are the caller's.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.stop)
	c.mu.Unlock()
	c.eng.close()
	c.wg.Wait()
	return nil
}
