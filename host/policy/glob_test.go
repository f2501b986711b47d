package policy

import (
	"regexp"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		yes, no []string
	}{
		{"web1", []string{"web1"}, []string{"web", "web12", "xweb1", ""}},
		{"*", []string{"", "a", "web-1.example.com"}, nil},
		{"**", []string{"", "x"}, nil},
		{"web-*", []string{"web-", "web-1", "web-a.b", "web--"}, []string{"web", "web1", "xweb-1"}},
		{"*.example.com", []string{".example.com", "a.example.com", "a.b.example.com"}, []string{"example.com", "a.example.org"}},
		{"get_*", []string{"get_", "get_time", "get_time_utc"}, []string{"put_time", "get"}},
		{"*_files", []string{"put_files", "get_files", "_files"}, []string{"put_files_x", "files"}},
		{"a*b*c", []string{"abc", "aXbYc", "abbc", "abcbc", "a_b_c"}, []string{"ab", "acb", "abcx", "xabc"}},
		{"a*a", []string{"aa", "aba", "aaa"}, []string{"a", "ab"}},
		{"*ab*ab*", []string{"abab", "xabyabz", "ababab"}, []string{"aba", "ab", "abxa"}},
		{"team-*-*", []string{"team-a-b", "team--", "team-a-b-c"}, []string{"team-a", "team-"}},
		{"get_time*", []string{"get_time", "get_time_utc", "get_timex"}, []string{"get_tim", "get_t"}},
	}
	for _, tt := range tests {
		g := compileGlob(tt.pattern)
		for _, name := range tt.yes {
			if !g.match(name) {
				t.Errorf("glob(%q).match(%q) = false, want true", tt.pattern, name)
			}
		}
		for _, name := range tt.no {
			if g.match(name) {
				t.Errorf("glob(%q).match(%q) = true, want false", tt.pattern, name)
			}
		}
	}
}

// TestGlobAgainstRegexp checks the matcher against the regular expression
// each pattern stands for, on every pattern and name over a small
// alphabet: an exhaustive check of the shapes a policy can hold.
func TestGlobAgainstRegexp(t *testing.T) {
	var words []string
	var gen func(prefix string, n int, alphabet string)
	gen = func(prefix string, n int, alphabet string) {
		words = append(words, prefix)
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			gen(prefix+string(c), n-1, alphabet)
		}
	}
	gen("", 5, "ab*")
	patterns := words
	words = nil
	gen("", 5, "ab")
	names := words
	for _, p := range patterns {
		if p == "" {
			continue
		}
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$")
		g := compileGlob(p)
		for _, n := range names {
			if got, want := g.match(n), re.MatchString(n); got != want {
				t.Fatalf("glob(%q).match(%q) = %v, want %v", p, n, got, want)
			}
		}
	}
}
