package link

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/internal/drain"
)

// candidate is one address a connection attempt may dial: addr is dialled,
// host is what the server's certificate is verified against when the TLS
// configuration names nothing.
type candidate struct {
	addr string
	host string
}

// candidates returns the addresses of one connection attempt to the
// servers at addrs, in the order to try them: host names resolved (each
// of their addresses a candidate; a name that does not resolve is kept, so
// the dial reports why), shuffled, the address last used moved to the end.
func candidates(ctx context.Context, resolve func(context.Context, string) ([]string, error), addrs []string, last string, timeout time.Duration) []candidate {
	var out []candidate
	seen := map[string]bool{}
	add := func(c candidate) {
		if !seen[c.addr] {
			seen[c.addr] = true
			out = append(out, c)
		}
	}
	for _, a := range addrs {
		h, port, err := net.SplitHostPort(a)
		if err != nil {
			continue // Validate refused it
		}
		bare := stripZone(h)
		if strings.Contains(h, "%") || net.ParseIP(bare) != nil {
			add(candidate{a, bare})
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		ips, err := resolve(rctx, h)
		cancel()
		if err != nil || len(ips) == 0 {
			add(candidate{a, h})
			continue
		}
		for _, ip := range ips {
			add(candidate{net.JoinHostPort(ip, port), h})
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	for i, c := range out {
		if c.addr == last && i < len(out)-1 {
			copy(out[i:], out[i+1:])
			out[len(out)-1] = c
			break
		}
	}
	return out
}

// stripZone returns a host without its IPv6 zone.
func stripZone(h string) string {
	if i := strings.IndexByte(h, '%'); i >= 0 {
		return h[:i]
	}
	return h
}

// dialSession dials cand, runs TLS with tc (verifying cand.host when tc
// names no server) and the hello (a forward link's when forward is set),
// all within cfg.HandshakeTimeout, and returns the session, not yet
// serving: the caller runs serve.
func dialSession(ctx context.Context, cfg *Config, ymx *yamuxConfigs, dial func(context.Context, string, string) (net.Conn, error),
	cand candidate, tc *tls.Config, forward bool, draining *drain.Gate) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if tc.ServerName == "" {
		tc = tc.Clone()
		tc.ServerName = cand.host
	}
	conn, err := dial(ctx, "tcp", cand.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", cand.addr, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	tlsConn := tls.Client(&batchConn{Conn: conn}, tc)
	tlsStart := time.Now()
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", cand.addr, err)
	}
	state := tlsConn.ConnectionState()
	name, err := host.CertName(state.PeerCertificates[0])
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	tlsTime := time.Since(tlsStart)
	welcome, err := clientHelloKind(tlsConn, cfg, forward, tlsTime)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("hello with %s: %w", cand.addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	sess, err := newSession(cfg, ymx, tlsConn, false, name, welcome, draining)
	if err != nil {
		conn.Close()
	}
	return sess, err
}
