package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/gateway/client"
)

// nginxExample is the example configuration the project ships; the test
// runs it as it is, with only its address and socket path replaced.
const nginxExample = "../../docs/nginx/restpipe.conf"

// TestNginxFrontsTheGateway runs the shipped nginx example in front of a
// client node whose gateway listens on a Unix socket, and drives events
// through nginx as a remote caller would.
func TestNginxFrontsTheGateway(t *testing.T) {
	t.Parallel()
	bin := findNginx(t)
	sock := filepath.Join(t.TempDir(), "gw.sock")
	c := startCluster(t, clusterOpts{plugins: []string{"time", "cat", "echo", "files"}, mod: func(cfg *nodeConfig) {
		if cfg.Role == host.RoleClient {
			cfg.HTTP = "unix:" + sock
		}
	}}, "c1")
	if got := c.clients["c1"].httpAddr(); got != "unix:"+sock {
		t.Fatalf("client gateway at %s, want unix:%s", got, sock)
	}
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o660 {
		t.Errorf("gateway socket mode = %v, want a socket with mode 0660", st.Mode())
	}

	ng := startNginx(t, bin, sock)
	base := ng.url + "/restpipe"
	// No request may hang the test: a timeout kills the test binary
	// before any cleanup could stop nginx.
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 2 * time.Minute}
	t.Cleanup(hc.CloseIdleConnections)
	get := func(t *testing.T, path string, header ...string) *reply {
		t.Helper()
		return doWith(t, hc, "GET", base+path, nil, header...)
	}

	t.Run("time", func(t *testing.T) {
		r := get(t, "/server/time")
		if r.status != 200 || r.code != "0" || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /server/time through nginx = %d code %q type %q: %s, want 200 code 0 JSON", r.status, r.code, r.header.Get("Content-Type"), r.body)
		}
		v := r.json(t)
		if f, ok := v["time_from_server"].(float64); !ok || len(v) != 1 || time.Since(time.Unix(int64(f), 0)).Abs() > time.Minute {
			t.Errorf("GET /server/time through nginx = %s, want {\"time_from_server\": <now as a float>}", r.body)
		}
		// nginx gives the event its own request ID, and the gateway
		// echoes it.
		if id := r.header.Get("X-Request-Id"); len(id) != 32 {
			t.Errorf("X-Request-Id = %q, want nginx's 32-digit $request_id", id)
		}
		if id := get(t, "/server/time", "X-Request-Id", "through-nginx-1").header.Get("X-Request-Id"); id != "through-nginx-1" {
			t.Errorf("X-Request-Id = %q, want the caller's through-nginx-1", id)
		}
	})

	t.Run("path and query arrive raw", func(t *testing.T) {
		// nginx's normalised URI would merge "//" and decode %2F: the
		// example passes the caller's raw path on instead.
		tests := []struct {
			path string
			args []string
			qs   map[string]any
		}{
			{"/server/echo//a%2Fb/%20c?x=1&x=2&y=%2F", []string{"a/b", " c"}, map[string]any{"x": []any{"1", "2"}, "y": []any{"/"}}},
			{"/server/echo//a//b/", []string{"a", "", "b", ""}, map[string]any{}},
			{"/server/echo//..%2F..%2Fetc/%2e%2e", []string{"../../etc", ".."}, map[string]any{}},
			{"/server/echo//%25/100%25", []string{"%", "100%"}, map[string]any{}},
		}
		for _, tt := range tests {
			r := get(t, tt.path)
			if r.status != 200 {
				t.Errorf("GET %s through nginx = %d %s", tt.path, r.status, r.body)
				continue
			}
			v := r.json(t)
			if got, want := fmt.Sprint(v["args"], v["query"]), fmt.Sprint(tt.args, tt.qs); got != want {
				t.Errorf("GET %s through nginx: args, query = %s, want %s", tt.path, got, want)
			}
		}
		// A raw path outside the prefix that nginx matched only after
		// resolving "..": refused by nginx, not sent on.
		if r := doWith(t, hc, "GET", ng.url+"/x/../restpipe/server/time", nil); r.status != 400 || r.code != "" {
			t.Errorf("GET /x/../restpipe/server/time = %d code %q, want nginx's own 400", r.status, r.code)
		}
	})

	t.Run("16 MiB up and down", func(t *testing.T) {
		// A body streams to a handler that reads it whole before it
		// replies (files PUT), and a reply body streams back (files GET).
		body := make([]byte, 16<<20)
		for i := range body {
			body[i] = byte(i*7 + i>>13)
		}
		for _, tt := range []struct {
			chunked bool
			status  int // 201 created, 200 replaced
		}{{false, 201}, {true, 200}} {
			var rd io.Reader = bytes.NewReader(body)
			if tt.chunked {
				rd = io.MultiReader(rd) // no length: sent chunked
			}
			r := doWith(t, hc, "PUT", base+"/server/files//up/big.bin", rd, "Content-Type", "application/octet-stream")
			if r.status != tt.status || r.code != "0" || !strings.Contains(string(r.body), fmt.Sprintf(`"size":%d`, len(body))) {
				t.Fatalf("PUT 16 MiB (chunked %v) through nginx = %d code %q %s, want %d code 0 and the size", tt.chunked, r.status, r.code, r.body, tt.status)
			}
			stored, err := os.ReadFile(filepath.Join(c.server.files, "up", "big.bin"))
			if err != nil || !bytes.Equal(stored, body) {
				t.Fatalf("PUT 16 MiB (chunked %v) through nginx stored %d bytes (%v), want the %d sent", tt.chunked, len(stored), err, len(body))
			}
		}
		r := get(t, "/server/files//up/big.bin")
		if r.status != 200 || r.code != "0" || r.header.Get("Content-Length") != strconv.Itoa(len(body)) || !bytes.Equal(r.body, body) {
			t.Errorf("GET 16 MiB through nginx = %d code %q length %q, %d bytes (sha256 %x), want 200 code 0 and the %d bytes stored (sha256 %x)",
				r.status, r.code, r.header.Get("Content-Length"), len(r.body), sha256.Sum256(r.body), len(body), sha256.Sum256(body))
		}
	})

	t.Run("echo", func(t *testing.T) {
		// Small: nginx stops sending a request body once the reply has
		// begun (see the example's LIMITATION), and echo replies at once.
		r := doWith(t, hc, "POST", base+"/server/echo", strings.NewReader("some bytes"), "Content-Type", "application/x-test; v=1")
		if r.status != 200 || r.code != "0" || r.header.Get("Content-Type") != "application/x-test" || string(r.body) != "some bytes" {
			t.Errorf("POST /server/echo through nginx = %d code %q type %q %q, want 200 code 0 type application/x-test %q",
				r.status, r.code, r.header.Get("Content-Type"), r.body, "some bytes")
		}
	})

	t.Run("nothing buffered", func(t *testing.T) {
		// The first part of a body comes back before the rest is sent:
		// nginx buffers neither the request nor the reply.
		pr, pw := io.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// On failure (a proxy that buffers waits for the body's end
		// forever), end the body, or the transport waits for it.
		stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
		defer stop()
		defer pw.Close()
		req, err := http.NewRequestWithContext(ctx, "PUT", base+"/server/echo", pr)
		if err != nil {
			t.Fatal(err)
		}
		part := bytes.Repeat([]byte("restpipe "), 2<<10) // 18 KiB
		go func() {
			_, _ = pw.Write(part) // the rest follows once this came back
		}()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("PUT /server/echo through nginx: %v", err)
		}
		defer resp.Body.Close()
		first := make([]byte, len(part))
		if _, err := io.ReadFull(resp.Body, first); err != nil || !bytes.Equal(first, part) {
			t.Fatalf("reading the first part back = %v (equal %v), want it echoed before the body ends", err, bytes.Equal(first, part))
		}
		go func() {
			_, _ = pw.Write([]byte("the end"))
			pw.Close()
		}()
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != "the end" {
			t.Errorf("the rest of the echo = %q, %v, want %q", rest, err, "the end")
		}
	})

	t.Run("errors pass through", func(t *testing.T) {
		v := wantError(t, get(t, "/server/nothing"), host.KindNoRoute)
		if msg, _ := v["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "get_nothing") {
			t.Errorf("no_route message %q, want the route name", msg)
		}
		v = wantError(t, get(t, "/server/cat//only-one"), host.KindHandlerFailed)
		if exc, _ := v["exception"].(map[string]any); exc["class"] != "TypeError" {
			t.Errorf("exception = %v, want RestPipe's TypeError", v["exception"])
		}
		wantError(t, get(t, "/server/time", "X-Event-Timeout", "soon"), host.KindBadRequest)
	})

	t.Run("deadline through nginx", func(t *testing.T) {
		start := time.Now()
		r := get(t, "/server/echo?sleep=5s", "X-Event-Timeout", "300ms")
		v := wantError(t, r, host.KindTimeout) // the gateway's 504, not nginx's
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("a 300ms deadline through nginx took %v", d)
		}
		if msg, _ := v["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "300ms") {
			t.Errorf("timeout message %q, want the 300ms deadline", msg)
		}
	})

	t.Run("Go client through nginx", func(t *testing.T) {
		gc, err := client.New(base)
		if err != nil {
			t.Fatalf("client.New(%q) = %v", base, err)
		}
		var out struct {
			Result string `json:"result_from_server"`
		}
		if err := gc.JSON(context.Background(), "GET", client.ServerPath("cat", "hello ", "wor/ld"), nil, &out); err != nil || out.Result != "hello wor/ld" {
			t.Errorf("JSON(cat hello , wor/ld) through nginx = %q, %v, want %q", out.Result, err, "hello wor/ld")
		}
		_, err = gc.Do(context.Background(), client.Request{Path: client.ServerPath("echo"), Query: map[string][]string{"sleep": {"5s"}}, Timeout: 200 * time.Millisecond})
		var e *client.Error
		if !errors.As(err, &e) || e.Kind != host.KindTimeout || e.Status != 504 || e.ReturnCode != 248 {
			t.Errorf("Do(echo?sleep=5s, Timeout 200ms) through nginx = %v, want a timeout *client.Error 504 code 248", err)
		}
	})

	t.Run("node down", func(t *testing.T) {
		// Last: nginx answers for a node that is gone with its own 502,
		// which the Go client does not take for a handler's reply.
		c.clients["c1"].stop(t)
		r := get(t, "/server/time")
		if r.status != 502 || r.code != "" {
			t.Errorf("GET /server/time with the node down = %d code %q, want nginx's own 502 without a return code", r.status, r.code)
		}
		gc, err := client.New(base)
		if err != nil {
			t.Fatal(err)
		}
		_, err = gc.Do(context.Background(), client.Request{Path: client.ServerPath("time")})
		var e *client.NotGatewayError
		if !errors.As(err, &e) || e.Status != 502 {
			t.Errorf("Do(time) through nginx with the node down = %v, want a *client.NotGatewayError of status 502", err)
		}
	})
}

// findNginx returns the nginx binary, or skips the test without one.
func findNginx(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	t.Skip("nginx is not installed: apt-get install nginx-light; the test task installs it (go tool -modfile=cmd/task.mod task deps)")
	return ""
}

// nginxProc is an nginx started by a test.
type nginxProc struct {
	url  string // http://127.0.0.1:<port>
	dir  string // its prefix: config, logs, pid, temp files
	cmd  *exec.Cmd
	out  *syncBuffer // what it wrote to stdout and stderr
	done chan struct{}
}

// startNginx runs the shipped example configuration in an nginx of its own,
// as the test's user, with everything it writes under t.TempDir(), in front
// of the gateway on sock. It returns once nginx answers, and stops it at
// cleanup (SIGQUIT, then SIGKILL), checking nothing of it is left.
func startNginx(t testing.TB, bin, sock string) *nginxProc {
	t.Helper()
	example, err := os.ReadFile(nginxExample)
	if err != nil {
		t.Fatal(err)
	}
	// nginx cannot listen on port 0 and report the port it got, so the
	// test picks a free port by binding 127.0.0.1:0 and closing it, and
	// hands that to nginx. Another process may take the port in between:
	// then nginx fails to bind and the test tries another port.
	var lastErr error
	for range 5 {
		port := freePort(t)
		ng, err := tryNginx(t, bin, string(example), sock, port)
		if err == nil {
			return ng
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			t.Fatal(err)
		}
		lastErr = err
	}
	t.Fatalf("nginx found no free port: %v", lastErr)
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// tryNginx starts nginx on port; an error means it exited without serving.
func tryNginx(t testing.TB, bin, example, sock string, port int) (*nginxProc, error) {
	t.Helper()
	dir := t.TempDir()
	site := replaceOnce(t, example,
		"listen 127.0.0.1:8080;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
		"server unix:/run/restpipe/gateway.sock;", "server unix:"+sock+";",
	)
	if err := os.WriteFile(filepath.Join(dir, "restpipe.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(t, bin, dir)), 0o644); err != nil {
		t.Fatal(err)
	}

	ng := &nginxProc{url: fmt.Sprintf("http://127.0.0.1:%d", port), dir: dir, out: &syncBuffer{}, done: make(chan struct{})}
	args := []string{"-p", dir + "/", "-c", conf}
	if nginxHasFlag(t, bin, "-e") {
		args = append(args, "-e", filepath.Join(dir, "error.log")) // the log before the config is read
	}
	ng.cmd = exec.Command(bin, args...)
	ng.cmd.Stdout, ng.cmd.Stderr = ng.out, ng.out
	ng.cmd.SysProcAttr = dieWithParent()
	if err := ng.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	go func() {
		_ = ng.cmd.Wait()
		close(ng.done)
	}()
	t.Cleanup(func() { ng.stop(t) })

	// Wait until it answers, or exits.
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	answered := func() bool {
		resp, err := hc.Get(ng.url + "/restpipe/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	deadline := time.Now().Add(20 * time.Second)
	for !answered() {
		select {
		case <-ng.done:
			return nil, fmt.Errorf("nginx exited before serving: %s\n%s", ng.cmd.ProcessState, ng.logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not answer on %s within 20s:\n%s", ng.url, ng.logs())
		}
		time.Sleep(20 * time.Millisecond) // nginx gives no readiness signal but its answer
	}
	return ng, nil
}

// dieWithParent returns process attributes that have the kernel kill the
// process when the test binary dies (Linux's Pdeathsig, set by name as the
// field exists only there): a test that panics or times out runs no
// cleanup, and must not leave an nginx behind. Elsewhere only the cleanup
// stops it.
func dieWithParent() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	return attr
}

// replaceOnce replaces each old string, which must occur exactly once in s,
// with its new one: if the example changes, the test says what it no
// longer finds instead of testing something else.
func replaceOnce(t testing.TB, s string, oldNew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldNew); i += 2 {
		if n := strings.Count(s, oldNew[i]); n != 1 {
			t.Fatalf("%s holds %q %d times, want once", nginxExample, oldNew[i], n)
		}
		s = strings.Replace(s, oldNew[i], oldNew[i+1], 1)
	}
	return s
}

// nginxConf is a whole nginx.conf around the example, with every file
// nginx writes inside dir. nginx runs as one process (master_process off):
// started as root, a master would run its workers as an unprivileged user
// that may not connect to the gateway's 0660 socket.
func nginxConf(t testing.TB, bin, dir string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
lock_file %[1]s/nginx.lock;
error_log %[1]s/error.log info;

events {
    worker_connections 256;
}

http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body_temp;
    proxy_temp_path %[1]s/proxy_temp;
`, dir)
	// Temp paths of the modules this nginx was built with (their
	// compiled-in defaults are system directories).
	for _, m := range []string{"fastcgi", "uwsgi", "scgi"} {
		if !strings.Contains(nginxVersion(t, bin), "--without-http_"+m+"_module") {
			fmt.Fprintf(&b, "    %s_temp_path %s/%s_temp;\n", m, dir, m)
		}
	}
	fmt.Fprintf(&b, "\n    include %s/restpipe.conf;\n}\n", dir)
	return b.String()
}

var nginxV struct {
	once sync.Once
	out  string
}

// nginxVersion returns what nginx -V prints: its version and build flags.
func nginxVersion(t testing.TB, bin string) string {
	nginxV.once.Do(func() {
		out, err := exec.Command(bin, "-V").CombinedOutput()
		if err != nil {
			t.Logf("nginx -V: %v", err)
		}
		nginxV.out = string(out)
	})
	return nginxV.out
}

// nginxHasFlag reports whether nginx takes a command-line flag (-e came in
// 1.19.5).
func nginxHasFlag(t testing.TB, bin, flag string) bool {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	return strings.Contains(string(out), "\n  "+flag+" ")
}

// logs returns what nginx wrote: its output and its error log.
func (ng *nginxProc) logs() string {
	errLog, _ := os.ReadFile(filepath.Join(ng.dir, "error.log"))
	return "output:\n" + ng.out.String() + "error.log:\n" + string(errLog)
}

// stop stops nginx gracefully (SIGQUIT), else kills it, and checks neither
// it nor a process it started is left.
func (ng *nginxProc) stop(t testing.TB) {
	pid := ng.cmd.Process.Pid
	children := childrenOf(pid)
	_ = ng.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-ng.done:
	case <-time.After(10 * time.Second):
		t.Errorf("nginx did not quit within 10s of SIGQUIT; killing it")
		_ = ng.cmd.Process.Kill()
		<-ng.done
	}
	for _, c := range children {
		if processExists(c) {
			t.Errorf("nginx's process %d is still running after nginx stopped; killing it", c)
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
	}
	if t.Failed() {
		access, _ := os.ReadFile(filepath.Join(ng.dir, "access.log"))
		t.Logf("nginx %s\naccess.log:\n%s", ng.logs(), access)
	}
}

// childrenOf returns the processes whose parent is pid (none where /proc
// is missing).
func childrenOf(pid int) []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if f := strings.Fields(string(stat[i+1:])); i >= 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

// processExists reports whether process pid exists (and is not a zombie).
func processExists(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	return len(f) == 0 || f[0] != "Z"
}
