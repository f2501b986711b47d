package main

import (
	"encoding/json"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// TestDevDemo runs the README's first command as a newcomer would, from the
// source tree: `restpipe dev` builds the example plugins, links a server
// and a client node, and prints curl lines that work. Ports are :0 here
// (the README uses the defaults).
func TestDevDemo(t *testing.T) {
	t.Parallel()
	dev := startProc(t, "dev", nil, "dev", "--server-http", "127.0.0.1:0", "--client-http", "127.0.0.1:0")
	out := dev.waitOutput(2*time.Minute, "Press Ctrl-C to stop.")

	urls := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  curl (http://\S+/(server|client/client1)/time)$`).FindAllStringSubmatch(out, -1) {
		urls[m[2]] = m[1]
	}
	if len(urls) != 2 {
		t.Fatalf("banner has no curl line for time in each direction:\n%s", out)
	}
	for dir, key := range map[string]string{"server": "time_from_server", "client/client1": "time_from_client"} {
		r := do(t, "GET", urls[dir], nil)
		var v map[string]any
		if r.status != 200 || json.Unmarshal(r.body, &v) != nil || v[key] == nil {
			t.Errorf("curl %s = %d %s, want 200 with %q", urls[dir], r.status, r.body, key)
		}
	}
	dev.signal(syscall.SIGINT)
	if code := dev.wait(20 * time.Second); code != 0 {
		t.Errorf("restpipe dev exit code after Ctrl-C = %d, want 0", code)
	}
}

// TestDevClusterDemo: `restpipe dev --servers 3` runs three clustered
// servers and six clients, and every curl line it prints crosses servers
// and works.
func TestDevClusterDemo(t *testing.T) {
	t.Parallel()
	dev := startProc(t, "dev", nil, "dev", "--servers", "3")
	out := dev.waitOutput(2*time.Minute, "Press Ctrl-C to stop.")
	lines := regexp.MustCompile(`(?m)^  curl (http://\S+/client/(client\d+)/echo//hello)   # (s\d) -> (s\d) -> client\d+$`).FindAllStringSubmatch(out, -1)
	if len(lines) != 6 {
		t.Fatalf("banner has %d cross-server curl lines, want 6:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if l[3] == l[4] {
			t.Errorf("curl line does not cross servers: %s", l[0])
		}
		r := do(t, "GET", l[1], nil)
		var v echoReply
		if r.status != 200 || json.Unmarshal(r.body, &v) != nil || v.Node.Name != l[2] || v.Peer != l[3] {
			t.Errorf("curl %s = %d %s, want 200 from %s with peer %s", l[1], r.status, r.body, l[2], l[3])
		}
	}
	dev.signal(syscall.SIGINT)
	if code := dev.wait(30 * time.Second); code != 0 {
		t.Errorf("restpipe dev --servers 3 exit code after Ctrl-C = %d, want 0", code)
	}
}
