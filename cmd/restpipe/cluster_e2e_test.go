package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestClusterEveryServerReachesEveryClient: three servers with embedded
// NATS, nine clients spread over them; every server reaches every client,
// all at once, and the client sees the server whose gateway took the event
// as its caller (the forward link carries the original caller).
func TestClusterEveryServerReachesEveryClient(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 3, nineClients)
	for i, c := range nineClients {
		// Each client is given every server, its own first in line: the
		// order is shuffled, so the spread is random.
		_ = i
		m.startClient(c, "")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, 3*len(nineClients)*3)
	for round := 0; round < 3; round++ {
		for _, sm := range m.servers {
			for _, c := range nineClients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := echoVia(hc, sm, c, 20*time.Second); err != nil {
						errs <- fmt.Errorf("%s -> %s: %w", sm.name, c, err)
					}
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	spread := map[string]int{}
	for _, c := range nineClients {
		if h := m.holder(c); h != nil {
			spread[h.name]++
		}
	}
	t.Logf("clients per server: %v", spread)
	var st nodeStatus
	var names []string
	m.waitFor(15*time.Second, "s1's /status to list every member up", func() bool {
		var err error
		if st, err = m.status(m.servers[0]); err != nil {
			return false
		}
		names = names[:0]
		for _, mb := range st.Cluster.Members {
			names = append(names, mb.Name+"="+mb.State)
		}
		return slices.Equal(names, []string{"s1=up", "s2=up", "s3=up"})
	})
	for _, p := range st.Peers {
		if p.Server != "s1" {
			t.Errorf("/status of s1: peer %s held by %q, want s1", p.Name, p.Server)
		}
	}
	// The status page shows the members too, and who holds each peer.
	resp, err := http.Get("http://" + m.servers[1].http + "/ui/api/state")
	if err != nil {
		t.Fatal(err)
	}
	var ust struct {
		Cluster *struct {
			Members []struct {
				Name, State string
				Self        bool
			}
		}
		Peers struct {
			Rows []struct{ Name, Server string }
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&ust)
	resp.Body.Close()
	if err != nil || ust.Cluster == nil || len(ust.Cluster.Members) != 3 {
		t.Errorf("/ui/api/state of s2: cluster %+v (err %v), want 3 members", ust.Cluster, err)
	}
	for _, r := range ust.Peers.Rows {
		if r.Server != "s2" {
			t.Errorf("/ui/api/state of s2: peer %s held by %q, want s2", r.Name, r.Server)
		}
	}
	forwarded := false
	for _, sm := range m.servers {
		body := scrapeText(t, sm.http)
		if strings.Contains(body, `hop="forward"`) && strings.Contains(body, "restpipe_cluster_forwarded_events_total") {
			forwarded = true
		}
		if !strings.Contains(body, "restpipe_cluster_members_up") {
			t.Errorf("%s: no restpipe_cluster_members_up in /metrics", sm.name)
		}
	}
	if !forwarded {
		t.Error("no server's /metrics shows a forwarded event")
	}
}

// TestClusterLargeBodyForwarded: 256 MiB up and back through a server that
// does not hold the client: the body streams over the forward link both
// ways, and no process's memory grows with it.
func TestClusterLargeBodyForwarded(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 2, []string{"c1"})
	m.startClient("c1", m.servers[1].link) // held by s2, called on s1
	const size = 256 << 20
	sum, back := sha256.New(), sha256.New()
	pr, pw := io.Pipe()
	go func() {
		buf := pattern(256 << 10)
		for sent := 0; sent < size; sent += len(buf) {
			sum.Write(buf)
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	start := time.Now()
	resp, err := httpPost("http://"+m.servers[0].http+"/client/c1/echo", pr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(back, resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	if err != nil || n != size || string(sum.Sum(nil)) != string(back.Sum(nil)) {
		t.Fatalf("echoed %d of %d bytes (status %d), err %v", n, size, resp.StatusCode, err)
	}
	var report []string
	for name, pid := range map[string]int{"s1 (forwarding)": m.servers[0].p.cmd.Process.Pid, "s2 (holding)": m.servers[1].p.cmd.Process.Pid,
		"c1": m.clients["c1"].cmd.Process.Pid} {
		b := peakRSS(t, pid)
		report = append(report, fmt.Sprintf("%s %.1f MiB", name, float64(b)/(1<<20)))
		if b > 120<<20 {
			t.Errorf("%s peak RSS %d MiB while streaming %d MiB: it grows with the body", name, b>>20, size>>20)
		}
	}
	slices.Sort(report)
	t.Logf("%d MiB forwarded up and back in %v (%.0f MiB/s each way); peak RSS: %s", size>>20, elapsed.Round(time.Millisecond),
		float64(size>>20)/elapsed.Seconds(), strings.Join(report, ", "))
}

// TestClusterRefusesClientCertificate: a process with a client certificate
// (no server role) cannot join the cluster's routes, and cannot open a
// forward link; both are refused with a log line.
func TestClusterRefusesClientCertificate(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 2, []string{"intruder"})
	s1 := m.servers[0]
	mark := s1.p.mark()
	// As a member: the server refuses to start without the role.
	_, errOut, code := runCmd(t, nil, append([]string{"server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--cluster-listen", freeAddr(t), "--cluster-join", strings.Join(m.routes, ",")}, identityFlags(m.dir, "intruder")...)...)
	if code == 0 || !strings.Contains(errOut, "server role") {
		t.Errorf("a server with a client certificate: exit %d, %s", code, errOut)
	}
	// As a route: a TLS connection to s1's route port with the client's
	// certificate is refused, and logged.
	if err := dialRoute(m.dir, "intruder", s1.route); err == nil {
		t.Error("a route from a client certificate was accepted")
	}
	s1.p.waitLog(mark, 10*time.Second, "refused a route connection: only servers may join the cluster", nil)
	// As a forward link: refused with a sentence, and logged.
	mark = s1.p.mark()
	if err := dialForward(t, m.dir, "intruder", "s1", s1.link); err == nil || !strings.Contains(err.Error(), "server role") {
		t.Errorf("a forward link from a client certificate: %v, want a refusal naming the server role", err)
	}
	s1.p.waitLog(mark, 10*time.Second, "link refused", func(l logLine) bool { return strings.Contains(l.str("error"), "server role") })
	m.waitMembers(2, 5*time.Second)
}

// TestClusterPolicySeesOriginalCaller: a client's policy is checked
// against the server whose gateway took the event, carried over the
// forward link, never against the server that relayed it: c1, linked to
// s2, allows only s1; an event from s1's gateway (forwarded by s2 to c1)
// passes, one from s2's own gateway is forbidden.
func TestClusterPolicySeesOriginalCaller(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 2, []string{"c1"})
	policy := writePolicyFile(t, t.TempDir(), `allow {
  peers  = ["s1"]
  routes = ["get_echo"]
}
`)
	p := startProc(t, "c1", nil, append([]string{"client", "--server", m.servers[1].link, "--plugins", m.plugins, "--policy", policy},
		identityFlags(m.dir, "c1")...)...)
	p.waitLog(0, 20*time.Second, "link up", nil)
	hc := &http.Client{Timeout: 20 * time.Second}
	if err := echoVia(hc, m.servers[0], "c1", 10*time.Second); err != nil {
		t.Errorf("s1 -> s2 -> c1 (allowed: the caller is s1): %v", err)
	}
	err := echoVia(hc, m.servers[1], "c1", 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "status 403") || !strings.Contains(err.Error(), `"kind":"forbidden"`) {
		t.Errorf("s2 -> c1 (the caller is s2, not allowed): %v, want 403 forbidden", err)
	}
	p.waitLog(0, 10*time.Second, "event refused by policy", func(l logLine) bool { return l.str("peer") == "s2" })
}

// TestClusterDeadlineAndCancelCrossBothHops: a forwarded event keeps its
// request id on every node, its deadline ends it on time, and a caller
// hanging up cancels the handler on the client two hops away.
func TestClusterDeadlineAndCancelCrossBothHops(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 2, []string{"c1"})
	c1 := m.startClient("c1", m.servers[1].link) // held by s2, called on s1
	s1 := m.servers[0]

	// The deadline: 1 s on a handler that would sleep 10 s.
	mark := c1.mark()
	req, _ := http.NewRequest("GET", "http://"+s1.http+"/client/c1/echo?sleep=10s", nil)
	req.Header.Set("X-Event-Timeout", "1s")
	req.Header.Set("X-Request-Id", "deadline-1")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 504 || !strings.Contains(string(body), `"kind":"timeout"`) || took > 4*time.Second {
		t.Errorf("forwarded event with a 1s deadline: %d %s after %v, want 504 timeout after about 1s", resp.StatusCode, body, took)
	}
	if id := resp.Header.Get("X-Request-Id"); id != "deadline-1" {
		t.Errorf("X-Request-Id = %q, want deadline-1", id)
	}
	c1.waitLog(mark, 5*time.Second, "event from peer", func(l logLine) bool {
		return l.str("request_id") == "deadline-1" && l.str("kind") != ""
	})

	// Cancellation: the caller hangs up while c1's handler sleeps (30 s);
	// the handler ends at once, canceled. The hang-up waits for the event
	// to be in c1's echo plugin: an event canceled before it left s1 never
	// reaches c1 (and then c1 has nothing to log).
	c1HTTP := c1.waitLog(0, 10*time.Second, "listening", nil).str("http")
	mark = c1.mark()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://"+s1.http+"/client/c1/echo?sleep=30s", nil)
	req.Header.Set("X-Request-Id", "cancel-1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, 10*time.Second, "the event in c1's echo plugin", func() bool { return pluginStatus(t, c1HTTP, "echo").InFlight == 1 })
	hungUp := time.Now()
	cancel()
	<-done
	l := c1.waitLog(mark, 5*time.Second, "event from peer", func(l logLine) bool { return l.str("request_id") == "cancel-1" })
	t.Logf("handler on c1 ended %v after the caller hung up on s1, kind %q", time.Since(hungUp).Round(time.Millisecond), l.str("kind"))
	if k := l.str("kind"); k != "canceled" {
		t.Errorf("the handler on c1 ended with %q, want canceled", k)
	}
}
