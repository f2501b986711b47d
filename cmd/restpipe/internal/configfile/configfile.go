// Package configfile reads a restpipe node's configuration file: HCL with
// one attribute per flag of the node (the flag's name with underscores for
// dashes) and one block per plugin:
//
//	ca      = "ca.crt"            # relative paths: to the file's directory
//	listen  = ":7443"
//	grace   = "45s"               # durations are strings
//	max_in_flight = 512           # numbers are numbers
//
//	plugin "files" {
//	  root      = "/srv/files"    # passed to the plugin as a string
//	  read_only = "true"
//	}
//
// The keys, their types and their defaults come from the node's own flag
// set (Schema.Flags), so the flag definitions stay the one source of names;
// this package knows HCL and nothing of what the flags mean. Load reports
// every problem of a file at once, each as "FILE:LINE: KEY: problem"; Apply
// fills the flags that the command line and the environment left unset.
// docs/config.md is the operator's description.
package configfile

import (
	"cmp"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Schema is what a file may hold: the flags of the node reading it, and
// how to explain and resolve their values.
type Schema struct {
	// Role names the node ("server"), for messages.
	Role string
	// Flags are the node's flags; every one is a key unless in NotKeys.
	Flags *flag.FlagSet

	// OtherRole and OtherFlags, when set, are the flags of the other kind
	// of node, to explain a key that belongs there.
	OtherRole  string
	OtherFlags *flag.FlagSet

	// NotKeys are flags that have no key in the file, with why.
	NotKeys map[string]string
	// Paths are the flags whose relative paths are taken relative to the
	// file's directory, each with the prefix its value must have to be a
	// path ("" for every value; "unix:" for a listen address that is a
	// socket).
	Paths map[string]string
	// Checks validate the values of flags whose Set accepts anything, so
	// that a bad value is reported at its line.
	Checks map[string]func(string) error
}

// Keys returns the keys a file of this schema may have, plugin included.
func (s *Schema) Keys() []string { return append(s.keysOf(s.Flags), "plugin") }

// keysOf returns the keys of the flags of fs.
func (s *Schema) keysOf(fs *flag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *flag.Flag) {
		if _, not := s.NotKeys[f.Name]; !not {
			keys = append(keys, Key(f.Name))
		}
	})
	return keys
}

// Key is the key of a flag in the file: "server_name" for --server-name.
func Key(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

// File is a configuration file, read and checked.
type File struct {
	// Path is the file as it was named, for messages.
	Path string
	// Plugins are the plugin blocks' settings, by plugin file name.
	Plugins map[string]map[string]string

	// settings are the file's values by flag name, in the form the flag's
	// Set takes, in the order of the file.
	settings []setting
}

// setting is one top-level attribute of a file.
type setting struct {
	flag  string // the flag it sets: "server-name"
	value string // its value for flag.Value.Set
	line  int
}

// Error is every problem found in a file, in the order of the file.
type Error struct {
	Problems []Problem
}

// Problem is one problem, at a line of the file.
type Problem struct {
	Line int
	Text string // "FILE:LINE: KEY: problem"
}

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0].Text
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Text
	}
	return fmt.Sprintf("%d problems in the configuration file:\n%s", len(lines), strings.Join(lines, "\n"))
}

// Load reads and checks the file at path against s. It reports every
// problem at once (an *Error), each with the file, the line and the key.
// Relative paths in it are resolved against the file's directory.
func Load(path string, s *Schema) (*File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	p := &parser{
		c:   &File{Path: path, Plugins: map[string]map[string]string{}},
		s:   s,
		src: src,
		dir: filepath.Dir(abs),
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	for _, d := range diags {
		p.diag("", d)
	}
	// The parser recovers after an error, so what it did read is checked
	// too, and the operator learns of every problem at once.
	if body, ok := f.Body.(*hclsyntax.Body); ok {
		p.body(body)
	}
	if len(p.problems) > 0 {
		slices.SortStableFunc(p.problems, func(a, b Problem) int { return cmp.Compare(a.Line, b.Line) })
		return nil, &Error{p.problems}
	}
	return p.c, nil
}

// Apply sets every flag of fs that neither the command line (a flag
// visited) nor given (the environment, say) set from the file, and adds
// each plugin setting that plugins does not have yet. So, key by key: flag
// > given > file > the flag's default.
func (c *File) Apply(fs *flag.FlagSet, given func(flagName string) bool, plugins map[string]map[string]string) error {
	visited := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { visited[f.Name] = true })
	for _, s := range c.settings {
		if visited[s.flag] || given(s.flag) {
			continue
		}
		if err := fs.Set(s.flag, s.value); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", c.Path, s.line, Key(s.flag), err)
		}
	}
	for name, settings := range c.Plugins {
		for k, v := range settings {
			if _, given := plugins[name][k]; given {
				continue
			}
			if plugins[name] == nil {
				plugins[name] = map[string]string{}
			}
			plugins[name][k] = v
		}
	}
	return nil
}
