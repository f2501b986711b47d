package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/pluginsdktest"
)

func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	write(t, file, "x")
	tests := []struct {
		name   string
		config pluginsdk.Config
		want   string // in Describe().Error; "" for none
	}{
		{"valid", pluginsdk.Config{"root": dir}, ""},
		{"read only", pluginsdk.Config{"root": dir, "read_only": "true"}, ""},
		{"no config", nil, "root is not set"},
		{"empty root", pluginsdk.Config{"root": ""}, "root is not set"},
		{"relative root", pluginsdk.Config{"root": "srv/files"}, "not an absolute path"},
		{"missing root", pluginsdk.Config{"root": filepath.Join(dir, "nope")}, "no such file"},
		{"root is a file", pluginsdk.Config{"root": file}, "not a directory"},
		{"bad read_only", pluginsdk.Config{"root": dir, "read_only": "maybe"}, "read_only"},
		{"unknown key", pluginsdk.Config{"root": dir, "readonly": "true"}, `unknown setting "readonly"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{Config: tt.config})
			got := h.Describe().Error
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Fatalf("Describe().Error = %q, want %q", got, tt.want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := h.Call(ctx, pluginsdktest.Request{Noun: "files"})
			if tt.want != "" && err == nil {
				t.Errorf("get_files on a misconfigured plugin succeeded, want an error")
			}
			if tt.want == "" && err != nil {
				t.Errorf("get_files = %v, want no error", err)
			}
		})
	}
}

func TestGetFile(t *testing.T) {
	f := newFixture(t, "false")
	tests := []struct {
		args  []string
		body  string
		ctype string
	}{
		{[]string{"docs", "a.txt"}, "alpha", "text/plain; charset=utf-8"},
		{[]string{"docs/a.txt"}, "alpha", "text/plain; charset=utf-8"},
		{[]string{"docs", "", ".", "a.txt"}, "alpha", "text/plain; charset=utf-8"},
		{[]string{"docs", "b.json"}, `{"b":1}`, "application/json"},
		{[]string{"blob"}, "\x00\x01", "application/octet-stream"},
		{[]string{"empty.txt"}, "", "text/plain; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, ","), func(t *testing.T) {
			resp := f.do(t, "get", "", tt.args...)
			if string(resp.Body) != tt.body || resp.ContentType != tt.ctype || resp.Status != 0 {
				t.Errorf("get_files %q = %d %q %q, want 0 (200) %q %q", tt.args, resp.Status, resp.ContentType, resp.Body, tt.ctype, tt.body)
			}
			if resp.Size != int64(len(tt.body)) {
				t.Errorf("get_files %q: size %d, want %d", tt.args, resp.Size, len(tt.body))
			}
		})
	}
}

func TestGetLargeFileStreams(t *testing.T) {
	f := newFixture(t, "false")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(f.root, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := f.h.Open(ctx, pluginsdktest.Request{Noun: "files", Args: []string{"big.bin"}})
	if err != nil || resp.Exception != nil {
		t.Fatalf("get_files big.bin = %+v, %v", resp, err)
	}
	defer resp.Reader.Close()
	got, err := io.ReadAll(resp.Reader)
	if err != nil || !bytes.Equal(got, big) || resp.Size != int64(len(big)) {
		t.Errorf("get_files big.bin = %d bytes (announced %d), %v; want the %d bytes of the file", len(got), resp.Size, err, len(big))
	}
}

func TestList(t *testing.T) {
	f := newFixture(t, "false")
	mtime := time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.UTC)
	if err := os.Chtimes(filepath.Join(f.root, "docs", "a.txt"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args    []string
		path    string
		entries []string // name, "/" after directories
	}{
		{nil, ".", []string{"blob", "docs/", "empty.txt", "emptydir/"}},
		{[]string{""}, ".", []string{"blob", "docs/", "empty.txt", "emptydir/"}},
		{[]string{"docs"}, "docs", []string{"a.txt", "b.json"}},
		{[]string{"docs", ""}, "docs", []string{"a.txt", "b.json"}},
		{[]string{"emptydir"}, "emptydir", []string{}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, ","), func(t *testing.T) {
			resp := f.do(t, "get", "", tt.args...)
			var got struct {
				Path    string           `json:"path"`
				Entries []map[string]any `json:"entries"`
			}
			decode(t, resp, &got)
			names := []string{}
			for _, e := range got.Entries {
				name, _ := e["name"].(string)
				if e["dir"] == true {
					name += "/"
				}
				names = append(names, name)
			}
			if got.Path != tt.path || !slices.Equal(names, tt.entries) {
				t.Errorf("get_files %q = %s, want path %q and entries %q", tt.args, resp.Body, tt.path, tt.entries)
			}
		})
	}
	t.Run("entry", func(t *testing.T) {
		var got struct {
			Entries []map[string]any `json:"entries"`
		}
		decode(t, f.do(t, "get", "", "docs"), &got)
		want := map[string]any{"name": "a.txt", "dir": false, "size": 5.0, "modified": "2025-06-07T08:09:10.123456789Z"}
		if len(got.Entries) == 0 || !reflect.DeepEqual(got.Entries[0], want) {
			t.Errorf("get_files docs: first entry = %v, want %v", got.Entries, want)
		}
	})
	t.Run("directory entry", func(t *testing.T) {
		var got struct {
			Entries []map[string]any `json:"entries"`
		}
		decode(t, f.do(t, "get", ""), &got)
		i := slices.IndexFunc(got.Entries, func(e map[string]any) bool { return e["name"] == "docs" })
		if i < 0 || got.Entries[i]["dir"] != true || got.Entries[i]["size"] != 0.0 {
			t.Errorf("get_files root: entries %v, want docs with dir true and size 0", got.Entries)
		}
	})
}

func TestGetMissing(t *testing.T) {
	f := newFixture(t, "false")
	for _, args := range [][]string{{"nope"}, {"docs", "nope.txt"}, {"nope", "a.txt"}, {"docs", "a.txt", "x"}} {
		t.Run(strings.Join(args, "/"), func(t *testing.T) {
			wantRefusal(t, f.do(t, "get", "", args...), 404, codeNotFound)
		})
	}
}

func TestTraversalRefused(t *testing.T) {
	f := newFixture(t, "false")
	symlink(t, "../../outside/secret", filepath.Join(f.root, "docs", "leak"))
	symlink(t, "../outside", filepath.Join(f.root, "outdir"))
	symlink(t, filepath.Join(f.root, "docs"), filepath.Join(f.root, "absolute"))
	symlink(t, "..", filepath.Join(f.root, "up"))
	tests := [][]string{
		{"..", "outside", "secret"},
		{"..", "etc", "passwd"},
		{"a/../../x"},
		{"docs", "..", "..", "outside", "secret"},
		{"docs/../a.txt"}, // would stay inside, refused all the same
		{"/etc/passwd"},
		{"", "etc", "passwd"},
		{"docs", "a.txt\x00.png"},
		{"docs", "leak"},            // a link to a file outside
		{"outdir", "secret"},        // through a link to a directory outside
		{"outdir", "new.txt"},       // the same, for a file that does not exist
		{"outdir"},                  // the link itself
		{"up", "outside", "secret"}, // a link to the root's parent
		{"absolute", "a.txt"},       // an absolute link, even one pointing inside
	}
	for _, verb := range []string{"get", "put", "delete"} {
		for _, args := range tests {
			t.Run(verb+"/"+strings.Join(args, ","), func(t *testing.T) {
				body := ""
				if verb == "put" {
					body = "pwned"
				}
				wantRefusal(t, f.do(t, verb, body, args...), 403, codeDenied)
				if b, err := os.ReadFile(filepath.Join(f.outside, "secret")); err != nil || string(b) != "secret" {
					t.Fatalf("after %s_files %q: outside/secret = %q, %v; want it untouched", verb, args, b, err)
				}
				if _, err := os.Stat(filepath.Join(f.outside, "new.txt")); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("after %s_files %q: outside/new.txt exists", verb, args)
				}
			})
		}
	}
}

func TestSymlinkInsideAllowed(t *testing.T) {
	f := newFixture(t, "false")
	symlink(t, "docs", filepath.Join(f.root, "in"))
	symlink(t, "../docs/a.txt", filepath.Join(f.root, "emptydir", "alias.txt"))
	if resp := f.do(t, "get", "", "in", "a.txt"); string(resp.Body) != "alpha" {
		t.Errorf("get_files in/a.txt = %d %s, want alpha", resp.Status, resp.Body)
	}
	if resp := f.do(t, "get", "", "emptydir", "alias.txt"); string(resp.Body) != "alpha" {
		t.Errorf("get_files emptydir/alias.txt = %d %s, want alpha", resp.Status, resp.Body)
	}
	if resp := f.do(t, "put", "via link", "in", "c.txt"); resp.Status != 201 {
		t.Errorf("put_files in/c.txt = %d %s, want 201", resp.Status, resp.Body)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "docs", "c.txt")); string(b) != "via link" {
		t.Errorf("docs/c.txt = %q, %v; want via link", b, err)
	}
	// Deleting a link removes the link, not its target.
	if resp := f.do(t, "delete", "", "emptydir", "alias.txt"); resp.Status != 0 {
		t.Errorf("delete_files emptydir/alias.txt = %d %s, want 0 (200)", resp.Status, resp.Body)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "docs", "a.txt")); string(b) != "alpha" {
		t.Errorf("after deleting a link to it, docs/a.txt = %q, %v; want alpha", b, err)
	}
	var got struct {
		Entries []map[string]any `json:"entries"`
	}
	decode(t, f.do(t, "get", ""), &got)
	i := slices.IndexFunc(got.Entries, func(e map[string]any) bool { return e["name"] == "in" })
	if i < 0 || got.Entries[i]["dir"] != true {
		t.Errorf("get_files root: entries %v, want in, a link to a directory, listed as a directory", got.Entries)
	}
}

func TestPut(t *testing.T) {
	f := newFixture(t, "false")
	tests := []struct {
		name   string
		args   []string
		body   string
		status int
		path   string
	}{
		{"new file", []string{"docs", "new.txt"}, "new", 201, "docs/new.txt"},
		{"replace", []string{"docs", "a.txt"}, "ALPHA", 200, "docs/a.txt"},
		{"one arg", []string{"docs/one.txt"}, "one", 201, "docs/one.txt"},
		{"new directories", []string{"x", "y", "z.txt"}, "deep", 201, "x/y/z.txt"},
		{"empty body", []string{"docs", "zero"}, "", 201, "docs/zero"},
		{"past the inline limit", []string{"big"}, strings.Repeat("b", 100<<10), 201, "big"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.do(t, "put", tt.body, tt.args...)
			var got map[string]any
			decode(t, resp, &got)
			want := map[string]any{"path": tt.path, "size": float64(len(tt.body))}
			if resp.Status != tt.status || !reflect.DeepEqual(got, want) {
				t.Errorf("put_files %q = %d %s, want %d %v", tt.args, resp.Status, resp.Body, tt.status, want)
			}
			if b, err := os.ReadFile(filepath.Join(f.root, filepath.FromSlash(tt.path))); err != nil || string(b) != tt.body {
				t.Errorf("after put_files %q the file holds %d bytes, %v; want %d", tt.args, len(b), err, len(tt.body))
			}
			if resp := f.do(t, "get", "", tt.args...); string(resp.Body) != tt.body {
				t.Errorf("get_files %q after put = %d bytes, want %d", tt.args, len(resp.Body), len(tt.body))
			}
		})
	}
	f.noTempFiles(t)
}

func TestPutStreamsUnknownSize(t *testing.T) {
	f := newFixture(t, "false")
	big := bytes.Repeat([]byte("restpipe"), 1<<17) // 1 MiB
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := f.h.Call(ctx, pluginsdktest.Request{Verb: "put", Noun: "files", Args: []string{"big"},
		Body: bytes.NewReader(big), Size: -1})
	if err != nil || resp.Status != 201 {
		t.Fatalf("put_files big = %+v, %v; want 201", resp, err)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "big")); !bytes.Equal(b, big) {
		t.Errorf("after put_files big the file holds %d bytes, %v; want %d", len(b), err, len(big))
	}
}

func TestPutKeepsMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	f := newFixture(t, "false")
	p := filepath.Join(f.root, "docs", "a.txt")
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	f.do(t, "put", "ALPHA", "docs", "a.txt")
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("after put_files the mode of docs/a.txt is %v, %v; want -rw-r-----", fi.Mode(), err)
	}
}

func TestPutRefused(t *testing.T) {
	f := newFixture(t, "false")
	tests := []struct {
		name         string
		args         []string
		status, code int
	}{
		{"the root", nil, 409, codeIsDir},
		{"a directory", []string{"docs"}, 409, codeIsDir},
		{"below a file", []string{"docs", "a.txt", "x"}, 409, codeNotDir},
		{"deep below a file", []string{"blob", "x", "y"}, 409, codeNotDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantRefusal(t, f.do(t, "put", "x", tt.args...), tt.status, tt.code)
		})
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "docs", "a.txt")); string(b) != "alpha" {
		t.Errorf("docs/a.txt = %q, %v; want alpha", b, err)
	}
	f.noTempFiles(t)
}

func TestPutIsAtomic(t *testing.T) {
	f := newFixture(t, "false")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// While an upload is under way, readers see the old file.
	pr, pw := io.Pipe()
	done := make(chan *pluginsdktest.Response, 1)
	go func() {
		resp, err := f.h.Call(ctx, pluginsdktest.Request{Verb: "put", Noun: "files", Args: []string{"docs", "a.txt"}, Body: pr, Size: -1})
		if err != nil {
			t.Errorf("put_files docs/a.txt: %v", err)
		}
		done <- resp
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("N"), 100<<10)); err != nil {
		t.Fatal(err)
	}
	if resp := f.do(t, "get", "", "docs", "a.txt"); string(resp.Body) != "alpha" {
		t.Errorf("get_files docs/a.txt during an upload = %d bytes, want the old file", len(resp.Body))
	}
	pw.Close()
	if resp := <-done; resp == nil || resp.Status != 200 {
		t.Fatalf("put_files docs/a.txt = %+v, want 200", resp)
	}
	if resp := f.do(t, "get", "", "docs", "a.txt"); len(resp.Body) != 100<<10 {
		t.Errorf("get_files docs/a.txt after the upload = %d bytes, want %d", len(resp.Body), 100<<10)
	}

	// An upload that breaks leaves the old file as it was.
	body := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("B"), 200<<10)), errReader{errors.New("client went away")})
	resp, err := f.h.Call(ctx, pluginsdktest.Request{Verb: "put", Noun: "files", Args: []string{"docs", "b.json"}, Body: body, Size: -1})
	if err != nil || resp.Exception == nil {
		t.Errorf("put_files of a broken upload = %+v, %v; want the handler to fail", resp, err)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "docs", "b.json")); string(b) != `{"b":1}` {
		t.Errorf("after a broken upload docs/b.json = %d bytes, %v; want the old file", len(b), err)
	}
	f.noTempFiles(t)
}

func TestDelete(t *testing.T) {
	f := newFixture(t, "false")
	resp := f.do(t, "delete", "", "docs", "a.txt")
	var got map[string]any
	decode(t, resp, &got)
	if want := map[string]any{"deleted": "docs/a.txt"}; resp.Status != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("delete_files docs/a.txt = %d %s, want 0 (200) %v", resp.Status, resp.Body, want)
	}
	if _, err := os.Stat(filepath.Join(f.root, "docs", "a.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after delete_files docs/a.txt: os.Stat = %v, want not exist", err)
	}
	tests := []struct {
		name         string
		args         []string
		status, code int
	}{
		{"again", []string{"docs", "a.txt"}, 404, codeNotFound},
		{"missing", []string{"nope"}, 404, codeNotFound},
		{"a directory", []string{"emptydir"}, 409, codeIsDir},
		{"the root", nil, 409, codeIsDir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantRefusal(t, f.do(t, "delete", "", tt.args...), tt.status, tt.code)
		})
	}
	if _, err := os.Stat(filepath.Join(f.root, "emptydir")); err != nil {
		t.Errorf("emptydir: %v, want it kept", err)
	}
}

func TestReadOnly(t *testing.T) {
	f := newFixture(t, "true")
	wantRefusal(t, f.do(t, "put", "x", "docs", "a.txt"), 403, codeDenied)
	wantRefusal(t, f.do(t, "put", "x", "docs", "new.txt"), 403, codeDenied)
	wantRefusal(t, f.do(t, "delete", "", "docs", "a.txt"), 403, codeDenied)
	if resp := f.do(t, "get", "", "docs", "a.txt"); string(resp.Body) != "alpha" {
		t.Errorf("get_files docs/a.txt on a read-only server = %d %s, want alpha", resp.Status, resp.Body)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "docs", "a.txt")); string(b) != "alpha" {
		t.Errorf("docs/a.txt = %q, %v; want alpha", b, err)
	}
	if _, err := os.Stat(filepath.Join(f.root, "docs", "new.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("docs/new.txt: os.Stat = %v, want not exist", err)
	}
}

func TestSpecialFileRefused(t *testing.T) {
	// A named pipe would block a reader forever.
	f := newFixture(t, "false")
	if err := mkfifo(filepath.Join(f.root, "pipe")); err != nil {
		t.Skipf("no named pipes: %v", err)
	}
	wantRefusal(t, f.do(t, "get", "", "pipe"), 403, codeDenied)
}

// fixture is a served root and, next to it, a directory that is not served:
//
//	root/docs/a.txt       "alpha"
//	root/docs/b.json      {"b":1}
//	root/blob             "\x00\x01"
//	root/empty.txt        ""
//	root/emptydir/
//	outside/secret        "secret"
type fixture struct {
	h             *pluginsdktest.Harness
	root, outside string
}

// newFixture serves a fresh fixture, read-only or not.
func newFixture(t testing.TB, readOnly string) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	write(t, filepath.Join(f.root, "docs", "a.txt"), "alpha")
	write(t, filepath.Join(f.root, "docs", "b.json"), `{"b":1}`)
	write(t, filepath.Join(f.root, "blob"), "\x00\x01")
	write(t, filepath.Join(f.root, "empty.txt"), "")
	if err := os.Mkdir(filepath.Join(f.root, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.outside, "secret"), "secret")
	f.h = pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{
		Node:   pluginsdk.Node{Role: "client", Name: "fs1"},
		Config: pluginsdk.Config{"root": f.root, "read_only": readOnly},
	})
	if err := f.h.Describe().Error; err != "" {
		t.Fatalf("Describe().Error = %q, want none", err)
	}
	return f
}

// do sends verb on noun files with args and body ("" for none), failing
// the test on a transport error.
func (f *fixture) do(t testing.TB, verb, body string, args ...string) *pluginsdktest.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := pluginsdktest.Request{Verb: verb, Noun: "files", Args: args}
	if body != "" {
		req.Body, req.Size = strings.NewReader(body), int64(len(body))
	}
	resp, err := f.h.Call(ctx, req)
	if err != nil {
		t.Fatalf("%s_files %q: %v", verb, args, err)
	}
	return resp
}

// noTempFiles fails the test if an upload left a temporary file behind.
func (f *fixture) noTempFiles(t testing.TB) {
	t.Helper()
	filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".restpipe-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

// wantRefusal checks that resp refuses with status, code and a JSON
// {"error": sentence}.
func wantRefusal(t testing.TB, resp *pluginsdktest.Response, status, code int) {
	t.Helper()
	if resp.Exception != nil {
		t.Fatalf("handler failed: %+v; want a %d reply", resp.Exception, status)
	}
	var got map[string]any
	decode(t, resp, &got)
	msg, ok := got["error"].(string)
	if resp.Status != status || resp.Code != code || len(got) != 1 || !ok || msg == "" {
		t.Errorf("reply = %d, code %d, %s; want %d, code %d, {\"error\": sentence}", resp.Status, resp.Code, resp.Body, status, code)
	}
}

// decode checks that resp is a JSON reply and decodes it into v.
func decode(t testing.TB, resp *pluginsdktest.Response, v any) {
	t.Helper()
	if resp.Exception != nil {
		t.Fatalf("handler failed: %+v", resp.Exception)
	}
	if resp.ContentType != "application/json" {
		t.Errorf("content type = %q, want application/json", resp.ContentType)
	}
	if err := json.Unmarshal(resp.Body, v); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", resp.Body, err)
	}
}

// write creates the file p, and its directory, holding s.
func write(t testing.TB, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// symlink makes newname a symbolic link to oldname, skipping the test
// where links cannot be made.
func symlink(t testing.TB, oldname, newname string) {
	t.Helper()
	if err := os.Symlink(oldname, newname); err != nil {
		t.Skipf("os.Symlink: %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
