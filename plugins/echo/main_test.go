package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/pluginsdktest"
)

func TestRoutes(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	if got, want := h.Describe().Routes, []string{"get_echo", "post_echo", "put_echo"}; !slices.Equal(got, want) {
		t.Errorf("Describe().Routes = %q, want %q", got, want)
	}
}

func TestEchoDescribesEvent(t *testing.T) {
	tests := []struct {
		name string
		node pluginsdk.Node
		req  pluginsdktest.Request
		want map[string]any
	}{{
		name: "everything",
		node: pluginsdk.Node{Role: "server", Name: "hub"},
		req: pluginsdktest.Request{
			Noun: "echo", Args: []string{"a b", "c/d", ""},
			Query:       map[string][]string{"x": {"1", "2"}, "y": {""}},
			ContentType: "text/plain", Peer: "c1",
		},
		want: map[string]any{
			"verb": "get", "noun": "echo",
			"args":         []any{"a b", "c/d", ""},
			"query":        map[string]any{"x": []any{"1", "2"}, "y": []any{""}},
			"content_type": "text/plain", "peer": "c1",
			"node": map[string]any{"role": "server", "name": "hub"},
		},
	}, {
		name: "nothing",
		node: pluginsdk.Node{Role: "client", Name: "c1"},
		req:  pluginsdktest.Request{Noun: "echo"},
		want: map[string]any{
			"verb": "get", "noun": "echo",
			"args": []any{}, "query": map[string]any{},
			"content_type": "", "peer": "",
			"node": map[string]any{"role": "client", "name": "c1"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{Node: tt.node})
			resp := call(t, h, tt.req)
			if resp.ContentType != "application/json" {
				t.Errorf("content type = %q, want application/json", resp.ContentType)
			}
			var got map[string]any
			if err := json.Unmarshal(resp.Body, &got); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", resp.Body, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("get_echo = %s, want %v", resp.Body, tt.want)
			}
		})
	}
}

func TestEchoSleeps(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	start := time.Now()
	resp := call(t, h, pluginsdktest.Request{Noun: "echo", Query: map[string][]string{"sleep": {"100ms"}}})
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Errorf("get_echo?sleep=100ms answered after %v, want at least 100ms", elapsed)
	}
	if !bytes.Contains(resp.Body, []byte(`"verb":"get"`)) {
		t.Errorf("get_echo?sleep=100ms = %s, want the description", resp.Body)
	}
}

func TestEchoBadSleep(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	for _, s := range []string{"soon", "10", "1x"} {
		t.Run(s, func(t *testing.T) {
			resp := call(t, h, pluginsdktest.Request{Noun: "echo", Query: map[string][]string{"sleep": {s}}})
			if e := resp.Exception; e == nil || e.Class != "ValueError" || !strings.Contains(e.Message, s) {
				t.Errorf("get_echo?sleep=%s = exception %+v, want a ValueError naming %q", s, e, s)
			}
		})
	}
}

func TestEchoSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := describe(ctx, &pluginsdk.Event{Verb: "get", Noun: "echo", Query: map[string][]string{"sleep": {"1h"}}})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("describe(canceled ctx, sleep=1h) = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("describe(canceled ctx, sleep=1h) still sleeping 10s after cancel")
	}
}

func TestEchoSleepEndsAtDeadline(t *testing.T) {
	// The deadline travels to the plugin with the event. The harness fails
	// the test at cleanup if the handler is still sleeping.
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := h.Call(ctx, pluginsdktest.Request{Noun: "echo", Query: map[string][]string{"sleep": {"1h"}}})
	if err == nil {
		t.Fatalf("get_echo?sleep=1h with a 200ms deadline = %+v, want an error", resp)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("get_echo?sleep=1h with a 200ms deadline took %v", elapsed)
	}
}

func TestEchoBody(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	tests := []struct {
		name string
		size int64 // announced size
		body string
	}{
		{"empty", 0, ""},
		{"small", 5, "hello"},
		{"small of unknown size", -1, "hello"},
		{"past the inline limit", 40 << 10, strings.Repeat("x", 40<<10)},
	}
	for _, verb := range []string{"post", "put"} {
		for _, tt := range tests {
			t.Run(verb+"/"+tt.name, func(t *testing.T) {
				resp := call(t, h, pluginsdktest.Request{Verb: verb, Noun: "echo",
					ContentType: "text/x-test", Body: strings.NewReader(tt.body), Size: tt.size})
				if string(resp.Body) != tt.body || resp.ContentType != "text/x-test" {
					t.Errorf("%s_echo(%d bytes) = %q, %d bytes, want text/x-test and the same body",
						verb, len(tt.body), resp.ContentType, len(resp.Body))
				}
			})
		}
	}
}

func TestEchoStreamsLargeBodies(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	tests := []struct {
		name      string
		size      int64
		announced int64
	}{
		{"64 MiB", 64 << 20, 64 << 20},
		{"8 MiB of unknown size", 8 << 20, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := sha256.New()
			body := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), tt.size), sent)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			resp, err := h.Open(ctx, pluginsdktest.Request{Verb: "post", Noun: "echo",
				ContentType: "application/octet-stream", Body: body, Size: tt.announced})
			if err != nil || resp.Exception != nil {
				t.Fatalf("post_echo = %+v, %v", resp, err)
			}
			defer resp.Reader.Close()
			got := sha256.New()
			n, err := io.Copy(got, resp.Reader)
			if err != nil || n != tt.size {
				t.Fatalf("reading the echo = %d bytes, %v; want %d bytes", n, err, tt.size)
			}
			if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
				t.Errorf("post_echo of %d bytes came back changed", tt.size)
			}
			if resp.Size != tt.announced || resp.ContentType != "application/octet-stream" {
				t.Errorf("post_echo reply: size %d, type %q; want %d, application/octet-stream", resp.Size, resp.ContentType, tt.announced)
			}
		})
	}
}

func TestEchoBrokenBody(t *testing.T) {
	// An upload that breaks is never echoed as a complete body.
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	body := io.MultiReader(strings.NewReader(strings.Repeat("x", 100<<10)), errReader{errors.New("disk on fire")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Call(ctx, pluginsdktest.Request{Verb: "post", Noun: "echo", Body: body, Size: -1})
	if err == nil {
		t.Fatalf("post_echo of a broken body = %d bytes, no error; want an error", len(resp.Body))
	}
	if !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("post_echo of a broken body: error %q, want it to carry the cause", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// call sends req, failing the test on a transport error.
func call(t testing.TB, h *pluginsdktest.Harness, req pluginsdktest.Request) *pluginsdktest.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Call(ctx, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Verb, req.Noun, err)
	}
	return resp
}
