package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestUIConfigValidate(t *testing.T) {
	src := &fakeSource{}
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no source", func(c *Config) { c.Source = nil }, false},
		{"refresh 2s", func(c *Config) { c.Refresh = 2 * time.Second }, true},
		{"refresh 3s", func(c *Config) { c.Refresh = 3 * time.Second }, false},
		{"refresh 10ms", func(c *Config) { c.Refresh = 10 * time.Millisecond }, false},
		{"page over max", func(c *Config) { c.PageSize, c.MaxPageSize = 300, 200 }, false},
		{"negative routes", func(c *Config) { c.MaxRoutes = -1 }, false},
		{"zeros are defaults", func(c *Config) { *c = Config{Source: src} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Source = src
			tt.mod(&cfg)
			before := fmt.Sprintf("%+v", cfg)
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if after := fmt.Sprintf("%+v", cfg); after != before {
				t.Errorf("Validate() changed the config: %s, was %s", after, before)
			}
			if d := cfg.WithDefaults(); err == nil && (d.Refresh == 0 || d.PageSize == 0 || d.MaxRoutes == 0 || d.Now == nil || d.Logger == nil) {
				t.Errorf("WithDefaults() left a default unset: %+v", d)
			}
		})
	}
}

// get serves one request and returns the recorded response.
func get(t *testing.T, h http.Handler, method, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestUIRoutes(t *testing.T) {
	h := newTestHandler(t, &fakeSource{snap: testSnapshot()})
	tests := []struct {
		method, path string
		status       int
		ctype        string
	}{
		{"GET", "/ui", http.StatusFound, ""},
		{"GET", "/ui/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/ui/", 200, "text/html; charset=utf-8"},
		{"GET", "/ui/api/state", 200, "application/json"},
		{"HEAD", "/ui/api/state", 200, "application/json"},
		{"POST", "/ui/api/state", http.StatusMethodNotAllowed, ""},
		{"DELETE", "/ui/", http.StatusMethodNotAllowed, ""},
		{"GET", "/ui/index.html", 404, ""},
		{"GET", "/ui/api/state/x", 404, ""},
		{"GET", "/ui/../status", 404, ""},
	}
	for _, tt := range tests {
		resp := get(t, h, tt.method, tt.path)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
		}
		if tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype {
			t.Errorf("%s %s Content-Type = %q, want %q", tt.method, tt.path, resp.Header.Get("Content-Type"), tt.ctype)
		}
	}
	// The redirect is relative: behind a proxy's prefix it stays under it.
	if loc := get(t, h, "GET", "/ui").Header.Get("Location"); loc != "ui/" {
		t.Errorf("GET /ui Location = %q, want the relative ui/", loc)
	}
	base, _ := url.Parse("http://proxy.example/some/prefix/ui")
	if got := base.ResolveReference(&url.URL{Path: "ui/"}).String(); got != "http://proxy.example/some/prefix/ui/" {
		t.Errorf("ui/ from %s resolves to %s", base, got)
	}
	if allow := get(t, h, "POST", "/ui/").Header.Get("Allow"); allow != "GET, HEAD" {
		t.Errorf("POST /ui/ Allow = %q, want GET, HEAD", allow)
	}
}

// inline returns the contents of the page's only <tag> element.
func inline(t *testing.T, html, tag string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`)
	m := re.FindAllStringSubmatch(html, -1)
	if len(m) != 1 {
		t.Fatalf("the page has %d <%s> elements, want 1", len(m), tag)
	}
	return m[0][1]
}

func TestUIPageIsSelfContained(t *testing.T) {
	h := newTestHandler(t, &fakeSource{snap: testSnapshot()})
	resp := get(t, h, "GET", "/ui/")
	body, _ := io.ReadAll(resp.Body)
	html := string(body)

	// Nothing loads from anywhere: every reference is relative or data:.
	for _, m := range regexp.MustCompile(`(?i)\b(src|href|action)\s*=\s*["']?([^"' >]*)`).FindAllStringSubmatch(html, -1) {
		ref := m[2]
		if ref != "data:," && (strings.Contains(ref, ":") || strings.HasPrefix(ref, "/")) {
			t.Errorf("the page refers to %s=%q: want only relative URLs (it runs under a proxy's prefix) and no other site", m[1], ref)
		}
	}
	for _, bad := range []string{"@import", "url(", "<link rel=\"stylesheet", "<iframe", "fetch('/", "fetch(\"/", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(html, bad) {
			t.Errorf("the page holds %q", bad)
		}
	}
	if strings.Contains(html, styleMarker) || strings.Contains(html, scriptMarker) {
		t.Error("a marker was left in the page")
	}

	// The policy allows exactly the inline script and style.
	csp := resp.Header.Get("Content-Security-Policy")
	for tag, dir := range map[string]string{"script": "script-src", "style": "style-src"} {
		sum := sha256.Sum256([]byte(inline(t, html, tag)))
		want := dir + " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want+";") {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("page headers %v, want nosniff and no-cache", resp.Header)
	}
}

func TestUIPageGzipAndRevalidation(t *testing.T) {
	h := newTestHandler(t, &fakeSource{snap: testSnapshot()})
	plain := get(t, h, "GET", "/ui/")
	plainBody, _ := io.ReadAll(plain.Body)
	gz := get(t, h, "GET", "/ui/", "Accept-Encoding", "br, gzip;q=0.8")
	if gz.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("with Accept-Encoding gzip: Content-Encoding %q", gz.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, plainBody) {
		t.Errorf("the gzip page (%d bytes unzipped) differs from the plain one (%d)", len(unzipped), len(plainBody))
	}
	if got := get(t, h, "GET", "/ui/", "Accept-Encoding", "gzip;q=0").Header.Get("Content-Encoding"); got != "" {
		t.Errorf("with gzip;q=0: Content-Encoding %q, want none", got)
	}
	if plain.Header.Get("ETag") == gz.Header.Get("ETag") {
		t.Errorf("plain and gzip pages share the ETag %s", plain.Header.Get("ETag"))
	}
	for _, r := range []*http.Response{plain, gz} {
		again := get(t, h, "GET", "/ui/", "If-None-Match", r.Header.Get("ETag"), "Accept-Encoding", r.Header.Get("Content-Encoding"))
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("revalidating ETag %s = %d, want 304", r.Header.Get("ETag"), again.StatusCode)
		}
	}
	t.Logf("page: %d bytes, %d gzipped", len(plainBody), len(h.page.gz))
}

// state fetches /ui/api/state?query.
func state(t *testing.T, h http.Handler, query string) (State, int) {
	t.Helper()
	resp := get(t, h, "GET", "/ui/api/state?"+query)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /ui/api/state?%s = %d (Cache-Control %q): %s", query, resp.StatusCode, resp.Header.Get("Cache-Control"), body)
	}
	var st State
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("state %s: %v", body, err)
	}
	return st, len(body)
}

func names(rows []Peer) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Name
	}
	return out
}

func TestUIStatePeers(t *testing.T) {
	const n = 10000
	all := manyPeers(n, "server-a", "server-b", "server-c")
	src := &fakeSource{snap: testSnapshot(), peers: all}
	h := newTestHandler(t, src)

	st, size := state(t, h, "")
	if st.Peers.Total != n || st.Peers.Matched != n || len(st.Peers.Rows) != 50 || st.Peers.Offset != 0 {
		t.Fatalf("default view: total %d matched %d rows %d offset %d, want %d, %d, 50, 0", st.Peers.Total, st.Peers.Matched, len(st.Peers.Rows), st.Peers.Offset, n, n)
	}
	if st.Peers.Rows[0].Name != "peer-00000" || st.Peers.Rows[49].Name != "peer-00049" {
		t.Errorf("default view rows %s..%s, want peer-00000..peer-00049 (by name)", st.Peers.Rows[0].Name, st.Peers.Rows[49].Name)
	}
	// The state's size does not grow with the peers.
	if size > 48<<10 {
		t.Errorf("a state with %d peers is %d bytes, want under 48 KiB", n, size)
	}

	// Each sort key, both ways, is a real order of all the peers.
	keys := map[string]func(p Peer) float64{
		"since":     func(p Peer) float64 { return float64(p.ConnectedSince.Unix()) },
		"rtt":       func(p Peer) float64 { return p.RTTMillis },
		"bytes_in":  func(p Peer) float64 { return float64(p.BytesIn) },
		"bytes_out": func(p Peer) float64 { return float64(p.BytesOut) },
		"in_flight": func(p Peer) float64 { return float64(p.EventsIn + p.EventsOut) },
		"changes":   func(p Peer) float64 { return float64(p.LinkChanges) },
	}
	for key, val := range keys {
		for _, order := range []string{"asc", "desc"} {
			sorted := slices.Clone(all)
			slices.SortStableFunc(sorted, func(a, b Peer) int {
				va, vb := val(a), val(b)
				c := 0
				if va < vb {
					c = -1
				} else if va > vb {
					c = 1
				}
				if order == "desc" {
					c = -c
				}
				if c == 0 {
					c = strings.Compare(a.Name, b.Name)
				}
				return c
			})
			st, _ := state(t, h, fmt.Sprintf("peers_sort=%s&peers_order=%s&peers_offset=100&peers_limit=20", key, order))
			if got, want := names(st.Peers.Rows), names(sorted[100:120]); !slices.Equal(got, want) {
				t.Errorf("sort %s %s, rows 100-120 = %v, want %v", key, order, got, want)
			}
			if st.Peers.Sort != key || st.Peers.Order != order {
				t.Errorf("sort %s %s served as %s %s", key, order, st.Peers.Sort, st.Peers.Order)
			}
		}
	}

	// Filtering, clamping, and junk.
	tests := []struct {
		query            string
		matched, offset  int
		first            string
		rows             int
		sort, order, qry string
	}{
		{"peers_q=PEER-0999", 10, 0, "peer-09990", 10, "name", "asc", "peer-0999"},
		{"peers_q=server-b&peers_limit=5", n / 3, 0, "peer-00001", 5, "name", "asc", "server-b"},
		{"peers_q=nobody", 0, 0, "", 0, "name", "asc", "nobody"},
		{"peers_offset=9990", n, 9990, "peer-09990", 10, "name", "asc", ""},
		{"peers_offset=99999", n, 9950, "peer-09950", 50, "name", "asc", ""},
		{"peers_limit=100000", n, 0, "peer-00000", 200, "name", "asc", ""},
		{"peers_limit=-3&peers_offset=-7", n, 0, "peer-00000", 1, "name", "asc", ""},
		{"peers_sort=evil&peers_order=sideways", n, 0, "peer-00000", 50, "name", "asc", ""},
		{"peers_order=desc", n, 0, "peer-09999", 50, "name", "desc", ""},
		{"peers_q=" + strings.Repeat("x", 500), 0, 0, "", 0, "name", "asc", strings.Repeat("x", maxQuery)},
	}
	for _, tt := range tests {
		st, _ := state(t, h, tt.query)
		p := st.Peers
		first := ""
		if len(p.Rows) > 0 {
			first = p.Rows[0].Name
		}
		if p.Matched != tt.matched || p.Offset != tt.offset || first != tt.first || len(p.Rows) != tt.rows || p.Sort != tt.sort || p.Order != tt.order || p.Query != tt.qry {
			t.Errorf("?%.60s: matched %d offset %d first %q rows %d sort %s %s q %.20q, want %d %d %q %d %s %s %.20q",
				tt.query, p.Matched, p.Offset, first, len(p.Rows), p.Sort, p.Order, p.Query, tt.matched, tt.offset, tt.first, tt.rows, tt.sort, tt.order, tt.qry)
		}
	}

	// The summary covers every peer, whatever the page.
	st, _ = state(t, h, "peers_q=peer-00001&peers_limit=1")
	var want PeerSummary
	rtts := make([]float64, 0, n)
	for _, p := range all {
		if p.EventsIn+p.EventsOut > 0 {
			want.Busy++
		}
		want.EventsIn += p.EventsIn
		want.EventsOut += p.EventsOut
		want.BytesIn += p.BytesIn
		want.BytesOut += p.BytesOut
		if p.LinkChanges > 1 {
			want.Relinked++
		}
		rtts = append(rtts, p.RTTMillis)
	}
	slices.Sort(rtts)
	want.RTTMedianMillis, want.RTTMaxMillis = rtts[n/2], rtts[n-1]
	got := st.Peers.Summary
	if got.Busy != want.Busy || got.EventsIn != want.EventsIn || got.EventsOut != want.EventsOut || got.BytesIn != want.BytesIn ||
		got.BytesOut != want.BytesOut || got.Relinked != want.Relinked || got.RTTMedianMillis != want.RTTMedianMillis || got.RTTMaxMillis != want.RTTMaxMillis {
		t.Errorf("summary = %+v, want %+v", got, want)
	}
	if got.Busy == 0 || got.Relinked == 0 || got.Busy == n {
		t.Errorf("summary %+v: the test's peers should be partly busy and partly relinked", got)
	}
	if len(got.ByServer) != 3 || got.ByServer["server-a"]+got.ByServer["server-b"]+got.ByServer["server-c"] != n {
		t.Errorf("summary by server = %v, want the %d peers over 3 servers", got.ByServer, n)
	}
}

func TestUIStateFreshPeers(t *testing.T) {
	now := testStart.Add(time.Hour)
	peers := []Peer{{Name: "old", ConnectedSince: now.Add(-time.Hour)}, {Name: "new", ConnectedSince: now.Add(-time.Minute)}}
	h := newTestHandler(t, &fakeSource{peers: peers})
	if st, _ := state(t, h, ""); st.Peers.Summary.Fresh != 1 {
		t.Errorf("Fresh = %d, want 1 (linked within %v)", st.Peers.Summary.Fresh, FreshWindow)
	}
}

func TestUIStateFailuresAfter(t *testing.T) {
	h := newTestHandler(t, &fakeSource{snap: testSnapshot()}) // failures 12..1, newest first
	tests := []struct {
		after     string
		wantFirst int
		wantN     int
	}{
		{"", 12, 12},
		{"0", 12, 12},
		{"9", 12, 3},
		{"12", 0, 0},
		{"13", 12, 12}, // the page saw another run of the node: all of them
		{"junk", 12, 12},
	}
	for _, tt := range tests {
		st, _ := state(t, h, "failures_after="+tt.after)
		f := st.Events.Failures
		first := 0
		if len(f) > 0 {
			first = f[0].Seq
		}
		if len(f) != tt.wantN || first != tt.wantFirst || st.Events.FailuresTotal != 12 {
			t.Errorf("failures_after=%s: %d failures from seq %d (total %d), want %d from %d", tt.after, len(f), first, st.Events.FailuresTotal, tt.wantN, tt.wantFirst)
		}
	}
}

func TestUIStateRoutesBounded(t *testing.T) {
	snap := testSnapshot()
	base := snap.Events.Routes[0]
	snap.Events.Routes = nil
	for i := range 20 {
		r := base
		r.Route = fmt.Sprintf("get_route_%02d", i)
		snap.Events.Routes = append(snap.Events.Routes, r)
	}
	snap.Events.RoutesTotal = 20
	h := newTestHandler(t, &fakeSource{snap: snap}, func(c *Config) { c.MaxRoutes = 5 })
	st, _ := state(t, h, "")
	if len(st.Events.Routes) != 5 || st.Events.RoutesTotal != 20 || st.Events.Routes[0].Route != "get_route_00" {
		t.Errorf("routes: %d charted of %d, first %s; want the first 5 of 20", len(st.Events.Routes), st.Events.RoutesTotal, st.Events.Routes[0].Route)
	}
}

func TestUIStateEmptyNode(t *testing.T) {
	h := newTestHandler(t, &fakeSource{})
	resp := get(t, h, "GET", "/ui/api/state")
	body, _ := io.ReadAll(resp.Body)
	// Lists are [] rather than null, so the page needs no special cases.
	for _, want := range []string{`"plugins":[]`, `"rows":[]`, `"routes":[]`, `"failures":[]`, `"policy":null`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("state of an empty node %s lacks %s", body, want)
		}
	}
	if bytes.Contains(body, []byte(`"cluster"`)) || bytes.Contains(body, []byte(`"link"`)) {
		t.Errorf("state of a server outside a cluster %s has a cluster or a link", body)
	}
}

func TestUIContainsFold(t *testing.T) {
	tests := []struct {
		s, sub string
		want   bool
	}{
		{"Web-01.example", "web-01", true},
		{"web-01", "", true},
		{"web", "web-01", false},
		{"abc", "c", true},
		{"ABC", "abd", false},
	}
	for _, tt := range tests {
		if got := containsFold(tt.s, tt.sub); got != tt.want {
			t.Errorf("containsFold(%q, %q) = %v, want %v", tt.s, tt.sub, got, tt.want)
		}
	}
}

func TestUIStateClipsText(t *testing.T) {
	long := strings.Repeat("é", 3000) // 2 bytes each
	snap := testSnapshot()
	snap.Plugins[0].LastError = long
	snap.Events.Failures[0].Message = long
	snap.Events.Failures[0].Route = long
	src := &fakeSource{snap: snap, peers: []Peer{{Name: "p", Software: long}}}
	st, _ := state(t, newTestHandler(t, src), "")
	for what, got := range map[string]string{
		"plugin error": st.Plugins[0].LastError, "failure message": st.Events.Failures[0].Message,
		"failure route": st.Events.Failures[0].Route, "peer software": st.Peers.Rows[0].Software,
	} {
		if len(got) > maxText || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
			t.Errorf("%s: %d bytes (valid UTF-8 %v), want at most %d ending in …", what, len(got), utf8.ValidString(got), maxText)
		}
	}
	if got := st.Events.Failures[0].Route; len(got) > maxName {
		t.Errorf("failure route of %d bytes, want at most %d", len(got), maxName)
	}
	if clip("short", 10) != "short" {
		t.Error("clip changed a short string")
	}
}

func TestUIStateGzip(t *testing.T) {
	h := newTestHandler(t, &fakeSource{snap: testSnapshot(), peers: manyPeers(500)})
	plain, size := state(t, h, "")
	resp := get(t, h, "GET", "/ui/api/state", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("state with Accept-Encoding gzip: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.NewDecoder(zr).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Peers.Total != plain.Peers.Total || len(st.Peers.Rows) != len(plain.Peers.Rows) {
		t.Errorf("the gzipped state differs from the plain one")
	}
	t.Logf("state: %d bytes, %s gzipped", size, resp.Header.Get("Content-Length"))
}
