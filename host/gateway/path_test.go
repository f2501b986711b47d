package gateway

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		path string
		want target
		err  string // in the error, or "" for success
	}{
		{"/server/time", target{kind: "server", noun: "time"}, ""},
		{"/server/time/", target{kind: "server", noun: "time"}, ""},
		{"/server/time/utc", target{kind: "server", noun: "time/utc"}, ""},
		{"/server/cat//hello%20/world", target{kind: "server", noun: "cat", args: []string{"hello ", "world"}}, ""},
		{"/server/cat//a%2Fb/c", target{kind: "server", noun: "cat", args: []string{"a/b", "c"}}, ""},
		{"/server/cat//", target{kind: "server", noun: "cat", args: []string{""}}, ""},
		{"/server/cat//a//b", target{kind: "server", noun: "cat", args: []string{"a", "", "b"}}, ""},
		{"/server/x/y//1/2", target{kind: "server", noun: "x/y", args: []string{"1", "2"}}, ""},
		{"/client/web1/cat//hello%20/world", target{kind: "client", peer: "web1", noun: "cat", args: []string{"hello ", "world"}}, ""},
		{"/client/WEB1/time", target{kind: "client", peer: "web1", noun: "time"}, ""},
		{"/client/a.b-c/time", target{kind: "client", peer: "a.b-c", noun: "time"}, ""},
		{"/local/echo//%E2%9C%93", target{kind: "local", noun: "echo", args: []string{"✓"}}, ""},
		{"/local/ti%6De", target{kind: "local", noun: "time"}, ""},

		{"", target{}, "does not start with /"},
		{"/", target{}, "want /local/"},
		{"/other/time", target{}, "want /local/"},
		{"/server", target{}, "empty noun"},
		{"/server/", target{}, "empty noun"},
		{"/server//x", target{}, "empty noun"},
		{"/server/a//", target{kind: "server", noun: "a", args: []string{""}}, ""},
		{"/server/a b", target{}, "may hold only"},
		{"/server/a%2Fb", target{}, "may hold only"},
		{"/server/a/../b", target{}, "may hold only"},
		{"/server/cat//%zz", target{}, "argument"},
		{"/client/", target{}, "empty node name"},
		{"/client/a_b/time", target{}, "only lower-case"},
		{"/client/web1", target{}, "empty noun"},
		{"/client/%zz/time", target{}, "client name"},
	}
	for _, tt := range tests {
		got, err := parsePath(tt.path)
		if tt.err != "" {
			if err == nil || !errors.Is(err, errPath) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parsePath(%q) = %+v, %v; want an error mentioning %q", tt.path, got, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parsePath(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

// FuzzParsePath checks the grammar never panics and that whatever it
// accepts is a valid event: a known kind, a valid noun, a valid peer name.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/server/time", "/server/cat//hello%20/world", "/client/web1/a/b//x%2Fy/z",
		"/local/echo//", "/client/%41/x", "/server//", "/server/a//b//c", "/local/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		got, err := parsePath(path)
		if err != nil {
			if !errors.Is(err, errPath) {
				t.Fatalf("parsePath(%q) error %v does not wrap errPath", path, err)
			}
			return
		}
		if got.kind != toLocal && got.kind != toServer && got.kind != toClient {
			t.Fatalf("parsePath(%q) kind %q", path, got.kind)
		}
		if got.noun == "" || strings.Contains(got.noun, "//") {
			t.Fatalf("parsePath(%q) noun %q", path, got.noun)
		}
		if (got.kind == toClient) != (got.peer != "") {
			t.Fatalf("parsePath(%q) peer %q for kind %s", path, got.peer, got.kind)
		}
	})
}
