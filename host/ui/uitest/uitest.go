// Package uitest drives pages in a real headless Chromium for tests, with
// chromedp: the tests of the status page (host/ui, cmd/restpipe) load it as
// a person would, watch its console, wait for what it shows and save
// screenshots.
//
// Chromium is found on the PATH (chromium, chromium-browser, google-chrome)
// or at /usr/bin/chromium, Debian's package, which `go tool -modfile=cmd/task.mod task deps`
// installs when run as root. Without one, Start skips the test with a
// message saying how to get it. The browser runs headless, without a
// sandbox or GPU, with a fresh profile in the test's temporary directory and
// with every background network feature off (the tests run offline).
package uitest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// ChromiumPath returns the Chromium binary, or "" when none is installed.
func ChromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/lib/chromium/chromium"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Options configures a Browser.
type Options struct {
	// ShotDir is where screenshots go; "" puts them in a t.TempDir() (gone
	// after the test). The tests set it from RESTPIPE_UI_SHOTS so that a
	// reviewer can keep them.
	ShotDir string
}

// Browser is one Chromium process, owned by a test: Start stops it at the
// test's cleanup.
type Browser struct {
	ctx     context.Context // the browser's: its first tab, which stays blank
	shotDir string
	out     *lockedBuffer
}

// Start starts Chromium for t, or skips t when none is installed.
func Start(t testing.TB, opts Options) *Browser {
	t.Helper()
	bin := ChromiumPath()
	if bin == "" {
		t.Skip("chromium is not installed: apt-get install chromium (the test task does it as root: go tool -modfile=cmd/task.mod task deps)")
	}
	b := &Browser{shotDir: opts.ShotDir, out: &lockedBuffer{}}
	if b.shotDir == "" {
		b.shotDir = t.TempDir()
	} else if err := os.MkdirAll(b.shotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	flags := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(b.out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), flags...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b.ctx = ctx
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit and removes its profile
		if t.Failed() {
			t.Logf("chromium's output (without its D-Bus complaints):\n%s", b.output())
		}
	})
	// Start it now, without a deadline on this first run (it would bind the
	// browser's life), but bounded all the same.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium (%s): %v\n%s", bin, err, b.output())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium (%s) did not start within 60s:\n%s", bin, b.output())
	}
	return b
}

// output returns what the browser wrote, but for its noise about D-Bus,
// which a test machine has no reason to run.
func (b *Browser) output() string {
	var keep []string
	for _, line := range strings.Split(b.out.String(), "\n") {
		if !strings.Contains(line, "dbus") && !strings.Contains(line, "D-Bus") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// Tab is one page of a Browser. It records what the page writes to its
// console: console calls, uncaught exceptions and the browser's log (failed
// loads, CSP violations).
type Tab struct {
	t       testing.TB
	b       *Browser
	ctx     context.Context
	mu      sync.Mutex
	console []chromedp.ConsoleMessage
	shots   int
}

// NewTab opens a tab of width×height CSS pixels (a phone: 390×844), closed
// at the test's cleanup.
func (b *Browser) NewTab(t testing.TB, width, height int64) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	tab := &Tab{t: t, b: b, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("open a tab: %v", err)
	}
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			tab.mu.Lock()
			tab.console = append(tab.console, m)
			tab.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var opts []chromedp.EmulateViewportOption
	if width < 600 {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulateScale(2))
	}
	tab.Do(10*time.Second, chromedp.EmulateViewport(width, height, opts...))
	return tab
}

// Do runs actions, failing the test after timeout or on an error.
func (tab *Tab) Do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tab.t.Fatalf("chromium: %v%s", err, tab.consoleNote())
	}
}

// Click waits up to 15 s for the element selector (a CSS selector) to be
// on the page, then clicks it as a user would, through its click()
// (chromedp's mouse click aims at where the element was when it looked,
// which a page re-rendering every second on a loaded machine can move).
func (tab *Tab) Click(selector string) {
	tab.t.Helper()
	sel := strconv.Quote(selector)
	tab.WaitFor(15*time.Second, selector, `document.querySelector(`+sel+`) !== null`)
	Run(tab, 15*time.Second, chromedp.Evaluate[bool](`(document.querySelector(`+sel+`).click(), true)`))
}

// Run runs one action and returns its value, failing the test after
// timeout or on an error.
func Run[T any](tab *Tab, timeout time.Duration, action chromedp.Action[T]) T {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		tab.t.Fatalf("chromium: %v%s", err, tab.consoleNote())
	}
	return v
}

// Eval evaluates a JavaScript expression and returns its value.
func Eval[T any](tab *Tab, expr string) T {
	tab.t.Helper()
	return Run(tab, 10*time.Second, chromedp.Evaluate[T](expr))
}

// Navigate loads url and waits for its load event.
func (tab *Tab) Navigate(url string) {
	tab.t.Helper()
	tab.Do(30*time.Second, chromedp.Navigate(url))
}

// WaitFor waits until the JavaScript expression cond is true in the page,
// polling it at every animation frame, and fails the test after within. It
// returns how long it waited.
func (tab *Tab) WaitFor(within time.Duration, what, cond string) time.Duration {
	tab.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(tab.ctx, within+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")", chromedp.WithPollingTimeout(within))); err != nil {
		text, _ := chromedp.Run(tab.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : ""`))
		tab.t.Fatalf("waiting %v for %s (%s): %v%s\npage text:\n%s", within, what, cond, err, tab.consoleNote(), text)
	}
	return time.Since(start)
}

// ColorScheme makes the page see prefers-color-scheme as scheme ("light"
// or "dark").
func (tab *Tab) ColorScheme(scheme string) {
	tab.t.Helper()
	tab.Do(10*time.Second, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	}))
}

// Screenshot saves a PNG of the whole page as <name>.png (numbered in
// order) and logs its path.
func (tab *Tab) Screenshot(name string) string {
	tab.t.Helper()
	png := Run(tab, 30*time.Second, chromedp.FullScreenshot(100))
	tab.shots++
	file := filepath.Join(tab.b.shotDir, fmt.Sprintf("%s-%02d-%s.png", sanitize(tab.t.Name()), tab.shots, name))
	if err := os.WriteFile(file, png, 0o644); err != nil {
		tab.t.Fatal(err)
	}
	tab.t.Logf("screenshot %s: %s", name, file)
	return file
}

// Console returns what the page wrote to its console so far.
func (tab *Tab) Console() []chromedp.ConsoleMessage {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]chromedp.ConsoleMessage(nil), tab.console...)
}

// Problems returns the console's errors, warnings and exceptions so far,
// as text.
func (tab *Tab) Problems() []string {
	var out []string
	for _, m := range tab.Console() {
		switch m.Type {
		case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
			out = append(out, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
		}
	}
	return out
}

func (tab *Tab) consoleNote() string {
	if p := tab.Problems(); len(p) > 0 {
		return "\nconsole:\n" + strings.Join(p, "\n")
	}
	return ""
}

// sanitize makes a test name a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// lockedBuffer collects the browser's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
