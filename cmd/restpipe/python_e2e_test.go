package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/hosttest"
)

// Python plugins between real nodes: a client node calls the server's
// Python plugins through the link, over HTTP, as a user would.

// pythonSDK is the Python SDK's directory, put on the plugins' PYTHONPATH.
var pythonSDK, _ = filepath.Abs("../../plugin-sdk/python")

// findPython is hosttest.FindPython: a python3 with grpc, or why not.
var findPython = hosttest.FindPython

// pythonPluginEnv returns the --plugin-env entries that run Python plugins
// with the interpreter findPython chose (first on PATH, for the scripts'
// #!/usr/bin/env python3) and the SDK importable, or skips the test.
func pythonPluginEnv(t testing.TB) envFlag {
	t.Helper()
	py, why := findPython()
	if py == "" {
		t.Skip(why)
	}
	dir := filepath.Join(binDir, "python")
	pyOnce.Do(func() {
		pyErr = os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
		if pyErr == nil {
			pyErr = os.Symlink(py, filepath.Join(dir, "bin", "python3"))
		}
	})
	if pyErr != nil {
		t.Fatal(pyErr)
	}
	return envFlag{"PATH=" + filepath.Join(dir, "bin") + ":/usr/bin:/bin", "PYTHONPATH=" + pythonSDK,
		"PYTHONPYCACHEPREFIX=" + filepath.Join(dir, "pycache")}
}

var (
	pyOnce sync.Once
	pyErr  error
)

// pythonCluster starts a server node whose plugins directory holds the
// given scripts (file name -> source, or an example under plugins/ when
// the source is "example:<path>"), and client nodes; Python plugins get
// their environment, and every node its mTLS to its plugins.
func pythonCluster(t testing.TB, scripts map[string]string, mod func(*nodeConfig), clients ...string) *cluster {
	t.Helper()
	env := pythonPluginEnv(t)
	dir := t.TempDir()
	for name, src := range scripts {
		if path, ok := strings.CutPrefix(src, "example:"); ok {
			b, err := os.ReadFile(filepath.Join("../..", path))
			if err != nil {
				t.Fatal(err)
			}
			src = string(b)
		} else {
			src = "#!/usr/bin/env python3\n" + src
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return startCluster(t, clusterOpts{plugins: []string{}, mod: func(cfg *nodeConfig) {
		cfg.PluginEnv = env
		if cfg.Role == host.RoleServer {
			cfg.PluginsDir = dir
		}
		if mod != nil {
			mod(cfg)
		}
	}}, clients...)
}

// compatCases are RestPipe handler methods beyond its own examples: a JSON
// body, a 3-tuple, an exception, the caller's identity, and a hook.
const compatCases = `import logging
from restpipe_plugin import restpipe
log = logging.getLogger("compat")

class Handler(object):
    def post_decoded(self, ctx, post_data):
        mimetype, data = post_data
        return {"mimetype": mimetype, "type": type(data).__name__, "data": data}

    def get_report(self, ctx, post_data):
        return ("text/csv", 7, "name,value\nx,1\n")

    def get_oops(self, ctx, post_data):
        raise KeyError("no such thing")

    def get_whoami(self, ctx, post_data):
        return {"participant_address": ctx.participant_address, "node": list(ctx.node)}

class Hooks(object):
    def connection_added(self, peer, count):
        log.warning("hook: connection_added", extra={"who": peer, "count": count})

restpipe.serve(Handler(), name="compat-cases", version="1.0.0", hooks=Hooks())
`

// TestPythonRestPipeHandlers serves RestPipe's own example handler
// (plugins/restpipe-compat) and more RestPipe-style methods from Python
// plugins on the server, called from a client node through the link.
func TestPythonRestPipeHandlers(t *testing.T) {
	t.Parallel()
	c := pythonCluster(t, map[string]string{
		"restpipe-compat": "example:plugins/restpipe-compat/restpipe_compat.py",
		"compat-cases":    compatCases,
		"broken":          "from restpipe_plugin import restpipe\nimport rpipe.server.connection\n",
	}, nil, "client1")
	cl := c.clients["client1"]

	// RestPipe's examples, exactly: cat with two args, and time.
	r := do(t, "GET", cl.url("/server/cat//hello%20/world"), nil)
	if r.status != 200 || r.code != "0" || string(r.body) != `{"result_from_server": "hello world"}` || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("cat = %d code %s %q (%s), want RestPipe's reply", r.status, r.code, r.body, r.header.Get("Content-Type"))
	}
	if v := do(t, "GET", cl.url("/server/time"), nil).json(t); v["time_from_server"] == nil {
		t.Errorf("time = %v", v)
	}
	// A JSON body reaches the method decoded; other bodies as bytes.
	r = do(t, "POST", cl.url("/server/decoded"), strings.NewReader(`{"a": [1, "two"]}`), "Content-Type", "application/json; charset=utf-8")
	if v := r.json(t); v["mimetype"] != "application/json" || v["type"] != "dict" || fmt.Sprint(v["data"]) != "map[a:[1 two]]" {
		t.Errorf("decoded = %v", v)
	}
	// A 3-tuple is (mimetype, code, data); the code is X-Event-Return-Code.
	r = do(t, "GET", cl.url("/server/report"), nil)
	if r.status != 200 || r.code != "7" || r.header.Get("Content-Type") != "text/csv" || string(r.body) != "name,value\nx,1\n" {
		t.Errorf("report = %d code %s %q %q", r.status, r.code, r.header.Get("Content-Type"), r.body)
	}
	// An exception is handler_failed, with RestPipe's exception object.
	r = do(t, "GET", cl.url("/server/oops"), nil)
	v := wantError(t, r, host.KindHandlerFailed)
	exc, _ := v["exception"].(map[string]any)
	if exc["class"] != "KeyError" || exc["message"] != "'no such thing'" {
		t.Errorf("oops exception = %v, want class KeyError and its message", exc)
	}
	// The caller is its certificate's name.
	if v := do(t, "GET", cl.url("/server/whoami"), nil).json(t); v["participant_address"] != "client1" || fmt.Sprint(v["node"]) != "[server server]" {
		t.Errorf("whoami = %v", v)
	}
	// The connection hook ran for the client's link.
	waitFor(t, 5*time.Second, "the connection_added hook", func() bool {
		return logHas(c.server.logs.String(), "plugins.compat-cases", "hook: connection_added", "who=client1", "count=1")
	})
	// RestPipe's handler logs reach the server's log under the plugin.
	if !logHas(c.server.logs.String(), "plugins.restpipe-compat", "TEST: get_cat()") {
		t.Errorf("the handler's log line is not in the server's log")
	}
	// A plugin whose import fails says why in /status.
	waitFor(t, 10*time.Second, "the broken plugin's reason in /status", func() bool {
		st := pluginStatus(t, c.server.httpAddr(), "broken")
		return strings.Contains(st.Error, "No module named 'rpipe'")
	})
	for _, f := range []string{"restpipe-compat", "compat-cases"} {
		if st := pluginStatus(t, c.server.httpAddr(), f); st.State != "running" || !strings.HasPrefix(st.SDK, "python/") || st.StartMillis <= 0 {
			t.Errorf("%s status = %+v", f, st)
		} else {
			t.Logf("%s started in %.1f ms (interpreter, imports, handshake, describe; over AutoMTLS)", f, st.StartMillis)
		}
	}
}

// TestPythonLargeBodyStreamsWithFlatMemory sends a large body through the
// link into the digest example plugin (plugins/digest) and downloads one
// as large from it, checking both by their SHA-256, and the Python
// process's peak RSS: it must not grow with the bodies.
func TestPythonLargeBodyStreamsWithFlatMemory(t *testing.T) {
	t.Parallel()
	size := min(int64(256<<20), largeSize())
	c := pythonCluster(t, map[string]string{"digest": "example:plugins/digest/digest.py"}, nil, "client1")
	cl := c.clients["client1"]
	if r := do(t, "POST", cl.url("/server/digest"), strings.NewReader("warm")); r.status != 200 {
		t.Fatalf("warm-up = %d %s", r.status, r.body)
	}
	pid := pluginStatus(t, c.server.httpAddr(), "digest").PID
	before, err := procBytes(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	resetHWM := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)

	// Up: a chunked upload, hashed by the plugin as it arrives.
	pattern := make([]byte, 64<<10)
	for i := range pattern {
		pattern[i] = byte(i)
	}
	want := sha256.New()
	pr, pw := io.Pipe()
	go func() {
		for sent := int64(0); sent < size; sent += int64(len(pattern)) {
			want.Write(pattern)
			if _, err := pw.Write(pattern); err != nil {
				return
			}
		}
		pw.Close()
	}()
	start := time.Now()
	r := do(t, "POST", cl.url("/server/digest"), pr)
	up := time.Since(start)
	v := r.json(t)
	if v["digest"] != hex.EncodeToString(want.Sum(nil)) || v["bytes"] != float64(size) {
		t.Fatalf("digest of %d MiB = %v, want %x", size>>20, v, want.Sum(nil))
	}

	// Down: a body streamed by the plugin as the node takes it.
	start = time.Now()
	resp, err := http.Get(cl.url("/server/bytes//" + strconv.FormatInt(size, 10)))
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	down := time.Since(start)
	if err != nil || n != size || resp.Header.Get("Content-Length") != strconv.FormatInt(size, 10) || !bytesEqual(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("download: %d of %d bytes (%v), Content-Length %q, digest matches %v", n, size, err, resp.Header.Get("Content-Length"), bytesEqual(got.Sum(nil), want.Sum(nil)))
	}

	peak, err := procBytes(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	note := ""
	if resetHWM != nil {
		note = fmt.Sprintf(" (VmHWM not reset: %v; it is the process's whole life)", resetHWM)
	}
	t.Logf("%d MiB up in %v (%.0f MB/s), down in %v (%.0f MB/s); Python plugin RSS %.1f MiB before, peak %.1f MiB%s",
		size>>20, up.Round(time.Millisecond), float64(size)/up.Seconds()/1e6, down.Round(time.Millisecond), float64(size)/down.Seconds()/1e6,
		float64(before)/(1<<20), float64(peak)/(1<<20), note)
	if peak > before+32<<20 {
		t.Errorf("the Python plugin's peak RSS grew from %d MiB to %d MiB with a %d MiB body: it does not stream", before>>20, peak>>20, size>>20)
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// waiter's handlers wait for their event to end, and log how it did.
const waiter = `import logging, time
from restpipe_plugin import Plugin
p = Plugin("waiter", "1.0.0")
log = logging.getLogger("waiter")

def wait(ev, what):
    left = ev.time_left()
    log.warning("waiting", extra={"what": what, "id": ev.id, "left_ms": int(left * 1000) if left is not None else -1})
    t0 = time.monotonic()
    ev.wait()
    passed = ev.deadline is not None and time.monotonic() >= ev.deadline - 0.05
    log.warning("gave up", extra={"what": what, "id": ev.id, "after_ms": int((time.monotonic() - t0) * 1000),
                                  "deadline_passed": passed})
    return None

@p.route("get", "wait")
def get_wait(ev):
    return wait(ev, "get")

@p.route("post", "ignore")
def post_ignore(ev):
    return wait(ev, "upload")  # never reads its body

p.serve()
`

// TestPythonDeadlineAndHangUpReachTheHandler: the caller's X-Event-Timeout
// becomes the Python handler's deadline on the far node, and a caller that
// hangs up cancels the handler there, also one that never reads the body
// still arriving.
func TestPythonDeadlineAndHangUpReachTheHandler(t *testing.T) {
	t.Parallel()
	c := pythonCluster(t, map[string]string{"waiter": waiter}, nil, "client1")
	cl := c.clients["client1"]
	logs := func() string { return c.server.logs.String() }

	t.Run("deadline", func(t *testing.T) {
		start := time.Now()
		r := do(t, "GET", cl.url("/server/wait"), nil, "X-Event-Timeout", "1500ms", "X-Request-Id", "py-deadline")
		wantError(t, r, host.KindTimeout)
		if took := time.Since(start); took < 1400*time.Millisecond || took > 5*time.Second {
			t.Errorf("timed out after %v, want about 1.5s", took)
		}
		waitFor(t, 5*time.Second, "the handler to give up", func() bool { return logHas(logs(), "gave up", "id=py-deadline") })
		for _, line := range strings.Split(logs(), "\n") {
			if strings.Contains(line, "waiting") && strings.Contains(line, "id=py-deadline") {
				ms := fieldInt(line, "left_ms")
				if ms < 1000 || ms > 1500 {
					t.Errorf("the handler's deadline was %d ms away, want just under 1500: %s", ms, line)
				}
			}
			if strings.Contains(line, "gave up") && strings.Contains(line, "id=py-deadline") {
				if ms := fieldInt(line, "after_ms"); ms < 1000 || ms > 3000 {
					t.Errorf("the handler gave up after %d ms, want about 1500: %s", ms, line)
				}
			}
		}
	})

	for _, tc := range []struct {
		name, method, path string
		upload             bool
	}{
		{"hang-up", "GET", "/server/wait", false},
		{"hang-up during an upload the handler does not read", "POST", "/server/ignore", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "py-" + strings.ReplaceAll(tc.name, " ", "-")
			ctx, cancel := context.WithCancel(context.Background())
			var body io.Reader
			pr, pw := io.Pipe()
			defer pw.Close()
			if tc.upload {
				// 256 KiB, streamed to the plugin (over 64 KiB), then a
				// stall: the body never ends. It fits in the link's
				// window, so the client node has read all of it and is
				// reading the caller when the caller goes: a node notices
				// a caller that hangs up only while it reads from it.
				// (host/plugins' TestPythonHangUpReachesAHandlerThatDoes
				// NotReadItsBody fills the plugin's queue.)
				body = pr
				go func() {
					b := make([]byte, 64<<10)
					for range 4 {
						if _, err := pw.Write(b); err != nil {
							return
						}
					}
				}()
			}
			req, err := http.NewRequestWithContext(ctx, tc.method, cl.url(tc.path), body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Request-Id", id)
			done := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			waitFor(t, 10*time.Second, "the handler to wait", func() bool { return logHas(logs(), "waiting", "id="+id) })
			time.Sleep(300 * time.Millisecond) // past the plugin's hang-up poll, with its queue full
			cancel()
			pw.CloseWithError(context.Canceled) // the caller's upload ends with it
			<-done
			hungUp := time.Now()
			waitFor(t, 5*time.Second, "the handler to see the hang-up", func() bool { return logHas(logs(), "gave up", "id="+id, "deadline_passed=false") })
			t.Logf("the Python handler saw the hang-up within %v", time.Since(hungUp).Round(time.Millisecond))
		})
	}
	waitFor(t, 10*time.Second, "no event left in flight", func() bool { return pluginStatus(t, c.server.httpAddr(), "waiter").InFlight == 0 })
}

// fieldInt returns the integer value of key=N in an hclog text line, or -1.
func fieldInt(line, key string) int {
	_, rest, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return -1
	}
	end := strings.IndexAny(rest, " \n")
	if end < 0 {
		end = len(rest)
	}
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		return -1
	}
	return n
}
