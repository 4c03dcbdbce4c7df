// Package static serves files: from a directory with sendfile(2), so file
// bytes never pass through user space, or from an fs.FS (the embedded
// sample site) from memory.
//
// Paths are decoded and checked before any file is opened: a request that
// names anything outside the root (dot-dot segments, encoded slashes, NUL,
// symbolic links that lead out) gets 404 or 403, never the file. The
// directory case leans on os.Root, which refuses to resolve a name to
// anything outside its directory, symbolic links included.
package static

import (
	"errors"
	"io"
	"io/fs"
	"mime"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// errBadPath is a request path that cannot name a file under the root.
var errBadPath = errors.New("quartet: static: path escapes the root or is malformed")

// cleanPath decodes a request path and returns the slash-separated name
// relative to the root ("." for the root itself), and whether it ended in
// a slash.
func cleanPath(raw []byte) (name string, dir bool, err error) {
	if len(raw) == 0 || raw[0] != '/' {
		return "", false, errBadPath
	}
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) {
				return "", false, errBadPath
			}
			h, ok1 := unhex(raw[i+1])
			l, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return "", false, errBadPath
			}
			c = h<<4 | l
			// An encoded slash or backslash would let a name cross a
			// directory boundary that the raw path does not show.
			if c == '/' || c == '\\' {
				return "", false, errBadPath
			}
			i += 2
		}
		if c == 0 {
			return "", false, errBadPath
		}
		b.WriteByte(c)
	}
	p := b.String()
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return "", false, errBadPath
		}
	}
	dir = strings.HasSuffix(p, "/")
	name = strings.TrimPrefix(path.Clean(p), "/")
	if name == "" {
		name = "."
	}
	return name, dir, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func contentType(name string) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// Dir serves the directory root with sendfile.
type Dir struct {
	root *os.Root
}

// NewDir opens root. Close releases it.
func NewDir(root string) (*Dir, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	return &Dir{root: r}, nil
}

// open opens name under the root without blocking: open(2) of a FIFO for
// reading waits for a writer, which would hold a processor (and a graceful
// shutdown) forever. O_NONBLOCK changes nothing for regular files, the only
// ones served; anything else is refused after Stat.
func (d *Dir) open(name string) (*os.File, error) {
	return d.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// Close releases the root directory.
func (d *Dir) Close() error { return d.root.Close() }

// closeOnRecycle closes a file when its response is recycled; the pointer
// conversion costs no allocation.
type closeOnRecycle os.File

func (c *closeOnRecycle) Cleanup() { (*os.File)(c).Close() }

// ServeQuartet serves one file.
func (d *Dir) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	if !r.IsMethod("GET") && !r.IsMethod("HEAD") {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(405)
		return
	}
	name, dir, err := cleanPath(r.Path)
	if err != nil {
		notFound(w)
		return
	}
	f, err := d.open(name)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			w.WriteHeader(403)
			return
		}
		notFound(w) // missing, or outside the root (os.Root says so)
		return
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		w.WriteHeader(500)
		return
	}
	if st.IsDir() {
		f.Close()
		if !dir {
			redirectSlash(w, r)
			return
		}
		if f, err = d.open(path.Join(name, "index.html")); err != nil {
			notFound(w)
			return
		}
		if st, err = f.Stat(); err != nil || !st.Mode().IsRegular() {
			f.Close()
			notFound(w)
			return
		}
		name = path.Join(name, "index.html")
	} else if dir || !st.Mode().IsRegular() {
		// A file named with a trailing slash is not found, as open(2)
		// says (ENOTDIR): relative links in it would resolve wrongly.
		f.Close()
		notFound(w)
		return
	}
	w.OnRecycle((*closeOnRecycle)(f))
	w.Header().Set("Content-Type", contentType(name))
	w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	w.Header().Set("Last-Modified", st.ModTime().UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"))
	w.SendFile(f, 0, st.Size())
}

func notFound(w *processor.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(404)
	w.WriteString("404 page not found\n")
}

// redirectSlash sends a directory named without its trailing slash to the
// name with one. Leading slashes collapse to one: "//host" as a Location
// is a scheme-relative URL, a redirect to another site.
func redirectSlash(w *processor.ResponseWriter, r *stages.Request) {
	loc := "/" + strings.TrimLeft(string(r.Path), "/") + "/"
	if r.Query != nil {
		loc += "?" + string(r.Query)
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(301)
}

// FS serves an fs.FS from memory: every regular file is read once at
// construction (the embedded sample site is small).
type FS struct {
	files map[string][]byte
	dirs  map[string]bool
}

// NewFS reads fsys.
func NewFS(fsys fs.FS) (*FS, error) {
	s := &FS{files: map[string][]byte{}, dirs: map[string]bool{".": true}}
	err := fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			s.dirs[p] = true
			return nil
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		s.files[p] = b
		return nil
	})
	return s, err
}

// ServeQuartet serves one file from memory.
func (s *FS) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	if !r.IsMethod("GET") && !r.IsMethod("HEAD") {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(405)
		return
	}
	name, dir, err := cleanPath(r.Path)
	if err != nil {
		notFound(w)
		return
	}
	if s.dirs[name] {
		if !dir {
			redirectSlash(w, r)
			return
		}
		name = path.Join(name, "index.html")
	} else if dir {
		notFound(w) // a file named as a directory, as in Dir
		return
	}
	b, ok := s.files[name]
	if !ok {
		notFound(w)
		return
	}
	w.Header().Set("Content-Type", contentType(name))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}
