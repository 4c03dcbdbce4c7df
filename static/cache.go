package static

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/quartet-server/quartet/processor"
)

// entry is an open file with what its responses need: nginx's
// open_file_cache entry. It is shared by every response serving the file;
// refs counts the cache's own reference and one per response in flight,
// and the file closes when the last of them lets go, so a file replaced on
// disk keeps serving the responses already sending it.
type entry struct {
	f        *os.File
	name     string // the name served (index.html for a directory)
	size     int64
	mod      time.Time
	etag     string
	ctype    string
	lastMod  string
	length   string // size, the whole file's Content-Length
	dev, ino uint64
	key      string // the cache's name for it (name, or the directory's with its slash); set before it is published
	missing  bool   // a name found not to exist: no file, answered 404 until it is due for a check
	data     []byte // the whole file, for a small one (Options.InMemory); never written once set
	refs     atomic.Int32
	checked  atomic.Int64 // unix nanoseconds of the last check against the disk
}

// Cleanup releases a response's reference (stages.Cleanup: it runs when the
// response is recycled, after its last byte).
func (e *entry) Cleanup() { e.release() }

func (e *entry) release() {
	if e.refs.Add(-1) == 0 {
		e.f.Close()
	}
}

// acquire takes a reference unless the entry is already closed.
func (e *entry) acquire() bool {
	for {
		n := e.refs.Load()
		if n <= 0 {
			return false
		}
		if e.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func newEntry(f *os.File, name string, st os.FileInfo) *entry {
	e := &entry{f: f, name: name, size: st.Size(), mod: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		e.dev, e.ino = uint64(sys.Dev), sys.Ino
	}
	// nginx's shape: modification time and size in hex, a strong validator
	// for a file that changes only by being rewritten.
	e.etag = fmt.Sprintf(`"%x-%x"`, e.mod.UnixNano(), e.size)
	e.ctype = contentType(name)
	e.lastMod = e.mod.UTC().Format(http.TimeFormat)
	e.length = strconv.FormatInt(e.size, 10)
	e.refs.Store(1)
	e.checked.Store(time.Now().UnixNano())
	return e
}

// keepInMemory reads e's whole file into e.data if the budget has room
// for it. A read that does not give exactly the size the entry was made
// with (the file is being rewritten) leaves the file to sendfile, which
// sends what it finds. The bytes count against the budget from here until
// the entry leaves the cache (dropped).
func (c *cache) keepInMemory(e *entry) {
	for {
		held := c.held.Load()
		if held+e.size > c.budget {
			return
		}
		if c.held.CompareAndSwap(held, held+e.size) {
			break
		}
	}
	b := make([]byte, e.size)
	if n, err := e.f.ReadAt(b, 0); n == len(b) && (err == nil || err == io.EOF) {
		e.data = b
		c.heldFiles.Add(1)
		return
	}
	c.held.Add(-e.size)
}

// dropped accounts for e leaving the cache: its bytes leave the budget.
// The bytes themselves go when the last response copying them is done
// with the entry.
func (c *cache) dropped(e *entry) {
	if e.data != nil {
		c.held.Add(-int64(len(e.data)))
		c.heldFiles.Add(-1)
	}
}

// send queues n bytes of the file from off: copied from memory for a
// small file, by sendfile otherwise.
func (e *entry) send(w *processor.ResponseWriter, off, n int64) {
	if e.data != nil {
		w.Write(e.data[off : off+n])
		return
	}
	w.SendFile(e.f, off, n)
}

// same reports whether st still describes the entry's file.
func (e *entry) same(st os.FileInfo) bool {
	if st.Size() != e.size || !st.ModTime().Equal(e.mod) {
		return false
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Dev) == e.dev && sys.Ino == e.ino
	}
	return true
}

// errRedirect: the name is a directory asked for without its slash.
var errRedirect = errors.New("quartet: static: directory without trailing slash")

// cache maps request names to open files. Concurrent misses for one name
// open the file once (singleflight); an entry older than revalidate is
// checked against the disk (one stat) before use, and replaced if the file
// changed.
type cache struct {
	// idx is what lookups read, without a lock; m, under mu, is what
	// writers decide with (its size, a victim to evict), idx their
	// published copy.
	idx *index
	// hits are striped by connection, so that loops on different cores
	// count theirs on cache lines of their own.
	hits [hitStripes]hitStripe

	mu sync.Mutex
	m  map[string]*entry
	// missing are names found not to exist (nginx's
	// open_file_cache_errors), bounded apart from m, so that a scan for
	// names that are not there evicts none that are.
	missing    map[string]*entry
	closed     bool // under mu: close has run, and nothing more is cached
	max        int
	revalidate time.Duration
	budget     int64        // bytes of files held in memory, at most
	held       atomic.Int64 // bytes of files held in memory now
	heldFiles  atomic.Int64 // files whose bytes held counts
	sf         singleflight.Group
	open       func(name string, dir bool) (*entry, error)
	stat       func(name string) (os.FileInfo, error)

	// What CacheStats reports; each is counted where it happens, off the
	// hit path.
	opens         atomic.Int64
	revalidations atomic.Int64
	invalidations atomic.Int64
	evictions     atomic.Int64
}

// fresh reports whether get would find name's entry without touching the
// disk: cached, and checked against it within revalidate.
func (c *cache) fresh(name string, dir bool) bool {
	key := name
	if dir {
		key += "/"
	}
	return c.isFresh(c.load(key))
}

// isFresh reports whether e (nil: not cached) was checked against the
// disk within revalidate.
func (c *cache) isFresh(e *entry) bool {
	return e != nil && time.Now().UnixNano()-e.checked.Load() < int64(c.revalidate)
}

// hitStripes is how many cache lines the hit count is spread over.
const hitStripes = 16

type hitStripe struct {
	n, notFound atomic.Int64
	_           [48]byte
}

func (c *cache) countHit(e *entry, stripe uint64) {
	if e.missing {
		c.hits[stripe%hitStripes].notFound.Add(1)
		return
	}
	c.hits[stripe%hitStripes].n.Add(1)
}

// hitCount sums the stripes: hits on files, and on names known missing.
func (c *cache) hitCount() (files, notFound int64) {
	for i := range c.hits {
		files += c.hits[i].n.Load()
		notFound += c.hits[i].notFound.Load()
	}
	return files, notFound
}

// missingMax bounds the names remembered as missing: a quarter of the
// files, at least 16.
func (c *cache) missingMax() int { return max(c.max/4, 16) }

// load is the entry under key, or nil.
func (c *cache) load(key string) *entry {
	return c.idx.findString(key)
}

// hit is get's fast path: key's entry (key in bytes: see cleanKey) if it
// is cached and fresh, possibly a missing one; nil sends the caller to
// get. held says whether a reference was taken for the response: none is
// for a missing name, or for a file held in memory, whose bytes outlive
// the entry (the garbage collector keeps them while the response does)
// and whose descriptor the response does not use, so that loops on
// several cores serving one small file do not share its reference count.
// stripe (the connection's ID) picks where the hit is counted.
func (c *cache) hit(key []byte, stripe uint64) (e *entry, held bool) {
	e = c.idx.find(key)
	if !c.isFresh(e) {
		return nil, false
	}
	if e.data == nil && !e.missing {
		if !e.acquire() {
			return nil, false
		}
		held = true
	}
	c.countHit(e, stripe)
	return e, held
}

func (c *cache) get(name string, dir bool) (*entry, error) {
	key := name
	if dir {
		key += "/"
	}
	for attempt := 0; attempt < 3; attempt++ {
		e := c.load(key)
		if e != nil && e.missing {
			if c.isFresh(e) {
				c.countHit(e, 0)
				return nil, fs.ErrNotExist
			}
			c.revalidations.Add(1) // by opening it again, below
		} else if e != nil {
			fresh := c.isFresh(e)
			if !fresh {
				c.revalidations.Add(1)
				st, err := c.stat(e.name)
				switch {
				case err == nil && st.Mode().IsRegular() && e.same(st):
					e.checked.Store(time.Now().UnixNano())
					fresh = true
				case err != nil && shortOfResources(err):
					// The check could not be made (a nested name's
					// stat opens its directories, and the fd table
					// is full): the file as it was a moment ago beats
					// a 503 (HTTP's stale-if-error), and the next
					// request checks again.
					fresh = true
				}
			}
			if fresh && e.acquire() {
				c.countHit(e, 0)
				return e, nil
			}
		}
		ne, opened, kept, err := c.openOnce(key, name, dir, e)
		if err != nil {
			return nil, err
		}
		if opened && !kept {
			// The cache is closed: the first reference, which it
			// would have held, is this request's.
			return ne, nil
		}
		if ne.acquire() {
			if !opened {
				// Served by the open of a request it arrived beside:
				// the file was opened once for both, and this one is
				// not in Opens.
				c.countHit(ne, 0)
			}
			return ne, nil
		}
		// Evicted and closed between its opening and our reference: again.
	}
	return nil, errors.New("quartet: static: file cache churning")
}

// openOnce opens name for key, and installs it in place of old (what
// get found there: nil, a name known missing, or a file that changed),
// once for the requests that ask together. opened says whether this
// request opened it, not one it waited for; kept, that the cache took
// the new entry's first reference. A request whose look found old just
// before another's open of the same name installed a fresh entry takes
// that one: singleflight joins only the calls in flight at once, and
// that open had returned.
func (c *cache) openOnce(key, name string, dir bool, old *entry) (ne *entry, opened, kept bool, err error) {
	kept = true
	v, err, _ := c.sf.Do(key, func() (any, error) {
		if cur := c.load(key); cur != nil && cur != old && !cur.missing && c.isFresh(cur) {
			return cur, nil
		}
		opened = true
		ne, err := c.open(name, dir)
		if err != nil {
			c.forget(key, old)
			if errors.Is(err, fs.ErrNotExist) {
				c.putMissing(key)
			}
			return nil, err
		}
		c.opens.Add(1)
		kept = c.put(key, ne, old)
		return ne, nil
	})
	if err != nil {
		return nil, false, false, err
	}
	return v.(*entry), opened, kept, nil
}

// put installs e under key in place of old (if old is still there), and
// evicts an entry when the cache is full. old is the entry get found and
// did not use, which while it is still in place means its revalidation
// found the file changed. It reports false, and installs nothing, once
// the cache is closed: e's first reference is then its opener's.
func (c *cache) put(key string, e, old *entry) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.dropped(e) // its bytes, if any, go with the response
		return false
	}
	if cur := c.missing[key]; cur != nil {
		delete(c.missing, key) // found after all; c.idx.set below replaces it
		if cur == old {
			c.invalidations.Add(1)
		}
	}
	var drop []*entry
	if cur := c.m[key]; cur != nil {
		drop = append(drop, cur)
		if cur == old {
			c.invalidations.Add(1)
		}
	}
	if c.max > 0 && len(c.m) >= c.max && c.m[key] == nil {
		for k, v := range c.m { // any victim: map order is random enough
			drop = append(drop, v)
			delete(c.m, k)
			c.idx.remove(k)
			c.evictions.Add(1)
			break
		}
	}
	e.key = key
	c.m[key] = e
	c.idx.set(e)
	c.mu.Unlock()
	for _, d := range drop {
		c.dropped(d)
		d.release()
	}
	return true
}

// forget drops old from key if it is still there (the file went away).
func (c *cache) forget(key string, old *entry) {
	if old == nil {
		return
	}
	c.mu.Lock()
	switch {
	case old.missing && c.missing[key] == old:
		delete(c.missing, key)
		c.idx.remove(key)
		old = nil // holds no file
	case c.m[key] == old:
		delete(c.m, key)
		c.idx.remove(key)
		c.invalidations.Add(1)
	default:
		old = nil
	}
	c.mu.Unlock()
	if old != nil {
		c.dropped(old)
		old.release()
	}
}

// putMissing remembers that key's name does not exist, until it is due
// for a check like any entry. A file installed under key meanwhile (by a
// request that found it after all) is left in place.
func (c *cache) putMissing(key string) {
	e := &entry{key: key, missing: true}
	e.checked.Store(time.Now().UnixNano())
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.m[key] != nil {
		return
	}
	if c.missing[key] == nil && len(c.missing) >= c.missingMax() {
		for k := range c.missing { // any victim, as put's
			delete(c.missing, k)
			c.idx.remove(k)
			break
		}
	}
	c.missing[key] = e
	c.idx.set(e)
}

// close releases every entry; files still being sent close after their
// responses. A request still inside (a Dir is closed while it serves)
// opens its file uncached.
func (c *cache) close() {
	c.mu.Lock()
	m := c.m
	c.m = map[string]*entry{}
	c.missing = map[string]*entry{}
	c.idx.clear()
	c.closed = true
	c.mu.Unlock()
	for _, e := range m {
		c.dropped(e)
		e.release()
	}
}

func contentType(name string) string {
	if t := mime.TypeByExtension(path.Ext(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}
