package gateway

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/restpipe/restpipe/host"
)

// Target kinds: where a path sends its event.
const (
	toLocal  = "local"  // /local/...: this node's own handlers
	toServer = "server" // /server/...: the server, from a client node
	toClient = "client" // /client/<name>/...: a client, from the server
)

// target is a parsed event path.
type target struct {
	kind string   // toLocal, toServer or toClient
	peer string   // the client's name, for toClient
	noun string   // '/'-separated segments
	args []string // percent-decoded, after the first "//"
}

// errPath is the cause of every path the grammar refuses.
var errPath = errors.New("malformed path")

// parsePath parses an escaped request path (r.URL.EscapedPath()):
//
//	/local/<noun>[//<arg>[/<arg>...]]
//	/server/<noun>[//<arg>...]
//	/client/<name>/<noun>[//<arg>...]
//
// <noun> is one or more '/'-separated segments (see host.CheckNoun); one
// trailing '/' after it is ignored. Arguments follow the first "//": the
// rest is split on '/' and each piece is percent-decoded after splitting,
// so "%2F" can sit inside an argument.
func parsePath(escaped string) (target, error) {
	var t target
	rest, ok := strings.CutPrefix(escaped, "/")
	if !ok {
		return t, fmt.Errorf("%w: %q does not start with /", errPath, escaped)
	}
	kind, rest, _ := strings.Cut(rest, "/")
	switch kind {
	case toLocal, toServer:
	case toClient:
		var name string
		name, rest, _ = strings.Cut(rest, "/")
		n, err := url.PathUnescape(name)
		if err != nil {
			return t, fmt.Errorf("%w: client name %q: %v", errPath, name, err)
		}
		n = strings.ToLower(n)
		if err := host.CheckName(n); err != nil {
			return t, fmt.Errorf("%w: %v", errPath, err)
		}
		t.peer = n
	default:
		return t, fmt.Errorf("%w: %q: want /local/, /server/ or /client/<name>/ followed by a noun", errPath, escaped)
	}
	t.kind = kind

	if strings.HasPrefix(rest, "/") {
		return t, fmt.Errorf("%w: %q: empty noun", errPath, escaped)
	}
	nounPart, argPart, hasArgs := strings.Cut(rest, "//")
	if !hasArgs {
		nounPart = strings.TrimSuffix(nounPart, "/")
	}
	segs := strings.Split(nounPart, "/")
	for i, s := range segs {
		d, err := url.PathUnescape(s)
		if err != nil {
			return t, fmt.Errorf("%w: noun segment %q: %v", errPath, s, err)
		}
		if strings.Contains(d, "/") {
			return t, fmt.Errorf("%w: noun segment %q may hold only letters, digits, '-' and '_'", errPath, s)
		}
		segs[i] = d
	}
	t.noun = strings.Join(segs, "/")
	if err := host.CheckNoun(t.noun); err != nil {
		return t, fmt.Errorf("%w: %v", errPath, err)
	}
	if hasArgs {
		raw := strings.Split(argPart, "/")
		t.args = make([]string, len(raw))
		for i, a := range raw {
			d, err := url.PathUnescape(a)
			if err != nil {
				return t, fmt.Errorf("%w: argument %q: %v", errPath, a, err)
			}
			if !utf8.ValidString(d) {
				return t, fmt.Errorf("%w: argument %q is not UTF-8 once decoded", errPath, a)
			}
			t.args[i] = d
		}
	}
	return t, nil
}
