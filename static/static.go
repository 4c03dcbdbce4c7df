// Package static serves files: from a directory with sendfile(2), so file
// bytes never pass through user space (but for files up to 32 KiB, which
// are kept in memory with their open file, within a budget: one write for
// head and body costs less than a head and a sendfile), or from an fs.FS
// (the embedded sample site) from memory.
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
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
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
			h, ok1 := stages.Unhex(raw[i+1])
			l, ok2 := stages.Unhex(raw[i+2])
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
	for rest := p; ; {
		seg, more, found := strings.Cut(rest, "/")
		if seg == ".." {
			return "", false, errBadPath
		}
		if !found {
			break
		}
		rest = more
	}
	dir = strings.HasSuffix(p, "/")
	name = strings.TrimPrefix(path.Clean(p), "/")
	if name == "" {
		name = "."
	}
	return name, dir, nil
}

// cleanKey is cleanPath's result as an open-file cache key (the name, and
// a slash after it for a directory) for a request path that is already in
// that form, as most are: a slash, then names that are neither empty, "."
// nor "..", with no escapes and no NUL, and perhaps a slash at the end.
// The key is raw's own bytes, so a hit costs no allocation. ok false:
// cleanPath must decide.
func cleanKey(raw []byte) (key []byte, ok bool) {
	if len(raw) < 2 || raw[0] != '/' {
		return nil, false
	}
	key = raw[1:]
	seg := 0 // where the current name starts in key
	for i := 0; i <= len(key); i++ {
		if i < len(key) {
			switch key[i] {
			case '%', 0:
				return nil, false
			case '/':
			default:
				continue
			}
		}
		switch name := key[seg:i]; {
		case len(name) == 0:
			if i < len(key) || i == 0 {
				return nil, false // an empty name: "//"
			}
			// the slash at the end: a directory
		case name[0] == '.' && (len(name) == 1 || len(name) == 2 && name[1] == '.'):
			return nil, false
		}
		seg = i + 1
	}
	return key, true
}

// Options tune a Dir.
type Options struct {
	// CacheEntries bounds the open-file cache; 0 means DefaultCacheEntries,
	// negative means no cache (open and close the file for every request).
	CacheEntries int
	// Revalidate is how long a cached file is served without checking the
	// disk (one stat) for a newer version; 0 means DefaultRevalidate.
	Revalidate time.Duration
	// FollowSymlinks serves symbolic links that lead out of the root. Off,
	// the root is a hard boundary (os.Root), symbolic links included.
	FollowSymlinks bool
	// InMemory is the largest file the open-file cache also keeps in
	// memory, read once when it opens the file, and serves with one write
	// of head and body together instead of a head and a sendfile: the
	// second system call, the scheduler's hand-off around sendfile (which
	// may block on its file) and, from 64 KiB, the cork around it cost
	// more than the copy, which on loopback the receiver makes either way
	// (up to 32 KiB, 10-25% less CPU a request than sendfile; at 48 KiB
	// the two were even). 0 means DefaultInMemory, negative means never.
	InMemory int64
	// InMemoryBudget bounds the bytes held in memory over all files; a
	// file that would pass it is sent by sendfile. 0 means
	// DefaultInMemoryBudget.
	InMemoryBudget int64
	// Logger gets a line when a file cannot be opened for a reason other
	// than its absence or its permissions (a full fd table, a disk
	// error: answered 503 or 500): the first at once, then one every
	// ratelog.DefaultEvery with the count. nil means slog.Default().
	Logger *slog.Logger
}

// Defaults for Options.
const (
	DefaultCacheEntries   = 1024
	DefaultRevalidate     = time.Second
	DefaultInMemory       = 32 << 10
	DefaultInMemoryBudget = 16 << 20
)

// Dir serves the directory root with sendfile (small files from memory),
// from an open-file cache, with ETag and Last-Modified validators,
// conditional requests (304, 412) and single byte ranges (206, 416).
type Dir struct {
	root  *os.Root
	path  string
	opts  Options
	cache *cache

	// users counts the requests inside the root (an open, a stat: a cache
	// miss or revalidation). Close closes the root when the last of them
	// is out, so a Dir retired while it serves (a reload that replaces
	// it) answers every request that reached it; a hit needs no root.
	rootMu sync.Mutex
	users  int
	closed bool

	// errors counts the requests answered 5xx because their file could
	// not be opened; errLog keeps their log lines few.
	errors atomic.Int64
	errLog ratelog.Limiter
}

// NewDir opens root with default options. Close releases it.
func NewDir(root string) (*Dir, error) { return NewDirOptions(root, Options{}) }

// NewDirOptions opens root. Close releases it and every cached file (files
// still being sent close after their responses).
func NewDirOptions(root string, opts Options) (*Dir, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	if opts.Revalidate <= 0 {
		opts.Revalidate = DefaultRevalidate
	}
	if opts.CacheEntries == 0 {
		opts.CacheEntries = DefaultCacheEntries
	}
	if opts.InMemory == 0 {
		opts.InMemory = DefaultInMemory
	}
	if opts.InMemoryBudget == 0 {
		opts.InMemoryBudget = DefaultInMemoryBudget
	}
	d := &Dir{root: r, path: root, opts: opts}
	if opts.CacheEntries > 0 {
		c := &cache{m: map[string]*entry{}, missing: map[string]*entry{}, max: opts.CacheEntries, revalidate: opts.Revalidate, budget: opts.InMemoryBudget,
			open: d.openEntry, stat: d.stat}
		c.idx = newIndex(c.max + c.missingMax())
		d.cache = c
	}
	return d, nil
}

// open opens name under the root without blocking: open(2) of a FIFO for
// reading waits for a writer, which would hold a processor (and a graceful
// shutdown) forever. O_NONBLOCK changes nothing for regular files, the only
// ones served; anything else is refused after Stat.
func (d *Dir) open(name string) (*os.File, error) {
	if d.opts.FollowSymlinks {
		// cleanPath has already refused dot-dot segments and encoded
		// slashes; only symbolic links may lead out, and that is allowed.
		return os.OpenFile(filepath.Join(d.path, filepath.FromSlash(name)), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	}
	return d.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

func (d *Dir) stat(name string) (os.FileInfo, error) {
	if d.opts.FollowSymlinks {
		return os.Stat(filepath.Join(d.path, filepath.FromSlash(name)))
	}
	return d.root.Stat(name)
}

// openEntry resolves a request name to a regular file: a directory named
// with its slash serves its index.html, without it redirects.
func (d *Dir) openEntry(name string, dir bool) (*entry, error) {
	f, err := d.open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		if !dir {
			return nil, errRedirect
		}
		name = path.Join(name, "index.html")
		if f, err = d.open(name); err != nil {
			return nil, err
		}
		if st, err = f.Stat(); err != nil {
			f.Close()
			return nil, err
		}
	} else if dir {
		// A file named with a trailing slash is not found, as open(2)
		// says (ENOTDIR): relative links in it would resolve wrongly.
		f.Close()
		return nil, fs.ErrNotExist
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fs.ErrNotExist
	}
	e := newEntry(f, name, st)
	if d.cache != nil && e.size > 0 && e.size <= d.opts.InMemory {
		d.cache.keepInMemory(e)
	}
	return e, nil
}

// Close releases the cached files (those still being sent close after
// their responses) and the root directory, once no request is using it.
// Requests that reach the Dir afterwards are answered 503 with
// Retry-After. Close may be called more than once.
func (d *Dir) Close() error {
	d.rootMu.Lock()
	was := d.closed
	d.closed = true
	last := d.users == 0
	d.rootMu.Unlock()
	if was {
		return nil
	}
	if d.cache != nil {
		d.cache.close()
	}
	if last {
		return d.root.Close()
	}
	return nil
}

// enter admits a request into the root; false once the Dir is closed.
func (d *Dir) enter() bool {
	d.rootMu.Lock()
	defer d.rootMu.Unlock()
	if d.closed {
		return false
	}
	d.users++
	return true
}

// leave lets the root go, closing it if the Dir was closed meanwhile and
// this was its last user.
func (d *Dir) leave() {
	d.rootMu.Lock()
	d.users--
	last := d.closed && d.users == 0
	d.rootMu.Unlock()
	if last {
		d.root.Close()
	}
}

// Inline declares a request non-blocking (processor.Inliner) when its file
// is open in the cache and fresh, or its name known missing, so serving it
// needs no open or stat: a header and the bytes or a SendFile bucket, or a
// 404. A miss goes through the processors, which may wait on the disk.
func (d *Dir) Inline(r *stages.Request) bool {
	if !r.IsMethod("GET") && !r.IsMethod("HEAD") {
		return true // 405
	}
	if d.cache == nil {
		return false
	}
	if key, ok := cleanKey(r.Path); ok {
		return d.cache.isFresh(d.cache.idx.find(key))
	}
	name, dir, err := cleanPath(r.Path)
	return err != nil || d.cache.fresh(name, dir) // a bad path is a 404
}

// ServeQuartet serves one file.
func (d *Dir) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	if !getOrHead(w, r) {
		return
	}
	if d.cache != nil {
		if key, ok := cleanKey(r.Path); ok {
			if e, held := d.cache.hit(key, r.Conn.ID); e != nil {
				if e.missing {
					notFound(w)
					return
				}
				if held {
					w.OnRecycle(e)
				}
				serveEntry(w, r, e)
				return
			}
		}
	}
	name, dir, err := cleanPath(r.Path)
	if err != nil {
		notFound(w)
		return
	}
	if !d.enter() {
		// Closed: a request that took this handler just before it was
		// replaced, and stalled past the replacement's grace.
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(503)
		return
	}
	defer d.leave()
	var e *entry
	if d.cache != nil {
		e, err = d.cache.get(name, dir)
	} else {
		e, err = d.openEntry(name, dir)
	}
	switch {
	case errors.Is(err, errRedirect):
		redirectSlash(w, r)
		return
	case err != nil:
		d.openFailed(w, name, err)
		return
	}
	// The response holds its reference until its last byte is sent.
	w.OnRecycle(e)
	serveEntry(w, r, e)
}

// openFailed answers a request whose file could not be opened, and tells
// the operator when that is the server's trouble rather than the name's.
func (d *Dir) openFailed(w *processor.ResponseWriter, name string, err error) {
	status := openStatus(err)
	switch status {
	case http.StatusNotFound:
		notFound(w)
		return
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	if status >= 500 {
		d.errors.Add(1)
		if log, n := d.errLog.Allow(time.Now()); log {
			logger := d.opts.Logger
			if logger == nil {
				logger = slog.Default()
			}
			logger.Error("quartet: static: cannot open a file", "root", d.path, "name", name,
				"status", status, "err", err, "failures", n)
		}
	}
	w.WriteHeader(status)
}

// openStatus is the status of a request whose file could not be opened:
// 404 when the name leads to no file the Dir serves (missing, not a
// regular file, outside the root), 403 when the server may not read it,
// 503 when the process or the system is short of something it will have
// again (fds, memory, a lease held by another process: the client may
// retry), 500 for anything else (a disk error). Only the last two are the
// operator's business. A full fd table answered 404 would be cached as
// "gone" by every client and proxy that saw it.
func openStatus(err error) int {
	if errors.Is(err, fs.ErrPermission) {
		return http.StatusForbidden
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		// The Dir's own verdicts (fs.ErrNotExist for what is not a
		// regular file) and os.Root's "path escapes from parent".
		return http.StatusNotFound
	}
	if shortOfResources(errno) {
		return http.StatusServiceUnavailable
	}
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ENAMETOOLONG, syscall.ELOOP,
		syscall.EISDIR, syscall.ENXIO, syscall.ENODEV, syscall.EINVAL:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// shortOfResources reports a failure that is the process's or the
// system's, not the file's, and passes: out of fds (EMFILE, ENFILE),
// memory (ENOMEM, ENOBUFS), or a lease another process holds (EAGAIN,
// with O_NONBLOCK).
func shortOfResources(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS, syscall.EAGAIN:
		return true
	}
	return false
}

// serveEntry answers with the file, a range of it, or a validator status.
func serveEntry(w *processor.ResponseWriter, r *stages.Request, e *entry) {
	h := w.Header()
	h.Set("ETag", e.etag)
	h.Set("Last-Modified", e.lastMod)
	h.Set("Accept-Ranges", "bytes")
	a := plan(r, e)
	switch a.status {
	case http.StatusOK:
		h.Set("Content-Type", e.ctype)
		h.Set("Content-Length", e.length)
		e.send(w, 0, e.size)
	case http.StatusPartialContent:
		h.Set("Content-Type", e.ctype)
		h.Set("Content-Range", "bytes "+strconv.FormatInt(a.off, 10)+"-"+strconv.FormatInt(a.off+a.n-1, 10)+"/"+strconv.FormatInt(e.size, 10))
		h.Set("Content-Length", strconv.FormatInt(a.n, 10))
		w.WriteHeader(http.StatusPartialContent)
		e.send(w, a.off, a.n)
	case http.StatusRequestedRangeNotSatisfiable:
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(e.size, 10))
		w.WriteHeader(a.status)
	default: // 304 or 412
		w.WriteHeader(a.status)
	}
}

// answer is what a request gets of a file: its status, and for a 206 the
// range sent.
type answer struct {
	status int
	off, n int64
}

// plan decides the answer from the request's validators and Range alone,
// so that the decision can be checked against net/http's without a
// connection (static's fuzz target).
func plan(r *stages.Request, e *entry) answer {
	if status := precondition(r, e); status != 0 {
		return answer{status: status}
	}
	if rh := r.Header("Range"); rh != nil && r.IsMethod("GET") && ifRangeAllows(r, e) {
		br, ok, unsatisfiable := parseRange(rh, e.size)
		switch {
		case unsatisfiable:
			return answer{status: http.StatusRequestedRangeNotSatisfiable}
		case ok:
			return answer{http.StatusPartialContent, br.off, br.n}
		}
	}
	return answer{status: http.StatusOK}
}

// getOrHead answers 405 to any other method.
func getOrHead(w *processor.ResponseWriter, r *stages.Request) bool {
	if r.IsMethod("GET") || r.IsMethod("HEAD") {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	if len(r.Target) == 1 && r.Target[0] == '*' && r.IsMethod("OPTIONS") {
		// "OPTIONS *" asks about the server, not a resource (RFC 9110
		// §9.3.7), and this one allows GET and HEAD; net/http's server
		// answers it 200 too, where 405 said the question was wrong.
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(200)
		return false
	}
	w.WriteHeader(405)
	return false
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

// Inline declares every request non-blocking (processor.Inliner): the
// files are in memory.
func (s *FS) Inline(*stages.Request) bool { return true }

// ServeQuartet serves one file from memory.
func (s *FS) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	if !getOrHead(w, r) {
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

// CacheStats is a Dir's open-file cache at one moment: counters that only
// grow over the Dir's life, and what the cache holds now. A Dir without
// a cache (Options.CacheEntries negative) reports zeros but for Errors.
type CacheStats struct {
	// Hits are requests given a file the cache already had open: fresh,
	// found unchanged by a revalidation, or being opened for another
	// request that arrived at the same time. Hits / (Hits + Opens) is the
	// hit ratio; a request for a file that does not exist is in neither
	// (NotFoundHits counts those the cache answered).
	Hits int64
	// Opens are files the cache opened: a name's first request, and the
	// first after its entry was evicted or invalidated.
	Opens int64
	// Revalidations are checks of a cached file against the disk (one
	// stat each), made when its entry was last checked more than
	// Options.Revalidate ago.
	Revalidations int64
	// Invalidations are entries dropped because a revalidation could not
	// confirm their file unchanged: it had been rewritten, replaced or
	// removed. The next request opens it again (an Open).
	Invalidations int64
	// Evictions are entries dropped to make room for another in a full
	// cache (Options.CacheEntries): if they keep pace with Opens, the
	// files being asked for do not fit in it.
	Evictions int64
	// NotFoundHits are requests answered 404 because the cache knew their
	// name did not exist (checked within Options.Revalidate), without
	// touching the disk.
	NotFoundHits int64
	// Errors are requests answered 503 or 500 because their file could
	// not be opened for a reason other than its absence or permissions
	// (a full fd table, a disk error; Options.Logger tells which). They
	// are counted with or without a cache.
	Errors int64
	// Missing are the names remembered as missing now, at most a quarter
	// of EntriesMax (at least 16) and apart from Entries.
	Missing int

	// Entries are the names cached now (a directory's index.html under
	// the directory's name), at most EntriesMax (Options.CacheEntries).
	Entries, EntriesMax int
	// InMemoryFiles and InMemoryBytes are the cached files whose bytes
	// are held in memory now (Options.InMemory), and those bytes.
	InMemoryFiles int
	InMemoryBytes int64
	// InMemoryFileMax is the largest file held in memory (0: none is),
	// and InMemoryBudget bounds InMemoryBytes: a file that would pass it
	// is sent from disk.
	InMemoryFileMax, InMemoryBudget int64
}

// AddCounters adds o's counters (Hits, Opens, Revalidations,
// Invalidations, Evictions, NotFoundHits, Errors) to s and leaves s's gauges: for
// an exporter that serves one directory after another and whose counters
// must never go back.
func (s *CacheStats) AddCounters(o CacheStats) {
	s.Hits += o.Hits
	s.Opens += o.Opens
	s.Revalidations += o.Revalidations
	s.Invalidations += o.Invalidations
	s.Evictions += o.Evictions
	s.NotFoundHits += o.NotFoundHits
	s.Errors += o.Errors
}

// CacheStats reads the open-file cache's counters and state, holding its
// lock only to read its size: for an exporter to call at scrape time.
func (d *Dir) CacheStats() CacheStats {
	c := d.cache
	if c == nil {
		return CacheStats{Errors: d.errors.Load()}
	}
	c.mu.Lock()
	entries, missing := len(c.m), len(c.missing)
	c.mu.Unlock()
	hits, notFound := c.hitCount()
	s := CacheStats{
		Hits:           hits,
		NotFoundHits:   notFound,
		Missing:        missing,
		Opens:          c.opens.Load(),
		Revalidations:  c.revalidations.Load(),
		Invalidations:  c.invalidations.Load(),
		Evictions:      c.evictions.Load(),
		Entries:        entries,
		EntriesMax:     c.max,
		InMemoryFiles:  int(c.heldFiles.Load()),
		InMemoryBytes:  c.held.Load(),
		InMemoryBudget: c.budget,
		Errors:         d.errors.Load(),
	}
	if d.opts.InMemory > 0 {
		s.InMemoryFileMax = d.opts.InMemory
	}
	return s
}

// InMemoryFiles is what the open-file cache holds in memory now
// (Options.InMemory): how many files, and their bytes.
func (d *Dir) InMemoryFiles() (files int, bytes int64) {
	s := d.CacheStats()
	return s.InMemoryFiles, s.InMemoryBytes
}

// Opens is the number of files the open-file cache has opened: a measure
// of how well it works, and what tests check concurrent misses against.
func (d *Dir) Opens() int64 { return d.CacheStats().Opens }
