package main

import (
	"context"
	"strings"
	"testing"
)

func TestServerNameOf(t *testing.T) {
	tests := []struct {
		addr, explicit, want string
		ok                   bool
	}{
		{"server.example.com:7443", "", "server.example.com", true},
		{"203.0.113.7:7443", "", "203.0.113.7", true},
		{"[::1]:7443", "", "::1", true},
		{"[fe80::1%eth0]:7443", "", "fe80::1", true},
		{"10.0.0.1:7443", "server", "server", true},
		{"no-port", "", "", false},
	}
	for _, tt := range tests {
		got, err := serverNameOf(tt.addr, tt.explicit)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("serverNameOf(%q, %q) = %q, %v; want %q (ok %v)", tt.addr, tt.explicit, got, err, tt.want, tt.ok)
		}
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{"server-name": "RESTPIPE_SERVER_NAME", "ca": "RESTPIPE_CA", "log-level": "RESTPIPE_LOG_LEVEL"} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"dev", "--help"}, 0},
		{[]string{"server", "-h"}, 0},
		{[]string{"client", "--help"}, 0},
		{[]string{"pki", "issue", "-h"}, 0},
		{[]string{"help"}, 0},
		{[]string{"version"}, 0},
		{[]string{}, 2},
		{[]string{"dev", "--no-such-flag"}, 2},
		{[]string{"server", "stray"}, 2},
		{[]string{"nonsense"}, 2},
	} {
		var out, errOut strings.Builder
		if got := run(context.Background(), tc.args, &out, &errOut, noEnv); got != tc.want {
			t.Errorf("restpipe %s: exit %d, want %d (stderr %q)", strings.Join(tc.args, " "), got, tc.want, errOut.String())
		}
		if tc.want == 0 && len(tc.args) > 1 && !strings.Contains(errOut.String()+out.String(), "Usage") {
			t.Errorf("restpipe %s printed no usage", strings.Join(tc.args, " "))
		}
	}
}
