package policy

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// FuzzParse feeds arbitrary files to the parser, which faces whatever an
// operator (or a broken deployment) puts in --policy. It must never panic;
// a refused file must name every problem with the file and a line inside
// it; an accepted one must decide without panicking, the same with and
// without its cache, and Check must answer only nil, forbidden or
// overloaded.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"allow {\n  peers  = [\"node1\", \"web-*\"]\n  routes = [\"get_time\", \"get_*\"]\n}\n",
		"limit {\n  peers = [\"web-*\"]\n  rate  = \"200/s\"\n  burst = 400\n}\n",
		"limit {\n  peers = [\"*\"]\n  routes = [\"put_*\"]\n  rate = \"5/100ms\"\n}\n",
		"allow {\n  peers = [\"Web-*\", 3, \"\"]\n  routes = \"time\"\n}\n",
		"alow {\n}\nrate = 1\n",
		"allow \"x\" {\n  peers = [env.x]\n  routes = [lower(\"A\")]\n  peers = []\n}\n",
		"limit {\n  peers = [\"*\"]\n  rate = \"0/s\"\n  burst = 1.5\n}\n",
		"allow {\n  peers = [\"*a*b*\"]\n  routes = [\"*\"\n",
		"allow { peers = [\"*\"] routes = [\"*\"] }",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse(src, "fuzz.hcl")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("Parse = %T %v, want a *ParseError with problems", err, err)
			}
			lines := bytes.Count(src, []byte("\n")) + 1
			for _, pr := range pe.Problems {
				if pr.File != "fuzz.hcl" || pr.Line < 0 || pr.Line > lines || pr.Message == "" {
					t.Fatalf("problem %+v: want the file, a line from 0 to %d and a message", pr, lines)
				}
			}
			return
		}
		now := time.Unix(1_700_000_000, 0)
		for _, caller := range []string{"", "web-1", "node1", "a.b", "x"} {
			for _, route := range []string{"get_time", "put_files", "delete_x_y", "get_"} {
				if got, want := p.Decide(caller, route), p.decide(caller, route); got != want {
					t.Fatalf("Decide(%q, %q) = %+v cached, %+v not", caller, route, got, want)
				}
				switch k := host.KindOf(p.Check(caller, route, now)); k {
				case "", host.KindForbidden, host.KindOverloaded:
				default:
					t.Fatalf("Check(%q, %q) = kind %s", caller, route, k)
				}
			}
		}
	})
}
