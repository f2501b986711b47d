package configfile

import (
	"cmp"
	"flag"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

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
