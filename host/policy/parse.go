package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/time/rate"

	"github.com/restpipe/restpipe/host"
)

// Limits of a policy file. A file beyond them is refused.
const (
	// MaxFileSize is the largest policy file read, in bytes.
	MaxFileSize = 1 << 20
	// MaxPatternLen is the longest glob, in bytes.
	MaxPatternLen = 512
	// MaxBurst is the largest burst a limit block may give.
	MaxBurst = 1_000_000
	// MaxRate is the fastest rate a limit block may give, in events per
	// second.
	MaxRate = 1e9
)

// Errors of this package.
var (
	// ErrInvalid is wrapped by every *ParseError: the file is not a valid
	// policy.
	ErrInvalid = errors.New("invalid policy file")
)

// Problem is one thing wrong in a policy file, at a line, about a key.
type Problem struct {
	File string
	// Line is the line of the file it is about, 1 for the first; 0 when
	// the problem is the whole file's.
	Line int
	// Key is what it is about, such as "allow.peers" or "limit.rate"; ""
	// for a syntax error.
	Key string
	// Message says what is wrong, and how to put it right when that is
	// clear.
	Message string
}

// String formats the problem as "FILE:LINE: KEY: MESSAGE".
func (p Problem) String() string {
	if p.Key == "" {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Message)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Key, p.Message)
}

// ParseError is every problem found in a policy file, in the order of the
// file. It wraps ErrInvalid.
type ParseError struct {
	Problems []Problem
}

func (e *ParseError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0].String()
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("%d problems in the policy file:\n%s", len(lines), strings.Join(lines, "\n"))
}

// Unwrap returns ErrInvalid.
func (e *ParseError) Unwrap() error { return ErrInvalid }

// Load reads and compiles the policy file path. A file that is not a
// valid policy gives a *ParseError with every problem in it.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the policy file: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read the policy file: %w", err)
	}
	if len(src) > MaxFileSize {
		return nil, &ParseError{[]Problem{{File: path, Message: fmt.Sprintf("the file is over %d bytes, the limit of a policy file", MaxFileSize)}}}
	}
	return Parse(src, path)
}

// Parse compiles a policy file's contents; file names it in problems and
// in Status. It reports every problem at once, each with the file, the line
// and the key, as a *ParseError.
func Parse(src []byte, file string) (*Policy, error) {
	p := &parser{src: src, file: file}
	f, diags := hclsyntax.ParseConfig(src, file, hcl.InitialPos)
	for _, d := range diags {
		p.diag("", d)
	}
	// The parser recovers after an error, so what it did read is checked
	// too, and the operator learns of every problem at once.
	body, _ := f.Body.(*hclsyntax.Body)
	if body != nil {
		p.body(body)
	}
	for _, r := range p.redefined {
		key := r.name
		if body != nil {
			for _, blk := range body.Blocks {
				if rg := blk.Body.Range(); r.byte >= rg.Start.Byte && r.byte < rg.End.Byte {
					key = blk.Type + "." + r.name
				}
			}
		}
		p.problem(r.line, key, "set twice (first at line %s); keep one", r.first)
	}
	if len(p.problems) > 0 {
		slices.SortStableFunc(p.problems, func(a, b Problem) int { return a.Line - b.Line })
		return nil, &ParseError{p.problems}
	}
	pol := newPolicy(file, sha256.Sum256(src), p.allow, p.limits)
	return pol, nil
}

// parser walks a parsed file, collecting rules and problems.
type parser struct {
	src      []byte
	file     string
	allow    []allowRule
	limits   []*limitRule
	problems []Problem
	// redefined are the attributes set twice in one body, as the HCL
	// parser found them.
	redefined []redefinition
}

// redefinition is an attribute set a second time at line (at byte of the
// file), first set at line first.
type redefinition struct {
	line, byte  int
	name, first string
}

// problem records a problem about key at line.
func (p *parser) problem(line int, key, format string, args ...any) {
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

// firstSetAt finds the line of the first setting in the parser's message
// about a key set twice: `The argument "x" was already set at FILE:3,1-7.`
var firstSetAt = regexp.MustCompile(`already set at .*:(\d+),\d+-\d+`)

// diag records an HCL diagnostic about key ("": the parser's own).
func (p *parser) diag(key string, d *hcl.Diagnostic) {
	line := 0
	if d.Subject != nil {
		line = d.Subject.Start.Line
	}
	if d.Summary == "Attribute redefined" && d.Subject != nil {
		// The parser points at the second one's name; the block it is in
		// is named once the walk has seen the blocks (see redefined).
		name := string(d.Subject.SliceBytes(p.src))
		first := "?"
		if m := firstSetAt.FindStringSubmatch(d.Detail); m != nil {
			first = m[1]
		}
		p.redefined = append(p.redefined, redefinition{line: line, byte: d.Subject.Start.Byte, name: name, first: first})
		return
	}
	msg := d.Summary
	if d.Detail != "" {
		msg += ": " + strings.TrimSuffix(d.Detail, ".")
	}
	p.problem(line, key, "%s", msg)
}

// blockKeys are the attributes each block type takes, and whether each is
// required.
var blockKeys = map[string]map[string]bool{
	"allow": {"peers": true, "routes": true},
	"limit": {"peers": true, "routes": false, "rate": true, "burst": false},
}

func (p *parser) body(b *hclsyntax.Body) {
	for _, a := range sortedAttributes(b) {
		why := "a policy file holds only allow and limit blocks"
		if _, ok := blockKeys["limit"][a.Name]; ok {
			why += fmt.Sprintf("; put %s inside one: allow { ... } or limit { ... }", a.Name)
		}
		p.problem(a.NameRange.Start.Line, a.Name, "%s", why)
	}
	for _, blk := range b.Blocks {
		line := blk.TypeRange.Start.Line
		keys, ok := blockKeys[blk.Type]
		if !ok {
			why := "unknown block; a policy file holds only allow and limit blocks"
			if s := closest(blk.Type, []string{"allow", "limit"}); s != "" {
				why = fmt.Sprintf("unknown block; did you mean %s?", s)
			}
			p.problem(line, blk.Type, "%s", why)
			continue
		}
		if len(blk.Labels) > 0 {
			p.problem(line, blk.Type, "a block without a label: %s { ... }", blk.Type)
		}
		for _, inner := range blk.Body.Blocks {
			p.problem(inner.TypeRange.Start.Line, blk.Type+"."+inner.Type, "a block inside %s; write %s's settings as KEY = VALUE", blk.Type, blk.Type)
		}
		attrs := map[string]*hclsyntax.Attribute{}
		for _, a := range sortedAttributes(blk.Body) {
			key := blk.Type + "." + a.Name
			if _, ok := keys[a.Name]; !ok {
				p.problem(a.NameRange.Start.Line, key, "%s", unknownKey(blk.Type, a.Name))
				continue
			}
			attrs[a.Name] = a
		}
		for _, k := range sortedKeys(keys) {
			if keys[k] && attrs[k] == nil {
				p.problem(line, blk.Type+"."+k, "required in every %s block", blk.Type)
			}
		}
		if blk.Type == "allow" {
			p.allowBlock(line, attrs)
		} else {
			p.limitBlock(line, attrs)
		}
	}
}

// unknownKey explains an attribute that block type does not take.
func unknownKey(typ, name string) string {
	var want []string
	for k := range blockKeys[typ] {
		want = append(want, k)
	}
	slices.Sort(want)
	other := "limit"
	if typ == "limit" {
		other = "allow"
	}
	switch _, ofOther := blockKeys[other][name]; {
	case ofOther:
		return fmt.Sprintf("a setting of %s blocks, not of %s blocks (which take %s)", other, typ, strings.Join(want, ", "))
	case closest(name, want) != "":
		return fmt.Sprintf("unknown key; did you mean %s?", closest(name, want))
	}
	return fmt.Sprintf("unknown key; %s blocks take %s", typ, strings.Join(want, ", "))
}

// allowBlock compiles an allow block whose attributes were checked.
func (p *parser) allowBlock(line int, attrs map[string]*hclsyntax.Attribute) {
	r := allowRule{line: line}
	okP := p.patterns("allow", attrs["peers"], checkPeerPattern, &r.peers)
	okR := p.patterns("allow", attrs["routes"], checkRoutePattern, &r.routes)
	if okP && okR && attrs["peers"] != nil && attrs["routes"] != nil {
		p.allow = append(p.allow, r)
	}
}

// limitBlock compiles a limit block whose attributes were checked.
func (p *parser) limitBlock(line int, attrs map[string]*hclsyntax.Attribute) {
	r := &limitRule{line: line}
	ok := p.patterns("limit", attrs["peers"], checkPeerPattern, &r.peers) && attrs["peers"] != nil
	if a := attrs["routes"]; a != nil {
		ok = p.patterns("limit", a, checkRoutePattern, &r.routes) && ok
	} else {
		r.routes = globs{compileGlob("*")}
	}
	n := 0.0
	if a := attrs["rate"]; a != nil {
		v, vok := p.value("limit", a)
		switch {
		case !vok:
			ok = false
		case v.Type() != cty.String:
			p.problem(a.NameRange.Start.Line, "limit.rate", `want a rate as a string, such as "200/s"; got %s`, typeName(v))
			ok = false
		default:
			var err error
			r.rateText = v.AsString()
			if r.limit, n, err = parseRate(r.rateText); err != nil {
				p.problem(a.NameRange.Start.Line, "limit.rate", "%q: %v", r.rateText, err)
				ok = false
			}
		}
	} else {
		ok = false
	}
	r.burst = max(1, int(math.Ceil(n)))
	if a := attrs["burst"]; a != nil {
		v, vok := p.value("limit", a)
		switch {
		case !vok:
			ok = false
		case v.Type() != cty.Number:
			p.problem(a.NameRange.Start.Line, "limit.burst", "want a whole number of events; got %s", typeName(v))
			ok = false
		default:
			bf := v.AsBigFloat()
			b, acc := bf.Int64()
			if !bf.IsInt() || acc != 0 || b < 1 || b > MaxBurst {
				p.problem(a.NameRange.Start.Line, "limit.burst", "%s: want a whole number of events from 1 to %d", bf.Text('f', -1), MaxBurst)
				ok = false
			} else {
				r.burst = int(b)
			}
		}
	}
	if ok {
		p.limits = append(p.limits, r)
	}
}

// patterns reads a list of globs from a (nil: nothing to read), checking
// each with check, into out. It reports whether a was good.
func (p *parser) patterns(typ string, a *hclsyntax.Attribute, check func(string) error, out *globs) bool {
	if a == nil {
		return true
	}
	key := typ + "." + a.Name
	line := a.NameRange.Start.Line
	v, ok := p.value(typ, a)
	if !ok {
		return false
	}
	t := v.Type()
	if !t.IsTupleType() && !t.IsListType() && !t.IsSetType() {
		if t == cty.String {
			p.problem(line, key, "want a list of strings: %s = [%q]", a.Name, v.AsString())
		} else {
			p.problem(line, key, "want a list of strings; got %s", typeName(v))
		}
		return false
	}
	if v.LengthInt() == 0 {
		p.problem(line, key, "an empty list matches nothing; give at least one pattern (\"*\" for all)")
		return false
	}
	// The line of each element, when the list is written out.
	var elemLines []int
	if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
		for _, e := range tup.Exprs {
			elemLines = append(elemLines, e.Range().Start.Line)
		}
	}
	good := true
	i := 0
	for it := v.ElementIterator(); it.Next(); i++ {
		_, ev := it.Element()
		eline := line
		if i < len(elemLines) {
			eline = elemLines[i]
		}
		if ev.IsNull() || !ev.IsKnown() || ev.Type() != cty.String {
			p.problem(eline, key, "element %d: want a string; got %s", i+1, typeName(ev))
			good = false
			continue
		}
		s := ev.AsString()
		if err := check(s); err != nil {
			p.problem(eline, key, "%q: %v", s, err)
			good = false
			continue
		}
		*out = append(*out, compileGlob(s))
	}
	return good
}

// value evaluates an attribute's expression, which may use no variables
// or functions.
func (p *parser) value(typ string, a *hclsyntax.Attribute) (cty.Value, bool) {
	key := typ + "." + a.Name
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		for _, d := range diags {
			p.diag(key, d)
		}
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		return cty.NilVal, false // only after a syntax error, already reported
	}
	if v.IsNull() {
		p.problem(a.NameRange.Start.Line, key, "null is not a value")
		return cty.NilVal, false
	}
	return v, true
}

// checkPeerPattern returns nil if s is a glob that can match node names.
func checkPeerPattern(s string) error {
	if err := checkPattern(s); err != nil {
		return err
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("node names are lower case (a certificate's name is lower-cased); write %q", strings.ToLower(s))
		case !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '*'):
			return fmt.Errorf("a peer pattern may hold only lower-case letters, digits, '-', '.' and '*'")
		}
	}
	if !strings.Contains(s, "*") {
		if err := host.CheckName(s); err != nil {
			return fmt.Errorf("no node can have this name: %v", err)
		}
	}
	return nil
}

// checkRoutePattern returns nil if s is a glob that can match route names:
// VERB_NOUN with the noun's '/' as '_', such as get_time_utc.
func checkRoutePattern(s string) error {
	if err := checkPattern(s); err != nil {
		return err
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*') {
			return fmt.Errorf("a route pattern may hold only letters, digits, '-', '_' and '*' (a noun's '/' is '_' in its route name: time/utc is get_time_utc)")
		}
	}
	pre, _, star := strings.Cut(s, "*")
	for _, v := range host.Verbs {
		vp := v + "_"
		if strings.HasPrefix(pre, vp) && (star || len(pre) > len(vp)) || star && strings.HasPrefix(vp, pre) {
			return nil
		}
	}
	if strings.HasPrefix(strings.ToLower(pre), "head_") {
		return fmt.Errorf("HEAD arrives as get: write get_%s", s[len("head_"):])
	}
	return fmt.Errorf("no route has this name: a route is VERB_NOUN, its verb one of %s, such as get_time or put_files; write get_%s for GET of %s", strings.Join(host.Verbs, ", "), s, s)
}

// checkPattern checks what every pattern must be.
func checkPattern(s string) error {
	switch {
	case s == "":
		return errors.New("an empty pattern matches nothing")
	case len(s) > MaxPatternLen:
		return fmt.Errorf("a pattern is at most %d bytes", MaxPatternLen)
	}
	return nil
}

// parseRate parses "N/UNIT": N events (a positive number) per UNIT, which
// is s, m, h or a Go duration such as 100ms or 10s. It returns the rate
// and N.
func parseRate(s string) (rate.Limit, float64, error) {
	const want = `want N/UNIT, N events per UNIT (s, m, h, or a duration such as 100ms or 10s): "200/s", "10/m", "5/100ms"`
	ns, us, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, 0, errors.New(want)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(ns), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, 0, fmt.Errorf("%q is not a number; %s", ns, want)
	}
	if n <= 0 {
		return 0, 0, errors.New("the rate must be above 0 (to refuse a peer, leave it out of the allow blocks)")
	}
	us = strings.TrimSpace(us)
	var per time.Duration
	switch us {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(us); err != nil || per <= 0 {
			return 0, 0, fmt.Errorf("%q is not a unit; %s", us, want)
		}
	}
	r := n / per.Seconds()
	if r > MaxRate {
		return 0, 0, fmt.Errorf("%g events per second is over the limit, %g", r, float64(MaxRate))
	}
	return rate.Limit(r), n, nil
}

// typeName describes a value's type for a message.
func typeName(v cty.Value) string {
	if v.IsNull() {
		return "null"
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return "a string"
	case t == cty.Number:
		return "a number"
	case t == cty.Bool:
		return "a bool"
	case t.IsTupleType() || t.IsListType() || t.IsSetType():
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
	slices.SortFunc(as, func(x, y *hclsyntax.Attribute) int { return x.SrcRange.Start.Byte - y.SrcRange.Start.Byte })
	return as
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// closest returns the candidate nearest to s by edit distance, or "" when
// none is near enough to be a likely typo (at most a third of s's length,
// at least 1, at most 3 edits).
func closest(s string, candidates []string) string {
	best, bestD := "", max(1, min(3, len(s)/3))+1
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the number of single-character insertions, deletions,
// substitutions and swaps of neighbours that make a into b (the optimal
// string alignment distance: "brust" is one edit from "burst"), or 4 for
// strings whose lengths differ by more than 3: farther than closest ever
// looks.
func editDistance(a, b string) int {
	if len(a) > len(b)+3 || len(b) > len(a)+3 {
		return 4 // more than closest ever accepts
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
