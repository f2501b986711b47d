package policy

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocExamples keeps the documentation in step with the parser: every
// HCL example of docs/policy.md and the README's policy example is a valid
// policy, and the decisions the worked examples describe are the ones the
// files give.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 5 {
		t.Fatalf("docs/policy.md has %d HCL examples, want the file's shape and the worked examples", len(blocks))
	}
	policies := make([]*Policy, len(blocks))
	for i, b := range blocks {
		if policies[i], err = Parse([]byte(b[1]), "docs/policy.md example"); err != nil {
			t.Errorf("docs/policy.md, example %d is not a valid policy: %v\n%s", i+1, err, b[1])
		}
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Who may call what")
	m := regexp.MustCompile("(?s)```\n(.*?)```").FindStringSubmatch(section)
	if !ok || m == nil {
		t.Fatal("README.md has no policy example under \"## Who may call what\"")
	}
	if _, err := Parse([]byte(m[1]), "README.md example"); err != nil {
		t.Errorf("README.md's policy example is not a valid policy: %v", err)
	}

	// The worked examples, as the text describes them.
	find := func(part string) *Policy {
		t.Helper()
		for i, b := range blocks {
			if strings.Contains(b[1], part) && policies[i] != nil {
				return policies[i]
			}
		}
		t.Fatalf("no example holds %q", part)
		return nil
	}
	checks := []struct {
		example, peer, route string
		allowed              bool
		limitLine            int // 0: not limited
	}{
		{`"kiosk-1"`, "kiosk-1", "get_time", true, 0},
		{`"kiosk-1"`, "kiosk-1", "put_files", false, 0},
		{`"kiosk-1"`, "kiosk-2", "get_time", false, 0},
		{`routes = ["get_files"]`, "server", "get_files", true, 0},
		{`routes = ["get_files"]`, "server", "put_files", false, 0},
		{`team-a-*`, "team-a-web1", "post_team_a_jobs", true, 19},
		{`team-a-*`, "team-a-web1", "post_team_b_jobs", false, 0},
		{`team-a-*`, "team-a-batch1", "post_team_a_jobs", true, 15},
		{`team-a-*`, "db1.ops.example.com", "delete_files", true, 0},
		{`team-a-*`, "team-c-web1", "get_time", false, 0},
		{`"build-1"`, "web-1", "get_files", true, 0},
		{`"build-1"`, "web-1", "put_files", false, 0},
		{`"build-1"`, "build-1", "put_files", true, 11},
		{`"build-1"`, "build-1", "delete_files", true, 0},
		{`rate  = "500/s"`, "anyone", "delete_files", true, 6},
	}
	for _, c := range checks {
		d := find(c.example).Decide(c.peer, c.route)
		if d.Allowed != c.allowed || d.LimitLine != c.limitLine {
			t.Errorf("example with %s: Decide(%s, %s) = allowed %v, limit line %d; want %v, %d", c.example, c.peer, c.route, d.Allowed, d.LimitLine, c.allowed, c.limitLine)
		}
	}
}
