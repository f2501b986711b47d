package configfile

import (
	"flag"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// parser walks a parsed file, collecting settings and problems.
type parser struct {
	c        *File
	s        *Schema
	src      []byte
	dir      string // the file's directory, absolute
	problems []Problem
}

// problem records a problem of key at line.
func (p *parser) problem(line int, key, format string, args ...any) {
	p.problems = append(p.problems, Problem{line, fmt.Sprintf("%s:%d: %s: %s", p.c.Path, line, key, fmt.Sprintf(format, args...))})
}

// firstSetAt finds the line of the first setting in the parser's message
// about a key set twice: `The argument "x" was already set at FILE:3,1-7.`
var firstSetAt = regexp.MustCompile(`already set at .*:(\d+),\d+-\d+`)

// diag records an HCL diagnostic about key ("": the parser's, which names
// the key in the file it points at, if any).
func (p *parser) diag(key string, d *hcl.Diagnostic) {
	line := 0
	if d.Subject != nil {
		line = d.Subject.Start.Line
	}
	if d.Summary == "Attribute redefined" && d.Subject != nil {
		// The parser points at the second one's name.
		key = string(d.Subject.SliceBytes(p.src))
		if m := firstSetAt.FindStringSubmatch(d.Detail); m != nil {
			p.problem(line, key, "set twice (first at line %s); keep one", m[1])
		} else {
			p.problem(line, key, "set twice: %s", d.Detail)
		}
		return
	}
	msg := d.Summary
	if d.Detail != "" {
		msg += ": " + strings.TrimSuffix(d.Detail, ".")
	}
	if key == "" {
		p.problems = append(p.problems, Problem{line, fmt.Sprintf("%s:%d: %s", p.c.Path, line, msg)})
		return
	}
	p.problem(line, key, "%s", msg)
}

// lookup returns the flag of key, or explains why there is none.
func (p *parser) lookup(key string) (*flag.Flag, string) {
	s := p.s
	name := strings.ReplaceAll(key, "_", "-")
	if why, ok := s.NotKeys[name]; ok && key == Key(name) {
		return nil, why
	}
	if f := s.Flags.Lookup(name); f != nil && key == Key(name) {
		return f, ""
	}
	if s.OtherFlags != nil {
		if f := s.OtherFlags.Lookup(name); f != nil && key == Key(name) {
			return nil, fmt.Sprintf("a setting of restpipe %s, not of restpipe %s", s.OtherRole, s.Role)
		}
	}
	why := "unknown key"
	if c := closest(key, s.Keys()); c != "" {
		why += fmt.Sprintf("; did you mean %s?", c)
	} else if s.OtherFlags != nil {
		if c := closest(key, s.keysOf(s.OtherFlags)); c != "" {
			why += fmt.Sprintf("; did you mean %s? (a setting of restpipe %s)", c, s.OtherRole)
		}
	}
	return nil, why
}

func (p *parser) body(b *hclsyntax.Body) {
	for _, a := range sortedAttributes(b) {
		p.attribute(a)
	}
	seen := map[string]int{} // plugin name -> line of its block
	for _, blk := range b.Blocks {
		line := blk.TypeRange.Start.Line
		if blk.Type != "plugin" {
			f, why := p.lookup(blk.Type)
			switch {
			case f != nil && editDistance(blk.Type, "plugin") <= 2:
				why = fmt.Sprintf(`a setting, not a block: write %s = VALUE; or did you mean plugin "NAME" { ... }?`, blk.Type)
			case f != nil:
				why = fmt.Sprintf("a setting, not a block: write %s = VALUE", blk.Type)
			default:
				why = strings.Replace(why, "unknown key", "unknown block", 1)
			}
			p.problem(line, blk.Type, "%s", why)
			continue
		}
		if len(blk.Labels) != 1 || blk.Labels[0] == "" {
			p.problem(line, "plugin", `want one label, the plugin's file name: plugin "NAME" { KEY = "VALUE" }`)
			continue
		}
		name := blk.Labels[0]
		key := fmt.Sprintf("plugin %q", name)
		if first, dup := seen[name]; dup {
			p.problem(line, key, "a second block for this plugin (the first is at line %d); put all its settings in one", first)
			continue
		}
		seen[name] = line
		p.plugin(key, name, blk.Body)
	}
}

// attribute checks one top-level attribute and records its setting.
func (p *parser) attribute(a *hclsyntax.Attribute) {
	line := a.NameRange.Start.Line
	f, why := p.lookup(a.Name)
	if f == nil {
		if a.Name == "plugin" {
			why = `want a block: plugin "NAME" { KEY = "VALUE" }`
		}
		p.problem(line, a.Name, "%s", why)
		return
	}
	v, ok := p.value(a)
	if !ok {
		return
	}
	var s string
	switch want := flagType(f); want {
	case "duration":
		if v.Type() != cty.String {
			p.problem(line, a.Name, `want a duration as a string, such as "30s"; got %s`, typeName(v))
			return
		}
		s = v.AsString()
		if _, err := time.ParseDuration(s); err != nil {
			p.problem(line, a.Name, `%q is not a duration; want a number and a unit, such as "500ms", "30s" or "2m"`, s)
			return
		}
	case "int", "int64", "uint", "uint64":
		if v.Type() != cty.Number {
			p.problem(line, a.Name, "want a whole number; got %s", typeName(v))
			return
		}
		n, err := wholeNumber(v.AsBigFloat(), want)
		if err != nil {
			p.problem(line, a.Name, "%s", err)
			return
		}
		s = n
	case "bool":
		if v.Type() != cty.Bool {
			p.problem(line, a.Name, "want true or false; got %s", typeName(v))
			return
		}
		s = strconv.FormatBool(v.True())
	default:
		if v.Type() != cty.String {
			p.problem(line, a.Name, "want a string; got %s", typeName(v))
			return
		}
		s = v.AsString()
	}
	if check := p.s.Checks[f.Name]; check != nil {
		if err := check(s); err != nil {
			p.problem(line, a.Name, "%q: %v", s, err)
			return
		}
	}
	p.c.settings = append(p.c.settings, setting{flag: f.Name, value: p.resolve(f.Name, s), line: line})
}

// plugin checks one plugin block and records its settings.
func (p *parser) plugin(key, name string, b *hclsyntax.Body) {
	for _, blk := range b.Blocks {
		p.problem(blk.TypeRange.Start.Line, key, "%s: a block; a plugin's settings are KEY = \"VALUE\" lines", blk.Type)
	}
	settings := map[string]string{}
	for _, a := range sortedAttributes(b) {
		akey := key + " " + a.Name
		v, ok := p.value(a)
		if !ok {
			continue
		}
		switch v.Type() {
		case cty.String:
			settings[a.Name] = v.AsString()
		case cty.Bool:
			settings[a.Name] = strconv.FormatBool(v.True())
		case cty.Number:
			settings[a.Name] = numberString(v.AsBigFloat())
		default:
			p.problem(a.NameRange.Start.Line, akey, "want a string (or a number or bool, passed as a string); got %s", typeName(v))
		}
	}
	p.c.Plugins[name] = settings
}

// value evaluates an attribute's expression, which may use no variables
// or functions.
func (p *parser) value(a *hclsyntax.Attribute) (cty.Value, bool) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		for _, d := range diags {
			p.diag(a.Name, d)
		}
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		return cty.NilVal, false // only after a syntax error, already reported
	}
	if v.IsNull() {
		p.problem(a.NameRange.Start.Line, a.Name, "null is not a value; leave the key out for the default")
		return cty.NilVal, false
	}
	return v, true
}

// resolve makes a relative path in the file relative to its directory.
func (p *parser) resolve(flagName, v string) string {
	prefix, ok := p.s.Paths[flagName]
	if !ok {
		return v
	}
	if path, ok := strings.CutPrefix(v, prefix); ok && path != "" && !filepath.IsAbs(path) {
		return prefix + filepath.Join(p.dir, path)
	}
	return v
}
