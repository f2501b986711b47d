package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

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
			untilStopped(&wg, stop, func() {
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
			})
		}
	}
	// The kill comes under load: once events have gone through.
	m.waitFor(30*time.Second, "events flowing before the kill", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return counts["ok"] >= 20
	})
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
			untilStopped(&wg, stop, func() {
				if v, _ := current.Load(sm.name); v != true {
					time.Sleep(20 * time.Millisecond)
					return
				}
				mu.Lock()
				addr := m.servers[i].http
				mu.Unlock()
				smv := &member{name: sm.name, http: addr}
				err := echoVia(hc, smv, c, 20*time.Second)
				mu.Lock()
				results = append(results, result{sm.name, c, err})
				mu.Unlock()
			})
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
