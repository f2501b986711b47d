// Gen generates restpipe's Go protobuf code without protoc: a hermetic
// stand-in for "protoc --go_out=. --go-grpc_out=." that needs nothing but
// the Go toolchain.
//
// It finds every .proto file under the proto source directory, compiles them
// in-process with github.com/bufbuild/protocompile (the standard
// google/protobuf/*.proto imports are built in, and source info is kept so
// that comments reach the generated code), and hands one CodeGeneratorRequest
// to each code generator plugin exactly as protoc would: protoc-gen-go and
// protoc-gen-go-grpc, run as "go tool <plugin>" so that their versions are the
// ones pinned by the tool directives in go.mod. Both run with
// paths=source_relative, so link/v1/link.proto yields link/v1/link.pb.go in
// the output directory.
//
// Nothing is installed globally and nothing depends on the machine: the same
// sources and go.mod give byte-identical files. The request leaves the
// compiler version unset, so the generated headers read "protoc (unknown)"
// rather than claiming a protoc release that never ran.
//
// Usage, from the repository's root (proto/ is a module of its own, so
// that plugins importing its packages need nothing else of the daemon's):
//
//	go -C proto run ./internal/gen [-root dir] [-out dir]
//
// The -root flag names the directory whose .proto files are compiled, with
// import paths relative to it (default: the proto module's root). The -out
// flag names the directory the generated files are written to (default: the
// -root directory). Files are written only when every plugin succeeded.
// Generated files whose .proto source was removed are not deleted; the test in
// proto/ reports them.
//
// The -python flag names the directory the Python SDK's protobuf modules are
// written to (python.go). By default they go to
// ../plugin-sdk/python/restpipe_plugin/_proto from the module root when neither
// -root nor -out is given, and nowhere otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gen: ")

	root := flag.String("root", "", "`dir`ectory holding the .proto sources, the root of their import paths (default: the proto module's root)")
	out := flag.String("out", "", "`dir`ectory to write generated files to (default: the -root directory)")
	python := flag.String("python", "", "`dir`ectory to write the Python SDK's modules to (default: "+pythonDir+" when neither -root nor -out is given)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go -C proto run ./internal/gen [-root dir] [-out dir] [-python dir]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}

	cfg, err := newConfig(*root, *out)
	if err != nil {
		log.Fatal(err)
	}
	cfg.Python = *python
	if cfg.Python == "" && *root == "" && *out == "" {
		cfg.Python = filepath.Join(cfg.ModuleRoot, filepath.FromSlash(pythonDir))
	}
	if err := run(context.Background(), cfg); err != nil {
		log.Fatal(err)
	}
}

// config says where generation reads, writes and runs its plugins.
type config struct {
	// ModuleRoot is the directory holding go.mod. The plugins run there so
	// that "go tool" uses the versions pinned by its tool directives.
	ModuleRoot string
	// Root is the directory of the .proto sources; import paths and output
	// names are relative to it.
	Root string
	// Out is the directory generated files are written to.
	Out string
	// Python, when set, is the directory the Python SDK's modules are
	// written to.
	Python string
}

// newConfig fills in the defaults for the -root and -out flags, either of
// which may be empty, and checks the result.
func newConfig(root, out string) (config, error) {
	wd, err := os.Getwd()
	if err != nil {
		return config{}, err
	}
	modRoot, err := findModuleRoot(wd)
	if err != nil {
		return config{}, err
	}
	if root == "" {
		root = modRoot
	}
	if out == "" {
		out = root
	}
	cfg := config{ModuleRoot: modRoot, Root: root, Out: out}
	return cfg, cfg.Validate()
}

// Validate reports whether the source root is an existing directory. The
// output directory is created when needed.
func (c config) Validate() error {
	if c.ModuleRoot == "" || c.Root == "" || c.Out == "" {
		return errors.New("module root, source root and output directory must all be set")
	}
	fi, err := os.Stat(c.Root)
	if err != nil {
		return fmt.Errorf("proto source root: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("proto source root %s is not a directory", c.Root)
	}
	return nil
}

// findModuleRoot returns the nearest directory at or above dir that holds a
// go.mod file.
func findModuleRoot(dir string) (string, error) {
	for d := dir; ; {
		if fi, err := os.Stat(filepath.Join(d, "go.mod")); err == nil && !fi.IsDir() {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %s or any parent: run gen inside the restpipe module", dir)
		}
		d = parent
	}
}

// run compiles the sources, runs every plugin and, when all of them
// succeeded, writes their files.
func run(ctx context.Context, cfg config) error {
	names, err := findProtos(cfg.Root)
	if err != nil {
		return err
	}
	req, err := compile(ctx, cfg.Root, names)
	if err != nil {
		return err
	}
	files, err := generate(ctx, cfg.ModuleRoot, req)
	if err != nil {
		return err
	}
	var py []generatedFile
	if cfg.Python != "" {
		if py, err = generatePython(req); err != nil {
			return err
		}
	}
	if err := writeFiles(cfg.Out, files); err != nil {
		return err
	}
	if cfg.Python == "" {
		return nil
	}
	return writeFiles(cfg.Python, py)
}
