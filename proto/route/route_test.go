package route

import "testing"

func TestName(t *testing.T) {
	if got := Name("get", "time/utc"); got != "get_time_utc" {
		t.Errorf("Name(get, time/utc) = %q", got)
	}
}

func TestChecks(t *testing.T) {
	for _, v := range Verbs {
		if err := CheckVerb(v); err != nil {
			t.Errorf("CheckVerb(%q) = %v", v, err)
		}
	}
	for _, v := range []string{"", "head", "GET", "options"} {
		if CheckVerb(v) == nil {
			t.Errorf("CheckVerb(%q) = nil, want an error", v)
		}
	}
	for _, n := range []string{"time", "time/utc", "a-b_c/D9"} {
		if err := CheckNoun(n); err != nil {
			t.Errorf("CheckNoun(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "/time", "time/", "a//b", "caf\u00e9", "a b", "a.b"} {
		if CheckNoun(n) == nil {
			t.Errorf("CheckNoun(%q) = nil, want an error", n)
		}
	}
}
