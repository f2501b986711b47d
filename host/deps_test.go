package host_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/restpipe/restpipe"

// TestDependencyRules enforces the architecture on every non-test import:
//
//   - host itself is vocabulary: it imports nothing else of the module but
//     proto/route, the route grammar it shares with the plugin SDK, and
//     proto/rest, the gateway's protocol it shares with the Go client;
//   - a component under host/ never imports a sibling component (they talk
//     through host's types and interfaces they declare themselves; only
//     cmd/restpipe knows them all);
//   - host/internal/... holds small leaf pieces every component may share
//     (drain: the one drain counter); they import no component;
//   - plugin-sdk never imports host/...;
//   - plugins/* import only plugin-sdk and the standard library.
func TestDependencyRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := strings.TrimPrefix(fields[0], module+"/"), fields[1:]
		checked++
		for _, imp := range imports {
			if err := checkImport(pkg, imp); err != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, err)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("checked only %d packages; is go list working?", checked)
	}
}

// checkImport returns why pkg (relative to the module) may not import imp,
// or "".
func checkImport(pkg, imp string) string {
	internal := strings.HasPrefix(imp, module+"/")
	rel := strings.TrimPrefix(imp, module+"/")
	switch {
	case pkg == "host":
		if internal && rel != "proto/route" && rel != "proto/rest" {
			return "host is vocabulary and imports nothing of the module"
		}
	case strings.HasPrefix(pkg, "host/internal/"):
		if internal && strings.HasPrefix(rel, "host/") && component(rel) != component(pkg) {
			return "host/internal packages are leaves: they import no component"
		}
	case strings.HasPrefix(pkg, "host/"):
		if internal && strings.HasPrefix(rel, "host/") && component(rel) != component(pkg) && component(rel) != "host/internal" {
			return "components under host/ do not import each other; declare a small interface instead"
		}
	case pkg == "plugin-sdk" || strings.HasPrefix(pkg, "plugin-sdk/"):
		if internal && (rel == "host" || strings.HasPrefix(rel, "host/")) {
			return "plugin-sdk never imports host"
		}
	case strings.HasPrefix(pkg, "plugins/"):
		isStd := !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".")
		if !isStd && rel != "plugin-sdk" {
			return "plugins import only plugin-sdk and the standard library"
		}
	}
	return ""
}

// component returns the component a host/ path belongs to: "host/link" for
// "host/link/x".
func component(p string) string {
	parts := strings.SplitN(p, "/", 3)
	return parts[0] + "/" + parts[1]
}

func TestCheckImport(t *testing.T) {
	tests := []struct {
		pkg, imp string
		ok       bool
	}{
		{"host", "context", true},
		{"host", module + "/proto/link/v1", false},
		{"host", module + "/proto/route", true},
		{"host", module + "/proto/rest", true},
		{"host/link", module + "/host", true},
		{"host/link", module + "/proto/link/v1", true},
		{"host/link", module + "/host/pki", false},
		{"host/gateway/client", module + "/host/gateway", true},
		{"host/link", module + "/host/internal/drain", true},
		{"host/internal/drain", module + "/host/link", false},
		{"host/internal/drain", module + "/host", true},
		{"plugin-sdk", module + "/proto/plugin/v1", true},
		{"plugin-sdk", module + "/host", false},
		{"plugin-sdk/pluginsdktest", module + "/host/dispatch", false},
		{"plugins/time", module + "/plugin-sdk", true},
		{"plugins/time", "encoding/json", true},
		{"plugins/time", module + "/proto/plugin/v1", false},
		{"plugins/time", "github.com/some/lib", false},
	}
	for _, tt := range tests {
		if got := checkImport(tt.pkg, tt.imp) == ""; got != tt.ok {
			t.Errorf("checkImport(%s, %s) ok = %v, want %v", tt.pkg, tt.imp, got, tt.ok)
		}
	}
}
