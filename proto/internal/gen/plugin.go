package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// plugins are the code generators run on every request, as "go tool <name>".
// Each decides for itself which files it writes: protoc-gen-go-grpc writes
// nothing for a .proto file without services.
var plugins = []string{
	"protoc-gen-go",
	"protoc-gen-go-grpc",
}

// generatedFile is one file a plugin asked to be written.
type generatedFile struct {
	// Name is slash-separated and relative to the output directory.
	Name    string
	Content []byte
}

// generate runs every plugin on req and returns all the files they produced,
// sorted by name. It fails if any plugin fails or two plugins claim the same
// file.
func generate(ctx context.Context, modRoot string, req *pluginpb.CodeGeneratorRequest) ([]generatedFile, error) {
	in, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode CodeGeneratorRequest: %w", err)
	}
	var files []generatedFile
	owner := make(map[string]string) // file name -> plugin
	for _, name := range plugins {
		resp, err := runPlugin(ctx, modRoot, name, in)
		if err != nil {
			return nil, err
		}
		if err := checkFeatures(name, req, resp); err != nil {
			return nil, err
		}
		for _, f := range resp.GetFile() {
			if f.GetInsertionPoint() != "" {
				return nil, fmt.Errorf("%s: file %s: insertion points are not supported", name, f.GetName())
			}
			if f.GetName() == "" {
				return nil, fmt.Errorf("%s: returned a file with no name", name)
			}
			if prev, ok := owner[f.GetName()]; ok {
				return nil, fmt.Errorf("%s and %s both generate %s", prev, name, f.GetName())
			}
			owner[f.GetName()] = name
			files = append(files, generatedFile{Name: f.GetName(), Content: []byte(f.GetContent())})
		}
	}
	slices.SortFunc(files, func(a, b generatedFile) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

// runPlugin runs "go tool <name>" in the module root with the encoded request
// on its stdin and decodes the response from its stdout. A plugin that exits
// with an error, or reports one in the response's error field, fails the run.
func runPlugin(ctx context.Context, modRoot, name string, req []byte) (*pluginpb.CodeGeneratorResponse, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "tool", name)
	cmd.Dir = modRoot
	cmd.Stdin = bytes.NewReader(req)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("run go tool %s: %w", name, err)
		}
		return nil, fmt.Errorf("run go tool %s: %w:\n%s", name, err, msg)
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		log.Printf("%s: %s", name, msg)
	}

	resp := new(pluginpb.CodeGeneratorResponse)
	if err := proto.Unmarshal(stdout.Bytes(), resp); err != nil {
		return nil, fmt.Errorf("decode CodeGeneratorResponse from %s: %w", name, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s failed: %s", name, resp.GetError())
	}
	return resp, nil
}

// checkFeatures refuses, as protoc does, output from a plugin that did not
// declare support for a feature the files to generate use: proto3 optional
// fields, or editions outside the range the plugin handles.
func checkFeatures(name string, req *pluginpb.CodeGeneratorRequest, resp *pluginpb.CodeGeneratorResponse) error {
	supported := resp.GetSupportedFeatures()
	generate := make(map[string]bool, len(req.GetFileToGenerate()))
	for _, f := range req.GetFileToGenerate() {
		generate[f] = true
	}
	var errs []error
	for _, fd := range req.GetProtoFile() {
		if !generate[fd.GetName()] {
			continue
		}
		if fd.GetSyntax() == "editions" {
			ed := fd.GetEdition()
			if supported&uint64(pluginpb.CodeGeneratorResponse_FEATURE_SUPPORTS_EDITIONS) == 0 {
				errs = append(errs, fmt.Errorf("%s: %s uses editions, which %s does not support", fd.GetName(), ed, name))
			} else if int32(ed) < resp.GetMinimumEdition() || int32(ed) > resp.GetMaximumEdition() {
				errs = append(errs, fmt.Errorf("%s: %s is outside the editions %s supports (%s to %s)", fd.GetName(), ed, name,
					descriptorpb.Edition(resp.GetMinimumEdition()), descriptorpb.Edition(resp.GetMaximumEdition())))
			}
		}
		if supported&uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL) == 0 && hasProto3Optional(fd.GetMessageType()) {
			errs = append(errs, fmt.Errorf("%s: uses proto3 optional fields, which %s does not support", fd.GetName(), name))
		}
	}
	return errors.Join(errs...)
}

// hasProto3Optional reports whether any of the messages, or the messages
// nested in them, has a proto3 optional field.
func hasProto3Optional(msgs []*descriptorpb.DescriptorProto) bool {
	for _, m := range msgs {
		for _, f := range m.GetField() {
			if f.GetProto3Optional() {
				return true
			}
		}
		if hasProto3Optional(m.GetNestedType()) {
			return true
		}
	}
	return false
}

// writeFiles writes files under out, creating directories as needed and
// leaving files whose content is already right untouched. It checks every
// name before writing anything, so a bad name writes nothing.
func writeFiles(out string, files []generatedFile) error {
	for _, f := range files {
		if !filepath.IsLocal(filepath.FromSlash(f.Name)) {
			return fmt.Errorf("refusing to write %q: not a path inside the output directory", f.Name)
		}
	}
	for _, f := range files {
		path := filepath.Join(out, filepath.FromSlash(f.Name))
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.Content) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", f.Name, err)
		}
		if err := os.WriteFile(path, f.Content, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.Name, err)
		}
	}
	return nil
}
