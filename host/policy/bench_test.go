package policy

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/restpipe/restpipe/host"
)

// policy100 is a policy of 100 rules (90 allow and 10 limit blocks) of the
// shapes operators write, in which the event the benchmarks send (client1,
// get_time) matches only the last allow block and the last limit block:
// the most work a decision can take.
func policy100() string {
	var b strings.Builder
	for i := 0; i < 89; i++ {
		fmt.Fprintf(&b, "allow {\n  peers  = [\"team-%d-*\", \"*.site%d.example.com\", \"node%d\"]\n  routes = [\"get_team%d_*\", \"post_jobs_%d\", \"*_files%d\"]\n}\n", i, i, i, i, i, i)
	}
	b.WriteString("allow {\n  peers  = [\"client*\"]\n  routes = [\"get_*\"]\n}\n")
	for i := 0; i < 9; i++ {
		fmt.Fprintf(&b, "limit {\n  peers = [\"team-%d-*\"]\n  rate  = \"%d/s\"\n}\n", i, 100+i)
	}
	b.WriteString("limit {\n  peers = [\"*\"]\n  rate  = \"1000000000/s\"\n  burst = 1000000\n}\n")
	return b.String()
}

// BenchmarkDecide measures one decision of a 100-rule policy, computed and
// from the cache.
func BenchmarkDecide(b *testing.B) {
	p := mustParse(b, policy100())
	if a, l := p.Rules(); a+l != 100 {
		b.Fatalf("%d rules, want 100", a+l)
	}
	if d := p.Decide("client1", "get_time"); !d.Allowed || d.limit == nil {
		b.Fatalf("Decide(client1, get_time) = %+v, want allowed and limited", d)
	}
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			p.decide("client1", "get_time")
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			p.Decide("client1", "get_time")
		}
	})
}

// BenchmarkHandle measures an event through an Enforcer of the 100-rule
// policy against the bare handler behind it, in parallel as a node's
// events are.
func BenchmarkHandle(b *testing.B) {
	n := &next{}
	file := filepath.Join(b.TempDir(), "policy.hcl")
	writePolicy(b, file, policy100())
	cfg := DefaultConfig()
	cfg.File, cfg.Next = file, n
	e, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for _, h := range []struct {
		name string
		h    host.Handler
	}{{"no-policy", n}, {"policy100", e}} {
		b.Run(h.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				ev := &host.Event{Verb: "get", Noun: "time", Peer: "client1"}
				for pb.Next() {
					if _, err := h.h.Handle(context.Background(), ev); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
