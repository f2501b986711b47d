package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/hosttest"
	"github.com/restpipe/restpipe/host/pki"
)

// cluster is a server node and client nodes running in the test process:
// real TLS, real yamux, real plugin processes, driven over real HTTP.
type cluster struct {
	t       testing.TB
	ca      *pki.CA
	server  *testNode
	clients map[string]*testNode
}

// testNode is one node of a cluster.
type testNode struct {
	*node
	name    string
	plugins string // its plugins directory
	files   string // the files plugin's root
	logs    *syncBuffer
	cancel  context.CancelFunc
	done    chan error
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer = hosttest.LogBuffer

// clusterOpts adjusts every node's configuration.
type clusterOpts struct {
	mod     func(*nodeConfig)
	plugins []string // plugin binaries to install (default: the examples and misbehave)
	debug   bool
}

func startCluster(t testing.TB, opts clusterOpts, clients ...string) *cluster {
	t.Helper()
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ca: ca, clients: map[string]*testNode{}}
	if opts.plugins == nil {
		opts.plugins = append(append([]string{}, examplePlugins...), "misbehave")
	}
	c.server = c.startNode(host.RoleServer, "server", "", opts)
	for _, name := range clients {
		c.clients[name] = c.startNode(host.RoleClient, name, c.server.linkAddr(), opts)
	}
	for _, name := range clients {
		c.waitLinked(name)
	}
	return c
}

// startNode starts one node and waits for its plugins.
func (c *cluster) startNode(role host.Role, name, serverAddr string, opts clusterOpts) *testNode {
	t := c.t
	t.Helper()
	hosts := []string{}
	if role == host.RoleServer {
		hosts = []string{"127.0.0.1", "localhost"}
	}
	certPEM, keyPEM, err := c.ca.Issue(name, hosts, pki.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(c.ca.CertPEM(), certPEM, keyPEM, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{name: name, plugins: t.TempDir(), files: t.TempDir(), logs: &syncBuffer{}, done: make(chan error, 1)}
	for _, p := range opts.plugins {
		installPlugin(t, pluginBin(p), filepath.Join(tn.plugins, p))
	}
	level := hclog.Info
	if opts.debug {
		level = hclog.Debug
	}
	cfg := nodeConfig{
		Role:             role,
		Store:            pki.NewStaticStore(id),
		Logger:           hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: tn.logs}),
		Listen:           "127.0.0.1:0",
		Server:           serverAddr,
		ServerName:       "server",
		HTTP:             "127.0.0.1:0",
		EventTimeout:     30 * time.Second,
		PeerWait:         10 * time.Second,
		Grace:            5 * time.Second,
		PluginsDir:       tn.plugins,
		PluginMTLS:       true,
		PluginGOMAXPROCS: 1,
		PluginConfig:     pluginConfigFlag{"files": {"root": tn.files}},
	}
	if opts.mod != nil {
		opts.mod(&cfg)
	}
	tn.node, err = newNode(cfg)
	if err != nil {
		t.Fatalf("newNode(%s): %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tn.cancel = cancel
	go func() { tn.done <- tn.run(ctx) }()
	t.Cleanup(func() {
		tn.stop(t)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, tn.logs.String())
		}
	})
	if tn.node.plugins != nil {
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		if err := tn.node.plugins.WaitStarted(wctx); err != nil {
			t.Fatalf("%s: plugins did not start: %v", name, err)
		}
	}
	return tn
}

// stop stops the node (once) and checks it stopped cleanly.
func (tn *testNode) stop(t testing.TB) {
	if tn.cancel == nil {
		return
	}
	tn.cancel()
	tn.cancel = nil
	select {
	case err := <-tn.done:
		if err != nil {
			t.Errorf("node %s: run() = %v", tn.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node %s did not stop within 30s", tn.name)
	}
}

// installPlugin copies a plugin binary into a plugins directory.
func installPlugin(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// waitLinked waits until the server has a session for client name.
func (c *cluster) waitLinked(name string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.server.server.Peer(ctx, name); err != nil {
		c.t.Fatalf("client %s not linked: %v", name, err)
	}
}

// url is the gateway URL of path on node tn.
func (tn *testNode) url(path string) string { return "http://" + tn.httpAddr() + path }

// reply is a gateway response read whole.
type reply struct {
	status int
	code   string
	kind   string
	header http.Header
	body   []byte
}

// json decodes the reply body.
func (r *reply) json(t testing.TB) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("reply %d %q is not a JSON object: %v", r.status, r.body, err)
	}
	return v
}

// do sends one request to a node's gateway and reads the whole reply.
func do(t testing.TB, method, url string, body io.Reader, header ...string) *reply {
	t.Helper()
	return doWith(t, http.DefaultClient, method, url, body, header...)
}

// doWith is do through hc.
func doWith(t testing.TB, hc *http.Client, method, url string, body io.Reader, header ...string) *reply {
	t.Helper()
	r, err := tryDo(hc, method, url, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo sends one request through hc and reads the whole reply.
func tryDo(hc *http.Client, method, url string, body io.Reader, header ...string) (*reply, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the reply: %w", method, url, err)
	}
	return &reply{status: resp.StatusCode, code: resp.Header.Get("X-Event-Return-Code"),
		kind: resp.Header.Get("X-Event-Error-Kind"), header: resp.Header, body: b}, nil
}

// pending is a request sent in the background by goDo.
type pending <-chan *reply

// goDo sends a request in the background. A failure is reported with
// t.Errorf rather than t.Fatal, which a goroutine must not call, and the
// wait for it ends either way.
func goDo(t testing.TB, method, url string, body io.Reader, header ...string) pending {
	ch := make(chan *reply, 1)
	go func() {
		r, err := tryDo(http.DefaultClient, method, url, body, header...)
		if err != nil {
			t.Error(err)
		}
		ch <- r
	}()
	return ch
}

// wait returns the reply, or ends the test if the request failed.
func (p pending) wait(t testing.TB) *reply {
	t.Helper()
	r := <-p
	if r == nil {
		t.FailNow()
	}
	return r
}

// wantError checks a reply is the JSON error of kind with its status and
// return code from the one table.
func wantError(t testing.TB, r *reply, kind host.Kind) map[string]any {
	t.Helper()
	if r.status != kind.Status() || r.code != fmt.Sprint(kind.ReturnCode()) || r.kind != string(kind) {
		t.Fatalf("reply %d code %s kind %q (%s), want %d code %d kind %s", r.status, r.code, r.kind, r.body, kind.Status(), kind.ReturnCode(), kind)
	}
	v := r.json(t)
	e, _ := v["error"].(map[string]any)
	if e["kind"] != string(kind) || e["message"] == "" {
		t.Fatalf("error body %s, want kind %s and a message", r.body, kind)
	}
	return v
}

// waitFor polls cond until it holds or within passes.
var waitFor = hosttest.WaitFor

// logHas reports whether one line of log holds every part.
func logHas(log string, parts ...string) bool {
lines:
	for _, line := range strings.Split(log, "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue lines
			}
		}
		return true
	}
	return false
}

type bigInt = big.Int

// jsonDecode decodes one JSON value from r into v.
func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
