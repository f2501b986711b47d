package plugins

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
)

// stderrGuard passes a plugin's standard error on to go-plugin line by
// line, defusing the JSON lines go-plugin (v1.8) would crash the node on:
// it reads every JSON object line as an hclog entry and asserts that its
// "@message", "@level" and "@timestamp" are strings, so a plugin writing
// {"@message": 1} to its standard error would panic the node's goroutine
// that logs it. Such a line is prefixed to make it plain text, which
// go-plugin logs as it is. Every other byte passes unchanged.
type stderrGuard struct {
	src io.ReadCloser
	br  *bufio.Reader
	out []byte // what is left to hand out of the current line
}

// guardLine bounds the lines the guard looks at; go-plugin reads longer
// ones in pieces and never as JSON.
const guardLine = 64 << 10

func newStderrGuard(src io.ReadCloser) *stderrGuard {
	return &stderrGuard{src: src, br: bufio.NewReaderSize(src, guardLine)}
}

func (g *stderrGuard) Read(p []byte) (int, error) {
	if len(g.out) == 0 {
		line, err := g.br.ReadSlice('\n')
		if len(line) == 0 {
			return 0, err
		}
		if err == nil || err == io.EOF {
			line = defuse(line)
		}
		g.out = append(g.out[:0], line...)
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	return n, nil
}

func (g *stderrGuard) Close() error { return g.src.Close() }

// defuse returns line, prefixed if go-plugin would take it for an hclog
// entry whose message, level or timestamp is not a string.
func defuse(line []byte) []byte {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 || trimmed[0] != '{' || !bytes.Contains(trimmed, []byte(`"@`)) {
		return line
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(trimmed, &m) != nil {
		return line
	}
	for _, k := range []string{"@message", "@level", "@timestamp"} {
		if v, ok := m[k]; ok && (len(v) == 0 || v[0] != '"') {
			return append([]byte("(not an hclog line) "), line...)
		}
	}
	return line
}
