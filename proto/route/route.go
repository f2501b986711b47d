// Package route is the grammar of restpipe's routes, the one definition
// the node (package host) and the plugin SDK both use: the verbs an event
// may have, what a noun may hold, and RestPipe's route names.
package route

import (
	"fmt"
	"strings"
)

// Verbs are the event verbs, the lower-case HTTP methods a gateway
// accepts. HEAD is delivered as "get" and its reply body dropped. Callers
// must not modify the slice.
var Verbs = []string{"get", "post", "put", "patch", "delete"}

// Name returns RestPipe's route name for a verb and a noun: the verb, an
// underscore, and the noun with '/' turned into '_' ("get", "time/utc"
// gives "get_time_utc").
func Name(verb, noun string) string {
	return verb + "_" + strings.ReplaceAll(noun, "/", "_")
}

// CheckVerb returns nil if verb is one of Verbs.
func CheckVerb(verb string) error {
	for _, v := range Verbs {
		if v == verb {
			return nil
		}
	}
	return fmt.Errorf("verb %q is not one of %s", verb, strings.Join(Verbs, ", "))
}

// CheckNoun returns nil if noun is one or more '/'-separated segments,
// each made of ASCII letters, digits, '-' and '_'.
func CheckNoun(noun string) error {
	if noun == "" {
		return fmt.Errorf("empty noun")
	}
	for _, seg := range strings.Split(noun, "/") {
		if seg == "" {
			return fmt.Errorf("noun %q has an empty segment", noun)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("noun %q: segment %q may hold only letters, digits, '-' and '_'", noun, seg)
			}
		}
	}
	return nil
}
