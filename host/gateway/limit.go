package gateway

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// limitListener serves at most max connections at once. When all are
// taken and a new caller connects, the connection idle the longest
// (between two requests of a keep-alive client) is closed to make room:
// idle keep-alive connections never lock new callers out. When none is
// idle, the new connection waits (and the ones after it in the kernel's
// accept queue) until one ends.
//
// It learns which connections are idle from the http.Server's ConnState
// hook (see HTTPServer). Its methods are safe for concurrent use.
type limitListener struct {
	net.Listener
	slots chan struct{} // one token per connection served

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
	done  chan struct{} // closed by Close
	once  sync.Once
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), conns: map[*limitedConn]struct{}{}, done: make(chan struct{})}
}

// Accept accepts the next connection, then waits for a free slot for it,
// shedding the idlest connection when there is none. (Shedding only once
// a caller is there: net/http calls Accept ahead of any caller.)
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.slots <- struct{}{}:
	default:
		l.shedIdlest()
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
	lc := &limitedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc, nil
}

// shedIdlest closes the connection that has been idle the longest, if
// any; its slot frees when net/http notices.
func (l *limitListener) shedIdlest() {
	l.mu.Lock()
	var oldest *limitedConn
	for c := range l.conns {
		if !c.idleSince.IsZero() && (oldest == nil || c.idleSince.Before(oldest.idleSince)) {
			oldest = c
		}
	}
	if oldest != nil {
		oldest.idleSince = time.Time{} // shed once
	}
	l.mu.Unlock()
	if oldest != nil {
		oldest.Close()
	}
}

// Close stops accepting.
func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// connState follows each connection's state for shedding: idle between
// requests, busy otherwise.
func (l *limitListener) connState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateIdle:
		lc.idleSince = time.Now()
	case http.StateNew, http.StateActive:
		lc.idleSince = time.Time{}
	}
}

// limitedConn is a served connection; closing it frees its slot, once.
type limitedConn struct {
	net.Conn
	l         *limitListener
	idleSince time.Time // guarded by l.mu; zero unless idle
	once      sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
