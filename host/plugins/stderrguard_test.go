package plugins

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestStderrGuard(t *testing.T) {
	in := strings.Join([]string{
		`plain text`,
		`{"@level":"info","@message":"fine","@timestamp":"2026-01-02T03:04:05.000000Z","n":1}`,
		`{"@message": 1, "@level": "info"}`,
		`{"@level":null,"@message":"x"}`,
		`{"@timestamp":5}`,
		`{"not":"hclog","x":[1,2]}`,
		`{broken json "@message": 1`,
		`last line without a newline`,
	}, "\n")
	want := strings.Join([]string{
		`plain text`,
		`{"@level":"info","@message":"fine","@timestamp":"2026-01-02T03:04:05.000000Z","n":1}`,
		`(not an hclog line) {"@message": 1, "@level": "info"}`,
		`(not an hclog line) {"@level":null,"@message":"x"}`,
		`(not an hclog line) {"@timestamp":5}`,
		`{"not":"hclog","x":[1,2]}`,
		`{broken json "@message": 1`,
		`last line without a newline`,
	}, "\n")
	for name, r := range map[string]io.Reader{
		"whole":         newStderrGuard(io.NopCloser(strings.NewReader(in))),
		"a byte a time": iotest.OneByteReader(newStderrGuard(io.NopCloser(iotest.OneByteReader(strings.NewReader(in))))),
	} {
		got, err := io.ReadAll(r)
		if err != nil || string(got) != want {
			t.Errorf("%s: got %q (%v), want %q", name, got, err, want)
		}
	}
	long := strings.Repeat("x", 3*guardLine) + "\n"
	got, err := io.ReadAll(newStderrGuard(io.NopCloser(strings.NewReader(long))))
	if err != nil || string(got) != long {
		t.Errorf("a long line: %d bytes (%v), want it unchanged (%d)", len(got), err, len(long))
	}
}

// TestPluginWritingBadHclogDoesNotCrashTheNode runs a plugin that writes a
// JSON line with a numeric "@message" to its standard error: without the
// guard, go-plugin panics on it, in the node.
func TestPluginWritingBadHclogDoesNotCrashTheNode(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.QuarantineAfter = 2 })
	path := filepath.Join(e.dir, "bad-hclog")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho '{\"@message\": 1, \"@level\": \"info\"}' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.start()
	st := e.waitState("bad-hclog", StateQuarantined, 10*time.Second)
	if !strings.Contains(st.Error, `{"@message": 1`) {
		t.Errorf("status = %+v, want the line in its last words", st)
	}
	e.logs.wait(time.Second, "plugins.bad-hclog", "(not an hclog line)")
}
