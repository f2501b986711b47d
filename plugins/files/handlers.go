package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	pluginsdk "github.com/restpipe/restpipe/plugin-sdk"
)

// Return codes, named after the errno each stands for.
const (
	codeNotFound = 2  // ENOENT
	codeDenied   = 13 // EACCES
	codeNotDir   = 20 // ENOTDIR
	codeIsDir    = 21 // EISDIR
)

// get streams a file or lists a directory.
func (s *server) get(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
	name, refused := relPath(ev.Args)
	if refused != nil {
		return refused, nil
	}
	// Stat first: opening a named pipe would block.
	fi, err := s.root.Stat(name)
	switch {
	case err != nil:
		return s.replyFor(name, err)
	case fi.IsDir():
		return s.list(name)
	case !fi.Mode().IsRegular():
		return fail(403, codeDenied, "%s is not a regular file", name), nil
	}
	f, err := s.root.Open(name)
	if err != nil {
		return s.replyFor(name, err)
	}
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err != nil {
			return nil, err
		}
		return fail(409, codeIsDir, "%s changed while it was being opened", name), nil
	}
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	// A file that grows while it is sent is sent as it was when opened.
	body := struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, fi.Size()), f}
	return pluginsdk.Stream(ctype, body, fi.Size()), nil
}

// listing is the reply to GET of a directory.
type listing struct {
	Path    string  `json:"path"`
	Entries []entry `json:"entries"`
}

type entry struct {
	Name     string `json:"name"`
	Dir      bool   `json:"dir"`
	Size     int64  `json:"size"`
	Modified string `json:"modified"`
}

// list answers with the entries of directory name, sorted by name.
func (s *server) list(name string) (*pluginsdk.Reply, error) {
	d, err := s.root.Open(name)
	if err != nil {
		return s.replyFor(name, err)
	}
	defer d.Close()
	des, err := d.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	l := listing{Path: name, Entries: make([]entry, 0, len(des))}
	for _, de := range des {
		// Describe a link by its target when that is inside the root.
		fi, err := s.root.Stat(path.Join(name, de.Name()))
		if err != nil {
			if fi, err = de.Info(); err != nil {
				continue // removed meanwhile
			}
		}
		e := entry{Name: de.Name(), Dir: fi.IsDir(), Modified: fi.ModTime().UTC().Format(time.RFC3339Nano)}
		if !e.Dir {
			e.Size = fi.Size()
		}
		l.Entries = append(l.Entries, e)
	}
	slices.SortFunc(l.Entries, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	return pluginsdk.JSON(l), nil
}

// put stores the request body as a file, atomically.
func (s *server) put(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
	if s.readOnly {
		return fail(403, codeDenied, "the file server is read-only"), nil
	}
	name, refused := relPath(ev.Args)
	if refused != nil {
		return refused, nil
	}
	old, err := s.root.Stat(name)
	switch {
	case err == nil && old.IsDir():
		return fail(409, codeIsDir, "%s is a directory", name), nil
	case err == nil, errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, syscall.ENOTDIR):
		return fail(409, codeNotDir, "a parent of %s is a file", name), nil
	default:
		return s.replyFor(name, err)
	}
	dir := path.Dir(name)
	if err := s.root.MkdirAll(dir, 0o755); err != nil {
		if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
			return fail(409, codeNotDir, "a parent of %s is a file", name), nil
		}
		return s.replyFor(name, err)
	}
	tmp := path.Join(dir, ".restpipe-"+rand.Text()+".tmp")
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return s.replyFor(name, err)
	}
	n, err := io.Copy(f, ev.Body)
	if err == nil && old != nil {
		err = f.Chmod(old.Mode().Perm())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, name)
	}
	if err != nil {
		s.root.Remove(tmp)
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	// Make the rename itself durable. Not every system can sync a
	// directory; the file is in place either way.
	if d, err := s.root.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	status := 201
	if old != nil {
		status = 200
	}
	return pluginsdk.JSON(map[string]any{"path": name, "size": n}).WithStatus(status), nil
}

// delete removes a file.
func (s *server) delete(_ context.Context, ev *pluginsdk.Event) (*pluginsdk.Reply, error) {
	if s.readOnly {
		return fail(403, codeDenied, "the file server is read-only"), nil
	}
	name, refused := relPath(ev.Args)
	if refused != nil {
		return refused, nil
	}
	fi, err := s.root.Stat(name)
	switch {
	case err != nil:
		return s.replyFor(name, err)
	case fi.IsDir():
		return fail(409, codeIsDir, "%s is a directory; only files can be deleted", name), nil
	}
	if err := s.root.Remove(name); err != nil {
		return s.replyFor(name, err)
	}
	return pluginsdk.JSON(map[string]string{"deleted": name}), nil
}

// relPath joins args into a path relative to the root, dropping empty and
// "." segments: "." is the root itself. A path it refuses comes back as
// the reply saying why.
func relPath(args []string) (string, *pluginsdk.Reply) {
	p := strings.Join(args, "/")
	switch {
	case strings.HasPrefix(p, "/"):
		return "", fail(403, codeDenied, "%q is an absolute path; paths are relative to the served directory", p)
	case strings.ContainsRune(p, 0):
		return "", fail(403, codeDenied, "%q holds a NUL byte", p)
	}
	segs := strings.Split(p, "/")
	segs = slices.DeleteFunc(segs, func(s string) bool { return s == "" || s == "." })
	if slices.Contains(segs, "..") {
		return "", fail(403, codeDenied, "%q has a \"..\" segment; paths may not climb", p)
	}
	if len(segs) == 0 {
		return ".", nil
	}
	return strings.Join(segs, "/"), nil
}

// replyFor returns the reply to a file system error the caller caused, or
// err itself, to fail the event, when it is not the caller's doing.
func (s *server) replyFor(name string, err error) (*pluginsdk.Reply, error) {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fail(404, codeNotFound, "%s does not exist", name), nil
	case s.errEscapes != nil && errors.Is(err, s.errEscapes):
		return fail(403, codeDenied, "%s leads outside the served directory", name), nil
	case errors.Is(err, fs.ErrPermission):
		return fail(403, codeDenied, "%s: permission denied", name), nil
	case errors.Is(err, syscall.EISDIR):
		return fail(409, codeIsDir, "%s is a directory", name), nil
	}
	return nil, err
}

// fail is a refusal: {"error": sentence} with an HTTP status and a return
// code.
func fail(status, code int, format string, args ...any) *pluginsdk.Reply {
	return pluginsdk.JSON(map[string]string{"error": fmt.Sprintf(format, args...)}).WithStatus(status).WithCode(code)
}
