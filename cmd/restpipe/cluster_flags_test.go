package main

import (
	"io"
	"slices"
	"strings"
	"testing"
)

// TestClusterFlags: the cluster's settings come from flags, the
// environment or the configuration file, like every other, and
// contradictory ones are refused.
func TestClusterFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := writeConfig(t, dir, "config.hcl", `# restpipe server
cluster_join = "a:6222, b:6222"
cluster_link_advertise = "s1.example.com:7443"
`)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    clusterConfig
		wantErr string
	}{
		{name: "none", want: clusterConfig{}},
		{name: "flags", args: []string{"--cluster-listen", ":6222", "--cluster-join", "a:6222,b:6222,"},
			want: clusterConfig{Listen: ":6222", Join: []string{"a:6222", "b:6222"}}},
		{name: "environment and file", args: []string{"--config", file}, env: map[string]string{"RESTPIPE_CLUSTER_LISTEN": "127.0.0.1:6222"},
			want: clusterConfig{Listen: "127.0.0.1:6222", Join: []string{"a:6222", "b:6222"}, Advertise: "s1.example.com:7443"}},
		{name: "external NATS", args: []string{"--cluster-nats", "tls://n1:4222,tls://n2:4222"},
			want: clusterConfig{NATS: []string{"tls://n1:4222", "tls://n2:4222"}}},
		{name: "join without listen", args: []string{"--cluster-join", "a:6222"}, wantErr: "needs --cluster-listen"},
		{name: "embedded and external", args: []string{"--cluster-listen", ":6222", "--cluster-nats", "tls://n1:4222"}, wantErr: "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nf, err := parseNodeFlags("server", tt.args, io.Discard, envOf(tt.env))
			if err != nil {
				t.Fatalf("parseNodeFlags(%v) = %v", tt.args, err)
			}
			got, err := nf.cluster()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("cluster() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Listen != tt.want.Listen || !slices.Equal(got.Join, tt.want.Join) || !slices.Equal(got.NATS, tt.want.NATS) ||
				got.Advertise != tt.want.Advertise {
				t.Errorf("cluster() = %+v, %v, want %+v", got, err, tt.want)
			}
			if tt.want.enabled() != got.enabled() {
				t.Errorf("enabled() = %v, want %v", got.enabled(), tt.want.enabled())
			}
		})
	}
}
