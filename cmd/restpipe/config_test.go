package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeConfig writes a configuration file into dir and returns its path.
func writeConfig(t testing.TB, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// envOf returns a getenv that knows only env.
func envOf(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// flagValues returns the value of each named flag of nf, as --flag would
// print it.
func flagValues(t testing.TB, nf *nodeFlags, names ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, n := range names {
		f := nf.fs.Lookup(n)
		if f == nil {
			t.Fatalf("no flag --%s", n)
		}
		got[n] = f.Value.String()
	}
	return got
}

func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	const serverFile = `
listen        = "127.0.0.1:7001"
grace         = "45s"
max_in_flight = 512
log_level     = "warn"
http          = "127.0.0.1:9001"

plugin "files" {
  root      = "/from/file"
  read_only = "true"
  depth     = 3
}
`
	const clientFile = `
server      = "s.example:7443"
server_name = "from-file"
peer_wait   = "3s"
`
	tests := []struct {
		name        string
		role        string
		file        string
		args        []string
		env         map[string]string
		want        map[string]string            // flag -> value
		wantPlugins map[string]map[string]string // nil: not checked
	}{{
		name: "file over default",
		role: "server", file: serverFile,
		want: map[string]string{
			"listen": "127.0.0.1:7001", "grace": "45s", "max-in-flight": "512", "log-level": "warn", "http": "127.0.0.1:9001",
			"event-timeout": "30s", "peer-wait": "10s", "max-body": "0", "statsd-prefix": "restpipe", "log-format": "text", // defaults
		},
		wantPlugins: map[string]map[string]string{"files": {"root": "/from/file", "read_only": "true", "depth": "3"}},
	}, {
		name: "environment over file",
		role: "server", file: serverFile,
		env:  map[string]string{"RESTPIPE_GRACE": "50s", "RESTPIPE_LOG_LEVEL": "error", "RESTPIPE_MAX_BODY": "1024"},
		want: map[string]string{"grace": "50s", "log-level": "error", "max-body": "1024", "listen": "127.0.0.1:7001", "max-in-flight": "512"},
	}, {
		name: "flag over environment over file",
		role: "server", file: serverFile,
		args: []string{"--grace", "55s", "--listen", "127.0.0.1:7002"},
		env:  map[string]string{"RESTPIPE_GRACE": "50s", "RESTPIPE_MAX_IN_FLIGHT": "64"},
		want: map[string]string{"grace": "55s", "listen": "127.0.0.1:7002", "max-in-flight": "64", "log-level": "warn", "http": "127.0.0.1:9001"},
	}, {
		name: "an empty environment variable is unset",
		role: "server", file: serverFile,
		env:  map[string]string{"RESTPIPE_GRACE": ""},
		want: map[string]string{"grace": "45s"},
	}, {
		name: "client keys",
		role: "client", file: clientFile,
		env:  map[string]string{"RESTPIPE_SERVER_NAME": "from-env"},
		args: []string{"--peer-wait", "1s"},
		want: map[string]string{"server": "s.example:7443", "server-name": "from-env", "peer-wait": "1s", "http": "127.0.0.1:8081"},
	}, {
		name: "plugin settings: --plugin-config wins key by key",
		role: "server", file: serverFile,
		args:        []string{"--plugin-config", "files.root=/from/flag", "--plugin-config", "echo.x=1"},
		env:         map[string]string{"RESTPIPE_PLUGIN_CONFIG": "files.read_only=false"}, // the flag hides it
		wantPlugins: map[string]map[string]string{"files": {"root": "/from/flag", "read_only": "true", "depth": "3"}, "echo": {"x": "1"}},
	}, {
		name: "plugin settings: RESTPIPE_PLUGIN_CONFIG wins key by key",
		role: "server", file: serverFile,
		env:         map[string]string{"RESTPIPE_PLUGIN_CONFIG": "files.read_only=false"},
		wantPlugins: map[string]map[string]string{"files": {"root": "/from/file", "read_only": "false", "depth": "3"}},
	}, {
		name: "config from the environment",
		role: "server", file: serverFile,
		env:  map[string]string{"RESTPIPE_CONFIG": "FILE"}, // replaced by the file's path below
		want: map[string]string{"grace": "45s"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, t.TempDir(), "config.hcl", tt.file)
			env := maps.Clone(tt.env)
			args := tt.args
			if env["RESTPIPE_CONFIG"] == "FILE" {
				env["RESTPIPE_CONFIG"] = path
			} else {
				args = append([]string{"--config", path}, args...)
			}
			nf, err := parseNodeFlags(tt.role, args, io.Discard, envOf(env))
			if err != nil {
				t.Fatalf("parseNodeFlags: %v", err)
			}
			got := flagValues(t, nf, slices.Collect(maps.Keys(tt.want))...)
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("--%s = %q, want %q", k, got[k], want)
				}
			}
			if tt.wantPlugins != nil {
				if got := map[string]map[string]string(nf.cfg.PluginConfig); !equalPluginConfig(got, tt.wantPlugins) {
					t.Errorf("plugin config = %v, want %v", got, tt.wantPlugins)
				}
			}
		})
	}
}

func equalPluginConfig(a, b map[string]map[string]string) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]string) bool { return maps.Equal(x, y) })
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		role string
		file string
		line int    // the line the problem is reported at
		key  string // the key it names
		want string // what it says
	}{
		{"unknown key, suggested", "server", "grace = \"1s\"\nlistn = \":7443\"\n", 2, "listn", "unknown key; did you mean listen?"},
		{"dashes for underscores", "client", `server-name = "s"`, 1, "server-name", "did you mean server_name?"},
		{"unknown key, suggested from the other role", "client", `listn = ":7443"`, 1, "listn", "unknown key; did you mean listen? (a setting of restpipe server)"},
		{"unknown key, nothing near", "server", `colour = "red"`, 1, "colour", "unknown key"},
		{"string wanted", "server", `ca = 5`, 1, "ca", "want a string; got a number"},
		{"number wanted", "server", "\n\nmax_in_flight = \"512\"", 3, "max_in_flight", "want a whole number; got a string"},
		{"not a whole number", "server", `max_body = 1.5`, 1, "max_body", "1.5 is not a whole number"},
		{"out of range", "server", `max_body = 1e40`, 1, "max_body", "out of range"},
		{"duration wanted as a string", "client", `peer_wait = 30`, 1, "peer_wait", `want a duration as a string, such as "30s"; got a number`},
		{"bad duration", "server", "\ngrace = \"30\"", 2, "grace", `"30" is not a duration`},
		{"list instead of string", "server", `plugins = ["a", "b"]`, 1, "plugins", "want a string; got a list"},
		{"null", "server", `cert = null`, 1, "cert", "null is not a value"},
		{"bad log level", "server", `log_level = "loud"`, 1, "log_level", `"loud": want trace, debug, info, warn or error`},
		{"bad log format", "client", `log_format = "xml"`, 1, "log_format", `"xml": want text or json`},
		{"client key in a server's file", "server", "listen = \":1\"\nserver = \"s:7443\"", 2, "server", "a setting of restpipe client, not of restpipe server"},
		{"client key in a server's file (server_name)", "server", `server_name = "s"`, 1, "server_name", "a setting of restpipe client, not of restpipe server"},
		{"server key in a client's file", "client", `listen = ":7443"`, 1, "listen", "a setting of restpipe server, not of restpipe client"},
		{"config in a config file", "server", `config = "other.hcl"`, 1, "config", "cannot name another"},
		{"plugin_config", "server", `plugin_config = "files.root=/x"`, 1, "plugin_config", `write a block per plugin, plugin "NAME"`},
		{"plugin as a key", "server", `plugin = "files"`, 1, "plugin", `want a block: plugin "NAME"`},
		{"duplicate plugin blocks", "server", "plugin \"files\" {\n  root = \"/a\"\n}\nplugin \"echo\" {}\nplugin \"files\" {\n  read_only = \"true\"\n}\n", 5, `plugin "files"`, "a second block for this plugin (the first is at line 1)"},
		{"plugin block without a name", "server", "plugin {\n}", 1, "plugin", "want one label, the plugin's file name"},
		{"plugin value of a wrong type", "client", "plugin \"files\" {\n  root = [\"/a\"]\n}", 2, `plugin "files" root`, "want a string (or a number or bool, passed as a string); got a list"},
		{"block in a plugin block", "client", "plugin \"files\" {\n  x {\n  }\n}", 2, `plugin "files"`, "x: a block"},
		{"a setting written as a block", "server", "listen {\n}", 1, "listen", "a setting, not a block: write listen = VALUE"},
		{"unknown block", "server", "plugn \"files\" {\n}", 1, "plugn", "unknown block; did you mean plugin?"},
		{"variables", "server", `ca = env.HOME`, 1, "ca", "Variables not allowed"},
		{"duplicate key", "server", "listen = \":1\"\nlisten = \":2\"", 2, "listen", "set twice (first at line 1); keep one"},
		{"syntax error", "server", "grace = \"1s\"\nlisten = \n", 2, "", "Invalid expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, t.TempDir(), "node.hcl", tt.file)
			_, err := loadConfigFile(path, tt.role)
			if err == nil {
				t.Fatalf("loadConfigFile(%q) = nil error, want %q", tt.file, tt.want)
			}
			msg := err.Error()
			at := fmt.Sprintf("%s:%d: ", path, tt.line)
			if !strings.HasPrefix(msg, at) || !strings.Contains(msg, tt.key) || !strings.Contains(msg, tt.want) {
				t.Errorf("loadConfigFile(%q) = %q, want it to start with %q and name %s and say %q", tt.file, msg, at, tt.key, tt.want)
			}
		})
	}

	t.Run("every problem at once", func(t *testing.T) {
		t.Parallel()
		path := writeConfig(t, t.TempDir(), "node.hcl", "listn = \":1\"\ngrace = \"soon\"\nserver = \"s:1\"\n")
		_, err := loadConfigFile(path, "server")
		want := []string{"3 problems", path + ":1: listn", path + ":2: grace", path + ":3: server"}
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("loadConfigFile = %v, want it to mention %q", err, w)
			}
		}
	})
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "nope.hcl")
		if _, err := loadConfigFile(path, "server"); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("loadConfigFile(missing) = %v, want an error naming %s", err, path)
		}
	})
	t.Run("the binary refuses to start", func(t *testing.T) {
		t.Parallel()
		path := writeConfig(t, t.TempDir(), "node.hcl", "ca = \"ca.crt\"\nlisten = \":7443\"\n")
		_, stderr, code := runCmd(t, nil, "client", "--config", path)
		if want := path + ":2: listen: a setting of restpipe server"; code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("restpipe client --config: code %d, stderr %q; want 1 and %q", code, stderr, want)
		}
	})
}

func TestConfigRelativePaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeConfig(t, dir, "etc/restpipe/config.hcl", `
ca               = "ca.crt"
cert             = "/abs/node.crt"
plugins          = "../../var/plugins"
plugin_checksums = "sums/plugins.sha256"
http             = "unix:run/gw.sock"
statsd           = "localhost:8125"

plugin "files" {
  root = "relative/is/passed/as/is"
}
`)
	etc := filepath.Join(dir, "etc", "restpipe")
	tests := []struct {
		name string
		args []string
		want map[string]string
	}{{
		name: "from the file",
		want: map[string]string{
			"ca":               filepath.Join(etc, "ca.crt"),
			"cert":             "/abs/node.crt",
			"plugins":          filepath.Join(dir, "var", "plugins"),
			"plugin-checksums": filepath.Join(etc, "sums", "plugins.sha256"),
			"http":             "unix:" + filepath.Join(etc, "run", "gw.sock"),
			"statsd":           "localhost:8125",
		},
	}, {
		name: "flags stay relative to the working directory",
		args: []string{"--ca", "here/ca.crt", "--http", "unix:gw.sock", "--key", "k.key"},
		want: map[string]string{"ca": "here/ca.crt", "http": "unix:gw.sock", "key": "k.key", "cert": "/abs/node.crt"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nf, err := parseNodeFlags("server", append([]string{"--config", path}, tt.args...), io.Discard, envOf(nil))
			if err != nil {
				t.Fatal(err)
			}
			got := flagValues(t, nf, slices.Collect(maps.Keys(tt.want))...)
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("--%s = %q, want %q", k, got[k], want)
				}
			}
			if got, want := nf.cfg.PluginConfig["files"]["root"], "relative/is/passed/as/is"; got != want {
				t.Errorf("files.root = %q, want %q", got, want)
			}
		})
	}

	t.Run("a relative --config", func(t *testing.T) {
		t.Parallel()
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(wd, path)
		if err != nil {
			t.Fatal(err)
		}
		nf, err := parseNodeFlags("server", []string{"--config", rel}, io.Discard, envOf(nil))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := nf.files.CA, filepath.Join(etc, "ca.crt"); got != want {
			t.Errorf("ca = %q, want %q", got, want)
		}
	})
}

// TestConfigFilesPlugin runs a real server whose configuration file gives
// its identity (by paths relative to the file), its plugins directory and
// the files plugin's root, and reads a file through its gateway.
func TestConfigFilesPlugin(t *testing.T) {
	t.Parallel()
	pkiDir := testPKI(t)
	pluginsDir := t.TempDir()
	installPlugin(t, pluginBin("files"), filepath.Join(pluginsDir, "files"))
	root := t.TempDir()
	const content = "served by the files plugin, configured by config.hcl\n"
	if err := os.WriteFile(filepath.Join(root, "note.txt"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, pkiDir, "config.hcl", fmt.Sprintf(`
# The identity, relative to this file.
ca     = "ca.crt"
cert   = "server.crt"
key    = "server.key"
listen = "127.0.0.1:0"

plugins = %q

plugin "files" {
  root      = %q
  read_only = "true"
}
`, pluginsDir, root))
	srv := startProc(t, "server", nil, "server", "--config", path)
	l := srv.waitLog(0, 20*time.Second, "listening", nil)
	base := "http://" + l.str("http")
	srv.waitLog(0, 20*time.Second, "plugin running", func(l logLine) bool { return l.str("plugin") == "files" })

	r := do(t, http.MethodGet, base+"/local/files//note.txt", nil)
	if r.status != http.StatusOK || string(r.body) != content {
		t.Fatalf("GET /local/files//note.txt = %d %q, want 200 %q", r.status, r.body, content)
	}
	// read_only reached the plugin too.
	r = do(t, http.MethodPut, base+"/local/files//new.txt", strings.NewReader("x"))
	if r.status != http.StatusForbidden {
		t.Errorf("PUT with read_only = \"true\": status %d (%s), want 403", r.status, r.body)
	}
}

// TestVersionLdflags builds restpipe as `go tool -modfile=cmd/task.mod task build` does and checks
// that `restpipe version` reports the version and commit it was given.
func TestVersionLdflags(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "restpipe")
	const v, c = "v9.8.7-test", "abc1234"
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+v+" -X main.commit="+c, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "restpipe " + v + " (commit " + c + ","; !strings.HasPrefix(string(out), want) {
		t.Errorf("restpipe version = %q, want it to start with %q", out, want)
	}
}

// TestConfigDocs keeps the documentation in step with the flags:
// docs/config.md names every key, and each HCL example there, in
// docs/packaging.md and in the README is a valid file for the role its
// first line names.
func TestConfigDocs(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"server", "client"} {
		for _, k := range configSchema(role).Keys() {
			if !strings.Contains(string(doc), "`"+k+"`") {
				t.Errorf("docs/config.md does not describe the key `%s` (restpipe %s)", k, role)
			}
		}
	}
	for _, file := range []string{"../../docs/config.md", "../../docs/packaging.md", "../../README.md"} {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(string(text), -1)
		if len(blocks) == 0 {
			t.Errorf("%s has no ```hcl examples", file)
		}
		for i, b := range blocks {
			first, _, _ := strings.Cut(b[1], "\n")
			role := ""
			switch {
			case strings.Contains(first, "restpipe server"):
				role = "server"
			case strings.Contains(first, "restpipe client"):
				role = "client"
			default:
				t.Errorf("%s, example %d: its first line %q names neither restpipe server nor restpipe client", file, i+1, first)
				continue
			}
			path := writeConfig(t, t.TempDir(), "config.hcl", b[1])
			if _, err := loadConfigFile(path, role); err != nil {
				t.Errorf("%s, example %d (%s) is not valid: %v", file, i+1, role, err)
			}
		}
	}
}

// TestPluginSettingFromFile checks that a plugin setting written @FILE is
// read from the file (for secrets), and @@ escapes a literal @.
func TestPluginSettingFromFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pc := pluginConfigFlag{}
	for _, v := range []string{"files.token=@" + secret, "files.mail=@@home", "files.root=/srv"} {
		if err := pc.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := pc.readFiles(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"token": "s3cret", "mail": "@home", "root": "/srv"}
	for k, v := range want {
		if pc["files"][k] != v {
			t.Errorf("files.%s = %q, want %q", k, pc["files"][k], v)
		}
	}
	bad := pluginConfigFlag{"files": {"token": "@" + filepath.Join(dir, "missing")}}
	if err := bad.readFiles(); err == nil || !strings.Contains(err.Error(), "files.token") {
		t.Errorf("a missing secret file = %v, want an error naming the setting", err)
	}
}
