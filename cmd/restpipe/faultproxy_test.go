package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// faultProxy is a TCP proxy that breaks the connections through it on
// demand: toxiproxy, used as a library, put between a client node and the
// server's link address. It listens on 127.0.0.1:0 and stops (closing every
// connection through it) at the end of the test.
//
// Its methods are meant for the test's goroutine; each returns once the
// fault is in place on every connection through the proxy, and applies to
// connections made later too, until clear.
type faultProxy struct {
	t      testing.TB
	proxy  *toxiproxy.Proxy
	addr   string   // where client nodes dial instead of the server
	toxics []string // names of the toxics in place
}

// newFaultProxy starts a proxy to upstream.
func newFaultProxy(t testing.TB, upstream string) *faultProxy {
	t.Helper()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(api, "link", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start the fault proxy to %s: %v", upstream, err)
	}
	t.Cleanup(p.Stop)
	// Start has bound the listener; Listen now holds its address, which
	// cut reuses.
	return &faultProxy{t: t, proxy: p, addr: p.Listen}
}

// latency delays every byte by d in each direction (so a round trip takes
// 2d more).
func (f *faultProxy) latency(d time.Duration) {
	f.both("latency", map[string]any{"latency": d.Milliseconds(), "jitter": 0})
}

// bandwidth limits each direction to kBps kilobytes (1000 bytes) per
// second.
func (f *faultProxy) bandwidth(kBps int64) {
	f.both("bandwidth", map[string]any{"rate": kBps})
}

// blackhole drops every byte in both directions while keeping the TCP
// connections open: a silent, half-open link, as a dead NAT entry or a
// pulled cable far away gives. Only a heartbeat can notice it. (When clear
// removes it, toxiproxy closes the connections that went through it.)
func (f *faultProxy) blackhole() {
	f.both("timeout", map[string]any{"timeout": 0})
}

// resetMidStream lets n more bytes through in each direction of every
// connection, then closes that connection (both ends) without warning:
// whatever streams were in progress on it are cut in the middle. (toxiproxy
// then leaks a couple of its own goroutines per connection; see
// goroutines.)
func (f *faultProxy) resetMidStream(n int64) {
	f.both("limit_data", map[string]any{"bytes": n})
}

// cut closes every connection through the proxy at once, both ends, as a
// crashed middlebox would, then listens again on the same address at once.
func (f *faultProxy) cut() {
	f.t.Helper()
	f.proxy.Stop() // closes the listener and every connection
	if err := f.proxy.Start(); err != nil {
		f.t.Fatalf("restart the fault proxy on %s: %v", f.addr, err)
	}
}

// clear removes every toxic: the connections that survive them carry data
// normally again.
func (f *faultProxy) clear() {
	f.t.Helper()
	for _, name := range f.toxics {
		if err := f.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
			f.t.Fatalf("remove toxic %s: %v", name, err)
		}
	}
	f.toxics = nil
}

// both adds a toxic of type typ to each direction ("upstream" is client to
// server).
func (f *faultProxy) both(typ string, attrs map[string]any) {
	f.t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		name := typ + "_" + stream
		b, err := json.Marshal(map[string]any{"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs})
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.proxy.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			f.t.Fatalf("add toxic %s: %v", b, err)
		}
		f.toxics = append(f.toxics, name)
	}
}
