package plugins

import (
	"errors"
	"strings"
	"testing"
)

func TestLastWords(t *testing.T) {
	for _, tc := range []struct{ name, stderr, want string }{
		{"nothing", "", ""},
		{"a Python traceback", "Traceback (most recent call last):\n  File \"x\", line 1\nModuleNotFoundError: No module named 'grpc'\n",
			"ModuleNotFoundError: No module named 'grpc'"},
		{"an hclog error wins over later lines",
			`{"@level":"error","@message":"plugin failed","error":"KeyError: 'x'"}` + "\n" + `{"@level":"info","@message":"bye"}` + "\nplain\n",
			"plugin failed: KeyError: 'x'"},
		{"a Go panic", "panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/x/main.go:5 +0x1d\nexit status 2\n", "panic: boom"},
		{"only info lines", `{"@level":"info","@message":"hello"}` + "\n", ""},
	} {
		w := &tailWriter{}
		w.Write([]byte(tc.stderr))
		if got := w.lastWords(); got != tc.want {
			t.Errorf("%s: lastWords() = %q, want %q", tc.name, got, tc.want)
		}
	}
	w := &tailWriter{}
	w.Write([]byte(strings.Repeat("x", 3*tailSize) + "\nthe end\n"))
	if len(w.buf) > tailSize || w.lastWords() != "the end" {
		t.Errorf("tail of %d bytes, last words %q", len(w.buf), w.lastWords())
	}
	if err := w.withLastWords("start", errors.New("a\nb")); err.Error() != "start: a b (its last words on stderr: the end)" {
		t.Errorf("withLastWords = %q", err)
	}
}
