package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startServerProc starts `restpipe server` on addr and returns it with the
// address it listens on.
func startServerProc(t testing.TB, dir, addr string, extra ...string) (*proc, string) {
	t.Helper()
	args := append([]string{"server", "--listen", addr}, identityFlags(dir, "server")...)
	p := startProc(t, "server", nil, append(args, extra...)...)
	l := p.waitLog(0, 10*time.Second, "listening", nil)
	return p, l.str("link")
}

func TestServerKilledAndRestarted(t *testing.T) {
	t.Parallel()
	dir := testPKI(t, "c1", "c2")
	srv, addr := startServerProc(t, dir, "127.0.0.1:0")
	var clients []*proc
	for _, name := range []string{"c1", "c2"} {
		c := startProc(t, name, nil, append([]string{"client", "--server", addr}, identityFlags(dir, name)...)...)
		c.waitLog(0, 10*time.Second, "link up", nil)
		clients = append(clients, c)
	}

	// Round 1: a short outage. Round 2: an outage long enough for the
	// clients' backoff to reach its cap (5s).
	for round, outage := range []time.Duration{0, 8 * time.Second} {
		marks := make([]int, len(clients))
		for i, c := range clients {
			marks[i] = c.mark()
		}
		srv.signal(syscall.SIGKILL)
		srv.wait(5 * time.Second)
		for i, c := range clients {
			c.waitLog(marks[i], 10*time.Second, "link down", nil)
		}
		time.Sleep(outage) // the outage itself is the scenario
		restarted := time.Now()
		srv, _ = startServerProc(t, dir, addr)
		for i, c := range clients {
			c.waitLog(marks[i], 10*time.Second, "link up", nil)
			t.Logf("round %d (outage %v): client %d back %v after the restart", round, outage, i+1, time.Since(restarted).Round(time.Millisecond))
		}
		// The cap is 5s with full jitter, plus the handshake.
		if d := time.Since(restarted); d > 7*time.Second {
			t.Errorf("round %d: clients back %v after the restart, want within 7s", round, d)
		}
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Parallel()
	dir := testPKI(t, "envclient")
	_, addr := startServerProc(t, dir, "127.0.0.1:0")
	env := []string{
		"RESTPIPE_CA=" + filepath.Join(dir, "ca.crt"),
		"RESTPIPE_CERT=" + filepath.Join(dir, "envclient.crt"),
		"RESTPIPE_KEY=" + filepath.Join(dir, "envclient.key"),
		"RESTPIPE_SERVER=" + addr,
		"RESTPIPE_SERVER_NAME=wrong-name", // overridden by the flag below
	}
	c := startProc(t, "client", env, "client", "--server-name", "server")
	l := c.waitLog(0, 10*time.Second, "link up", nil)
	if l.str("server") != "server" {
		t.Errorf("link up with %q, want server", l.str("server"))
	}
	// And the environment alone is used when no flag is given.
	bad := startProc(t, "client-envname", env, "client")
	l = bad.waitLog(0, 10*time.Second, "link attempt failed", nil)
	if !strings.Contains(l.str("error"), "wrong-name") {
		t.Errorf("error = %q, want the server name from RESTPIPE_SERVER_NAME", l.str("error"))
	}
}

func TestSIGTERMExitsZero(t *testing.T) {
	t.Parallel()
	dir := testPKI(t, "c1")
	srv, addr := startServerProc(t, dir, "127.0.0.1:0")
	c := startProc(t, "client", nil, append([]string{"client", "--server", addr}, identityFlags(dir, "c1")...)...)
	c.waitLog(0, 10*time.Second, "link up", nil)
	c.signal(syscall.SIGTERM)
	if code := c.wait(10 * time.Second); code != 0 {
		t.Errorf("client exit code after SIGTERM = %d, want 0", code)
	}
	srv.signal(syscall.SIGTERM)
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Errorf("server exit code after SIGTERM = %d, want 0", code)
	}
}

func TestCommandLineErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"server"}, 1, "--ca, --cert and --key are required"},
		{[]string{"client", "--ca", "x", "--cert", "y", "--key", "z"}, 1, "--server is required"},
		{[]string{"server", "--ca", "/nonexistent/ca.crt", "--cert", "y", "--key", "z"}, 1, "/nonexistent/ca.crt"},
		{[]string{"server", "--log-level", "loud"}, 1, "--log-level"},
		{[]string{"server", "--no-such-flag"}, 2, "no-such-flag"},
	}
	for _, tt := range tests {
		_, errOut, code := runCmd(t, nil, tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("restpipe %v: code %d, stderr %q; want %d mentioning %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	out, _, code := runCmd(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "restpipe ") {
		t.Errorf("version: %q, code %d", out, code)
	}
}
