package plugins

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/hosttest"
)

func TestPluginServesAndLogsUnderItsName(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "good")
	e.start()
	st := e.waitState("good", StateRunning, 5*time.Second)
	if st.Name != "good" || st.Version != "1" || len(st.Routes) != 11 || st.PID == 0 {
		t.Errorf("status = %+v", st)
	}
	// The sha256 is computed beside the start, so it shows soon after.
	want := fmt.Sprintf("%x", sha256File(t, bin("misbehave")))[:12]
	deadline := time.Now().Add(5 * time.Second)
	for st.SHA256 != want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		st, _ = e.status("good")
	}
	if st.SHA256 != want {
		t.Errorf("status sha256 = %q, want %q", st.SHA256, want)
	}
	v, err := e.get("good/ok")
	if err != nil {
		t.Fatal(err)
	}
	node, _ := v["node"].(map[string]any)
	if v["version"] != "1" || v["peer"] != "peer1" || node["Role"] != "server" || node["Name"] != "srv" {
		t.Errorf("reply = %v, want version 1, peer1, node server/srv", v)
	}
	// Everything the handler prints reaches the log under the plugin's
	// name, and the protocol survives it.
	if _, b, err := e.call(context.Background(), "get", "good/print", nil); err != nil || string(b) != "printed" {
		t.Fatalf("print route = %q, %v", b, err)
	}
	e.logs.wait(5*time.Second, "plugins.good", "printed to os.Stdout by a handler")
	e.logs.wait(5*time.Second, "plugins.good", "written to file descriptor 1 by a handler")
	e.logs.wait(5*time.Second, "[WARN]", "plugins.good", "logged by a handler", "answer=42")
	// A plugin's control characters and terminal escapes reach the log
	// quoted, on every way out.
	e.logs.wait(5*time.Second, "plugins.good", `escape \x1b[31mred\x1b[0m\a on stdout`)
	e.logs.wait(5*time.Second, "plugins.good", `escape \x1b]0;title\a on descriptor 2`)
	e.logs.wait(5*time.Second, "plugins.good", `escape \x1b[2J in a log line`, `\x1b[1mbold`)
	if strings.ContainsRune(e.logs.String(), 0x1b) {
		t.Error("a raw escape character reached the node's log")
	}
	if _, err := e.get("good/ok"); err != nil {
		t.Errorf("event after printing = %v", err)
	}
}

func TestCrashMidEventThenRestart(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "crashy")
	e.start()
	before := e.waitState("crashy", StateRunning, 5*time.Second)
	_, _, err := e.call(context.Background(), "get", "crashy/crash", nil)
	wantKind(t, err, host.KindPluginUnavailable, "crashy")
	waitFor(t, 5*time.Second, "a restart", func() bool {
		st, _ := e.status("crashy")
		return st.Restarts == 1 && st.State == StateRunning
	})
	st, _ := e.status("crashy")
	if st.PID == before.PID {
		t.Errorf("after the crash: %+v, want 1 restart and a new process", st)
	}
	for range 5 {
		if _, err := e.get("crashy/ok"); err != nil {
			t.Errorf("event after restart = %v", err)
		}
	}
}

// TestCrashSeenWhileAChildHoldsTheOutput crashes a plugin that started a
// child holding its stderr (which go-plugin reads to its end before it
// reaps the plugin): the node must see the crash at once, restart the
// plugin, and stop promptly, also when the child left the plugin's
// process group (setsid) and outlives it.
func TestCrashSeenWhileAChildHoldsTheOutput(t *testing.T) {
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprintf("detached=%v", detach), func(t *testing.T) {
			e := newEnv(t, nil)
			e.install(bin("misbehave"), "forky")
			e.start()
			before := e.waitState("forky", StateRunning, 5*time.Second)
			q := map[string][]string{}
			if detach {
				q["detach"] = []string{"1"}
			}
			rep, err := e.table.Handle(context.Background(), &host.Event{ID: "t", Verb: "get", Noun: "forky/fork-crash", Query: q})
			if err != nil {
				t.Fatal(err)
			}
			var child struct {
				PID int `json:"child_pid"`
			}
			json.Unmarshal([]byte(readAll(rep)), &child)
			rep.Close()
			if child.PID <= 0 {
				t.Fatal("no child pid")
			}
			t.Cleanup(func() { syscall.Kill(child.PID, syscall.SIGKILL) })
			crashed := time.Now()
			waitFor(t, 5*time.Second, "the crash to show and the plugin to restart", func() bool {
				st, _ := e.status("forky")
				return st.Restarts == 1 && st.State == StateRunning && st.PID != before.PID
			})
			t.Logf("restarted %v after the crash", time.Since(crashed).Round(time.Millisecond))
			if _, err := e.get("forky/ok"); err != nil {
				t.Errorf("event after the restart = %v", err)
			}
			if !detach {
				// A child in the plugin's group dies with it.
				waitFor(t, 5*time.Second, "the plugin's child to die with it", func() bool { return !running(child.PID) })
			} else if !running(child.PID) {
				t.Errorf("the detached child is gone: the test did not detach it")
			}
			stopped := time.Now()
			e.stop()
			if d := time.Since(stopped); d > 8*time.Second {
				t.Errorf("stopping the node took %v with the child around", d)
			}
		})
	}
}

// TestAbandonedHandlersRestartThePlugin times out events whose handler
// ignores its context and burns CPU: the node shows them as abandoned, and
// past MaxAbandoned it restarts the plugin, whose other routes go on.
func TestAbandonedHandlersRestartThePlugin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxAbandoned = 2; c.StatsInterval = 100 * time.Millisecond })
	e.install(bin("misbehave"), "spinner")
	e.start()
	before := e.waitState("spinner", StateRunning, 5*time.Second)
	sawAbandoned := false
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, _, err := e.call(ctx, "get", "spinner/spin", nil)
		cancel()
		wantKind(t, err, host.KindTimeout, "")
		if st, _ := e.status("spinner"); st.Abandoned > 0 {
			sawAbandoned = true
		}
	}
	waitFor(t, 10*time.Second, "the plugin to be restarted", func() bool {
		st, _ := e.status("spinner")
		if st.Abandoned > 0 {
			sawAbandoned = true
		}
		return st.State == StateRunning && st.PID != before.PID
	})
	if !sawAbandoned {
		t.Error("/status never showed an abandoned handler")
	}
	if _, err := e.get("spinner/ok"); err != nil {
		t.Errorf("event after the restart = %v", err)
	}
	waitFor(t, 10*time.Second, "the old process, still spinning, to be killed", func() bool { return !running(before.PID) })
	e.logs.wait(5*time.Second, "too many abandoned handlers")
}

// TestPluginLimits checks the memory limit makes a plugin that allocates
// too much crash (and be restarted) instead of growing, and the nice value
// reaches every thread.
func TestPluginLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxMemory = 512 << 20; c.Nice = 7 })
	e.install(bin("misbehave"), "hog")
	e.start()
	before := e.waitState("hog", StateRunning, 5*time.Second)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", before.PID))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", before.PID, task.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		if f[16] != "7" { // field 19 of stat, the nice value
			t.Errorf("thread %s has nice %s, want 7", task.Name(), f[16])
		}
	}
	if _, b, err := e.call(context.Background(), "get", "hog/alloc", nil); err != nil {
		t.Fatalf("a small allocation failed: %v %s", err, b)
	}
	rep, err := e.table.Handle(context.Background(), &host.Event{ID: "t", Verb: "get", Noun: "hog/alloc", Query: map[string][]string{"mb": {"2048"}}})
	if err == nil {
		t.Fatalf("allocating 2 GiB under a 512 MiB limit answered %s", readAll(rep))
	}
	wantKind(t, err, host.KindPluginUnavailable, "")
	waitFor(t, 10*time.Second, "the plugin to restart", func() bool {
		st, _ := e.status("hog")
		return st.State == StateRunning && st.PID != before.PID
	})
}

func TestHungHandlerCostsOnlyItsEvent(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "hangs")
	e.start()
	e.waitState("hangs", StateRunning, 5*time.Second)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, _, err := e.call(ctx, "get", "hangs/hang", nil)
			if host.KindOf(err) != host.KindTimeout {
				t.Errorf("hung handler: %v, want timeout", err)
			}
		}()
	}
	// The plugin keeps serving other events meanwhile.
	for range 10 {
		if _, err := e.get("hangs/ok"); err != nil {
			t.Errorf("event beside the hung ones = %v", err)
		}
	}
	wg.Wait()
	waitFor(t, 2*time.Second, "in-flight count back to 0", func() bool { return e.table.InFlight("hangs") == 0 })
}

func TestBrokenPluginsAreQuarantinedAndOthersServe(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StartTimeout = time.Second })
	e.install(bin("misbehave"), "good")
	for _, name := range []string{"crash-on-start", "junk-stdout", "crash-loop"} {
		e.install(bin("misbehave"), name)
	}
	e.start()
	e.waitState("good", StateRunning, 5*time.Second)
	for _, name := range []string{"crash-on-start", "junk-stdout", "crash-loop"} {
		st := e.waitState(name, StateQuarantined, 20*time.Second)
		if !strings.Contains(st.Error, "quarantined after 5 crashes") || st.PID != 0 {
			t.Errorf("%s: %+v", name, st)
		}
	}
	e.logs.wait(time.Second, "Unrecognized remote plugin message", "hello from a plugin that talks too early")
	// crash-loop served for a moment, so its routes exist and now answer
	// plugin_unavailable, saying why.
	_, _, err := e.call(context.Background(), "get", "crash-loop/ok", nil)
	wantKind(t, err, host.KindPluginUnavailable, "quarantined")
	if _, err := e.get("good/ok"); err != nil {
		t.Errorf("good plugin beside broken ones = %v", err)
	}
	// A new file lifts the quarantine: it is tried again (and here,
	// crashing again, quarantined again after as many attempts).
	starts := e.logs.count("plugin process started", "crash-on-start")
	e.install(bin("misbehave-v2"), "crash-on-start")
	e.logs.wait(5*time.Second, "plugin file changed", "crash-on-start")
	waitFor(t, 10*time.Second, "5 more attempts", func() bool {
		return e.logs.count("plugin process started", "crash-on-start") >= starts+5
	})
	e.waitState("crash-on-start", StateQuarantined, 10*time.Second)
}

func TestHangingHandshakeIsKilled(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StartTimeout = 500 * time.Millisecond; c.QuarantineAfter = 2 })
	e.install(bin("misbehave"), "hang-handshake")
	e.install(bin("misbehave"), "good")
	e.start()
	e.waitState("good", StateRunning, 5*time.Second)
	st := e.waitState("hang-handshake", StateQuarantined, 10*time.Second)
	if st.PID != 0 {
		t.Errorf("status = %+v", st)
	}
	e.logs.wait(time.Second, "hang-handshake", "timeout while waiting for plugin to start")
}

func TestRouteConflict(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "dup-route-a")
	e.start()
	e.waitState("dup-route-a", StateRunning, 5*time.Second)
	e.install(bin("misbehave"), "dup-route-b")
	st := e.waitState("dup-route-b", StateConflict, 5*time.Second)
	if !strings.Contains(st.Error, `get_time is served by "dup-route-a"; "dup-route-b" cannot claim it`) {
		t.Errorf("conflict error = %q, want both names", st.Error)
	}
	e.logs.wait(time.Second, "[ERROR]", "dup-route-b", "plugin not routed", "dup-route-a")
	if owner := e.table.Routes()["get_time"]; owner != "dup-route-a" {
		t.Errorf("get_time owned by %q, want the earlier dup-route-a", owner)
	}
	// When the earlier owner goes away, the waiting plugin takes over.
	os.Remove(filepath.Join(e.dir, "dup-route-a"))
	e.waitState("dup-route-b", StateRunning, 5*time.Second)
	if owner := e.table.Routes()["get_time"]; owner != "dup-route-b" {
		t.Errorf("get_time owned by %q after dup-route-a left, want dup-route-b", owner)
	}
}

func TestHotReloadUnderLoad(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "svc")
	e.start()
	old := e.waitState("svc", StateRunning, 5*time.Second)

	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		ok, bad atomic.Int64
		sawV2   atomic.Bool
		errs    sync.Map
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, b, err := e.call(ctx, "get", "svc/slow", nil)
				cancel()
				if err != nil {
					bad.Add(1)
					errs.Store(fmt.Sprintf("%d/%d", w, i), err.Error())
					continue
				}
				ok.Add(1)
				if strings.Contains(string(b), `"version":"2"`) {
					sawV2.Store(true)
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, "load to flow", func() bool { return ok.Load() > 50 })
	replaced := time.Now()
	e.install(bin("misbehave-v2"), "svc")
	waitFor(t, 2*time.Second, "the new version to answer", sawV2.Load)
	t.Logf("new version answering %v after the file was replaced", time.Since(replaced).Round(time.Millisecond))
	// Let some events run on the new version, then stop.
	n := ok.Load()
	waitFor(t, 5*time.Second, "more load", func() bool { return ok.Load() > n+50 })
	stop.Store(true)
	wg.Wait()
	errs.Range(func(k, v any) bool { t.Errorf("event %v failed during the reload: %v", k, v); return true })
	t.Logf("%d events, %d failed", ok.Load()+bad.Load(), bad.Load())
	st := e.waitState("svc", StateRunning, time.Second)
	if st.Version != "2" || st.PID == old.PID || st.Restarts != 0 {
		t.Errorf("after reload: %+v", st)
	}
	waitFor(t, 5*time.Second, "the old process to exit", func() bool { return !alive(old.PID) })
}

func TestReplacedPluginFinishesItsEventsOnTheOldProcess(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "svc")
	e.start()
	old := e.waitState("svc", StateRunning, 5*time.Second)
	res := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ev := &host.Event{Verb: "get", Noun: "svc/slow", Query: map[string][]string{"ms": {"1500"}}}
		rep, err := e.table.Handle(ctx, ev)
		if err != nil {
			res <- err.Error()
			return
		}
		defer rep.Close()
		var b strings.Builder
		_, err = fmt.Fprint(&b, readAll(rep))
		res <- b.String()
	}()
	waitFor(t, 5*time.Second, "the slow event in flight", func() bool { return e.table.InFlight("svc") == 1 })
	e.install(bin("misbehave-v2"), "svc")
	e.waitState("svc", StateRunning, 5*time.Second)
	waitFor(t, 5*time.Second, "version 2", func() bool { st, _ := e.status("svc"); return st.Version == "2" })
	if !alive(old.PID) {
		t.Fatal("the old process was stopped with an event in flight")
	}
	if got := <-res; !strings.Contains(got, `"version":"1"`) {
		t.Errorf("slow event = %q, want it answered by version 1", got)
	}
	waitFor(t, 5*time.Second, "the old process to exit", func() bool { return !alive(old.PID) })
}

func TestRemovedPluginIsWithdrawn(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "gone")
	e.start()
	st := e.waitState("gone", StateRunning, 5*time.Second)
	removed := time.Now()
	os.Remove(filepath.Join(e.dir, "gone"))
	waitFor(t, 2*time.Second, "routes withdrawn", func() bool { _, ok := e.table.Routes()["get_gone_ok"]; return !ok })
	t.Logf("withdrawn %v after removal", time.Since(removed).Round(time.Millisecond))
	_, err := e.get("gone/ok")
	wantKind(t, err, host.KindNoRoute, "get_gone_ok")
	waitFor(t, 5*time.Second, "the process to exit", func() bool { return !alive(st.PID) })
}

func TestHalfWrittenFileIsNotStarted(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Settle = 400 * time.Millisecond })
	e.start()
	b, err := os.ReadFile(bin("misbehave"))
	if err != nil {
		t.Fatal(err)
	}
	// Copy in place, slowly, the way cp into the directory would.
	f, err := os.OpenFile(filepath.Join(e.dir, "copied"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	half := len(b) / 2
	for off := 0; off < half; off += half / 4 {
		f.Write(b[off:min(off+half/4, half)])
		time.Sleep(100 * time.Millisecond) // a slow copy is the scenario
	}
	f.Write(b[half:])
	f.Close()
	e.waitState("copied", StateRunning, 5*time.Second)
	if e.logs.has("crashed or failed to start", "copied") {
		t.Error("the half-written file was launched")
	}
}

func TestChecksumPinning(t *testing.T) {
	good := sha256File(t, bin("misbehave"))
	e := newEnv(t, func(c *Config) {
		c.Checksums = map[string][]byte{"pinned": good, "wrong": make([]byte, 32)}
	})
	e.install(bin("misbehave"), "pinned")
	e.install(bin("misbehave"), "wrong")
	e.install(bin("misbehave"), "unlisted")
	e.start()
	e.waitState("pinned", StateRunning, 5*time.Second)
	for _, name := range []string{"wrong", "unlisted"} {
		st := e.waitState(name, StateRefused, 5*time.Second)
		if !strings.Contains(st.Error, "checksum") {
			t.Errorf("%s: %+v", name, st)
		}
	}
	e.logs.wait(time.Second, "plugin refused", "wrong", "does not match the checksum manifest")
}

// TestPinnedPluginIsCheckedBeforeEveryExec rewrites a pinned plugin's file
// in place while it waits to be restarted after a crash: the restart runs
// the check again and refuses the new content, though the directory scan
// (held back by a long Settle) has not looked at the file yet.
func TestPinnedPluginIsCheckedBeforeEveryExec(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Checksums = map[string][]byte{"pinned": sha256File(t, bin("misbehave"))}
		c.Settle = time.Minute
		c.MinRestart, c.MaxRestart = time.Second, time.Second
	})
	e.install(bin("misbehave"), "pinned")
	e.start()
	e.waitState("pinned", StateRunning, 5*time.Second)
	if _, err := e.get("pinned/crash"); err == nil {
		t.Fatal("the crash route answered")
	}
	e.waitState("pinned", StateRestarting, 5*time.Second)
	other, err := os.ReadFile(bin("time"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "pinned"), other, 0o755); err != nil {
		t.Fatal(err)
	}
	st := e.waitState("pinned", StateRefused, 5*time.Second)
	if !strings.Contains(st.Error, "does not match the checksum manifest") || st.PID != 0 {
		t.Errorf("status after the rewrite = %+v, want refused by the checksum and no process", st)
	}
}

func TestMisconfiguredPlugin(t *testing.T) {
	e := newEnv(t, nil)
	e.install(bin("misbehave"), "misconfigured")
	e.start()
	st := e.waitState("misconfigured", StateMisconfigured, 5*time.Second)
	if !strings.Contains(st.Error, `setting "color" is required`) {
		t.Errorf("status = %+v", st)
	}
}

func TestPluginConfigReachesThePlugin(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello from the root"), 0o644)
	e := newEnv(t, func(c *Config) { c.PluginConfig = map[string]map[string]string{"files": {"root": root}} })
	e.install(bin("files"), "files")
	e.start()
	e.waitState("files", StateRunning, 5*time.Second)
	_, b, err := e.call(context.Background(), "get", "files", nil, "hello.txt")
	if err != nil || string(b) != "hello from the root" {
		t.Errorf("get_files hello.txt = %q, %v", b, err)
	}
}

// TestPluginEnvironmentIsItsOwn checks a plugin sees none of the node's
// environment (which may hold secrets, other plugins' settings among
// them), only what Config.Env gives it and go-plugin's own variables.
func TestPluginEnvironmentIsItsOwn(t *testing.T) {
	t.Setenv("RESTPIPE_PLUGIN_CONFIG", "other.token=s3cret")
	t.Setenv("NODE_SECRET", "s3cret")
	e := newEnv(t, func(c *Config) { c.Env = []string{"PATH=/usr/bin:/bin", "GIVEN=yes"} })
	e.install(bin("misbehave"), "envy")
	e.start()
	e.waitState("envy", StateRunning, 5*time.Second)
	rep, err := e.table.Handle(context.Background(), &host.Event{ID: "t", Verb: "get", Noun: "envy/env", Query: map[string][]string{"name": {"GIVEN"}}})
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(readAll(rep))
	rep.Close()
	var got struct {
		Names []string `json:"names"`
		Value string   `json:"value"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got.Value != "yes" {
		t.Errorf("GIVEN = %q in the plugin, want yes", got.Value)
	}
	for _, n := range got.Names {
		switch {
		case n == "NODE_SECRET", n == "RESTPIPE_PLUGIN_CONFIG":
			t.Errorf("the plugin sees the node's %s", n)
		case n == "PATH", n == "GIVEN", n == "GOMAXPROCS", n == pluginsdkLogLevel,
			strings.HasPrefix(n, "PLUGIN_"), n == "RESTPIPE_PLUGIN":
		default:
			t.Errorf("the plugin's environment holds %s, which nobody gave it", n)
		}
	}
}

func sha256File(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return s[:]
}

func readAll(rep *host.Reply) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := rep.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func alive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	defer p.Release()
	// A zombie still answers signal 0; reaped processes do not.
	return p.Signal(syscallZero) == nil
}

// waitFor polls cond until it holds or within passes.
var waitFor = hosttest.WaitFor

// TestExamplePluginsThroughTheManager runs the real example plugins from
// plugins/ through the manager and the route table.
func TestExamplePluginsThroughTheManager(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("file a"), 0o644)
	e := newEnv(t, func(c *Config) { c.PluginConfig = map[string]map[string]string{"files": {"root": root}} })
	for _, name := range []string{"time", "cat", "echo", "files"} {
		e.install(bin(name), name)
	}
	e.start()
	for _, name := range []string{"time", "cat", "echo", "files"} {
		e.waitState(name, StateRunning, 5*time.Second)
	}
	if v, err := e.get("time"); err != nil || v["time_from_server"] == nil {
		t.Errorf("time = %v, %v", v, err)
	}
	if v, err := e.get("cat", "hello ", "world"); err != nil || v["result_from_server"] != "hello world" {
		t.Errorf("cat = %v, %v", v, err)
	}
	if v, err := e.get("echo", "x"); err != nil || v["peer"] != "peer1" || fmt.Sprint(v["args"]) != "[x]" {
		t.Errorf("echo = %v, %v", v, err)
	}
	if _, b, err := e.call(context.Background(), "get", "files", nil, "a.txt"); err != nil || string(b) != "file a" {
		t.Errorf("files = %q, %v", b, err)
	}
	st, _ := e.status("echo")
	if want := []string{"get_echo", "post_echo", "put_echo"}; fmt.Sprint(st.Routes) != fmt.Sprint(want) {
		t.Errorf("echo routes = %v, want %v", st.Routes, want)
	}
}

// TestPluginRunByHandExplainsItself checks a plugin binary started by hand
// says what it is and exits, instead of waiting forever.
func TestPluginRunByHandExplainsItself(t *testing.T) {
	cmd := exec.Command(bin("time"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no handshake cookie
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "This binary is a plugin") {
		t.Errorf("running a plugin by hand: %v, output %q; want exit 1 and an explanation", err, out)
	}
}

// TestPluginSocketIsPrivate checks what the AutoMTLS default relies on:
// each plugin's Unix socket sits in a directory of its own, mode 0700,
// owned by the node's user, and the directory is gone once the plugin
// stops. Both settings of AutoMTLS serve events.
func TestPluginSocketIsPrivate(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("AutoMTLS=%v", mtls), func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.AutoMTLS = mtls })
			e.install(bin("misbehave"), "good")
			e.start()
			e.waitState("good", StateRunning, 5*time.Second)
			if _, err := e.get("good/ok"); err != nil {
				t.Fatal(err)
			}
			var addr net.Addr
			e.m.mu.Lock()
			if in := e.m.sups["good"].h.cur.Load(); in != nil {
				addr = in.client.ReattachConfig().Addr
			}
			e.m.mu.Unlock()
			if addr == nil || addr.Network() != "unix" {
				t.Fatalf("plugin address = %v, want a Unix socket", addr)
			}
			dir := filepath.Dir(addr.String())
			st, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o700 || st.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
				t.Errorf("socket directory %s: mode %v uid %d, want 0700 owned by %d",
					dir, st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Uid, os.Getuid())
			}
			// go-plugin's control socket and the plugin's event socket.
			var names []string
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if len(names) != 2 || !slices.Contains(names, "events.sock") {
				t.Errorf("socket directory holds %v, want the control socket and events.sock", names)
			}
			e.stop()
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("socket directory %s after the plugin stopped: %v, want it removed", dir, err)
			}
		})
	}
}
