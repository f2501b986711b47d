// Package srctree finds the restpipe source tree a command runs in and
// builds programs from it with the go command. It serves the commands that
// build what they run (restpipe dev, restpipe-bench); the daemon itself
// never builds anything.
package srctree

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned by Root outside the restpipe source tree.
var ErrNotFound = errors.New("not inside the restpipe source tree")

// Root returns the directory of the restpipe module at or above the
// current directory, or an error wrapping ErrNotFound.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/restpipe/restpipe\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNotFound
		}
		dir = parent
	}
}

// BuildPlugins builds the example plugins named (directories under
// plugins/ in the tree at root) into dir, creating it, with one go build
// so the go command builds them in parallel.
func BuildPlugins(ctx context.Context, root, dir string, names ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pkgs := make([]string, len(names))
	for i, p := range names {
		pkgs[i] = "./plugins/" + p
	}
	return Build(ctx, root, dir+string(filepath.Separator), pkgs...)
}

// Build runs go build -o out pkgs... in the tree at root; out is a file
// for one package, or a directory ending in a separator for several.
func Build(ctx context.Context, root, out string, pkgs ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, pkgs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(pkgs, " "), err, b)
	}
	return nil
}
