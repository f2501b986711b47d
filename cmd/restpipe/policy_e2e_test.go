package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
)

// writePolicyFile writes src as a policy file in dir (atomically, as an
// operator's deployment would) and returns its path.
func writePolicyFile(t testing.TB, dir, src string) string {
	t.Helper()
	path := filepath.Join(dir, "policy.hcl")
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// policyOn returns cluster options that give the node named name the
// policy file path.
func policyOn(name, path string, plugins ...string) clusterOpts {
	return clusterOpts{plugins: plugins, mod: func(c *nodeConfig) {
		if c.Store.Identity().Name == name {
			c.Policy = path
		}
	}}
}

// TestPolicyAllowsAndRefuses drives real nodes through a server policy of
// globs: each pair of caller and route is allowed or refused as the file
// says, a refusal is forbidden (403, 245) from the server before any
// plugin, logged with peer, route and request id, and counted; /local/ is
// never refused; /status shows the policy.
func TestPolicyAllowsAndRefuses(t *testing.T) {
	t.Parallel()
	path := writePolicyFile(t, t.TempDir(), `
# Readers may read; the uploader may read and write files; anyone may
# ask the time.
allow {
  peers  = ["reader-*"]
  routes = ["get_*"]
}
allow {
  peers  = ["uploader"]
  routes = ["put_files", "get_files"]
}
allow {
  peers  = ["*"]
  routes = ["get_time"]
}
`)
	c := startCluster(t, policyOn("server", path, "time", "cat", "files", "misbehave"), "reader-1", "readerx", "uploader")
	if err := os.WriteFile(filepath.Join(c.server.files, "a.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		client, method, path string
		kind                 host.Kind // "" for a handler's reply
	}{
		{"reader-1", "GET", "/server/time", ""},
		{"reader-1", "GET", "/server/time/utc", ""},
		{"reader-1", "GET", "/server/cat//a/b", ""},
		{"reader-1", "GET", "/server/files//a.txt", ""},
		{"reader-1", "HEAD", "/server/files//a.txt", ""},
		{"reader-1", "GET", "/server/misbehave/ok", ""},
		{"reader-1", "PUT", "/server/files//b.txt", host.KindForbidden},
		{"reader-1", "DELETE", "/server/files//a.txt", host.KindForbidden},
		{"reader-1", "GET", "/server/no/such/route", host.KindNoRoute}, // allowed by get_*, then no handler
		{"readerx", "GET", "/server/time", ""},
		{"readerx", "GET", "/server/cat//a/b", host.KindForbidden},
		{"readerx", "GET", "/server/files//a.txt", host.KindForbidden},
		{"readerx", "GET", "/server/no/such/route", host.KindForbidden}, // refused before the table is asked
		{"uploader", "PUT", "/server/files//b.txt", ""},
		{"uploader", "GET", "/server/files//b.txt", ""},
		{"uploader", "DELETE", "/server/files//b.txt", host.KindForbidden},
		{"uploader", "GET", "/server/cat//a/b", host.KindForbidden},
		{"uploader", "GET", "/server/time", ""},
	}
	refused := 0
	for i, tt := range tests {
		id := fmt.Sprintf("policy-%d", i)
		r := do(t, tt.method, c.clients[tt.client].url(tt.path), strings.NewReader("body"), "X-Request-Id", id)
		if tt.kind == "" {
			if r.status >= 300 || r.kind != "" {
				t.Errorf("%s %s %s = %d %s %s, want the handler's reply", tt.client, tt.method, tt.path, r.status, r.kind, r.body)
			}
			continue
		}
		if r.kind != string(tt.kind) {
			t.Errorf("%s %s %s = %d %s %s, want %s", tt.client, tt.method, tt.path, r.status, r.kind, r.body, tt.kind)
			continue
		}
		wantError(t, r, tt.kind)
		if tt.kind != host.KindForbidden {
			continue
		}
		refused++
		e := r.json(t)["error"].(map[string]any)
		if msg, _ := e["message"].(string); !strings.Contains(msg, tt.client) || !strings.Contains(msg, "policy") {
			t.Errorf("%s %s %s: message %q, want it to name the caller and the policy", tt.client, tt.method, tt.path, msg)
		}
		route := routeOf(tt.method, tt.path)
		waitFor(t, 5*time.Second, "the refusal in the server's log", func() bool {
			return logHas(c.server.logs.String(), "event refused by policy", "peer="+tt.client, "route="+route, "request_id="+id)
		})
	}
	if _, err := os.Stat(filepath.Join(c.server.files, "a.txt")); err != nil {
		t.Errorf("a.txt after a refused DELETE: %v, want it still there", err)
	}
	// The server's own callers are never refused, whatever the policy.
	for _, p := range []string{"/local/cat//a/b", "/local/misbehave/ok"} {
		if r := do(t, "GET", c.server.url(p), nil); r.status != 200 {
			t.Errorf("GET %s on the server = %d %s, want 200: /local/ is always allowed", p, r.status, r.body)
		}
	}
	if r := do(t, "DELETE", c.server.url("/local/files//a.txt"), nil); r.status != 200 {
		t.Errorf("DELETE /local/files//a.txt on the server = %d %s, want 200", r.status, r.body)
	}
	// Counted on the server; the callers' gateways count the outcome too.
	m := scrape(t, c.server.httpAddr())
	if got := m[series("restpipe_policy_refusals_total", "outcome", "forbidden")]; got != float64(refused) {
		t.Errorf("restpipe_policy_refusals_total{outcome=forbidden} = %v, want %d", got, refused)
	}
	if got, ok := m[series("restpipe_policy_refusals_total", "outcome", "rate_limited")]; !ok || got != 0 {
		t.Errorf("restpipe_policy_refusals_total{outcome=rate_limited} = %v (present %v), want 0", got, ok)
	}
	st := getStatus(t, c.server.httpAddr())
	if st.Policy == nil || st.Policy.File != path || len(st.Policy.SHA256) != 64 || st.Policy.Rules != 3 || st.Policy.AllowRules != 3 {
		t.Errorf("/status policy = %+v, want the file, its hash and 3 rules", st.Policy)
	}
	if cst := getStatus(t, c.clients["reader-1"].httpAddr()); cst.Policy != nil {
		t.Errorf("/status of a client without --policy: policy = %+v, want null", cst.Policy)
	}
}

// routeOf is the route name of a gateway path, as the gateway makes it.
func routeOf(method, path string) string {
	noun := strings.SplitN(strings.TrimPrefix(path, "/server/"), "//", 2)[0]
	verb := strings.ToLower(method)
	if verb == "head" {
		verb = "get"
	}
	return host.RouteName(verb, noun)
}

// TestPolicyRefusedUploadUnread sends an upload the server's policy
// refuses, with a body that never ends: the refusal must come back while
// the caller is still sending (so nobody waited for the body), the files
// plugin must never see it, and the caller's body is read only as far as
// the buffers on the way hold.
func TestPolicyRefusedUploadUnread(t *testing.T) {
	t.Parallel()
	path := writePolicyFile(t, t.TempDir(), `
allow {
  peers  = ["*"]
  routes = ["get_files"]
}
allow {
  peers  = ["builder"]
  routes = ["put_files"]
}
`)
	c := startCluster(t, policyOn("server", path, "files"), "builder", "intruder")

	r, sent := endlessUpload(t, c.clients["intruder"].httpAddr(), "/server/files//big.bin", "X-Event-Timeout: 20s", "X-Request-Id: upload-1")
	wantError(t, r, host.KindForbidden)
	if sent > 64<<20 {
		t.Errorf("the caller's body was taken for %d MiB before the refusal, want only what buffers hold", sent>>20)
	}
	t.Logf("the endless body was taken for %d KiB before the refusal", sent>>10)
	entries, err := os.ReadDir(c.server.files)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the files root holds %v after a refused upload, want nothing (the plugin never saw it)", entries)
	}
	if !logHas(c.server.logs.String(), "event refused by policy", "peer=intruder", "route=put_files", "request_id=upload-1") {
		t.Errorf("no refusal in the server's log:\n%s", c.server.logs.String())
	}

	// The allowed uploader's body arrives whole, over the same kind of
	// link: the refusal above was the policy's doing.
	body := strings.Repeat("x", 3<<20)
	if r := do(t, "PUT", c.clients["builder"].url("/server/files//big.bin"), strings.NewReader(body)); r.status != 201 {
		t.Fatalf("builder's upload = %d %s, want 201", r.status, r.body)
	}
	if b, err := os.ReadFile(filepath.Join(c.server.files, "big.bin")); err != nil || len(b) != len(body) {
		t.Errorf("big.bin after builder's upload: %d bytes, %v; want %d", len(b), err, len(body))
	}
	// And the intruder's link still serves what it may do.
	if r := do(t, "GET", c.clients["intruder"].url("/server/files//big.bin"), nil); r.status != 200 || len(r.body) != len(body) {
		t.Errorf("intruder's GET after its refused upload = %d, %d bytes; want 200 and the file", r.status, len(r.body))
	}
}

// endlessUpload PUTs a chunked body that never ends to path on the gateway
// at addr, reading the reply while it sends, as a caller streaming a
// large upload would; once the reply is read it stops. It returns the
// reply and how many body bytes the gateway's connection took. (A raw
// connection, because an HTTP client may report its failed write instead
// of the reply that caused it.)
func endlessUpload(t testing.TB, addr, path string, headers ...string) (*reply, int64) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := "PUT " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n"
	for _, h := range headers {
		head += h + "\r\n"
	}
	if _, err := io.WriteString(conn, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", 32<<10, strings.Repeat("x", 32<<10)))
		for {
			if _, err := conn.Write(chunk); err != nil {
				return // closed below, or reset by the gateway
			}
			sent.Add(32 << 10)
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("PUT %s with an endless body: no reply: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	conn.Close()
	<-writerDone
	return &reply{status: resp.StatusCode, code: resp.Header.Get("X-Event-Return-Code"),
		kind: resp.Header.Get("X-Event-Error-Kind"), header: resp.Header, body: b}, sent.Load()
}

// TestPolicyRateLimit floods the server from one client over its limit
// while another client is served at full speed: the flood gets overloaded
// with a Retry-After that is the truth (after waiting it, the next event
// goes), the other client never is refused.
func TestPolicyRateLimit(t *testing.T) {
	t.Parallel()
	path := writePolicyFile(t, t.TempDir(), `
allow {
  peers  = ["*"]
  routes = ["*"]
}
limit {
  peers = ["flood"]
  rate  = "1/s"
  burst = 5
}
`)
	c := startCluster(t, policyOn("server", path, "time"), "flood", "calm")

	var (
		mu           sync.Mutex
		okFlood      int
		limited      []*reply
		calmFailures []string
		calmOK       int
	)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; i < 25; i++ {
				r, err := tryDo(policyHTTP, "GET", c.clients["flood"].url("/server/time"), nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if r.status == 200 {
					okFlood++
				} else {
					limited = append(limited, r)
				}
				mu.Unlock()
			}
		})
		wg.Go(func() {
			for i := 0; i < 50; i++ {
				r, err := tryDo(policyHTTP, "GET", c.clients["calm"].url("/server/time"), nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if r.status == 200 {
					calmOK++
				} else {
					calmFailures = append(calmFailures, fmt.Sprintf("%d %s", r.status, r.body))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if calmOK != 200 || len(calmFailures) > 0 {
		t.Errorf("calm: %d of 200 served; failures %q", calmOK, calmFailures)
	}
	// The burst, and at most a token a second since.
	if okFlood < 5 || okFlood > 5+10 || okFlood+len(limited) != 100 {
		t.Errorf("flood: %d served and %d limited of 100, want the burst of 5 served (and a token a second)", okFlood, len(limited))
	}
	for _, r := range limited {
		v := wantError(t, r, host.KindOverloaded)
		msg := v["error"].(map[string]any)["message"].(string)
		if r.header.Get("Retry-After") != "1" || !strings.Contains(msg, "rate limit of 1/s (burst 5)") {
			t.Fatalf("limited reply: Retry-After %q, message %q; want 1 (a token a second, rounded up) and the limit", r.header.Get("Retry-After"), msg)
		}
		// The message has the wait to the microsecond: at most a second.
		_, waitText, _ := strings.Cut(msg, "may go in ")
		wait, err := time.ParseDuration(waitText)
		if err != nil || wait <= 0 || wait > time.Second {
			t.Fatalf("limited reply: wait %q (%v), want a duration up to 1s", waitText, err)
		}
	}
	// Truthful: once Retry-After has passed, the flood's next event goes.
	time.Sleep(time.Second)
	if r := do(t, "GET", c.clients["flood"].url("/server/time"), nil); r.status != 200 {
		t.Errorf("flood after its Retry-After = %d %s, want 200", r.status, r.body)
	}
	m := scrape(t, c.server.httpAddr())
	if got := m[series("restpipe_policy_refusals_total", "outcome", "rate_limited")]; got != float64(len(limited)) {
		t.Errorf("restpipe_policy_refusals_total{outcome=rate_limited} = %v, want %d", got, len(limited))
	}
	if !logHas(c.server.logs.String(), "event over its rate limit", "peer=flood", "route=get_time", "retry_after=") {
		t.Errorf("no rate-limit line in the server's log")
	}
}

// policyHTTP is an HTTP client keeping a connection per concurrent caller
// of the tests above.
var policyHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// TestPolicyOnClient puts a policy on a client node: the server may read
// its files but not write them; a client without a policy still takes
// both; the client's own /local/ callers may do anything.
func TestPolicyOnClient(t *testing.T) {
	t.Parallel()
	path := writePolicyFile(t, t.TempDir(), `
allow {
  peers  = ["server"]
  routes = ["get_*"]
}
`)
	c := startCluster(t, policyOn("fs1", path, "time", "files"), "fs1", "fs2")
	for _, name := range []string{"fs1", "fs2"} {
		if err := os.WriteFile(filepath.Join(c.clients[name].files, "a.txt"), []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := do(t, "GET", c.server.url("/client/fs1/files//a.txt"), nil); r.status != 200 || string(r.body) != "hello" {
		t.Errorf("GET fs1's a.txt = %d %q, want 200 hello", r.status, r.body)
	}
	if r := do(t, "GET", c.server.url("/client/fs1/time"), nil); r.status != 200 {
		t.Errorf("GET fs1's time = %d %s, want 200", r.status, r.body)
	}
	r := do(t, "PUT", c.server.url("/client/fs1/files//a.txt"), strings.NewReader("overwritten"))
	wantError(t, r, host.KindForbidden)
	r = do(t, "DELETE", c.server.url("/client/fs1/files//a.txt"), nil)
	wantError(t, r, host.KindForbidden)
	if b, err := os.ReadFile(filepath.Join(c.clients["fs1"].files, "a.txt")); err != nil || string(b) != "hello" {
		t.Errorf("fs1's a.txt = %q, %v after refused writes; want hello", b, err)
	}
	if !logHas(c.clients["fs1"].logs.String(), "event refused by policy", "peer=server", "route=put_files") {
		t.Errorf("no refusal in fs1's log:\n%s", c.clients["fs1"].logs.String())
	}
	// fs2 has no policy: the server may write there.
	if r := do(t, "PUT", c.server.url("/client/fs2/files//a.txt"), strings.NewReader("written")); r.status != 200 {
		t.Errorf("PUT fs2's a.txt = %d %s, want 200", r.status, r.body)
	}
	// fs1's own callers are not its peers.
	if r := do(t, "PUT", c.clients["fs1"].url("/local/files//b.txt"), strings.NewReader("local")); r.status != 201 {
		t.Errorf("PUT /local/files//b.txt on fs1 = %d %s, want 201", r.status, r.body)
	}
	st := getStatus(t, c.clients["fs1"].httpAddr())
	if st.Policy == nil || st.Policy.File != path || st.Policy.Rules != 1 {
		t.Errorf("fs1's /status policy = %+v", st.Policy)
	}
}

// TestPolicyReload rewrites a running server's policy and sends it SIGHUP:
// a good file takes effect at once for the links already up; a bad one is
// refused with every problem's file, line and key, and the good one keeps
// serving; /status follows.
func TestPolicyReload(t *testing.T) {
	t.Parallel()
	dir := testPKI(t, "c1")
	plugins := t.TempDir()
	installPlugin(t, pluginBin("cat"), filepath.Join(plugins, "cat"))
	installPlugin(t, pluginBin("time"), filepath.Join(plugins, "time"))
	path := writePolicyFile(t, t.TempDir(), "allow {\n  peers  = [\"c1\"]\n  routes = [\"get_time\"]\n}\n")
	srv, addr := startServerProc(t, dir, "127.0.0.1:0", "--plugins", plugins, "--policy", path)
	srvHTTP := srv.waitLog(0, 10*time.Second, "listening", nil).str("http")
	loaded := srv.waitLog(0, time.Second, "policy loaded", nil)
	cl := startProc(t, "c1", nil, append([]string{"client", "--server", addr}, identityFlags(dir, "c1")...)...)
	clHTTP := cl.waitLog(0, 10*time.Second, "listening", nil).str("http")
	cl.waitLog(0, 10*time.Second, "link up", nil)
	url := func(p string) string { return "http://" + clHTTP + p }

	waitFor(t, 10*time.Second, "the server's plugins", func() bool {
		return do(t, "GET", url("/server/time"), nil).status == 200
	})
	wantError(t, do(t, "GET", url("/server/cat//a/b"), nil), host.KindForbidden)
	first := getStatus(t, srvHTTP).Policy
	if first == nil || first.SHA256 != loaded.str("sha256") || first.Rules != 1 {
		t.Fatalf("/status policy = %+v, want the loaded file (%s)", first, loaded.str("sha256"))
	}

	// A good file: c1 may cat now, on the link it already has.
	writePolicyFile(t, filepath.Dir(path), "allow {\n  peers  = [\"c1\"]\n  routes = [\"get_time\", \"get_cat\"]\n}\n")
	mark := srv.mark()
	srv.signal(syscall.SIGHUP)
	l := srv.waitLog(mark, 5*time.Second, "SIGHUP: policy reloaded", nil)
	if r := do(t, "GET", url("/server/cat//a/b"), nil); r.status != 200 {
		t.Errorf("cat after the reload = %d %s, want 200", r.status, r.body)
	}
	second := getStatus(t, srvHTTP).Policy
	if second == nil || second.SHA256 == first.SHA256 || second.SHA256 != l.str("sha256") || second.ReloadError != "" {
		t.Errorf("/status policy after the reload = %+v, want the new file's hash %s", second, l.str("sha256"))
	}

	// A bad file: refused, every problem named, the good policy stays.
	writePolicyFile(t, filepath.Dir(path), "allow {\n  peers  = [\"C1\"]\n  routes = [\"cat\"]\n}\nlimit {\n  peers = [\"*\"]\n  rate = \"fast\"\n}\n")
	mark = srv.mark()
	srv.signal(syscall.SIGHUP)
	l = srv.waitLog(mark, 5*time.Second, "SIGHUP: keeping the current policy", nil)
	for _, want := range []string{"3 problems", path + ":2: allow.peers:", path + ":3: allow.routes:", path + ":7: limit.rate:"} {
		if !strings.Contains(l.str("error"), want) {
			t.Errorf("refusal %q lacks %q", l.str("error"), want)
		}
	}
	if l.str("sha256") != second.SHA256 {
		t.Errorf("refusal names the policy kept as %s, want %s", l.str("sha256"), second.SHA256)
	}
	if r := do(t, "GET", url("/server/cat//a/b"), nil); r.status != 200 {
		t.Errorf("cat after a bad reload = %d %s, want 200 (the good policy kept)", r.status, r.body)
	}
	third := getStatus(t, srvHTTP).Policy
	if third == nil || third.SHA256 != second.SHA256 || !strings.Contains(third.ReloadError, "limit.rate") {
		t.Errorf("/status policy after a bad reload = %+v, want the kept hash and why the reload failed", third)
	}
	// The certificate was reloaded alongside, as before.
	srv.waitLog(mark, time.Second, "SIGHUP: certificate reloaded", nil)
}

// TestPolicyBadFileAtStart checks a node refuses to start with a bad
// policy file, naming every problem with its file, line and key.
func TestPolicyBadFileAtStart(t *testing.T) {
	t.Parallel()
	dir := testPKI(t)
	path := writePolicyFile(t, t.TempDir(), "allow {\n  peers = \"web1\"\n}\nlimt {\n}\n")
	_, stderr, code := runCmd(t, nil, append([]string{"server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--policy", path}, identityFlags(dir, "server")...)...)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, want := range []string{"--policy " + path, "3 problems in the policy file", path + ":2: allow.peers: want a list of strings", path + ":1: allow.routes: required", path + ":4: limt: unknown block; did you mean limit?"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestPolicyConfigKey checks the configuration file's policy key, relative
// to the file's directory, and that a flag wins over it.
func TestPolicyConfigKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, "config.hcl", "# restpipe server\nca = \"ca.crt\"\ncert = \"s.crt\"\nkey = \"s.key\"\npolicy = \"policy.hcl\"\n")
	getenv := func(string) string { return "" }
	nf, err := parseNodeFlags("server", []string{"--config", cfgPath}, io.Discard, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "policy.hcl"); nf.cfg.Policy != want {
		t.Errorf("policy from the file = %q, want %q (relative to the file)", nf.cfg.Policy, want)
	}
	nf, err = parseNodeFlags("client", []string{"--config", writeConfig(t, dir, "c.hcl", "# restpipe client\npolicy = \"/etc/p.hcl\"\n"), "--policy", "mine.hcl"}, io.Discard, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if nf.cfg.Policy != "mine.hcl" {
		t.Errorf("policy = %q, want the flag's mine.hcl", nf.cfg.Policy)
	}
}
