package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/restpipe/restpipe/host/internal/drain"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	Config

	// Addr is the server's link address, host:port. Required unless Addrs
	// is set.
	Addr string

	// Addrs, when set, are the link addresses of the servers of a cluster
	// (SPEC §8), and Addr is ignored. Each connection attempt tries them
	// in a random order, the one of the last link (or attempt) last, so
	// that a client that lost a server links to another; the first that
	// links wins, and only when all fail does the client back off. A host
	// name counts as each of the addresses it resolves to (also when it is
	// the only one, in Addr).
	Addrs []string

	// Resolve returns the addresses of a host name. Default: the system's
	// resolver.
	Resolve func(ctx context.Context, host string) ([]string, error)

	// TLS returns the TLS configuration for one dial. It must require TLS
	// 1.3, verify the server and present the client's certificate. It is
	// called for every dial, so reloaded certificates apply to the next
	// connection. When its ServerName is empty, each dial verifies the
	// host part of the address it dials (without an IPv6 zone). Required.
	TLS func() *tls.Config

	// Dial opens the TCP connection. Default: a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts: it doubles from MinBackoff up to MaxBackoff, and each wait
	// is drawn uniformly below that bound (full jitter). Defaults 100ms
	// and 5s.
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// StableAfter is how long a link must have lived for the backoff to
	// start again from MinBackoff when it drops. Default 10s.
	StableAfter time.Duration
}

// WithDefaults returns c with every zero field set to its default: the
// system resolver, net.Dialer, backoff from 100ms to 5s, stable after 10s.
func (c ClientConfig) WithDefaults() ClientConfig {
	c.Config = c.Config.WithDefaults()
	if c.Resolve == nil {
		c.Resolve = net.DefaultResolver.LookupHost
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	setDuration(&c.MinBackoff, 100*time.Millisecond)
	setDuration(&c.MaxBackoff, 5*time.Second)
	setDuration(&c.StableAfter, 10*time.Second)
	return c
}

// Validate reports the first field that cannot work, counting zero fields
// as their defaults. It changes nothing.
func (c ClientConfig) Validate() error {
	c = c.WithDefaults()
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.Addr == "" && len(c.Addrs) == 0 {
		return errors.New("link: client Addr is required")
	}
	for _, a := range append([]string{c.Addr}, c.Addrs...) {
		if a == "" && len(c.Addrs) > 0 {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("link: client Addr %q: %w", a, err)
		}
	}
	if c.TLS == nil {
		return errors.New("link: client TLS is required")
	}
	if err := checkTLS(c.TLS(), false); err != nil {
		return err
	}
	if c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff || c.StableAfter < 0 {
		return fmt.Errorf("link: backoff must satisfy 0 < MinBackoff (%v) <= MaxBackoff (%v)", c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Client keeps one link to the server up: Run dials, serves the session
// while it lives, and dials again after a backoff, forever.
type Client struct {
	cfg ClientConfig
	ymx *yamuxConfigs // shared by its successive sessions

	draining drain.Gate // closed: refuse new events from the server

	mu      sync.Mutex
	current *Session
	changed chan struct{} // closed and replaced whenever current changes
	dials   int           // connection attempts so far
	ups     int           // links established so far
	last    string        // the address of the last link or attempt, tried last next time
}

// NewClient returns a Client; call Run to connect.
func NewClient(cfg ClientConfig) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, changed: make(chan struct{})}
	c.ymx = &yamuxConfigs{cfg: &c.cfg.Config}
	return c, nil
}

// Run keeps the link up until ctx ends, then closes it and returns nil once
// every goroutine it started is done. It blocks; run it once.
func (c *Client) Run(ctx context.Context) error {
	log := c.cfg.Logger
	attempt := 0
	for {
		sess, err := c.connect(ctx)
		if err == nil {
			log.Info("link up", append([]any{"server", sess.peer, "addr", sess.remote.String(), "software", sess.software}, sess.shape()...)...)
			c.setCurrent(sess)
			c.cfg.Observer.LinkUp(sess.peer, true)
			stop := context.AfterFunc(ctx, sess.end)
			sess.serve()
			stop()
			c.clearCurrent(sess)
			c.cfg.Observer.LinkDown(sess.peer, true, sess.Err())
			lived := time.Since(sess.since)
			if ctx.Err() == nil {
				log.Warn("link down", "server", sess.peer, "error", sess.Err(), "after", lived.Round(time.Millisecond))
			}
			if lived >= c.cfg.StableAfter {
				attempt = 0
			}
		} else if ctx.Err() == nil {
			c.cfg.Observer.LinkRefused(true, err)
			log.Warn("link attempt failed", "addr", c.addrs(), "attempt", attempt+1, "error", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		t := time.NewTimer(c.backoff(attempt))
		attempt++
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// backoff returns the wait before attempt number attempt (from 0): full
// jitter below min(MaxBackoff, MinBackoff * 2^attempt).
func (c *Client) backoff(attempt int) time.Duration {
	bound := c.cfg.MaxBackoff
	if attempt < 30 {
		bound = min(bound, c.cfg.MinBackoff<<attempt)
	}
	return time.Duration(rand.Int64N(int64(bound))) + time.Millisecond
}

// connect dials a server and completes TLS and the hello: the candidate
// addresses in turn (see ClientConfig.Addrs) until one links.
func (c *Client) connect(ctx context.Context) (*Session, error) {
	c.mu.Lock()
	c.dials++
	last := c.last
	c.mu.Unlock()
	var errs []error
	for _, cand := range candidates(ctx, c.cfg.Resolve, c.addrList(), last, c.cfg.HandshakeTimeout) {
		c.mu.Lock()
		c.last = cand.addr
		c.mu.Unlock()
		sess, err := dialSession(ctx, &c.cfg.Config, c.ymx, c.cfg.Dial, cand, c.cfg.TLS(), false, &c.draining)
		if err == nil {
			return sess, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// addrList returns the configured server addresses.
func (c *Client) addrList() []string {
	if len(c.cfg.Addrs) > 0 {
		return c.cfg.Addrs
	}
	return []string{c.cfg.Addr}
}

// addrs returns the configured server addresses, for logs.
func (c *Client) addrs() string { return strings.Join(c.addrList(), ",") }

func (c *Client) setCurrent(s *Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = s
	c.ups++
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) clearCurrent(s *Session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == s {
		c.current = nil
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// Session returns the live session to the server, or nil while the link
// is down.
func (c *Client) Session() *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current != nil && c.current.mux.IsClosed() {
		return nil
	}
	return c.current
}

// Peer returns the live session to the server, waiting for the link to
// come up until ctx ends; then it returns an error wrapping
// ErrNotConnected.
func (c *Client) Peer(ctx context.Context) (*Session, error) {
	for {
		c.mu.Lock()
		s, changed := c.current, c.changed
		c.mu.Unlock()
		if s != nil && !s.mux.IsClosed() {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: server at %s: %w", ErrNotConnected, c.addrs(), context.Cause(ctx))
		}
	}
}

// Drain makes the link refuse new events from the server with
// peer_unavailable ("shutting down"); events already in flight go on, and
// this node can still send events. See WaitIdle.
func (c *Client) Drain() { c.draining.Close() }

// WaitIdle waits until no event from the server is in flight, or ctx ends.
// Call Drain first.
func (c *Client) WaitIdle(ctx context.Context) error {
	if s := c.Session(); s != nil {
		return s.waitIdle(ctx)
	}
	return nil
}

// ClientStats counts a client's connection attempts and links.
type ClientStats struct {
	Dials int // connection attempts
	Ups   int // links established
}

// Stats returns the client's counts so far.
func (c *Client) Stats() ClientStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ClientStats{Dials: c.dials, Ups: c.ups}
}
