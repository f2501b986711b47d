package link

import (
	"fmt"
	"sync"
	"time"
)

// pinger pings the peer every KeepAliveInterval and ends the session when
// an answer takes longer than KeepAliveTimeout (yamux's Ping waits that
// long), so a dead or silent link is detected within their sum. It records
// each round trip for RTT, and closes the streams this side kept idle for
// longer than IdleStreamTimeout.
//
// It runs on a timer rather than in a goroutine of its own: a goroutine
// exists only while a ping is out, which saves a parked stack per idle
// link (a server holds thousands).
type pinger struct {
	s     *Session
	timer *time.Timer

	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup // a ping in progress
}

// startPinger starts pinging s until stop.
func (s *Session) startPinger() *pinger {
	p := &pinger{s: s}
	// Under mu, which ping takes first: the timer may fire before
	// AfterFunc has returned.
	p.mu.Lock()
	p.timer = time.AfterFunc(s.cfg.KeepAliveInterval, p.ping)
	p.mu.Unlock()
	return p
}

// ping runs on the timer's goroutine: one ping, then the next timer.
func (p *pinger) ping() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.running.Add(1)
	p.mu.Unlock()
	defer p.running.Done()

	s := p.s
	rtt, err := s.mux.Ping()
	if err != nil {
		if !s.mux.IsClosed() {
			s.log.Warn("closing link: the peer stopped answering pings", "error", err)
			s.shutdown(fmt.Errorf("%w (%v)", ErrKeepAlive, err))
		}
		return
	}
	s.rtt.Store(int64(rtt))
	s.tidyIdle(time.Now().Add(-IdleStreamTimeout))
	p.mu.Lock()
	if !p.stopped {
		p.timer.Reset(s.cfg.KeepAliveInterval)
	}
	p.mu.Unlock()
}

// stop ends the pings and waits for one in progress (which the session's
// end cuts short).
func (p *pinger) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.timer.Stop()
	p.running.Wait()
}
