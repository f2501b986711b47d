package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/time/rate"
)

// want is one problem a test expects: its line, key and a part of its
// message.
type want struct {
	line int
	key  string
	msg  string
}

// parseProblems parses src as file "p.hcl" and returns its problems; it
// fails the test when the file parses.
func parseProblems(t *testing.T, src string) []Problem {
	t.Helper()
	p, err := Parse([]byte(src), "p.hcl")
	if err == nil {
		a, l := p.Rules()
		t.Fatalf("Parse(%q) = a policy of %d allow and %d limit blocks, want problems", src, a, l)
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("Parse(%q) = %T %v, want a *ParseError", src, err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("Parse error %v does not wrap ErrInvalid", err)
	}
	return pe.Problems
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"top-level attribute", `rate = "1/s"`, []want{{1, "rate", "put rate inside one"}}},
		{"top-level other attribute", `x = 1`, []want{{1, "x", "only allow and limit blocks"}}},
		{"unknown block, near", "alow {\n}", []want{{1, "alow", "did you mean allow?"}}},
		{"unknown block, far", "deny {\n}", []want{{1, "deny", "only allow and limit blocks"}}},
		{"label", "allow \"x\" {\n peers = [\"a\"]\n routes = [\"get_a\"]\n}", []want{{1, "allow", "without a label"}}},
		{"missing keys", "\nallow {\n}\n", []want{{2, "allow.peers", "required"}, {2, "allow.routes", "required"}}},
		{"missing limit keys", "limit {\n}", []want{{1, "limit.peers", "required"}, {1, "limit.rate", "required"}}},
		{"string, not list", "allow {\n peers = \"web1\"\n routes = [\"*\"]\n}", []want{{2, "allow.peers", `want a list of strings: peers = ["web1"]`}}},
		{"number, not list", "allow {\n peers = 3\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "got a number"}}},
		{"empty list", "allow {\n peers = []\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "empty list"}}},
		{"null", "allow {\n peers = null\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "null"}}},
		{"element not a string", "allow {\n peers = [\"a\",\n  true]\n routes = [\"*\"]\n}", []want{{3, "allow.peers", "element 2: want a string; got a bool"}}},
		{"upper-case peer", "allow {\n peers = [\"Web-*\"]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", `write "web-*"`}}},
		{"bad peer character", "allow {\n peers = [\"a_b\"]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "only lower-case letters"}}},
		{"impossible peer name", "allow {\n peers = [\"-web\"]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "no node can have this name"}}},
		{"empty pattern", "allow {\n peers = [\"\"]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "empty pattern"}}},
		{"long pattern", "allow {\n peers = [\"" + strings.Repeat("*", MaxPatternLen+1) + "\"]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "at most 512 bytes"}}},
		{"route without verb", "allow {\n peers = [\"*\"]\n routes = [\"time\"]\n}", []want{{3, "allow.routes", "write get_time"}}},
		{"route with head", "allow {\n peers = [\"*\"]\n routes = [\"head_time\"]\n}", []want{{3, "allow.routes", "HEAD arrives as get: write get_time"}}},
		{"route verb only", "allow {\n peers = [\"*\"]\n routes = [\"get_\"]\n}", []want{{3, "allow.routes", "no route has this name"}}},
		{"route with slash", "allow {\n peers = [\"*\"]\n routes = [\"get_time/utc\"]\n}", []want{{3, "allow.routes", "get_time_utc"}}},
		{"route star prefix", "allow {\n peers = [\"*\"]\n routes = [\"ti*\"]\n}", []want{{3, "allow.routes", "no route has this name"}}},
		{"key of the other block", "allow {\n peers = [\"*\"]\n routes = [\"*\"]\n rate = \"1/s\"\n}", []want{{4, "allow.rate", "a setting of limit blocks"}}},
		{"typo in a key", "limit {\n peers = [\"*\"]\n rate = \"1/s\"\n brust = 3\n}", []want{{4, "limit.brust", "did you mean burst?"}}},
		{"unknown key", "allow {\n peers = [\"*\"]\n routes = [\"*\"]\n methods = [\"get\"]\n}", []want{{4, "allow.methods", "allow blocks take peers, routes"}}},
		{"block inside", "allow {\n peers = [\"*\"]\n routes = [\"*\"]\n limit {\n }\n}", []want{{4, "allow.limit", "a block inside allow"}}},
		{"set twice", "allow {\n peers = [\"a\"]\n routes = [\"*\"]\n peers = [\"b\"]\n}", []want{{4, "allow.peers", "set twice (first at line 2)"}}},
		{"set twice at the top", "x = 1\nx = 2\n", []want{{1, "x", "only allow and limit"}, {2, "x", "set twice"}}},
		{"variable", "allow {\n peers = [env.x]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "Variables not allowed"}}},
		{"function", "allow {\n peers = [lower(\"X\")]\n routes = [\"*\"]\n}", []want{{2, "allow.peers", "Function calls not allowed"}}},
		{"rate not a string", "limit {\n peers = [\"*\"]\n rate = 200\n}", []want{{3, "limit.rate", `want a rate as a string, such as "200/s"; got a number`}}},
		{"rate without unit", "limit {\n peers = [\"*\"]\n rate = \"200\"\n}", []want{{3, "limit.rate", "want N/UNIT"}}},
		{"rate with a bad unit", "limit {\n peers = [\"*\"]\n rate = \"200/sec\"\n}", []want{{3, "limit.rate", `"sec" is not a unit`}}},
		{"rate not a number", "limit {\n peers = [\"*\"]\n rate = \"many/s\"\n}", []want{{3, "limit.rate", `"many" is not a number`}}},
		{"rate zero", "limit {\n peers = [\"*\"]\n rate = \"0/s\"\n}", []want{{3, "limit.rate", "above 0"}}},
		{"rate negative", "limit {\n peers = [\"*\"]\n rate = \"-1/s\"\n}", []want{{3, "limit.rate", "above 0"}}},
		{"rate infinite", "limit {\n peers = [\"*\"]\n rate = \"Inf/s\"\n}", []want{{3, "limit.rate", "not a number"}}},
		{"rate too fast", "limit {\n peers = [\"*\"]\n rate = \"2/1ns\"\n}", []want{{3, "limit.rate", "over the limit"}}},
		{"rate per zero", "limit {\n peers = [\"*\"]\n rate = \"1/0s\"\n}", []want{{3, "limit.rate", "not a unit"}}},
		{"burst a string", "limit {\n peers = [\"*\"]\n rate = \"1/s\"\n burst = \"4\"\n}", []want{{4, "limit.burst", "got a string"}}},
		{"burst a fraction", "limit {\n peers = [\"*\"]\n rate = \"1/s\"\n burst = 1.5\n}", []want{{4, "limit.burst", "1.5: want a whole number"}}},
		{"burst zero", "limit {\n peers = [\"*\"]\n rate = \"1/s\"\n burst = 0\n}", []want{{4, "limit.burst", "from 1 to 1000000"}}},
		{"burst huge", "limit {\n peers = [\"*\"]\n rate = \"1/s\"\n burst = 1e30\n}", []want{{4, "limit.burst", "from 1 to 1000000"}}},
		{"limit routes checked", "limit {\n peers = [\"*\"]\n routes = [\"files\"]\n rate = \"1/s\"\n}", []want{{3, "limit.routes", "no route has this name"}}},
		{"syntax error", "allow {\n peers = [\"*\"\n", []want{{1, "allow.routes", "required"}, {2, "", "Unterminated"}}},
		{"not HCL", "{{{", []want{{1, "", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseProblems(t, tt.src)
			if len(got) != len(tt.want) {
				t.Fatalf("Parse(%q) problems:\n%s\nwant %d: %+v", tt.src, (&ParseError{got}).Error(), len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				p := got[i]
				if p.File != "p.hcl" || p.Line != w.line || p.Key != w.key || !strings.Contains(p.Message, w.msg) {
					t.Errorf("problem %d = %s (line %d, key %q), want line %d, key %q and a message with %q", i, p, p.Line, p.Key, w.line, w.key, w.msg)
				}
				prefix := "p.hcl:" + strconv.Itoa(w.line) + ": "
				if w.key != "" {
					prefix += w.key + ": "
				}
				if !strings.HasPrefix(p.String(), prefix) {
					t.Errorf("problem %d = %q, want it to start with %q", i, p, prefix)
				}
			}
		})
	}
}

// TestParseEveryProblemAtOnce checks that one file's problems are all
// reported, in the order of the file, in one error.
func TestParseEveryProblemAtOnce(t *testing.T) {
	src := `allow {
  peers  = ["Web-*", "ok",
            "a_b"]
  routes = ["time"]
}
limit {
  peers = ["*"]
  rate  = "200/sec"
  brust = 3
}
allow {
  peers = ["fine"]
  routes = ["get_fine"]
}
`
	got := parseProblems(t, src)
	wantLines := []int{2, 3, 4, 8, 9}
	if len(got) != len(wantLines) {
		t.Fatalf("problems:\n%s\nwant %d", (&ParseError{got}).Error(), len(wantLines))
	}
	for i, l := range wantLines {
		if got[i].Line != l {
			t.Errorf("problem %d at line %d, want %d: %s", i, got[i].Line, l, got[i])
		}
	}
	msg := (&ParseError{got}).Error()
	if !strings.HasPrefix(msg, "5 problems in the policy file:\np.hcl:2: allow.peers: ") {
		t.Errorf("Error() = %q, want it to count the problems and list them", msg)
	}
}

func TestParseGood(t *testing.T) {
	src := `# a comment
allow {
  peers  = ["node1", "web-*"]
  routes = ["get_time", "get_*"]
}
allow {
  peers  = ["uploader"]
  routes = ["put_files"]
}
limit {
  peers  = ["web-*"]
  routes = ["get_*"]
  rate   = "200/s"
  burst  = 400
}
limit {
  peers = ["*"]
  rate  = "10/m"
}
limit {
  peers = ["x"]
  rate  = "5/100ms"
}
`
	p, err := Parse([]byte(src), "good.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if a, l := p.Rules(); a != 2 || l != 3 {
		t.Errorf("Rules() = %d, %d; want 2 allow and 3 limit blocks", a, l)
	}
	if p.File() != "good.hcl" || len(p.SHA256()) != 64 {
		t.Errorf("File() = %q, SHA256() = %q", p.File(), p.SHA256())
	}
	lims := []struct {
		line  int
		limit rate.Limit
		burst int
		text  string
	}{{10, 200, 400, "200/s"}, {16, rate.Limit(10.0 / 60), 10, "10/m"}, {20, 50, 5, "5/100ms"}}
	for i, w := range lims {
		r := p.limits[i]
		if r.line != w.line || r.limit != w.limit || r.burst != w.burst || r.rateText != w.text {
			t.Errorf("limit %d = line %d rate %v burst %d %q, want line %d rate %v burst %d %q", i, r.line, r.limit, r.burst, r.rateText, w.line, w.limit, w.burst, w.text)
		}
	}
	if got := p.limits[1].routes.sources(); len(got) != 1 || got[0] != "*" {
		t.Errorf("a limit block without routes has routes %q, want [*]", got)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "# nothing\n"} {
		p, err := Parse([]byte(src), "empty.hcl")
		if err != nil {
			t.Fatalf("Parse(%q) = %v, want an empty policy", src, err)
		}
		if d := p.Decide("web1", "get_time"); d.Allowed {
			t.Errorf("an empty policy allows web1 get_time, want it to allow nothing")
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in    string
		limit rate.Limit
		n     float64
	}{
		{"200/s", 200, 200},
		{"10/m", rate.Limit(10.0 / 60), 10},
		{"1/h", rate.Limit(1.0 / 3600), 1},
		{"5/100ms", 50, 5},
		{"0.5/s", 0.5, 0.5},
		{" 3 / 10s ", 0.3, 3},
	}
	for _, tt := range tests {
		l, n, err := parseRate(tt.in)
		if err != nil || float64(l)-float64(tt.limit) > 1e-9 || float64(tt.limit)-float64(l) > 1e-9 || n != tt.n {
			t.Errorf("parseRate(%q) = %v, %v, %v; want %v, %v", tt.in, l, n, err, tt.limit, tt.n)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.hcl")
	if _, err := Load(path); err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want a read error", err)
	}
	if err := os.WriteFile(path, []byte(strings.Repeat("#", MaxFileSize+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), path+":0: the file is over") {
		t.Errorf("Load(too big) = %v, want it refused for its size", err)
	}
	src := []byte("allow {\n peers = [\"*\"]\n routes = [\"*\"]\n}\n")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	if want := hex.EncodeToString(sum[:]); p.SHA256() != want || p.File() != path {
		t.Errorf("Load(%s): File() = %q, SHA256() = %q; want %q, %q", path, p.File(), p.SHA256(), path, want)
	}
}
