package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// newFile is one file to be created by writeNew.
type newFile struct {
	path string
	data []byte
	perm fs.FileMode
}

// writeNew creates the given files, none of which may exist yet, in order.
// If any already exists it returns an error wrapping ErrExists naming it and
// writes nothing. Each file appears under its final name complete and synced
// (it is written to a temporary file and hard-linked into place, which fails
// rather than replaces). If a later file cannot be created, the earlier ones
// are removed again, so callers list a certificate before its key and a key
// is never left without its certificate.
func writeNew(files ...newFile) error {
	for _, f := range files {
		if err := checkAbsent(f.path); err != nil {
			return err
		}
	}
	for i, f := range files {
		if err := createExclusive(f); err != nil {
			for _, done := range files[:i] {
				os.Remove(done.path)
			}
			return err
		}
	}
	for _, dir := range uniqueDirs(files) {
		syncDir(dir)
	}
	return nil
}

// checkAbsent returns an error wrapping ErrExists if path exists, and nil
// if it does not.
func checkAbsent(path string) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return fmt.Errorf("create %s: %w", path, ErrExists)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("create %s: %w", path, err)
	}
}

// createExclusive writes f.data to f.path with mode f.perm, failing with an
// error wrapping ErrExists if f.path exists.
func createExclusive(f newFile) error {
	dir, base := filepath.Split(f.path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", f.path, err)
	}
	defer os.Remove(tmp.Name())
	if err := fill(tmp, f.data, f.perm); err != nil {
		return fmt.Errorf("create %s: %w", f.path, err)
	}
	err = os.Link(tmp.Name(), f.path)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("create %s: %w", f.path, ErrExists)
	}
	// The file system cannot hard-link: create the file itself, exclusively.
	out, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create %s: %w", f.path, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", f.path, err)
	}
	if err := fill(out, f.data, f.perm); err != nil {
		os.Remove(f.path)
		return fmt.Errorf("create %s: %w", f.path, err)
	}
	return nil
}

// fill sets the mode of the new file out, writes data to it, syncs and
// closes it.
func fill(out *os.File, data []byte, perm fs.FileMode) error {
	err := out.Chmod(perm)
	if err == nil {
		_, err = out.Write(data)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// uniqueDirs returns the directories of files, each once.
func uniqueDirs(files []newFile) []string {
	var dirs []string
	seen := make(map[string]bool)
	for _, f := range files {
		d := filepath.Dir(f.path)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// syncDir makes new directory entries in dir durable where the platform
// supports it; failure only weakens durability, so it is ignored.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
