package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestPythonCodeUpToDate fails when the Python SDK's committed protobuf
// modules are not exactly what the generator makes from proto/ (and from
// the Go packages defining go-plugin's and gRPC's services), or when a
// module is committed that the generator does not make.
func TestPythonCodeUpToDate(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	modRoot, err := findModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	root := modRoot
	names, err := findProtos(root)
	if err != nil {
		t.Fatal(err)
	}
	req, err := compile(context.Background(), root, names)
	if err != nil {
		t.Fatal(err)
	}
	files, err := generatePython(req)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(modRoot, filepath.FromSlash(pythonDir))
	const regenerate = "regenerate with: go -C proto run ./internal/gen (from the repository root)"
	var want []string
	for _, f := range files {
		want = append(want, f.Name)
		got, err := os.ReadFile(filepath.Join(dir, f.Name))
		switch {
		case err != nil:
			t.Errorf("%s/%s: %v; %s", pythonDir, f.Name, err, regenerate)
		case !bytes.Equal(got, f.Content):
			t.Errorf("%s/%s is stale; %s", pythonDir, f.Name, regenerate)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".py") && !slices.Contains(want, e.Name()) {
			t.Errorf("%s/%s is not generated from anything: remove it", pythonDir, e.Name())
		}
	}
}

// TestPythonModulesCarryTheDescriptors reads the descriptor back out of
// each generated module's bytes literals and compares it with the file it
// was made from: the Python side loads exactly the messages the Go side
// speaks.
func TestPythonModulesCarryTheDescriptors(t *testing.T) {
	wd, _ := os.Getwd()
	modRoot, err := findModuleRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	req, err := compile(context.Background(), modRoot, []string{"plugin/v1/plugin.proto"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := generatePython(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.Name == "__init__.py" {
			continue
		}
		raw, err := parsePythonBytes(string(f.Content))
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		got := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(raw, got); err != nil {
			t.Fatalf("%s: decode its descriptor: %v", f.Name, err)
		}
		var want *descriptorpb.FileDescriptorProto
		for _, m := range pythonModules {
			if m.module+".py" != f.Name {
				continue
			}
			if m.fromTree {
				for _, fd := range req.GetProtoFile() {
					if fd.GetName() == m.proto {
						want = proto.Clone(fd).(*descriptorpb.FileDescriptorProto)
					}
				}
			} else {
				d, err := protoregistry.GlobalFiles.FindFileByPath(m.proto)
				if err != nil {
					t.Fatal(err)
				}
				want = protodesc.ToFileDescriptorProto(d)
			}
		}
		if want == nil {
			t.Fatalf("%s: no module entry", f.Name)
		}
		want.SourceCodeInfo = nil
		stripJSONNames(want.GetMessageType())
		if !proto.Equal(got, want) {
			t.Errorf("%s carries a descriptor that differs from %s", f.Name, want.GetName())
		}
		if len(got.GetMessageType()) == 0 && len(got.GetService()) == 0 {
			t.Errorf("%s carries no message and no service", f.Name)
		}
	}
}

// parsePythonBytes returns the bytes of the adjacent b'...' literals in
// the call to AddSerializedFile of a generated module.
func parsePythonBytes(src string) ([]byte, error) {
	i := strings.Index(src, "AddSerializedFile(")
	if i < 0 {
		return nil, errors.New("no AddSerializedFile call")
	}
	src = src[i:]
	end := strings.Index(src, "\n)\n")
	if end < 0 {
		return nil, errors.New("AddSerializedFile call not closed")
	}
	var out []byte
	for _, line := range strings.Split(src[:end], "\n")[1:] {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "b'") || !strings.HasSuffix(line, "'") {
			return nil, fmt.Errorf("not a bytes literal: %q", line)
		}
		lit := line[2 : len(line)-1]
		for j := 0; j < len(lit); j++ {
			c := lit[j]
			if c != '\\' {
				out = append(out, c)
				continue
			}
			j++
			switch {
			case j < len(lit) && (lit[j] == '\\' || lit[j] == '\''):
				out = append(out, lit[j])
			case j+2 < len(lit) && lit[j] == 'x':
				n, err := strconv.ParseUint(lit[j+1:j+3], 16, 8)
				if err != nil {
					return nil, fmt.Errorf("bad escape in %q: %w", line, err)
				}
				out = append(out, byte(n))
				j += 2
			default:
				return nil, fmt.Errorf("bad escape in %q", line)
			}
		}
	}
	return out, nil
}

// TestPythonBytes checks the rendering of descriptors as Python literals.
func TestPythonBytes(t *testing.T) {
	got := strings.Join(pythonBytes([]byte("a'\\\x00\x7f\nz"), 12), "|")
	if want := `b'a\'\\\x00'|b'\x7f\x0az'`; got != want {
		t.Errorf("pythonBytes = %s, want %s", got, want)
	}
}
