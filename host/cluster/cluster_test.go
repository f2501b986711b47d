package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/pki"
	clusterv1 "github.com/restpipe/restpipe/proto/cluster/v1"
)

// fakeLink is a client link: it answers events with its client's name and
// records its eviction.
type fakeLink struct {
	name    string
	evicted chan error
	once    sync.Once
}

func newFakeLink(name string) *fakeLink { return &fakeLink{name: name, evicted: make(chan error, 1)} }

func (l *fakeLink) Handle(_ context.Context, ev *host.Event) (*host.Reply, error) {
	msg := l.name + " from " + ev.Peer
	return &host.Reply{Size: int64(len(msg)), Body: io.NopCloser(strings.NewReader(msg))}, nil
}

func (l *fakeLink) Evict(cause error) { l.once.Do(func() { l.evicted <- cause }) }

// fakeForwarder hands a forwarded event straight to the Incoming handler
// of the member it is addressed to, as a forward link would.
type fakeForwarder struct {
	mu      sync.Mutex
	members map[string]*Cluster
}

func (f *fakeForwarder) Forward(ctx context.Context, server, _ string, ev *host.Event) (*host.Reply, error) {
	f.mu.Lock()
	c := f.members[server]
	f.mu.Unlock()
	if c == nil {
		return nil, &host.Error{Kind: host.KindPeerUnavailable, Message: "no such server", Err: host.ErrNotDelivered}
	}
	return c.Incoming().Handle(ctx, ev)
}

// syncBuf is a log sink safe for concurrent use.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type testMember struct {
	*Cluster
	logs *syncBuf
}

// startMembers starts n members of one cluster on loopback, each with a
// certificate with the server role unless noRole names it.
func startMembers(t testing.TB, ca *pki.CA, fw *fakeForwarder, names []string, noRole map[string]bool) []*testMember {
	t.Helper()
	// The route ports are taken first, so that each member can be told
	// every other's.
	addrs := make([]string, len(names))
	for i := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	out := make([]*testMember, len(names))
	for i, name := range names {
		crt, err := ca.IssueTLSWith(name, []string{"127.0.0.1"}, pki.LeafOptions{ServerRole: !noRole[name]})
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuf{}
		cfg := DefaultConfig()
		cfg.Name = name
		cfg.LinkAddr = "127.0.0.1:1"
		cfg.Listen = addrs[i]
		cfg.Join = addrs
		cfg.Certificate = func() *tls.Certificate { return &crt }
		cfg.Roots = ca.Pool()
		cfg.Forwarder = fw
		cfg.MemberPoll = 200 * time.Millisecond
		cfg.WaitPoll = 100 * time.Millisecond
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: name, Output: logs, Level: hclog.Info})
		c, err := New(cfg)
		if err != nil {
			t.Fatalf("New(%s): %v", name, err)
		}
		t.Cleanup(func() { c.Close() })
		fw.mu.Lock()
		fw.members[name] = c
		fw.mu.Unlock()
		out[i] = &testMember{c, logs}
	}
	return out
}

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterPresence: a client claimed on one member is found and reached
// from the others; a newer link elsewhere ends the older one; a released
// client is absent.
func TestClusterPresence(t *testing.T) {
	ca := newCA(t)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	ms := startMembers(t, ca, fw, []string{"s1", "s2", "s3"}, nil)
	waitFor(t, 10*time.Second, "three members up everywhere", func() bool {
		for _, m := range ms {
			if m.MembersUp() != 3 {
				return false
			}
		}
		return true
	})

	l1 := newFakeLink("x@s1")
	ms[0].Claim("x", l1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range ms {
		h, err := m.Peer(ctx, "x")
		if err != nil {
			t.Fatalf("%s: Peer(x): %v", m.cfg.Name, err)
		}
		rep, err := h.Handle(ctx, &host.Event{ID: "1", Verb: "get", Noun: "echo", Peer: m.cfg.Name})
		if err != nil {
			t.Fatalf("%s: Handle: %v", m.cfg.Name, err)
		}
		b, _ := io.ReadAll(rep.Body)
		rep.Close()
		if want := "x@s1 from " + m.cfg.Name; string(b) != want {
			t.Errorf("%s: reply %q, want %q", m.cfg.Name, b, want)
		}
	}

	// x links to s3: s1 ends its link within 2 s.
	start := time.Now()
	l3 := newFakeLink("x@s3")
	ms[2].Claim("x", l3)
	select {
	case err := <-l1.evicted:
		if !errors.Is(err, ErrReplaced) {
			t.Errorf("evicted with %v, want ErrReplaced", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the older link on s1 was not ended within 2 s")
	}
	t.Logf("older link ended after %v", time.Since(start))
	ms[0].Release("x", l1)
	if ms[0].Holds("x") != nil {
		t.Error("s1 still holds x")
	}
	// s2's cache still says s1; the forward is refused and the retry
	// finds s3.
	waitFor(t, 5*time.Second, "s2 reaches x on s3", func() bool {
		h, err := ms[1].Peer(ctx, "x")
		if err != nil {
			return false
		}
		rep, err := h.Handle(ctx, &host.Event{ID: "2", Verb: "get", Noun: "echo", Peer: "s2"})
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(rep.Body)
		rep.Close()
		return string(b) == "x@s3 from s2"
	})

	ms[2].Release("x", l3)
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	ms[1].forgetServer("s3")
	if _, err := ms[1].Peer(short, "x"); !errors.Is(err, ErrAbsent) {
		t.Errorf("Peer(x) after release = %v, want ErrAbsent", err)
	}
}

// TestClusterRefusesClientCertificate: a member whose certificate lacks the
// server role gets no route, and the others say why in their logs.
func TestClusterRefusesClientCertificate(t *testing.T) {
	ca := newCA(t)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	ms := startMembers(t, ca, fw, []string{"good1", "good2", "bad"}, map[string]bool{"bad": true})
	waitFor(t, 10*time.Second, "good members see each other", func() bool {
		return ms[0].MembersUp() == 2 && ms[1].MembersUp() == 2
	})
	waitFor(t, 10*time.Second, "a refusal logged", func() bool {
		return strings.Contains(ms[0].logs.String(), "lacks the server role") || strings.Contains(ms[1].logs.String(), "lacks the server role")
	})
	// Give the refused member a few more route attempts: it never joins.
	time.Sleep(time.Second)
	if n := ms[2].MembersUp(); n != 1 {
		t.Errorf("the member without the role sees %d members up, want only itself", n)
	}
	for _, m := range ms[:2] {
		for _, mb := range m.Members() {
			if mb.Name == "bad" {
				t.Errorf("%s lists the member without the role: %+v", m.cfg.Name, mb)
			}
		}
	}
}

// TestClusterLeave: a leaving member answers no lookups, says draining, and
// refuses forwarded events as not delivered.
func TestClusterLeave(t *testing.T) {
	ca := newCA(t)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	ms := startMembers(t, ca, fw, []string{"a", "b"}, nil)
	waitFor(t, 10*time.Second, "two members up", func() bool { return ms[0].MembersUp() == 2 && ms[1].MembersUp() == 2 })
	ms[0].Claim("y", newFakeLink("y@a"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitFor(t, 5*time.Second, "y found from b", func() bool { _, err := ms[1].Lookup(ctx, "y"); return err == nil })
	ms[0].Leave()
	_, err := ms[0].Incoming().Handle(ctx, &host.Event{Target: "y", Verb: "get", Noun: "x"})
	if !errors.Is(err, host.ErrNotDelivered) {
		t.Errorf("a forwarded event to a leaving member: %v, want not delivered", err)
	}
	ms[1].forgetServer("a")
	waitFor(t, 5*time.Second, "y absent once a leaves", func() bool {
		_, err := ms[1].Lookup(ctx, "y")
		return errors.Is(err, ErrAbsent)
	})
	waitFor(t, 5*time.Second, "a seen draining", func() bool {
		for _, m := range ms[1].Members() {
			if m.Name == "a" && m.State == StateDraining {
				return true
			}
		}
		return false
	})
}

func TestNewer(t *testing.T) {
	tests := []struct {
		a, b [3]int64 // epoch, since, server (as a byte)
		want bool
	}{
		{[3]int64{2, 1, 'a'}, [3]int64{1, 9, 'b'}, true},
		{[3]int64{1, 9, 'a'}, [3]int64{1, 1, 'b'}, true},
		{[3]int64{1, 1, 'b'}, [3]int64{1, 1, 'a'}, true},
		{[3]int64{1, 1, 'a'}, [3]int64{1, 1, 'b'}, false},
	}
	for _, tt := range tests {
		h := func(v [3]int64) *holderT {
			return &holderT{Epoch: uint64(v[0]), SinceUnixNano: v[1], Server: string(rune(v[2]))}
		}
		if got := newer(h(tt.a), h(tt.b)); got != tt.want {
			t.Errorf("newer(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

type holderT = clusterv1.Holder

// TestClusterCloseLeavesNothing: Close stops every goroutine the cluster
// and its NATS server started.
func TestClusterCloseLeavesNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	ca := newCA(t)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	ms := startMembers(t, ca, fw, []string{"g1", "g2"}, nil)
	waitFor(t, 10*time.Second, "two members", func() bool { return ms[0].MembersUp() == 2 && ms[1].MembersUp() == 2 })
	for i := range 50 {
		ms[i%2].Claim(fmt.Sprint("client-", i), newFakeLink("x"))
	}
	for _, m := range ms {
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "goroutines back to where they were", func() bool { return runtime.NumGoroutine() <= base+2 })
}
