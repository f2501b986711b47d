package policy

import "strings"

// glob is a compiled pattern in which '*' matches any run of characters,
// the empty run included, and every other character matches itself. It is
// compiled once, when the file is read, into the literal parts between the
// stars, so that matching never allocates and takes time linear in the
// length of the name for the common shapes (a literal, a prefix, a suffix,
// "*"), and at most the name's length times the number of stars otherwise.
type glob struct {
	src string // as written, for messages and Status
	// parts are the literals between the stars: parts[0] before the first
	// star, parts[len-1] after the last. A pattern without a star has one
	// part; "*" has two empty ones.
	parts []string
	// any is true for a pattern made only of stars: it matches anything.
	any bool
}

// compileGlob compiles pattern. It never fails: checking which characters
// a pattern may hold is the parser's business.
func compileGlob(pattern string) glob {
	g := glob{src: pattern, parts: strings.Split(pattern, "*")}
	g.any = strings.Trim(pattern, "*") == "" && pattern != ""
	return g
}

// literal reports whether the pattern has no star.
func (g *glob) literal() bool { return len(g.parts) == 1 }

// match reports whether name matches the pattern as a whole.
func (g *glob) match(name string) bool {
	if g.any {
		return true
	}
	if len(g.parts) == 1 {
		return name == g.parts[0]
	}
	first, last := g.parts[0], g.parts[len(g.parts)-1]
	if len(name) < len(first)+len(last) || !strings.HasPrefix(name, first) || !strings.HasSuffix(name, last) {
		return false
	}
	// The middle parts, leftmost first, in what lies between the prefix
	// and the suffix: with '*' the only wildcard, the leftmost match of
	// each part is never worse than a later one.
	rest := name[len(first) : len(name)-len(last)]
	for _, p := range g.parts[1 : len(g.parts)-1] {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return true
}

// globs is a list of patterns, matching a name when any of them does.
type globs []glob

func (gs globs) match(name string) bool {
	for i := range gs {
		if gs[i].match(name) {
			return true
		}
	}
	return false
}

// sources returns the patterns as written.
func (gs globs) sources() []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = g.src
	}
	return out
}
