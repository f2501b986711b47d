package ui

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// countingWriter is an http.ResponseWriter that keeps only the count.
type countingWriter struct {
	h http.Header
	n int
}

func (w *countingWriter) Header() http.Header         { return w.h }
func (w *countingWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *countingWriter) WriteHeader(int)             {}

// BenchmarkUIState measures one poll of the page (GET /ui/api/state, the
// default view: the first 50 peers by name; a page deep in another order;
// a filter) against the number of peers, 100 being the baseline. The Source
// hands out a fresh copy of the peers each time, as the node's does.
// bytes/poll is the size of the answer, gzipped as a browser takes it.
func BenchmarkUIState(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, view := range []struct{ name, query string }{
			{"first-page", ""},
			{"sorted-by-rtt", "peers_sort=rtt&peers_order=desc&peers_offset=5000"},
			{"filtered", "peers_q=peer-09"},
		} {
			b.Run(fmt.Sprintf("peers=%d/%s", n, view.name), func(b *testing.B) {
				src := &fakeSource{snap: testSnapshot(), peers: manyPeers(n, "server-a", "server-b")}
				h := newTestHandler(b, src)
				req := httptest.NewRequest("GET", "/ui/api/state?"+view.query, nil)
				req.Header.Set("Accept-Encoding", "gzip") // as a browser asks
				w := &countingWriter{h: http.Header{}}
				b.ReportAllocs()
				for b.Loop() {
					w.n = 0
					h.ServeHTTP(w, req)
				}
				b.ReportMetric(float64(w.n), "bytes/poll")
			})
		}
	}
}

// BenchmarkUIPage measures serving the page itself, compressed.
func BenchmarkUIPage(b *testing.B) {
	h := newTestHandler(b, &fakeSource{})
	req := httptest.NewRequest("GET", "/ui/", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	w := &countingWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		w.n = 0
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	b.ReportMetric(float64(w.n), "bytes/page")
	b.ReportMetric(float64(len(h.page.html)), "bytes/page-uncompressed")
}
