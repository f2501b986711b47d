package main

import (
	"encoding/json"
	"testing"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
	"github.com/restpipe/restpipe/plugin-sdk/pluginsdktest"
)

func TestCat(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"restpipe example", []string{"hello ", "world"}, "hello world"},
		{"empty args", []string{"", ""}, ""},
		{"slash inside an arg", []string{"a/b", "%2F"}, "a/b%2F"},
		{"unicode", []string{"grüß ", "😀"}, "grüß 😀"},
	}
	for _, role := range []string{"server", "client"} {
		h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{Node: pluginsdk.Node{Role: role, Name: "n1"}})
		for _, tt := range tests {
			t.Run(role+"/"+tt.name, func(t *testing.T) {
				resp := h.Get(t, "cat", tt.args...)
				if resp.Exception != nil {
					t.Fatalf("get_cat %q failed: %v", tt.args, resp.Exception)
				}
				var got map[string]string
				if err := json.Unmarshal(resp.Body, &got); err != nil {
					t.Fatalf("json.Unmarshal(%s) = %v", resp.Body, err)
				}
				key := "result_from_" + role
				if len(got) != 1 || got[key] != tt.want {
					t.Errorf("get_cat %q = %v, want {%s: %q}", tt.args, got, key, tt.want)
				}
				if resp.ContentType != "application/json" || resp.Status != 0 {
					t.Errorf("get_cat: content type %q status %d, want application/json, 0 (200)", resp.ContentType, resp.Status)
				}
			})
		}
	}
}

func TestCatWrongArgs(t *testing.T) {
	h := pluginsdktest.Start(t, newPlugin(), pluginsdktest.Options{})
	tests := []struct {
		args []string
		want string
	}{
		{nil, "cat takes exactly 2 arguments (0 given)"},
		{[]string{"a"}, "cat takes exactly 2 arguments (1 given)"},
		{[]string{"a", "b", "c"}, "cat takes exactly 2 arguments (3 given)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			resp := h.Get(t, "cat", tt.args...)
			if e := resp.Exception; e == nil || e.Class != "TypeError" || e.Message != tt.want {
				t.Errorf("get_cat %q = exception %+v, body %s, want TypeError %q", tt.args, e, resp.Body, tt.want)
			}
		})
	}
}
