package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestOnlyTheGatewayProtocol: the client module needs nothing beyond the
// standard library but proto/rest, the gateway's protocol, so a program
// that calls a node pulls in no part of the daemon.
func TestOnlyTheGatewayProtocol(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	want := map[string]bool{"github.com/restpipe/restpipe/proto/rest": true, "github.com/restpipe/restpipe/host/gateway/client": true}
	var got []string
	for _, p := range strings.Fields(string(out)) {
		got = append(got, p)
		if !want[p] {
			t.Errorf("the client depends on %s; want only the standard library and proto/rest", p)
		}
	}
	if len(got) != len(want) {
		t.Errorf("non-standard packages %v, want %d", got, len(want))
	}
}
