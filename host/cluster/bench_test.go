package cluster

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkClusterLookup measures one presence lookup that goes to NATS:
// from s2, for a client s1 holds, across the route (request, s1's answer,
// reply), the cache bypassed.
func BenchmarkClusterLookup(b *testing.B) {
	ms := twoMembers(b)
	ms[0].Claim("x", newFakeLink("x"))
	for {
		if _, err := ms[1].ask("x", time.Second); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ms[1].ask("x", time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// twoMembers starts two members that see each other.
func twoMembers(b *testing.B) []*testMember {
	ca := newCA(b)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	ms := startMembers(b, ca, fw, []string{"s1", "s2"}, nil)
	waitFor(b, 10*time.Second, "two members", func() bool { return ms[0].MembersUp() == 2 && ms[1].MembersUp() == 2 })
	return ms
}

// BenchmarkClusterLookupAbsent measures a lookup for a client nobody holds:
// NATS answers "no responders" from the local server's interest.
func BenchmarkClusterLookupAbsent(b *testing.B) {
	ms := twoMembers(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ms[1].ask("nobody", time.Second); err == nil {
			b.Fatal("found nobody")
		}
	}
}

// TestClusterPresenceScale claims RESTPIPE_SCALE_CLIENTS clients (default
// 20000) on s1 and reports the heap each claim costs in the process (both
// members' NATS interest, s1's subscriptions and holder records) and how
// long the claims take to be seen from s2. Run with RESTPIPE_SCALE=1
// (RESTPIPE_SCALE_MEMBERS=3 for three members: the difference is what one
// more member pays per client, the interest NATS keeps for it).
func TestClusterPresenceScale(t *testing.T) {
	if os.Getenv("RESTPIPE_SCALE") != "1" {
		t.Skip("RESTPIPE_SCALE=1 runs it")
	}
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("RESTPIPE_SCALE_CLIENTS")); err == nil {
		n = v
	}
	names := []string{"s1", "s2"}
	if os.Getenv("RESTPIPE_SCALE_MEMBERS") == "3" {
		names = append(names, "s3")
	}
	ca := newCA(t)
	fw := &fakeForwarder{members: map[string]*Cluster{}}
	ms := startMembers(t, ca, fw, names, nil)
	waitFor(t, 10*time.Second, "every member up", func() bool { return ms[0].MembersUp() == len(names) && ms[1].MembersUp() == len(names) })
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	start := time.Now()
	links := make([]*fakeLink, n)
	for i := range n {
		links[i] = newFakeLink(fmt.Sprint("c", i))
		ms[0].Claim(fmt.Sprintf("client-%d", i), links[i])
	}
	last := fmt.Sprintf("client-%d", n-1)
	waitFor(t, time.Minute, "the last claim seen from s2", func() bool { _, err := ms[1].ask(last, time.Second); return err == nil })
	took := time.Since(start)
	after := heap()
	t.Logf("%d claims: %.0f bytes of heap each (%d members in one process), all seen from s2 after %v (%.0f claims/s)",
		n, float64(after-before)/float64(n), len(names), took.Round(time.Millisecond), float64(n)/took.Seconds())
	runtime.KeepAlive(links)
}
