package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
)

// TestSIGTERMDrains checks a node told to stop lets its events in flight
// finish, refuses new ones with 503, and exits 0.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	dir := testPKI(t, "c1")
	plugins := t.TempDir()
	installPlugin(t, pluginBin("misbehave"), filepath.Join(plugins, "misbehave"))
	srv, addr := startServerProc(t, dir, "127.0.0.1:0", "--plugins", plugins, "--grace", "20s")
	srvHTTP := srv.waitLog(0, 10*time.Second, "listening", nil).str("http")
	cl := startProc(t, "client", nil, append([]string{"client", "--server", addr}, identityFlags(dir, "c1")...)...)
	clHTTP := cl.waitLog(0, 10*time.Second, "listening", nil).str("http")
	cl.waitLog(0, 10*time.Second, "link up", nil)

	// A slow event from the client and one from the server's own caller.
	slow := []pending{
		goDo(t, "GET", "http://"+clHTTP+"/server/misbehave/slow?ms=2000", nil),
		goDo(t, "GET", "http://"+srvHTTP+"/local/misbehave/slow?ms=2000", nil),
	}
	srv.waitLog(0, 10*time.Second, "plugin running", nil)
	waitFor(t, 10*time.Second, "both slow events in flight", func() bool {
		st := getStatus(t, srvHTTP)
		return len(st.Plugins) == 1 && st.Plugins[0].InFlight == 2
	})

	mark := srv.mark()
	srv.signal(syscall.SIGTERM)
	srv.waitLog(mark, 5*time.Second, "draining", nil)
	// New events are refused, from the peer and locally.
	wantError(t, do(t, "GET", "http://"+clHTTP+"/server/misbehave/ok", nil), host.KindPeerUnavailable)
	if r := do(t, "GET", "http://"+srvHTTP+"/healthz", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("/healthz while draining = %d, want 503", r.status)
	}
	// The events in flight finish.
	for _, p := range slow {
		if r := p.wait(t); r.status != 200 || !strings.Contains(string(r.body), `"slept_ms":2000`) {
			t.Errorf("slow event during the drain = %d %s", r.status, r.body)
		}
	}
	if code := srv.wait(20 * time.Second); code != 0 {
		t.Errorf("server exit code = %d, want 0", code)
	}
}

// getStatus reads a node's /status.
func getStatus(t testing.TB, httpAddr string) nodeStatus {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st nodeStatus
	if err := jsonDecode(resp.Body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSIGHUPReloadsCertificates rotates the server's certificate on disk:
// SIGHUP takes the new one for new links without dropping the old ones, and
// a bad one is refused while the current one keeps serving.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	t.Parallel()
	dir := testPKI(t, "c1", "c2")
	srv, addr := startServerProc(t, dir, "127.0.0.1:0")
	c1 := startProc(t, "c1", nil, append([]string{"client", "--server", addr}, identityFlags(dir, "c1")...)...)
	c1.waitLog(0, 10*time.Second, "link up", nil)
	before := serverSerial(t, dir, addr)

	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("server", []string{"127.0.0.1", "localhost"}, pki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replaceIdentity(t, dir, "server", certPEM, keyPEM)
	mark, c1mark := srv.mark(), c1.mark()
	srv.signal(syscall.SIGHUP)
	srv.waitLog(mark, 5*time.Second, "SIGHUP: certificate reloaded", nil)
	after := serverSerial(t, dir, addr)
	if after.Cmp(before) == 0 {
		t.Fatal("a new link still gets the old certificate after SIGHUP")
	}
	// A new client links with the new certificate; the old link never
	// dropped.
	c2 := startProc(t, "c2", nil, append([]string{"client", "--server", addr}, identityFlags(dir, "c2")...)...)
	c2.waitLog(0, 10*time.Second, "link up", nil)

	// A certificate from another CA is refused; the current one stays.
	other, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	badCert, badKey, err := other.Issue("server", []string{"127.0.0.1"}, pki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	replaceIdentity(t, dir, "server", badCert, badKey)
	mark = srv.mark()
	srv.signal(syscall.SIGHUP)
	l := srv.waitLog(mark, 5*time.Second, "SIGHUP: keeping the current certificate", nil)
	if !strings.Contains(l.str("error"), "not trusted") && !strings.Contains(l.str("error"), "unknown authority") {
		t.Errorf("refusal = %q, want it to say why", l.str("error"))
	}
	if got := serverSerial(t, dir, addr); got.Cmp(after) != 0 {
		t.Error("a bad certificate replaced the good one")
	}
	for i, l := range c1.since(c1mark) {
		if l.msg() == "link down" {
			t.Errorf("c1's link dropped during the rotation (line %d): %v", i, l)
		}
	}
}

// replaceIdentity atomically replaces a node's certificate and key files.
func replaceIdentity(t testing.TB, dir, name string, certPEM, keyPEM []byte) {
	t.Helper()
	for file, b := range map[string][]byte{name + ".crt": certPEM, name + ".key": keyPEM} {
		tmp := filepath.Join(dir, "."+file+".new")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, file)); err != nil {
			t.Fatal(err)
		}
	}
}

// serverSerial completes a TLS handshake with the server's link, as client
// c1 would, and returns the serial of the certificate it presents.
func serverSerial(t testing.TB, dir, addr string) *bigInt {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "c1.crt"), filepath.Join(dir, "c1.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, filepath.Join(dir, "ca.crt")))
	c, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatalf("dial the link: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}
