package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// startDelayProxy starts a TCP proxy on 127.0.0.1:0 to upstream that delays
// every byte by oneWay in each direction, so a round trip through it takes
// 2*oneWay more: toxiproxy as a library, with a latency toxic (no jitter)
// on each direction. Its Listen field is the address to dial; Stop closes
// it and every connection through it.
func startDelayProxy(name, upstream string, oneWay time.Duration) (*toxiproxy.Proxy, error) {
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(api, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("start the delaying proxy to %s: %w", upstream, err)
	}
	for _, stream := range []string{"upstream", "downstream"} {
		b, err := json.Marshal(map[string]any{
			"name": "latency_" + stream, "type": "latency", "stream": stream, "toxicity": 1.0,
			"attributes": map[string]any{"latency": oneWay.Milliseconds(), "jitter": 0},
		})
		if err != nil {
			p.Stop()
			return nil, err
		}
		if _, err := p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			p.Stop()
			return nil, fmt.Errorf("add the latency toxic: %w", err)
		}
	}
	return p, nil
}
