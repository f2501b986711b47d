package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/restpipe/restpipe/host"
)

// TestUIRoute checks /ui and the paths under it reach the UI handler, as
// they came, and nothing else does.
func TestUIRoute(t *testing.T) {
	var got []string
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path)
		w.WriteHeader(http.StatusTeapot)
	})
	local := host.HandlerFunc(func(context.Context, *host.Event) (*host.Reply, error) {
		return &host.Reply{}, nil
	})
	g, err := New(Config{Node: host.Node{Role: host.RoleServer, Name: "s"}, Local: local, Peers: noPeers{}, UI: ui})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		toUI bool
	}{
		{"/ui", true},
		{"/ui/", true},
		{"/ui/api/state", true},
		{"/uix", false},
		{"/local/ui", false},
		{"/status", false},
	}
	for _, tt := range tests {
		got = nil
		rec := httptest.NewRecorder()
		g.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
		if toUI := rec.Code == http.StatusTeapot; toUI != tt.toUI || (toUI && (len(got) != 1 || got[0] != tt.path)) {
			t.Errorf("GET %s: to the UI %v (paths %q), want %v", tt.path, toUI, got, tt.toUI)
		}
	}

	// Without a UI handler, /ui is an event path like any other.
	g, err = New(Config{Node: host.Node{Role: host.RoleServer, Name: "s"}, Local: local, Peers: noPeers{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/", nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("GET /ui/ without a UI = %d, want 400 (not a path of the grammar)", rec.Code)
	}
}
