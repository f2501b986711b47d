package pluginsdktest_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/pluginsdktest"
)

// TestHarness shows the harness in use: start a plugin, call a route, look
// at the reply.
func TestHarness(t *testing.T) {
	p := pluginsdk.New("hello", "1.0.0")
	p.Handle("get", "hello", func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.JSON(map[string]string{"hello_from_" + ev.Node.Role: ev.Arg(0) + " from " + ev.Peer}), nil
	})
	h := pluginsdktest.Start(t, p, pluginsdktest.Options{Node: pluginsdk.Node{Role: "client", Name: "c1"}})

	if got := h.Get(t, "hello", "world"); string(got.Body) != "{\"hello_from_client\":\"world from \"}\n" {
		t.Errorf("Get(hello, world) = %s", got.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.Call(ctx, pluginsdktest.Request{Noun: "hello", Args: []string{"you"}, Peer: "hub"})
	if err != nil || string(resp.Body) != "{\"hello_from_client\":\"you from hub\"}\n" {
		t.Errorf("Call(hello, you) = %+v, %v", resp, err)
	}
}

func TestDescribeDefaults(t *testing.T) {
	nodes := make(chan pluginsdk.Node, 1)
	h := start(t, func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		nodes <- ev.Node
		return nil, nil
	})
	h.Get(t, "x")
	if got, want := <-nodes, (pluginsdk.Node{Role: "server", Name: "server"}); got != want {
		t.Errorf("default node = %+v, want %+v", got, want)
	}
	if d := h.Describe(); d.Name != "test" || d.Version != "1" || len(d.Routes) != 1 || d.Error != "" {
		t.Errorf("Describe() = %+v", d)
	}
}

func TestLongTempDir(t *testing.T) {
	// A Unix socket path has room for about 100 bytes; past that the
	// harness listens on loopback TCP.
	long := filepath.Join(t.TempDir(), strings.Repeat("a-long-temporary-directory-", 4))
	if err := os.Mkdir(long, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOTMPDIR", long) // where t.TempDir makes its directories
	t.Run(strings.Repeat("a-very-long-subtest-name-", 8), func(t *testing.T) {
		if dir := t.TempDir(); len(dir) <= 100 {
			t.Fatalf("t.TempDir() = %q, want a path longer than 100 bytes", dir)
		}
		h := start(t, func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) { return pluginsdk.Text("ok"), nil })
		if got := h.Get(t, "x"); string(got.Body) != "ok" {
			t.Errorf("Get(x) = %q, want ok", got.Body)
		}
	})
}

func TestCloseWaitsForHandlers(t *testing.T) {
	started, returned := make(chan struct{}), make(chan struct{})
	h := start(t, func(ctx context.Context, _ *pluginsdk.Event) (*pluginsdk.Reply, error) {
		defer close(returned)
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	errc := make(chan error, 1)
	go func() {
		_, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "x"})
		errc <- err
	}()
	<-started
	h.Close()
	select {
	case <-returned:
	default:
		t.Errorf("Close() returned before the handler did")
	}
	if err := <-errc; err == nil {
		t.Errorf("Call() cut short by Close = nil error, want one")
	}
	h.Close() // a second Close does nothing
}

func TestClosingReaderCancels(t *testing.T) {
	closed := make(chan struct{})
	h := start(t, func(context.Context, *pluginsdk.Event) (*pluginsdk.Reply, error) {
		return pluginsdk.Stream("text/plain", &endless{closed: closed}, -1), nil
	})
	resp, err := h.Open(context.Background(), pluginsdktest.Request{Noun: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Reader, make([]byte, 1<<20)); err != nil {
		t.Fatalf("reading the endless reply: %v", err)
	}
	resp.Reader.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the reply body was not closed 10s after the caller closed its reader")
	}
}

// endless is an endless body that tells when it is closed.
type endless struct{ closed chan struct{} }

func (e *endless) Read(p []byte) (int, error) { return len(p), nil }
func (e *endless) Close() error               { close(e.closed); return nil }

func TestRequestSizeMismatch(t *testing.T) {
	h := start(t, func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		b, err := io.ReadAll(ev.Body)
		if err != nil {
			return nil, err
		}
		return pluginsdk.Bytes("text/plain", b), nil
	})
	tests := []struct {
		name string
		body string
		size int64
	}{
		{"small, shorter", "abc", 10},
		{"small, longer", "abcdef", 3},
		{"large, shorter", strings.Repeat("a", 50<<10), 100 << 10},
		{"large, longer", strings.Repeat("a", 200<<10), 100 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := h.Call(context.Background(), pluginsdktest.Request{Verb: "get", Noun: "x", Body: strings.NewReader(tt.body), Size: tt.size})
			if err == nil && resp.Exception == nil {
				t.Errorf("a %d-byte body announced as %d reached the handler whole: %d bytes", len(tt.body), tt.size, len(resp.Body))
			}
		})
	}
	t.Run("size left at 0", func(t *testing.T) {
		resp, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "x", Body: strings.NewReader("forgotten")})
		if err != nil || string(resp.Body) != "forgotten" {
			t.Errorf("a body with Size 0 = %+v, %v; want it sent whole", resp, err)
		}
	})
}

func TestBrokenRequestBody(t *testing.T) {
	h := start(t, func(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
		_, err := io.Copy(io.Discard, ev.Body)
		return nil, err
	})
	body := io.MultiReader(strings.NewReader(strings.Repeat("a", 100<<10)), errReader{errors.New("cable cut")})
	resp, err := h.Call(context.Background(), pluginsdktest.Request{Noun: "x", Body: body, Size: -1})
	if err != nil || resp.Exception == nil || !strings.Contains(resp.Exception.Message, "cable cut") {
		t.Errorf("a broken request body = %+v, %v; want the handler to see the error", resp, err)
	}
}

// start serves a plugin with one handler, for get x.
func start(t testing.TB, h pluginsdk.HandlerFunc) *pluginsdktest.Harness {
	t.Helper()
	p := pluginsdk.New("test", "1")
	p.Handle("get", "x", h)
	return pluginsdktest.Start(t, p, pluginsdktest.Options{})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
