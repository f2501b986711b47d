package plugins

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/hosttest"
	pluginv1 "github.com/restpipe/restpipe/proto/plugin/v1"
)

// Python plugins, started by the real Manager as real python3 processes
// running plugin-sdk/python (package restpipe_plugin).

// pythonSDK is the Python SDK's directory, put on the plugins' PYTHONPATH.
var pythonSDK = func() string {
	p, err := filepath.Abs("../../plugin-sdk/python")
	if err != nil {
		panic(err)
	}
	return p
}()

// findPython is hosttest.FindPython: a python3 with grpc, or why not.
var findPython = hosttest.FindPython

// pythonDir holds a python3 that is the interpreter findPython chose, for
// the plugins' PATH (their scripts start with #!/usr/bin/env python3), and
// the interpreter's bytecode cache (kept out of the source tree).
var pythonDir = sync.OnceValues(func() (string, error) {
	py, _ := findPython()
	dir := filepath.Join(bins, "python")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	return dir, os.Symlink(py, filepath.Join(dir, "bin", "python3"))
})

// pythonEnv is the environment of Python plugins: the chosen interpreter
// first on PATH, and the SDK importable.
func pythonEnv(t testing.TB) []string {
	t.Helper()
	py, why := findPython()
	if py == "" {
		t.Skip(why)
	}
	dir, err := pythonDir()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"PATH=" + filepath.Join(dir, "bin") + ":/usr/bin:/bin", "PYTHONPATH=" + pythonSDK,
		"PYTHONPYCACHEPREFIX=" + filepath.Join(dir, "pycache"), "HOME=" + dir}
}

// newPythonEnv is newEnv for Python plugins.
func newPythonEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	pyEnv := pythonEnv(t)
	return newEnv(t, func(c *Config) {
		c.Env = pyEnv
		if mod != nil {
			mod(c)
		}
	})
}

// script installs a Python plugin script as name, atomically.
func (e *env) script(name, src string) {
	e.t.Helper()
	tmp := filepath.Join(e.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte("#!/usr/bin/env python3\n"+src), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
}

// pyBasic is a plugin that prints every way a plugin can, and serves
// its version.
const pyBasic = `import os, subprocess, sys, logging
from restpipe_plugin import Plugin, Reply
print("printed at import time, before serve")
VERSION = "%s"
p = Plugin("py", VERSION)

@p.route("get", "py/ok")
def ok(ev):
    return {"version": VERSION, "peer": ev.peer, "node": [ev.node.role, ev.node.name], "args": ev.args}

@p.route("get", "py/print")
def printing(ev):
    print("printed by a handler")
    sys.stdout.write("written to sys.stdout\n")
    os.write(1, b"written to descriptor 1\n")
    subprocess.run(["sh", "-c", "echo printed by a child process"])
    print("printed to sys.stderr", file=sys.stderr)
    logging.getLogger("py.handler").warning("logged by a handler", extra={"answer": 42})
    return "printed"

@p.route("get", "py/slow")
def slow(ev):
    ev.wait(float(ev.query_value("s", "1")))
    return {"version": VERSION}

@p.route("get", "py/until")
def until(ev):
    # Answers once the file named by f exists (or the event ends).
    while not os.path.exists(ev.query_value("f", "")) and not ev.wait(0.02):
        pass
    return {"version": VERSION}

@p.route("get", "py/crash")
def crash(ev):
    os._exit(3)

@p.route("post", "py/ignore")
def ignore(ev):
    import time
    log = logging.getLogger("py.ignore")
    log.warning("ignoring its body", extra={"id": ev.id})
    ev.wait()
    log.warning("gave up", extra={"id": ev.id, "deadline_passed": ev.deadline is not None and time.monotonic() >= ev.deadline})
    return None

@p.route("get", "py/stubborn")
def stubborn(ev):
    import time
    time.sleep(float(ev.query_value("s", "1")))
    return None

p.serve()
`

func TestPythonPluginServesAndPrintsToTheLog(t *testing.T) {
	e := newPythonEnv(t, nil)
	e.script("py", fmt.Sprintf(pyBasic, "1"))
	e.start()
	st := e.waitState("py", StateRunning, 20*time.Second)
	if st.Name != "py" || st.Version != "1" || !strings.HasPrefix(st.SDK, "python/") || len(st.Routes) != 7 || st.StartMillis <= 0 {
		t.Errorf("status = %+v", st)
	}
	v, err := e.get("py/ok", "a b")
	if err != nil {
		t.Fatal(err)
	}
	if v["version"] != "1" || v["peer"] != "peer1" || fmt.Sprint(v["node"]) != "[server srv]" || fmt.Sprint(v["args"]) != "[a b]" {
		t.Errorf("reply = %v", v)
	}
	e.logs.wait(5*time.Second, "plugins.py", "printed at import time, before serve", "stream=stdout")
	if _, b, err := e.call(context.Background(), "get", "py/print", nil); err != nil || string(b) != "printed" {
		t.Fatalf("print route = %q, %v", b, err)
	}
	for _, line := range []string{"printed by a handler", "written to sys.stdout", "written to descriptor 1", "printed by a child process"} {
		e.logs.wait(5*time.Second, "[INFO]", "plugins.py", line, "stream=stdout")
	}
	e.logs.wait(5*time.Second, "[INFO]", "plugins.py", "printed to sys.stderr", "stream=stderr")
	e.logs.wait(5*time.Second, "[WARN]", "plugins.py", "logged by a handler", "answer=42", "logger=py.handler")
	if _, err := e.get("py/ok"); err != nil {
		t.Errorf("event after printing = %v", err)
	}
	if st, _ := e.status("py"); st.Restarts != 0 || st.PID != e.pids()[0] {
		t.Errorf("status after printing = %+v", st)
	}
}

func TestPythonPluginCrashIsRestarted(t *testing.T) {
	e := newPythonEnv(t, nil)
	e.script("py", fmt.Sprintf(pyBasic, "1"))
	e.start()
	before := e.waitState("py", StateRunning, 20*time.Second)
	_, _, err := e.call(context.Background(), "get", "py/crash", nil)
	wantKind(t, err, host.KindPluginUnavailable, "py")
	waitFor(t, 10*time.Second, "a restart", func() bool {
		st, _ := e.status("py")
		return st.Restarts == 1 && st.State == StateRunning
	})
	if st, _ := e.status("py"); st.PID == before.PID {
		t.Errorf("after the crash: %+v, want a new process", st)
	}
	for range 3 {
		if _, err := e.get("py/ok"); err != nil {
			t.Errorf("event after the restart = %v", err)
		}
	}
}

func TestPythonPluginThatCannotStartSaysWhyInStatus(t *testing.T) {
	e := newPythonEnv(t, func(c *Config) { c.QuarantineAfter = 2 })
	// An import that fails after the SDK's (logged as an error by the SDK),
	// a syntax error (Python's own message, before any import), and a
	// plugin without routes.
	e.script("imports", "from restpipe_plugin import Plugin\nimport no_such_module_for_restpipe\n")
	e.script("syntax", "from restpipe_plugin import Plugin\ndef broken(:\n")
	e.script("empty", "from restpipe_plugin import Plugin\nPlugin('empty', '1').serve()\n")
	e.start()
	for file, want := range map[string]string{
		"imports": "No module named 'no_such_module_for_restpipe'",
		"syntax":  "SyntaxError",
		"empty":   "registers no route and no peer hook",
	} {
		st := e.waitState(file, StateQuarantined, 20*time.Second)
		if !strings.Contains(st.Error, want) || !strings.Contains(st.Error, "quarantined after 2 crashes") {
			t.Errorf("%s: /status error = %q, want it to say %q", file, st.Error, want)
		}
	}
}

func TestPythonPluginHotReplacement(t *testing.T) {
	e := newPythonEnv(t, nil)
	e.script("py", fmt.Sprintf(pyBasic, "1"))
	e.start()
	old := e.waitState("py", StateRunning, 20*time.Second)
	// An event in flight on version 1 across the replacement, answered
	// only once the test says so: however slow the machine, it overlaps.
	release := filepath.Join(t.TempDir(), "release")
	res := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rep, err := e.table.Handle(ctx, &host.Event{Verb: "get", Noun: "py/until", Query: map[string][]string{"f": {release}}})
		if err != nil {
			res <- err.Error()
			return
		}
		defer rep.Close()
		res <- readAll(rep)
	}()
	waitFor(t, 5*time.Second, "the event in flight", func() bool { return e.table.InFlight("py") == 1 })
	e.script("py", fmt.Sprintf(pyBasic, "2"))
	waitFor(t, 15*time.Second, "version 2", func() bool { st, _ := e.status("py"); return st.Version == "2" && st.State == StateRunning })
	if v, err := e.get("py/ok"); err != nil || v["version"] != "2" {
		t.Errorf("after the replacement: %v, %v; want version 2", v, err)
	}
	if !alive(old.PID) {
		t.Fatal("the old process was stopped with an event in flight")
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := <-res; !strings.Contains(got, `"version":"1"`) {
		t.Errorf("the event in flight = %q, want it answered by version 1", got)
	}
	waitFor(t, 5*time.Second, "the old process to exit", func() bool { return !alive(old.PID) })
	// It was stopped through go-plugin's GRPCController.Shutdown, not killed
	// after go-plugin's 2 s grace.
	if e.logs.has("plugin failed to exit gracefully") {
		t.Error("the replaced Python plugin did not exit when the node asked it to")
	}
}

// pyConfigured is a plugin that keeps its configuration, or refuses one
// without "color".
const pyConfigured = `from restpipe_plugin import Plugin
p = Plugin("conf", "1")
settings = {}

@p.configure
def configure(cfg):
    if "color" not in cfg:
        raise KeyError("setting 'color' is required")
    settings.update(cfg)

@p.route("get", "conf")
def conf(ev):
    return settings

p.serve()
`

func TestPythonPluginConfigurationAndPinning(t *testing.T) {
	sum := func(src string) []byte {
		s := sha256.Sum256([]byte("#!/usr/bin/env python3\n" + src))
		return s[:]
	}
	e := newPythonEnv(t, func(c *Config) {
		c.PluginConfig = map[string]map[string]string{"conf": {"color": "blue", "size": "3"}}
		c.Checksums = map[string][]byte{"conf": sum(pyConfigured), "unconfigured": sum(pyConfigured), "changed": sum(pyConfigured)}
	})
	e.script("conf", pyConfigured)
	e.script("unconfigured", pyConfigured)
	e.script("changed", pyConfigured+"# edited after pinning\n")
	e.start()
	e.waitState("conf", StateRunning, 10*time.Second)
	if v, err := e.get("conf"); err != nil || v["color"] != "blue" || v["size"] != "3" {
		t.Errorf("configuration seen by the plugin = %v, %v", v, err)
	}
	st := e.waitState("unconfigured", StateMisconfigured, 10*time.Second)
	if !strings.Contains(st.Error, "configure: KeyError: \"setting 'color' is required\"") {
		t.Errorf("unconfigured: %+v", st)
	}
	if st := e.waitState("changed", StateRefused, 10*time.Second); !strings.Contains(st.Error, "does not match the checksum manifest") {
		t.Errorf("changed: %+v", st)
	}
}

func TestPythonPluginOverAutoMTLS(t *testing.T) {
	e := newPythonEnv(t, func(c *Config) { c.AutoMTLS = true })
	e.script("py", fmt.Sprintf(pyBasic, "1"))
	e.start()
	e.waitState("py", StateRunning, 20*time.Second)
	if v, err := e.get("py/ok"); err != nil || v["version"] != "1" {
		t.Fatalf("over AutoMTLS: %v, %v", v, err)
	}
	e.logs.wait(5*time.Second, "plugins.py", "printed at import time", "stream=stdout") // the stdio stream works over TLS too
}

// TestPythonStatsCountAbandonedHandlers asks a Python plugin's Stats over
// its real gRPC connection while one of its handlers outlives its event.
func TestPythonStatsCountAbandonedHandlers(t *testing.T) {
	e := newPythonEnv(t, nil)
	e.script("py", fmt.Sprintf(pyBasic, "1"))
	e.start()
	e.waitState("py", StateRunning, 20*time.Second)
	stats := func() *pluginv1.StatsResponse {
		e.m.mu.Lock()
		in := e.m.sups["py"].h.cur.Load()
		e.m.mu.Unlock()
		s, err := in.rpc.Stats(context.Background(), &pluginv1.StatsRequest{})
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := e.call(ctx, "get", "py/stubborn", nil) // sleeps 1s, ignoring its event
	wantKind(t, err, host.KindTimeout, "")
	waitFor(t, 2*time.Second, "an abandoned handler", func() bool { s := stats(); return s.Running == 1 && s.Abandoned == 1 })
	waitFor(t, 5*time.Second, "it to return", func() bool { s := stats(); return s.Running == 0 && s.Abandoned == 0 && s.Served >= 1 })
}

// TestPythonHangUpReachesAHandlerThatDoesNotReadItsBody abandons an event
// whose large upload the Python handler never reads: the plugin's reader
// is stuck waiting for the handler, and must still see the node hang up.
func TestPythonHangUpReachesAHandlerThatDoesNotReadItsBody(t *testing.T) {
	e := newPythonEnv(t, nil)
	e.script("py", fmt.Sprintf(pyBasic, "1"))
	e.start()
	e.waitState("py", StateRunning, 20*time.Second)
	body := &stallingBody{left: 4 << 20, closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		rep, err := e.table.Handle(ctx, &host.Event{ID: "ignored-upload", Verb: "post", Noun: "py/ignore", Body: body, Size: -1})
		if err == nil {
			rep.Close()
		}
		done <- err
	}()
	e.logs.wait(10*time.Second, "ignoring its body", "id=ignored-upload")
	time.Sleep(350 * time.Millisecond) // the plugin's queue is full, its reader waits
	start := time.Now()
	cancel()
	if err := <-done; err == nil {
		t.Error("the abandoned event succeeded")
	}
	e.logs.wait(3*time.Second, "gave up", "id=ignored-upload", "deadline_passed=false")
	t.Logf("the handler saw the hang-up %v after it", time.Since(start).Round(time.Millisecond))
}

// stallingBody yields left zero bytes, then blocks until closed, as a
// caller's upload that stalls does.
type stallingBody struct {
	mu     sync.Mutex
	left   int
	closed chan struct{}
	once   sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	n := min(len(p), b.left)
	b.left -= n
	b.mu.Unlock()
	if n > 0 {
		clear(p[:n])
		return n, nil
	}
	<-b.closed
	return 0, errors.New("body closed")
}

func (b *stallingBody) Close() error { b.once.Do(func() { close(b.closed) }); return nil }

// TestPythonSDKUnitTests runs the SDK's own tests (plugin-sdk/python/tests)
// with the interpreter the plugins use.
func TestPythonSDKUnitTests(t *testing.T) {
	env := pythonEnv(t)
	py, _ := findPython()
	cmd := exec.Command(py, "-m", "unittest", "discover", "-s", "tests")
	cmd.Dir = pythonSDK
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python -m unittest: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "OK") {
		t.Fatalf("python -m unittest did not pass:\n%s", out)
	}
	t.Logf("%s", lastLines(string(out), 3))
}

// TestPythonAutoMTLSCertificateIsGoPluginsKind parses the certificate the
// Python SDK makes for AutoMTLS with Go's x509, as go-plugin's host does,
// and verifies it as the host's TLS does: for "localhost", as its own root.
func TestPythonAutoMTLSCertificateIsGoPluginsKind(t *testing.T) {
	env := pythonEnv(t)
	py, _ := findPython()
	cmd := exec.Command(py, "-c", "from restpipe_plugin import automtls\nc, k, f = automtls.server_identity()\nprint(f)\nprint(c.decode() + k.decode())")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	field, rest, _ := strings.Cut(string(out), "\n")
	der, err := base64.RawStdEncoding.DecodeString(field) // how go-plugin's client decodes the handshake's field
	if err != nil {
		t.Fatalf("handshake field: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("Verify(%v): %v", usage, err)
		}
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("self-signature: %v", err)
	}
	blk, rest2 := pem.Decode([]byte(rest))
	key, _ := pem.Decode(rest2)
	if blk == nil || key == nil || string(blk.Bytes) != string(der) {
		t.Fatalf("PEM output does not hold the certificate and a key")
	}
	if _, err := x509.ParseECPrivateKey(key.Bytes); err != nil {
		t.Errorf("ParseECPrivateKey: %v", err)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
