// Package drain is the one drain counter of a node's parts. The gateway's
// local events, a link session's events from its peer and a plugin
// instance's events each count their work in flight in a Counter, which
// refuses new work once its owner drains and tells the owner when the last
// of it has ended.
package drain

import (
	"sync"
	"sync/atomic"
)

// Gate is a draining flag: once closed, every Counter that follows it
// refuses new work. A link server's gate is followed by the counters of all
// its sessions, those linked after the drain began included. The zero
// value is open.
type Gate struct{ closed atomic.Bool }

// Close starts the drain. It cannot be undone.
func (g *Gate) Close() { g.closed.Store(true) }

// Closed reports whether the drain has begun.
func (g *Gate) Closed() bool { return g.closed.Load() }

// Counter counts work in flight. Enter and Leave are two atomic operations
// and take no lock, for the event paths; Idle takes a mutex. Set Gate, if
// at all, before the first Enter; the zero value follows a gate of its own
// (see Drain) and is ready to use. A Counter must not be copied after
// first use.
type Counter struct {
	// Gate is the drain this counter follows; nil: its own.
	Gate *Gate

	own  Gate
	n    atomic.Int64
	mu   sync.Mutex
	idle chan struct{} // closed once draining with nothing in flight; made by Idle
	shut bool          // idle is closed
}

func (c *Counter) gate() *Gate {
	if c.Gate != nil {
		return c.Gate
	}
	return &c.own
}

// Enter counts one more piece of work and returns how many are in flight
// with it. Once the counter drains, it counts nothing and returns false:
// the caller refuses the work, and must not call Leave for it.
//
// A draining counter refuses before it counts, so that a stream of refused
// work cannot keep it from ever reading zero; only work racing the drain's
// start is counted and then refused.
func (c *Counter) Enter() (n int, ok bool) {
	if c.gate().Closed() {
		return int(c.n.Load()), false
	}
	m := c.n.Add(1)
	if c.gate().Closed() {
		c.Leave()
		return int(m - 1), false
	}
	return int(m), true
}

// Leave counts a piece of work entered with Enter as done.
func (c *Counter) Leave() {
	if c.n.Add(-1) == 0 && c.gate().Closed() {
		c.signal()
	}
}

// Drain closes the counter's own gate: Enter refuses from now on. A
// counter that follows another Gate drains when that gate closes.
func (c *Counter) Drain() { c.gate().Close() }

// Draining reports whether the counter refuses new work.
func (c *Counter) Draining() bool { return c.gate().Closed() }

// InFlight returns how many pieces of work are in flight.
func (c *Counter) InFlight() int { return int(c.n.Load()) }

// Idle returns a channel closed once the counter drains with nothing in
// flight. Call it once the drain has begun: before, a counter already at
// zero would not be told that its gate closed.
func (c *Counter) Idle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeIfIdle()
}

// signal is Leave's: the last piece of work has just left a draining
// counter. A Leave that loses a race with an Enter refused by the drain
// sees zero again when that one leaves.
func (c *Counter) signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeIfIdle()
}

// closeIfIdle closes the idle channel (made on first need) if the counter
// drains with nothing in flight, and returns it; c.mu is held.
func (c *Counter) closeIfIdle() <-chan struct{} {
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	if !c.shut && c.gate().Closed() && c.n.Load() == 0 {
		c.shut = true
		close(c.idle)
	}
	return c.idle
}
