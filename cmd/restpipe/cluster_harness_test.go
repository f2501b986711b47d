package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host/hosttest"
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

// waitFor polls cond every 50 ms until it holds (conds here ask the
// servers' /status).
func (m *members) waitFor(within time.Duration, what string, cond func() bool) {
	m.t.Helper()
	hosttest.WaitEvery(m.t, within, 50*time.Millisecond, what, cond)
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
