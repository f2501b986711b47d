package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"github.com/bufbuild/protocompile/reporter"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// pluginParameter is passed to every plugin: output names follow the .proto
// file's path, not its go_package.
const pluginParameter = "paths=source_relative"

// findProtos returns the import paths (slash-separated, relative to root,
// sorted) of every .proto file under root. Like the go command, it skips
// testdata directories and those whose names start with "." or "_".
func findProtos(root string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || filepath.Ext(path) != ".proto" {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find .proto files: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no .proto files under %s", root)
	}
	slices.Sort(names)
	return names, nil
}

// skipDir reports whether a directory of this name is left out of the
// search for .proto files.
func skipDir(name string) bool {
	return name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// compile parses and links the named files, resolving imports against root
// and the standard google/protobuf/*.proto files, and returns the request a
// plugin expects from protoc. Every error in the sources is reported, each
// with its position.
func compile(ctx context.Context, root string, names []string) (*pluginpb.CodeGeneratorRequest, error) {
	var (
		mu   sync.Mutex
		errs []error
	)
	comp := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{root},
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
		Reporter: reporter.NewReporter(
			func(err reporter.ErrorWithPos) error {
				mu.Lock()
				defer mu.Unlock()
				errs = append(errs, err)
				return nil // Keep going to report every error.
			},
			func(err reporter.ErrorWithPos) {
				log.Printf("warning: %v", err)
			},
		),
	}
	files, err := comp.Compile(ctx, names...)
	if err != nil {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) == 0 {
			return nil, fmt.Errorf("compile: %w", err)
		}
		// Files compile concurrently; sort so the report is stable.
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return nil, fmt.Errorf("compile %s:\n%w", root, errors.Join(errs...))
	}

	protos, err := dependencyOrder(files)
	if err != nil {
		return nil, err
	}
	return &pluginpb.CodeGeneratorRequest{
		FileToGenerate: names,
		Parameter:      proto.String(pluginParameter),
		ProtoFile:      protos,
		// CompilerVersion stays unset: this is not protoc, and the plugins
		// print "(unknown)" for it.
	}, nil
}

// dependencyOrder returns the descriptors of files and everything they import,
// each file after all of its imports, as CodeGeneratorRequest.ProtoFile must
// be. The order depends only on the files, so the request is deterministic.
func dependencyOrder(files linker.Files) ([]*descriptorpb.FileDescriptorProto, error) {
	compiled := make(map[string]linker.Result, len(files))
	for _, f := range files {
		r, ok := f.(linker.Result)
		if !ok {
			return nil, fmt.Errorf("compile %s: got no descriptor built from source", f.Path())
		}
		compiled[f.Path()] = r
	}

	var (
		order []*descriptorpb.FileDescriptorProto
		seen  = make(map[string]bool)
		visit func(fd protoreflect.FileDescriptor)
	)
	visit = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			visit(imports.Get(i).FileDescriptor)
		}
		if r, ok := compiled[fd.Path()]; ok {
			// Built from our source, with source info (comments).
			order = append(order, r.FileDescriptorProto())
			return
		}
		// A standard import, built into the Go protobuf module.
		order = append(order, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range files {
		visit(f)
	}
	return order, nil
}
