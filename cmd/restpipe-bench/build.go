package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/restpipe/restpipe/cmd/internal/srctree"
)

// benchPlugins are the plugins every restpipe node of the bench runs.
var benchPlugins = []string{"time", "echo"}

// binaries are the programs under test.
type binaries struct {
	restpipe   string // the restpipe binary
	pluginsDir string // holds the time and echo plugins, and nothing else
	self       string // this binary, re-executed for the hidden subcommands
	source     string // what was built: the commit of the source tree, or the given paths
}

// prepareBinaries builds what the options do not give, into work.
func prepareBinaries(ctx context.Context, o *options, work string, log io.Writer) (*binaries, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable: %w", err)
	}
	b := &binaries{restpipe: o.restpipe, self: self, pluginsDir: filepath.Join(work, "plugins")}
	if err := os.MkdirAll(b.pluginsDir, 0o755); err != nil {
		return nil, err
	}
	var root string
	if b.restpipe == "" || o.pluginsDir == "" {
		if root, err = srctree.Root(); err != nil {
			return nil, fmt.Errorf("%w: run the bench from it, or pass --restpipe and --plugins", err)
		}
	}
	b.source = "given binaries: " + o.restpipe + ", " + o.pluginsDir
	if root != "" {
		b.source = sourceVersion(ctx, root)
	}
	if b.restpipe == "" {
		b.restpipe = filepath.Join(work, "bin", "restpipe")
		fmt.Fprintln(log, "building restpipe...")
		if err := srctree.Build(ctx, root, b.restpipe, "./cmd/restpipe"); err != nil {
			return nil, err
		}
	}
	if o.pluginsDir != "" {
		for _, p := range benchPlugins {
			if err := copyFile(filepath.Join(o.pluginsDir, p), filepath.Join(b.pluginsDir, p), 0o755); err != nil {
				return nil, fmt.Errorf("--plugins: %w", err)
			}
		}
	} else {
		fmt.Fprintf(log, "building plugins %s...\n", strings.Join(benchPlugins, ", "))
		if err := srctree.BuildPlugins(ctx, root, b.pluginsDir, benchPlugins...); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// sourceVersion describes the source tree at root: its git commit, and
// whether it has uncommitted changes.
func sourceVersion(ctx context.Context, root string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		b, err := cmd.Output()
		return strings.TrimSpace(string(b)), err
	}
	commit, err := git("log", "-1", "--format=%h %s")
	if err != nil {
		return "the source tree at " + root + " (no git)"
	}
	// Only what goes into the binaries counts.
	st, err := git("status", "--porcelain", "--", "cmd/restpipe", "cmd/internal", "host", "plugin-sdk", "plugins", "proto", "go.mod", "go.sum")
	if err == nil && st != "" {
		commit += fmt.Sprintf(", with uncommitted changes to %d files", len(strings.Split(st, "\n")))
	}
	return "built from " + commit
}

// copyFile copies src to dst with mode perm, through a hidden temporary
// name renamed into place, so a plugins directory never sees half a file.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// benchPKI is the PKI of a run, made with `restpipe pki` in dir.
type benchPKI struct {
	dir string
}

// The names the bench issues certificates for.
const (
	nameServer  = "server"  // the restpipe server node
	nameClient  = "client1" // the restpipe client node of scenarios a-c
	nameClient2 = "client2" // the client node behind the delaying proxy (d)
	nameDirect  = "direct"  // the baseline server
	nameLoad    = "loadgen" // the load generator, as a client of the baseline
)

// makePKI creates a CA and every certificate of the run with the restpipe
// binary, as an operator would.
func makePKI(ctx context.Context, restpipe, dir string) (*benchPKI, error) {
	runPKI := func(args ...string) error {
		cmd := exec.CommandContext(ctx, restpipe, append([]string{"pki"}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("restpipe pki %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	if err := runPKI("init", "--dir", dir); err != nil {
		return nil, err
	}
	issue := []struct {
		name  string
		hosts []string
	}{
		{nameServer, []string{"127.0.0.1", "localhost"}},
		{nameClient, nil},
		{nameClient2, nil},
		{nameDirect, []string{"127.0.0.1", "localhost"}},
		{nameLoad, nil},
	}
	for _, is := range issue {
		args := []string{"issue", "--dir", dir, "--name", is.name}
		for _, h := range is.hosts {
			args = append(args, "--host", h)
		}
		if err := runPKI(args...); err != nil {
			return nil, err
		}
	}
	return &benchPKI{dir: dir}, nil
}

// ca returns the CA certificate file.
func (p *benchPKI) ca() string { return filepath.Join(p.dir, "ca.crt") }

// files returns the certificate and key files of name.
func (p *benchPKI) files(name string) (cert, key string) {
	return filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
}

// flags returns --ca, --cert and --key for name.
func (p *benchPKI) flags(name string) []string {
	cert, key := p.files(name)
	return []string{"--ca", p.ca(), "--cert", cert, "--key", key}
}
