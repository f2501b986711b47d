package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// TestLayersStopTopFirst: each layer has returned before the one below is
// told to stop, and a service's failure is reported once, with its name.
func TestLayersStopTopFirst(t *testing.T) {
	var mu sync.Mutex
	var order []string
	svc := func(name string) service {
		return service{name: name, run: func(ctx context.Context) error {
			<-ctx.Done()
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return nil
		}}
	}
	boom := errors.New("boom")
	l := newLayers(context.Background())
	l.start(svc("plugins"))
	l.start(closeService("cluster", func() {
		mu.Lock()
		order = append(order, "cluster")
		mu.Unlock()
	}))
	serving := make(chan struct{})
	l.start(svc("link"), service{name: "http", run: func(context.Context) error { return boom }},
		serveService("pprof", func() error { <-serving; return errClosedForTest }, func() { close(serving) }, errClosedForTest))
	err := <-l.failure()
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "http: ") {
		t.Fatalf("failure = %v, want http: boom", err)
	}
	if err := l.stop(); !errors.Is(err, boom) {
		t.Fatalf("stop = %v, want the failure again", err)
	}
	if got := strings.Join(order, " "); got != "link cluster plugins" {
		t.Errorf("stopped in the order %q, want link cluster plugins", got)
	}
}

var errClosedForTest = errors.New("closed")
