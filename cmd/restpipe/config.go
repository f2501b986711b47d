package main

import (
	"cmp"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The configuration file (--config FILE) of `restpipe server` and
// `restpipe client` is HCL: one attribute per flag, the flag's name with
// underscores for dashes, plus one block per plugin:
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
// The keys are derived from the node's flag set, so the flag definitions
// stay the one source of names, types and defaults. The file only fills
// flags that neither the command line nor the environment set, and plugin
// settings that --plugin-config did not give. docs/config.md is the
// operator's description; keep the two in step.

// configPathKeys are the flags whose relative paths in a configuration file
// are taken relative to the file's directory. --http is one too, for a
// unix: socket.
var configPathKeys = map[string]bool{
	"ca": true, "cert": true, "key": true, "plugins": true, "plugin-checksums": true,
	"policy": true,
}

// configChecks validate the values of flags whose Set accepts anything, so
// that a bad value in the file is reported at its line.
var configChecks = map[string]func(string) error{
	"log-level":  checkLogLevel,
	"log-format": checkLogFormat,
}

// configNotKeys are flags that have no key in the file, and why.
var configNotKeys = map[string]string{
	"config":        "a configuration file cannot name another; give --config on the command line or as RESTPIPE_CONFIG",
	"plugin-config": `not a key: write a block per plugin, plugin "NAME" { KEY = "VALUE" }`,
}

// configFile is a node's configuration file, read and checked.
type configFile struct {
	// path is the file as it was named, for messages.
	path string
	// settings are the file's values by flag name, in the form the
	// flag's Set takes, in the order of the file.
	settings []configSetting
	// plugins are the plugin blocks' settings, by plugin file name.
	plugins map[string]map[string]string
}

// configSetting is one top-level attribute of a configuration file.
type configSetting struct {
	flag  string // the flag it sets: "server-name"
	value string // its value for flag.Value.Set
	line  int
}

// configError is every problem found in a configuration file, in the
// order of the file, each as "FILE:LINE: KEY: problem".
type configError struct {
	problems []configProblem
}

// configProblem is one problem, at a line of the file.
type configProblem struct {
	line int
	text string // "FILE:LINE: KEY: problem"
}

func (e *configError) Error() string {
	if len(e.problems) == 1 {
		return e.problems[0].text
	}
	lines := make([]string, len(e.problems))
	for i, p := range e.problems {
		lines[i] = p.text
	}
	return fmt.Sprintf("%d problems in the configuration file:\n%s", len(lines), strings.Join(lines, "\n"))
}

// configKey is the key of a flag in the configuration file.
func configKey(flagName string) string { return strings.ReplaceAll(flagName, "-", "_") }

// roleFlags returns the flag set of a node of role, to learn its keys.
func roleFlags(role string) *flag.FlagSet {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs, role)
	return fs
}

// otherRole is the role that is not role.
func otherRole(role string) string {
	if role == "server" {
		return "client"
	}
	return "server"
}

// loadConfigFile reads and checks the configuration file path of a node of
// role ("server" or "client"). It reports every problem at once, each with
// the file, the line and the key. Relative paths in it are resolved against
// the file's directory.
func loadConfigFile(path, role string) (*configFile, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	p := &configParser{
		c:    &configFile{path: path, plugins: map[string]map[string]string{}},
		src:  src,
		role: role,
		dir:  filepath.Dir(abs),
		own:  roleFlags(role),
		peer: roleFlags(otherRole(role)),
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
		slices.SortStableFunc(p.problems, func(a, b configProblem) int { return cmp.Compare(a.line, b.line) })
		return nil, &configError{p.problems}
	}
	return p.c, nil
}

// configParser walks a parsed file, collecting settings and problems.
type configParser struct {
	c        *configFile
	src      []byte
	role     string
	dir      string // the file's directory, absolute
	own      *flag.FlagSet
	peer     *flag.FlagSet // the other role's flags, to explain misplaced keys
	problems []configProblem
}

// problem records a problem of key at line.
func (p *configParser) problem(line int, key, format string, args ...any) {
	p.problems = append(p.problems, configProblem{line, fmt.Sprintf("%s:%d: %s: %s", p.c.path, line, key, fmt.Sprintf(format, args...))})
}

// firstSetAt finds the line of the first setting in the parser's message
// about a key set twice: `The argument "x" was already set at FILE:3,1-7.`
var firstSetAt = regexp.MustCompile(`already set at .*:(\d+),\d+-\d+`)

// diag records an HCL diagnostic about key ("": the parser's, which names
// the key in the file it points at, if any).
func (p *configParser) diag(key string, d *hcl.Diagnostic) {
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
		p.problems = append(p.problems, configProblem{line, fmt.Sprintf("%s:%d: %s", p.c.path, line, msg)})
		return
	}
	p.problem(line, key, "%s", msg)
}

// knownKeys are the keys a file of this role may have.
func (p *configParser) knownKeys() []string {
	return append(keysOf(p.own), "plugin")
}

// keysOf returns the keys of the flags of fs.
func keysOf(fs *flag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *flag.Flag) {
		if _, not := configNotKeys[f.Name]; !not {
			keys = append(keys, configKey(f.Name))
		}
	})
	return keys
}

// lookup returns the flag of key in this role, or explains why there is
// none.
func (p *configParser) lookup(key string) (*flag.Flag, string) {
	name := strings.ReplaceAll(key, "_", "-")
	if why, ok := configNotKeys[name]; ok && key == configKey(name) {
		return nil, why
	}
	if f := p.own.Lookup(name); f != nil && key == configKey(name) {
		return f, ""
	}
	if f := p.peer.Lookup(name); f != nil && key == configKey(name) {
		return nil, fmt.Sprintf("a setting of restpipe %s, not of restpipe %s", otherRole(p.role), p.role)
	}
	why := "unknown key"
	if s := closest(key, p.knownKeys()); s != "" {
		why += fmt.Sprintf("; did you mean %s?", s)
	} else if s := closest(key, keysOf(p.peer)); s != "" {
		why += fmt.Sprintf("; did you mean %s? (a setting of restpipe %s)", s, otherRole(p.role))
	}
	return nil, why
}

func (p *configParser) body(b *hclsyntax.Body) {
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
func (p *configParser) attribute(a *hclsyntax.Attribute) {
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
	if check := configChecks[f.Name]; check != nil {
		if err := check(s); err != nil {
			p.problem(line, a.Name, "%q: %v", s, err)
			return
		}
	}
	p.c.settings = append(p.c.settings, configSetting{flag: f.Name, value: p.resolve(f.Name, s), line: line})
}

// plugin checks one plugin block and records its settings.
func (p *configParser) plugin(key, name string, b *hclsyntax.Body) {
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
	p.c.plugins[name] = settings
}

// value evaluates an attribute's expression, which may use no variables
// or functions.
func (p *configParser) value(a *hclsyntax.Attribute) (cty.Value, bool) {
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
func (p *configParser) resolve(flagName, v string) string {
	switch {
	case configPathKeys[flagName]:
		if v != "" && !filepath.IsAbs(v) {
			return filepath.Join(p.dir, v)
		}
	case flagName == "http":
		if sock, ok := strings.CutPrefix(v, "unix:"); ok && sock != "" && !filepath.IsAbs(sock) {
			return "unix:" + filepath.Join(p.dir, sock)
		}
	}
	return v
}

// apply sets every flag of fs that neither the command line nor the
// environment set (as parseFlags did: a flag visited, or its RESTPIPE_
// variable not empty) from the file, and adds each plugin setting that
// pc does not have yet. So, key by key: flag > environment > file >
// the flag's default.
func (c *configFile) apply(fs *flag.FlagSet, getenv func(string) string, pc pluginConfigFlag) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range c.settings {
		if given[s.flag] || getenv(envName(s.flag)) != "" {
			continue
		}
		if err := fs.Set(s.flag, s.value); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", c.path, s.line, configKey(s.flag), err)
		}
	}
	for name, settings := range c.plugins {
		for k, v := range settings {
			if _, given := pc[name][k]; given {
				continue
			}
			if pc[name] == nil {
				pc[name] = map[string]string{}
			}
			pc[name][k] = v
		}
	}
	return nil
}

// flagType names the Go type of a flag's value: "string", "duration",
// "int", "int64", "uint", "uint64" or "bool".
func flagType(f *flag.Flag) string {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return "string"
	}
	switch g.Get().(type) {
	case time.Duration:
		return "duration"
	case int:
		return "int"
	case int64:
		return "int64"
	case uint:
		return "uint"
	case uint64:
		return "uint64"
	case bool:
		return "bool"
	}
	return "string"
}

// wholeNumber formats n for a flag of Go type typ, or says why it does
// not fit.
func wholeNumber(n *big.Float, typ string) (string, error) {
	if !n.IsInt() {
		return "", fmt.Errorf("%s is not a whole number", n.Text('g', -1))
	}
	i, _ := n.Int(nil)
	bits := 64
	if typ == "int" || typ == "uint" {
		bits = strconv.IntSize
	}
	if strings.HasPrefix(typ, "uint") {
		if i.Sign() < 0 || i.BitLen() > bits {
			return "", fmt.Errorf("%s is out of range (0 to %d bits)", i, bits)
		}
	} else if i.BitLen() > bits-1 {
		return "", fmt.Errorf("%s is out of range for a %d-bit integer", i, bits)
	}
	return i.String(), nil
}

// numberString formats n as a plugin setting: 1000000, not 1e+06.
func numberString(n *big.Float) string {
	if n.IsInt() {
		i, _ := n.Int(nil)
		return i.String()
	}
	return n.Text('f', -1)
}

// typeName describes a value's type for a message.
func typeName(v cty.Value) string {
	t := v.Type()
	switch {
	case t == cty.String:
		return "a string"
	case t == cty.Number:
		return "a number"
	case t == cty.Bool:
		return "a bool"
	case t.IsTupleType() || t.IsListType():
		return "a list"
	case t.IsObjectType() || t.IsMapType():
		return "an object"
	}
	return t.FriendlyName()
}

// sortedAttributes returns a body's attributes in the order of the file.
func sortedAttributes(b *hclsyntax.Body) []*hclsyntax.Attribute {
	as := make([]*hclsyntax.Attribute, 0, len(b.Attributes))
	for _, a := range b.Attributes {
		as = append(as, a)
	}
	slices.SortFunc(as, func(x, y *hclsyntax.Attribute) int {
		return cmp.Compare(x.SrcRange.Start.Byte, y.SrcRange.Start.Byte)
	})
	return as
}

// closest returns the candidate nearest to s by edit distance, or "" when
// none is near enough to be a likely typo: within a third of s's length
// (at least 1, at most 3 edits).
func closest(s string, candidates []string) string {
	best, bestD := "", max(1, min(3, len(s)/3))+1
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
