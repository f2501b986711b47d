package plugins

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shoutPlugin is the README's plugin, as a newcomer writes it in a module
// of their own.
const shoutPlugin = `package main

import (
	"context"
	"strings"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

func main() {
	p := pluginsdk.New("shout", "1.0.0")
	p.Handle("get", "shout", func(ctx context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.JSON(map[string]string{"shouted": strings.ToUpper(ev.Arg(0))}), nil
	})
	p.Serve()
}
`

// TestPluginModuleOutsideTheTree builds a plugin in a module outside this
// repository that requires only the SDK (set up as the README says, with
// replace lines until a release), offline, and serves it from a node's
// plugins directory. Its module graph must be the SDK's, nothing of the
// daemon's: that is what plugin-sdk and proto being modules of their own
// buys a plugin author.
func TestPluginModuleOutsideTheTree(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	sdk, protoDir := filepath.Join(repo, "plugin-sdk"), filepath.Join(repo, "proto")
	dir := t.TempDir()
	goMod := "module example.com/shout\n\ngo 1.26.0\n\n" +
		"require github.com/restpipe/restpipe/plugin-sdk v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/restpipe/restpipe/plugin-sdk => " + sdk + "\n\n" +
		"replace github.com/restpipe/restpipe/proto => " + protoDir + "\n"
	// go.sum starts as the SDK's own: what `go get` of a released SDK
	// would write, and what lets this run with no network.
	sum, err := os.ReadFile(filepath.Join(sdk, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"go.mod": []byte(goMod), "main.go": []byte(shoutPlugin), "go.sum": sum} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
		}
		return string(out)
	}
	goCmd(dir, "mod", "tidy")
	plugin := filepath.Join(t.TempDir(), "shout")
	goCmd(dir, "build", "-o", plugin, ".")

	// Every module the plugin's build needs is one the SDK's own packages
	// need.
	modules := func(dir string, args ...string) map[string]bool {
		m := map[string]bool{}
		out := goCmd(dir, append([]string{"list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}"}, args...)...)
		for _, line := range strings.Fields(out) {
			m[line] = true
		}
		return m
	}
	mine, sdks := modules(dir, "."), modules(sdk, "./...")
	if len(mine) < 3 {
		t.Fatalf("the plugin's build needs %d modules: is go list working?", len(mine))
	}
	for m := range mine {
		if m != "example.com/shout" && !sdks[m] {
			t.Errorf("the plugin's build needs %s, which the SDK does not need", m)
		}
	}
	for _, daemonOnly := range []string{"github.com/restpipe/restpipe", "github.com/go-task/task/v3", "github.com/Shopify/toxiproxy/v2", "github.com/chromedp/chromedp", "github.com/prometheus/client_golang", "github.com/hashicorp/hcl/v2"} {
		if mine[daemonOnly] {
			t.Errorf("the plugin's build needs the daemon's %s", daemonOnly)
		}
	}
	lines, _ := os.ReadFile(filepath.Join(dir, "go.sum"))
	t.Logf("an out-of-tree plugin builds from %d modules; its go.sum has %d lines", len(mine), strings.Count(string(lines), "\n"))

	// And it serves, from a node's plugins directory.
	e := newEnv(t, nil)
	e.install(plugin, "shout")
	e.start()
	e.waitState("shout", StateRunning, 10*time.Second)
	v, err := e.get("shout", "hello")
	if err != nil || v["shouted"] != "HELLO" {
		t.Fatalf("GET shout//hello = %v, %v; want shouted HELLO", v, err)
	}
}
