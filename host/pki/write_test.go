package pki

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteNew(t *testing.T) {
	tests := []struct {
		name      string
		existing  string // file present before, relative to the dir
		second    string // path of the second file, relative to the dir
		wantFiles []string
		target    error
	}{
		{"both written", "", "b", []string{"a", "b"}, nil},
		{"second exists", "b", "b", []string{"b"}, ErrExists},
		{"first exists", "a", "b", []string{"a"}, ErrExists},
		{"second fails, first removed", "", "missing/b", nil, os.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.existing != "" {
				writeFile(t, filepath.Join(dir, tc.existing), []byte("old"))
			}
			err := writeNew(
				newFile{filepath.Join(dir, "a"), []byte("A"), 0o644},
				newFile{filepath.Join(dir, tc.second), []byte("B"), 0o600},
			)
			if tc.target == nil && err != nil {
				t.Fatalf("writeNew: %v", err)
			}
			if tc.target != nil {
				wantErr(t, err, tc.target)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if !slices.Equal(got, tc.wantFiles) {
				t.Fatalf("dir holds %q, want %q", got, tc.wantFiles)
			}
			if tc.existing != "" {
				if b := readFile(t, filepath.Join(dir, tc.existing)); string(b) != "old" {
					t.Errorf("%s = %q, want it untouched", tc.existing, b)
				}
			}
		})
	}
}

func TestCreateExclusiveRace(t *testing.T) {
	// The file appears after writeNew's check: the link must fail, not
	// replace it, and no temporary file may remain.
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	writeFile(t, path, []byte("old"))
	err := createExclusive(newFile{path, []byte("new"), 0o600})
	wantErr(t, err, ErrExists, path)
	if b := readFile(t, path); string(b) != "old" {
		t.Errorf("k = %q, want %q", b, "old")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("dir holds %d entries, want 1", len(entries))
	}
}
