package plugins

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/restpipe/restpipe/host"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// FuzzDescription feeds arbitrary describe answers to the check that
// guards the route table: it never panics, and what it accepts can be
// routed.
func FuzzDescription(f *testing.F) {
	for _, d := range []*pluginv1.DescribeResponse{
		{Name: "time", Version: "1", ProtocolVersion: 1, Routes: []*pluginv1.Route{{Verb: "get", Noun: "time", Name: "get_time"}}},
		{Name: "x", ProtocolVersion: 1, Routes: []*pluginv1.Route{{Verb: "post", Noun: "a/b", Name: "post_a_b"}, {Verb: "get", Noun: "a", Name: "get_a"}}},
		{ProtocolVersion: 1, Error: "bad config"},
		{ProtocolVersion: 2, Routes: []*pluginv1.Route{{Verb: "get", Noun: "t", Name: "get_t"}}},
		{ProtocolVersion: 1, Routes: []*pluginv1.Route{{Verb: "GET", Noun: "../x", Name: "get_x"}}},
	} {
		b, _ := proto.Marshal(d)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d pluginv1.DescribeResponse
		if proto.Unmarshal(b, &d) != nil {
			return
		}
		if checkDescription(&d) != nil {
			return
		}
		seen := map[string]bool{}
		for _, r := range d.Routes {
			if host.CheckVerb(r.Verb) != nil || host.CheckNoun(r.Noun) != nil || r.Name != host.RouteName(r.Verb, r.Noun) || seen[r.Name] {
				t.Fatalf("accepted an unroutable description: %v", &d)
			}
			seen[r.Name] = true
		}
	})
}
