package link

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Registry tracks which session serves each peer name. A Server fills it as
// links come and go; the gateway reads it to route events. Implementations
// are safe for concurrent use. The in-memory MemRegistry serves one server;
// a cluster of servers will share one that knows where each peer is.
type Registry interface {
	// Register makes s the session for its peer name and returns the
	// session it replaces, or nil. The caller ends the replaced session.
	Register(s *Session) (replaced *Session)

	// Unregister removes s if it is still the session for its name.
	Unregister(s *Session)

	// Lookup returns the live session for name, waiting for one to
	// register until ctx ends; then it returns an error wrapping
	// ErrNotConnected.
	Lookup(ctx context.Context, name string) (*Session, error)

	// Sessions returns the registered sessions, sorted by peer name.
	Sessions() []*Session

	// Len returns how many sessions are registered. It is called on every
	// link up and down, so it must not cost more than a lock.
	Len() int
}

// MemRegistry is the in-memory Registry of a single server.
type MemRegistry struct {
	mu      sync.Mutex
	peers   map[string]*Session
	waiters map[string]*waiter
}

// waiter is closed when a session for its name registers; n counts the
// lookups waiting on it, so the last one to give up removes it.
type waiter struct {
	ch chan struct{}
	n  int
}

// NewRegistry returns an empty MemRegistry.
func NewRegistry() *MemRegistry {
	return &MemRegistry{peers: make(map[string]*Session), waiters: make(map[string]*waiter)}
}

// Register implements Registry.
func (r *MemRegistry) Register(s *Session) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.peers[s.peer]
	r.peers[s.peer] = s
	if w, ok := r.waiters[s.peer]; ok {
		close(w.ch)
		delete(r.waiters, s.peer)
	}
	return old
}

// Unregister implements Registry.
func (r *MemRegistry) Unregister(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers[s.peer] == s {
		delete(r.peers, s.peer)
	}
}

// Lookup implements Registry.
func (r *MemRegistry) Lookup(ctx context.Context, name string) (*Session, error) {
	for {
		r.mu.Lock()
		// A registered session that is closing does not count: its owner
		// is about to unregister it, and a new link may replace it.
		s := r.peers[name]
		if s != nil && !s.mux.IsClosed() {
			r.mu.Unlock()
			return s, nil
		}
		w, ok := r.waiters[name]
		if !ok {
			w = &waiter{ch: make(chan struct{})}
			r.waiters[name] = w
		}
		w.n++
		r.mu.Unlock()
		select {
		case <-w.ch:
		case <-ctx.Done():
			r.dropWaiter(name, w)
			return nil, fmt.Errorf("%w: %s: %w", ErrNotConnected, name, context.Cause(ctx))
		}
	}
}

// Get returns the live session registered for name, or nil, without
// waiting.
func (r *MemRegistry) Get(name string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.peers[name]; s != nil && !s.mux.IsClosed() {
		return s
	}
	return nil
}

// dropWaiter counts one lookup less on w and forgets w when it was the last,
// so lookups for names that never connect leave nothing behind.
func (r *MemRegistry) dropWaiter(name string, w *waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.n--
	if w.n == 0 && r.waiters[name] == w {
		delete(r.waiters, name)
	}
}

// Len implements Registry.
func (r *MemRegistry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.peers)
}

// Sessions implements Registry.
func (r *MemRegistry) Sessions() []*Session {
	r.mu.Lock()
	out := make([]*Session, 0, len(r.peers))
	for _, s := range r.peers {
		out = append(out, s)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].peer < out[j].peer })
	return out
}
