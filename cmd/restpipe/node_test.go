package main

import "testing"

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
