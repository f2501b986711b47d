package cluster

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
)

// startExternalNATS starts a NATS server as an operator would run one:
// TLS with its own certificate (with the server role unless noRole),
// client certificates required from the CA.
func startExternalNATS(t *testing.T, ca *pki.CA, noRole bool) string {
	t.Helper()
	crt, err := ca.IssueTLSWith("nats1", []string{"127.0.0.1"}, pki.LeafOptions{ServerRole: !noRole})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoSystemAccount: true,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{crt},
			ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert},
		TLSVerify: true, TLSTimeout: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("the external NATS server did not start")
	}
	return "tls://" + ns.Addr().String()
}

// externalMember starts a member that uses the NATS at url.
func externalMember(t *testing.T, ca *pki.CA, fw *fakeForwarder, name, url string) *testMember {
	t.Helper()
	crt, err := ca.IssueTLSWith(name, []string{"127.0.0.1"}, pki.LeafOptions{ServerRole: true})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	cfg := DefaultConfig()
	cfg.Name, cfg.LinkAddr, cfg.NATS = name, "127.0.0.1:1", []string{url}
	cfg.Certificate = func() *tls.Certificate { return &crt }
	cfg.Roots = ca.Pool()
	cfg.Forwarder = fw
	cfg.MemberPoll = 200 * time.Millisecond
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: name, Output: logs, Level: hclog.Info})
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	fw.mu.Lock()
	fw.members[name] = c
	fw.mu.Unlock()
	return &testMember{c, logs}
}

// TestClusterExternalNATS: two members on an external NATS server
// (--cluster-nats) find and reach each other's clients.
func TestClusterExternalNATS(t *testing.T) {
	ca := newCA(t)
	url := startExternalNATS(t, ca, false)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	a, b := externalMember(t, ca, fw, "a", url), externalMember(t, ca, fw, "b", url)
	if a.RouteAddr() != "" {
		t.Errorf("RouteAddr() = %q with an external NATS, want none", a.RouteAddr())
	}
	waitFor(t, 10*time.Second, "two members", func() bool { return a.MembersUp() == 2 && b.MembersUp() == 2 })
	a.Claim("x", newFakeLink("x@a"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitFor(t, 5*time.Second, "b reaches x on a", func() bool {
		h, err := b.Peer(ctx, "x")
		if err != nil {
			return false
		}
		rep, err := h.Handle(ctx, &host.Event{ID: "1", Verb: "get", Noun: "echo", Peer: "b"})
		if err != nil {
			return false
		}
		defer rep.Close()
		body, _ := io.ReadAll(rep.Body)
		return string(body) == "x@a from b"
	})
}

// TestClusterExternalNATSWithoutRole: a NATS server whose certificate
// lacks the server role is refused, with a log line.
func TestClusterExternalNATSWithoutRole(t *testing.T) {
	ca := newCA(t)
	url := startExternalNATS(t, ca, true)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	start := time.Now()
	a := externalMember(t, ca, fw, "a", url)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("New took %v without a NATS connection, want it not to wait for one", d)
	}
	waitFor(t, 10*time.Second, "a refusal logged", func() bool {
		return strings.Contains(a.logs.String(), "refused a NATS server connection") && strings.Contains(a.logs.String(), "lacks the server role")
	})
}
