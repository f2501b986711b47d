package configfile

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toySchema is a small node: its flags are of every type a file can set.
func toySchema() (*Schema, *flag.FlagSet) {
	fs := flag.NewFlagSet("toy", flag.ContinueOnError)
	fs.String("root", "", "")
	fs.String("listen", "", "")
	fs.Duration("grace", time.Second, "")
	fs.Int("max-in-flight", 1, "")
	fs.Bool("debug", false, "")
	fs.String("config", "", "")
	other := flag.NewFlagSet("other", flag.ContinueOnError)
	other.String("server", "", "")
	return &Schema{
		Role: "toy", Flags: fs, OtherRole: "other", OtherFlags: other,
		NotKeys: map[string]string{"config": "not here"},
		Paths:   map[string]string{"root": "", "listen": "unix:"},
	}, fs
}

func write(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.hcl")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadAndApply(t *testing.T) {
	s, fs := toySchema()
	path := write(t, `root = "data"
listen = "unix:run/node.sock"
grace = "45s"
max_in_flight = 512
debug = true
plugin "files" {
  read_only = true
  limit     = 1000000
}
`)
	f, err := Load(path, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"-debug=false"}); err != nil {
		t.Fatal(err)
	}
	plugins := map[string]map[string]string{"files": {"limit": "5"}}
	if err := f.Apply(fs, func(name string) bool { return name == "grace" }, plugins); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	want := map[string]string{
		"root":          filepath.Join(dir, "data"),
		"listen":        "unix:" + filepath.Join(dir, "run/node.sock"),
		"grace":         "1s", // given elsewhere: the file does not set it
		"max-in-flight": "512",
		"debug":         "false", // the command line wins
	}
	for name, v := range want {
		if got := fs.Lookup(name).Value.String(); got != v {
			t.Errorf("--%s = %q, want %q", name, got, v)
		}
	}
	if p := plugins["files"]; p["read_only"] != "true" || p["limit"] != "5" {
		t.Errorf("plugin settings = %v, want read_only from the file and limit kept", p)
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	s, _ := toySchema()
	path := write(t, `grace = 45
max_in_flight = 1.5
rooot = "x"
server = "a:1"
config = "b.hcl"
`)
	_, err := Load(path, s)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Load = %v, want an *Error", err)
	}
	want := []string{
		`:1: grace: want a duration as a string`,
		`:2: max_in_flight: 1.5 is not a whole number`,
		`:3: rooot: unknown key; did you mean root?`,
		`:4: server: a setting of restpipe other, not of restpipe toy`,
		`:5: config: not here`,
	}
	if len(e.Problems) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(e.Problems), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(e.Problems[i].Text, path) || !strings.Contains(e.Problems[i].Text, w) {
			t.Errorf("problem %d = %q, want %s%s...", i+1, e.Problems[i].Text, path, w)
		}
	}
}
