package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host/link"
	"github.com/restpipe/restpipe/host/pki"
)

// members is a cluster of server processes with embedded NATS on loopback,
// and the client processes linked to them, for the tests of SPEC §8.
type members struct {
	t       testing.TB
	dir     string // the PKI
	plugins string // the clients' plugins: echo
	servers []*member
	clients map[string]*proc
	routes  []string // every server's route address, as the others join it
}

// member is one server process of a test cluster.
type member struct {
	name  string
	p     *proc
	route string // its --cluster-listen
	join  []string
	link  string // its link address
	http  string // its gateway
	extra []string
}

// freeAddr returns a loopback address with a port free at this moment.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// clusterPKI makes a CA, server certificates with the server role for
// servers, and client certificates for clients.
func clusterPKI(t testing.TB, servers, clients []string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if _, errOut, code := runCmd(t, nil, "pki", "init", "--dir", dir); code != 0 {
		t.Fatalf("pki init: %s", errOut)
	}
	for _, name := range servers {
		if _, errOut, code := runCmd(t, nil, "pki", "issue", "--dir", dir, "--name", name, "--host", "127.0.0.1", "--role", "server"); code != 0 {
			t.Fatalf("pki issue %s: %s", name, errOut)
		}
	}
	for _, name := range clients {
		if _, errOut, code := runCmd(t, nil, "pki", "issue", "--dir", dir, "--name", name); code != 0 {
			t.Fatalf("pki issue %s: %s", name, errOut)
		}
	}
	return dir
}

// startMembers starts n clustered servers s1..sn; each gets extra flags
// too. It returns once every server sees every other up.
func startMembers(t testing.TB, n int, clients []string, extra ...string) *members {
	t.Helper()
	var names []string
	for i := 1; i <= n; i++ {
		names = append(names, fmt.Sprintf("s%d", i))
	}
	m := &members{t: t, dir: clusterPKI(t, names, clients), plugins: pluginDir(t, "echo"), clients: map[string]*proc{}}
	for range names {
		m.routes = append(m.routes, freeAddr(t))
	}
	for i, name := range names {
		sm := &member{name: name, route: m.routes[i], join: m.routes, link: "127.0.0.1:0", extra: extra}
		m.servers = append(m.servers, sm)
		m.start(sm)
	}
	m.waitMembers(n, 20*time.Second)
	return m
}

// start starts (or restarts, at the same addresses) a server.
func (m *members) start(sm *member) {
	m.t.Helper()
	args := append([]string{"server", "--listen", sm.link, "--cluster-listen", sm.route,
		"--cluster-join", strings.Join(sm.join, ","), "--grace", "10s"}, identityFlags(m.dir, sm.name)...)
	if sm.http != "" {
		args = append(args, "--http", sm.http)
	}
	sm.p = startProc(m.t, sm.name, nil, append(args, sm.extra...)...)
	l := sm.p.waitLog(0, 20*time.Second, "listening", nil)
	sm.link, sm.http = l.str("link"), l.str("http")
}

// linkAddrs are the servers' link addresses, as a client's --server.
func (m *members) linkAddrs() string {
	var out []string
	for _, s := range m.servers {
		out = append(out, s.link)
	}
	return strings.Join(out, ",")
}

// startClient starts a client node of the cluster with the echo plugin;
// servers is its --server (default: every server).
func (m *members) startClient(name, servers string) *proc {
	m.t.Helper()
	if servers == "" {
		servers = m.linkAddrs()
	}
	p := startProc(m.t, name, nil, append([]string{"client", "--server", servers, "--plugins", m.plugins}, identityFlags(m.dir, name)...)...)
	p.waitLog(0, 20*time.Second, "link up", nil)
	m.clients[name] = p
	return p
}

// status is a server's /status.
func (m *members) status(sm *member) (nodeStatus, error) {
	var st nodeStatus
	resp, err := http.Get("http://" + sm.http + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// waitMembers waits until every running server sees n members up.
func (m *members) waitMembers(n int, within time.Duration) {
	m.t.Helper()
	m.waitFor(within, fmt.Sprintf("%d members up everywhere", n), func() bool {
		for _, sm := range m.servers {
			st, err := m.status(sm)
			if err != nil || st.Cluster == nil {
				return false
			}
			up := 0
			for _, mb := range st.Cluster.Members {
				if mb.State == "up" {
					up++
				}
			}
			if up != n {
				return false
			}
		}
		return true
	})
}

// holder returns the server that lists client among its peers, or nil.
func (m *members) holder(client string) *member {
	for _, sm := range m.servers {
		if sm.p == nil {
			continue
		}
		st, err := m.status(sm)
		if err != nil {
			continue
		}
		for _, p := range st.Peers {
			if p.Name == client {
				return sm
			}
		}
	}
	return nil
}

// waitFor polls cond every 50 ms until it holds.
func (m *members) waitFor(within time.Duration, what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// echoReply is the echo plugin's reply.
type echoReply struct {
	Args []string `json:"args"`
	Peer string   `json:"peer"`
	Node struct {
		Role string `json:"role"`
		Name string `json:"name"`
	} `json:"node"`
}

// echoVia sends GET /client/<client>/echo//<uniq> to server sm and checks
// that the client answered and saw sm as the caller.
func echoVia(hc *http.Client, sm *member, client string, timeout time.Duration) error {
	uniq := uniqueArg()
	req, err := http.NewRequest("GET", "http://"+sm.http+"/client/"+client+"/echo//"+uniq, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Event-Timeout", timeout.String())
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var r echoReply
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("reply %q: %w", b, err)
	}
	if r.Node.Name != client || r.Peer != sm.name || len(r.Args) != 1 || r.Args[0] != uniq {
		return fmt.Errorf("reply %s: want node %s, peer %s, args [%s]", b, client, sm.name, uniq)
	}
	return nil
}

var nineClients = []string{"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}

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

// scrapeText returns a node's /metrics.
func scrapeText(t testing.TB, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
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

// TestClusterServerKilled: a server SIGKILLed while events flow through
// every server to every client: each caller gets a reply or a clear error
// (link_lost for an event in flight on it, peer_unavailable at worst while
// its clients relink), nothing hangs, and its clients are reachable again
// through the others within dead-link detection plus the backoff.
func TestClusterServerKilled(t *testing.T) {
	t.Parallel()
	clients := nineClients[:6]
	m := startMembers(t, 3, clients)
	for _, c := range clients {
		m.startClient(c, "")
	}
	victim := m.servers[2]
	var victimsClients []string
	for _, c := range clients {
		if m.holder(c) == victim {
			victimsClients = append(victimsClients, c)
		}
	}
	survivors := m.servers[:2]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	var bad []string
	hc := &http.Client{Timeout: 40 * time.Second}
	for _, sm := range survivors {
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					err := echoVia(hc, sm, c, 15*time.Second)
					class := "ok"
					if err != nil {
						class = "other"
						for _, k := range []string{"link_lost", "peer_unavailable"} {
							if strings.Contains(err.Error(), `"kind":"`+k+`"`) {
								class = k
							}
						}
					}
					mu.Lock()
					counts[class]++
					if class == "other" || time.Since(start) > 20*time.Second {
						bad = append(bad, fmt.Sprintf("%s->%s after %v: %v", sm.name, c, time.Since(start), err))
					}
					mu.Unlock()
				}
			}()
		}
	}
	time.Sleep(500 * time.Millisecond) // load before the kill
	killed := time.Now()
	victim.p.signal(syscall.SIGKILL)
	victim.p.wait(10 * time.Second)
	victim.p = nil
	m.servers = survivors
	// Every client of the victim is reachable through both survivors again.
	var back time.Duration
	for _, c := range victimsClients {
		m.waitFor(20*time.Second, c+" reachable again through s1 and s2", func() bool {
			for _, sm := range survivors {
				if echoVia(&http.Client{Timeout: 5 * time.Second}, sm, c, 2*time.Second) != nil {
					return false
				}
			}
			return true
		})
		back = max(back, time.Since(killed))
	}
	close(stop)
	wg.Wait()
	t.Logf("victim s3 held %v; all reachable again %v after the kill; outcomes %v", victimsClients, back.Round(time.Millisecond), counts)
	for _, b := range bad {
		t.Error(b)
	}
	if back > 12*time.Second {
		t.Errorf("the victim's clients came back after %v, want within detection (6 s) + backoff", back)
	}
}

// TestClusterDuplicateIdentity: a second process with the same client
// identity links to another server; the older link is ended within 2 s
// and events reach the newer one.
func TestClusterDuplicateIdentity(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 2, []string{"c1"})
	old := m.startClient("c1", m.servers[0].link)
	// An event in flight on the older link when the newer one wins fails
	// with link_lost.
	inflight := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+m.servers[0].http+"/client/c1/echo?sleep=20s", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	m.waitFor(5*time.Second, "the event in flight on the older link", func() bool {
		st, err := m.status(m.servers[0])
		return err == nil && slices.ContainsFunc(st.Peers, func(p peerStatus) bool { return p.Name == "c1" && p.EventsOut == 1 })
	})
	mark := old.mark()
	start := time.Now()
	m.startClient("c1", m.servers[1].link)
	old.waitLog(mark, 2*time.Second, "link down", nil)
	took := time.Since(start)
	select {
	case got := <-inflight:
		if !strings.HasPrefix(got, "502 ") || !strings.Contains(got, `"kind":"link_lost"`) {
			t.Errorf("the event in flight on the replaced link: %s, want 502 link_lost", got)
		}
	case <-time.After(5 * time.Second):
		t.Error("the event in flight on the replaced link did not end within 5 s")
	}
	m.waitFor(2*time.Second, "s1 no longer lists c1", func() bool {
		st, err := m.status(m.servers[0])
		return err == nil && !slices.ContainsFunc(st.Peers, func(p peerStatus) bool { return p.Name == "c1" })
	})
	t.Logf("older link on s1 ended %v after the newer one started", took.Round(time.Millisecond))
	// The old process relinks (to s1, all it knows) and wins in turn: the
	// newest link wins, whichever it is. Either way c1 answers through both.
	for _, sm := range m.servers {
		m.waitFor(10*time.Second, "c1 through "+sm.name, func() bool {
			return echoVia(&http.Client{Timeout: 5 * time.Second}, sm, "c1", 2*time.Second) == nil
		})
	}
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

// TestClusterPartitionHealed: a server cut off from the others' routes
// (a TCP proxy blackholes its routes) is seen down, its clients are
// unreachable from the others (peer_unavailable, never a hang), and once
// healed everything is reachable again.
func TestClusterPartitionHealed(t *testing.T) {
	t.Parallel()
	names := []string{"s1", "s2", "s3"}
	m := &members{t: t, dir: clusterPKI(t, names, []string{"c1", "c3"}), plugins: pluginDir(t, "echo"), clients: map[string]*proc{}}
	// s3's routes all go through proxies: others reach s3 through p3, s3
	// reaches s1 and s2 through p31 and p32.
	r := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	p3, p31, p32 := newFaultProxy(t, r[2]), newFaultProxy(t, r[0]), newFaultProxy(t, r[1])
	m.routes = r
	joins := [][]string{{r[0], r[1], p3.addr}, {r[0], r[1], p3.addr}, {p31.addr, p32.addr}}
	for i, name := range names {
		extra := []string{}
		if i == 2 {
			extra = []string{"--cluster-advertise", p3.addr}
		}
		sm := &member{name: name, route: r[i], join: joins[i], link: "127.0.0.1:0", extra: extra}
		m.servers = append(m.servers, sm)
		m.start(sm)
	}
	m.waitMembers(3, 20*time.Second)
	m.startClient("c1", m.servers[0].link)
	m.startClient("c3", m.servers[2].link)
	hc := &http.Client{Timeout: 20 * time.Second}
	if err := echoVia(hc, m.servers[0], "c3", 5*time.Second); err != nil {
		t.Fatalf("before the cut: s1 -> c3: %v", err)
	}
	cut := time.Now()
	for _, p := range []*faultProxy{p3, p31, p32} {
		p.blackhole()
	}
	m.waitFor(15*time.Second, "s1 sees s3 down", func() bool {
		st, err := m.status(m.servers[0])
		return err == nil && slices.ContainsFunc(st.Cluster.Members, func(mb memberStatus) bool { return mb.Name == "s3" && mb.State == "down" })
	})
	t.Logf("s3 seen down by s1 %v after the cut", time.Since(cut).Round(time.Millisecond))
	err := echoVia(hc, m.servers[0], "c3", 3*time.Second)
	if err == nil || !(strings.Contains(err.Error(), "peer_unavailable") || strings.Contains(err.Error(), "timeout")) {
		t.Errorf("during the cut: s1 -> c3: %v, want peer_unavailable", err)
	}
	if err := echoVia(hc, m.servers[0], "c1", 5*time.Second); err != nil {
		t.Errorf("during the cut: s1 -> its own c1: %v", err)
	}
	healed := time.Now()
	for _, p := range []*faultProxy{p3, p31, p32} {
		p.clear()
	}
	m.waitFor(30*time.Second, "c3 reachable through s1 and c1 through s3 after the heal", func() bool {
		return echoVia(&http.Client{Timeout: 5 * time.Second}, m.servers[0], "c3", 2*time.Second) == nil &&
			echoVia(&http.Client{Timeout: 5 * time.Second}, m.servers[2], "c1", 2*time.Second) == nil
	})
	t.Logf("healed: cross-server events flow again %v after", time.Since(healed).Round(time.Millisecond))
	m.waitMembers(3, 20*time.Second)
}

// TestClusterRollingRestart: each server in turn is stopped with SIGTERM
// and started again while events flow through the others to every client:
// no event is lost without its caller being told (a reply, or an error of
// a stable kind), and all clients are reachable at the end.
func TestClusterRollingRestart(t *testing.T) {
	t.Parallel()
	clients := nineClients[:6]
	m := startMembers(t, 3, clients)
	for _, c := range clients {
		m.startClient(c, "")
	}
	type result struct {
		server, client string
		err            error
	}
	var mu sync.Mutex
	var results []result
	var current sync.Map // server name -> bool: taking events
	for _, sm := range m.servers {
		current.Store(sm.name, true)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 40 * time.Second}
	for i, sm := range m.servers {
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if v, _ := current.Load(sm.name); v != true {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					mu.Lock()
					addr := m.servers[i].http
					mu.Unlock()
					smv := &member{name: sm.name, http: addr}
					err := echoVia(hc, smv, c, 20*time.Second)
					mu.Lock()
					results = append(results, result{sm.name, c, err})
					mu.Unlock()
				}
			}()
		}
	}
	restarted := time.Now()
	for _, sm := range m.servers {
		current.Store(sm.name, false) // callers stop using its gateway
		time.Sleep(100 * time.Millisecond)
		sm.p.signal(syscall.SIGTERM)
		if code := sm.p.wait(30 * time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM", sm.name, code)
		}
		m.start(sm)
		m.waitMembers(3, 20*time.Second)
		current.Store(sm.name, true)
	}
	for _, sm := range m.servers {
		for _, c := range clients {
			m.waitFor(20*time.Second, c+" through "+sm.name, func() bool {
				return echoVia(&http.Client{Timeout: 5 * time.Second}, sm, c, 2*time.Second) == nil
			})
		}
	}
	close(stop)
	wg.Wait()
	kinds := map[string]int{}
	for _, r := range results {
		k := "ok"
		if r.err != nil {
			k = "transport"
			for _, kind := range []string{"link_lost", "peer_unavailable", "timeout", "overloaded"} {
				if strings.Contains(r.err.Error(), `"kind":"`+kind+`"`) {
					k = kind
				}
			}
		}
		kinds[k]++
		if k == "transport" {
			t.Errorf("%s -> %s: an event lost without a stable error: %v", r.server, r.client, r.err)
		}
	}
	t.Logf("rolling restart of 3 servers in %v: %d events, outcomes %v", time.Since(restarted).Round(time.Millisecond), len(results), kinds)
	if kinds["ok"] == 0 {
		t.Error("no event succeeded")
	}
}

// dialRoute connects to a NATS route port as NATS does, TLS first, with the certificate of name, and reports whether the route
// was refused: a TLS alert. nil means it was taken.
func dialRoute(dir, name, addr string) error {
	id, err := pki.LoadIdentity(pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")})
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// A TLS route starts with the TLS handshake.
	tc := tls.Client(conn, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.Cert}, RootCAs: id.Roots, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("refused in the handshake: %w", err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // still open: taken
		}
		return fmt.Errorf("refused: %w", err)
	}
	return nil
}

// dialForward opens a forward link to the server named server at addr with
// the certificate of name, as another server's Pool would.
func dialForward(t testing.TB, dir, name, server, addr string) error {
	t.Helper()
	id, err := pki.LoadIdentity(pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")})
	if err != nil {
		return err
	}
	store := pki.NewStaticStore(id)
	pool, err := link.NewPool(link.PoolConfig{Config: link.DefaultConfig(), TLS: func(n string) *tls.Config { return store.ClientTLS(n) }})
	if err != nil {
		return err
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pool.Session(ctx, server, addr)
	return err
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

	// Cancellation: the caller hangs up after 300 ms of a 30 s sleep; the
	// handler on c1 ends at once, canceled.
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
	time.Sleep(300 * time.Millisecond)
	hungUp := time.Now()
	cancel()
	<-done
	l := c1.waitLog(mark, 5*time.Second, "event from peer", func(l logLine) bool { return l.str("request_id") == "cancel-1" })
	t.Logf("handler on c1 ended %v after the caller hung up on s1, kind %q", time.Since(hungUp).Round(time.Millisecond), l.str("kind"))
	if k := l.str("kind"); k != "canceled" {
		t.Errorf("the handler on c1 ended with %q, want canceled", k)
	}
}

// TestClusterDrainHandsClientsOver: SIGTERM on the server holding a client
// while an event forwarded from another server is in flight to it: the
// event finishes, the client relinks to the other server, and the drained
// server exits 0.
func TestClusterDrainHandsClientsOver(t *testing.T) {
	t.Parallel()
	m := startMembers(t, 2, []string{"c1"})
	m.startClient("c1", "")
	var holder, other *member
	m.waitFor(10*time.Second, "c1 held", func() bool { holder = m.holder("c1"); return holder != nil })
	other = m.servers[0]
	if holder == other {
		other = m.servers[1]
	}
	result := make(chan error, 1)
	go func() { result <- echoSleep(other, "c1", "2s") }()
	m.waitFor(5*time.Second, "the event in flight on "+holder.name, func() bool {
		st, err := m.status(holder)
		return err == nil && slices.ContainsFunc(st.Peers, func(p peerStatus) bool { return p.Name == "c1" && p.EventsOut == 1 })
	})
	mark := holder.p.mark()
	holder.p.signal(syscall.SIGTERM)
	holder.p.waitLog(mark, 5*time.Second, "left the cluster: its clients are told to relink elsewhere", nil)
	if err := <-result; err != nil {
		t.Errorf("the event in flight across the drain: %v, want its reply", err)
	}
	if code := holder.p.wait(20 * time.Second); code != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0", holder.name, code)
	}
	holder.p = nil
	m.servers = []*member{other}
	m.waitFor(15*time.Second, "c1 linked to "+other.name, func() bool { return m.holder("c1") == other })
	if err := echoVia(&http.Client{Timeout: 10 * time.Second}, other, "c1", 5*time.Second); err != nil {
		t.Errorf("c1 through %s after the drain: %v", other.name, err)
	}
}

// echoSleep sends GET /client/<client>/echo?sleep=d to server sm and wants
// a 200 reply.
func echoSleep(sm *member, client, d string) error {
	resp, err := http.Get("http://" + sm.http + "/client/" + client + "/echo?sleep=" + d)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return nil
}
