package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// assets are the page's sources: index.html, with page.css and page.js
// inlined into it at start, so the browser gets one self-contained document.
//
//go:embed assets/index.html assets/page.css assets/page.js
var assets embed.FS

// Markers in index.html where the style and script go.
const (
	styleMarker  = "/*PAGE_CSS*/"
	scriptMarker = "/*PAGE_JS*/"
)

// page is the assembled page, served from memory.
type page struct {
	html, gz []byte
	etag     string
	csp      string
}

// buildPage inlines the style and script into the HTML, and works out the
// page's Content-Security-Policy: only that script and that style may run,
// the page may talk only to its own origin, and nothing else loads.
func buildPage() (*page, error) {
	read := func(name string) (string, error) {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			return "", fmt.Errorf("ui: read %s: %w", name, err)
		}
		return string(b), nil
	}
	html, err := read("index.html")
	if err != nil {
		return nil, err
	}
	css, err := read("page.css")
	if err != nil {
		return nil, err
	}
	js, err := read("page.js")
	if err != nil {
		return nil, err
	}
	for _, m := range []string{styleMarker, scriptMarker} {
		if strings.Count(html, m) != 1 {
			return nil, fmt.Errorf("ui: index.html must hold %s once", m)
		}
	}
	html = strings.Replace(html, styleMarker, css, 1)
	html = strings.Replace(html, scriptMarker, js, 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	p := &page{html: []byte(html)}
	p.csp = strings.Join([]string{
		"default-src 'none'",
		"script-src " + hash(js),
		"style-src " + hash(css),
		"connect-src 'self'",
		"img-src data:",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
	sum := sha256.Sum256(p.html)
	p.etag = `"` + hex.EncodeToString(sum[:8]) + `"`
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = zw.Write(p.html)
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("ui: compress the page: %w", err)
	}
	p.gz = gz.Bytes()
	return p, nil
}

// serve writes the page, compressed when the browser takes gzip, and
// answers a revalidation (If-None-Match) with 304.
func (p *page) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Revalidate every time: a new binary may serve a new page.
	h.Set("Cache-Control", "no-cache")
	h.Set("Vary", "Accept-Encoding")
	body, etag := p.html, p.etag
	if acceptsGzip(r) {
		body, etag = p.gz, strings.TrimSuffix(p.etag, `"`)+`-gz"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether the request's Accept-Encoding lists gzip
// (without q=0).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}
