// Command files is restpipe's file server plugin, RestPipe's use case: a web
// server reads files from a file server that allows no inbound connections.
// The file server runs a client node with this plugin, the web server asks
// through the server node:
//
//	GET    /client/fs1/files//docs/a.txt   the file, streamed, typed by its extension
//	GET    /client/fs1/files//docs         a JSON listing of the directory
//	PUT    /client/fs1/files//docs/a.txt   store the request body as the file
//	DELETE /client/fs1/files//docs/a.txt   remove the file
//
// The path is the event's arguments joined with "/", so //docs/a.txt and
// //docs%2Fa.txt name the same file, and no argument names the root.
//
// # Configuration
//
// The plugin serves the directory given by the node's plugin configuration
// for files, e.g. --plugin-config files.root=/srv/files. Settings:
//
//	root       the directory to serve: required, an absolute path
//	read_only  "true" refuses PUT and DELETE; default "false"
//
// A missing or wrong setting, or an unknown one, stops the plugin from
// serving and the node reports why.
//
// # Replies
//
// GET of a file streams it with its size, its content type from its
// extension (application/octet-stream when unknown). GET of a directory
// answers {"path": "docs", "entries": [{"name": "a.txt", "dir": false,
// "size": 5, "modified": "2026-01-02T15:04:05.123456789Z"}]}, sorted by
// name; size is 0 for a directory, and a symbolic link is described by
// what it points to when that is inside the root.
//
// PUT streams the body into a temporary file next to the target, syncs it
// and renames it into place, so a reader sees the old file or the new one,
// never part of one, and a failed upload leaves the old file as it was. It
// creates missing parent directories and keeps an existing file's
// permissions. It answers {"path": "docs/a.txt", "size": 5} with status 201
// when it created the file and 200 when it replaced one.
//
// DELETE removes a file (a symbolic link: the link itself) and answers
// {"deleted": "docs/a.txt"}, status 200. It does not remove directories.
//
// Every refusal is a reply with {"error": "<sentence>"}, an HTTP status and
// a return code named after the errno it stands for:
//
//	404, code 2   the path does not exist (ENOENT)
//	403, code 13  the path leads outside the root, or the plugin is
//	              read-only, or the file is not a regular file (EACCES)
//	409, code 20  PUT below something that is a file (ENOTDIR)
//	409, code 21  PUT or DELETE of a directory (EISDIR)
//
// Other failures (a full disk, a broken upload) fail the event.
//
// # Security
//
// Nothing outside the root can be read, written or removed. A path with a
// ".." segment (even one that would stay inside), an absolute path or a
// NUL byte is refused before it reaches the file system. Every access then
// goes through an os.Root, which refuses a path that leaves the root by any
// means, including a symbolic link anywhere in it pointing outside (and any
// absolute link). Links that stay inside the root work.
//
// Build it and drop the binary into the node's plugins directory (--plugins):
//
//	go build -o /path/to/plugins/files ./plugins/files
package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

func main() { newPlugin().Serve() }

// newPlugin returns the plugin, to be configured by its node.
func newPlugin() *pluginsdk.Plugin {
	s := &server{}
	p := pluginsdk.New("files", "1.0.0")
	p.Configure(s.configure)
	p.Handle("get", "files", s.get)
	p.Handle("put", "files", s.put)
	p.Handle("delete", "files", s.delete)
	return p
}

// server serves the files under one root. Its fields are set once by
// configure, before any event.
type server struct {
	root     *os.Root // open for the life of the process
	readOnly bool
	// errEscapes is the error os.Root gives for a path that leaves it,
	// which package os does not export; configure learns it by asking
	// for "..".
	errEscapes error
}

// configure opens the root the node's configuration names.
func (s *server) configure(c pluginsdk.Config) error {
	for k := range c {
		if k != "root" && k != "read_only" {
			return fmt.Errorf("unknown setting %q: the settings are root and read_only", k)
		}
	}
	dir := c.Get("root", "")
	switch {
	case dir == "":
		return errors.New("root is not set: give the directory to serve, e.g. --plugin-config files.root=/srv/files")
	case !filepath.IsAbs(dir):
		return fmt.Errorf("root %q is not an absolute path", dir)
	}
	ro, err := strconv.ParseBool(c.Get("read_only", "false"))
	if err != nil {
		return fmt.Errorf("read_only %q is neither true nor false", c["read_only"])
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	var pe *fs.PathError
	if _, err := root.Stat(".."); errors.As(err, &pe) {
		s.errEscapes = pe.Err
	}
	s.root, s.readOnly = root, ro
	return nil
}
