package deliver

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sync/singleflight"

	"github.com/quartet-server/quartet/rdma"
)

// fileKey names a file independently of its path or descriptor, so two
// opens of one file share a registration.
type fileKey struct{ dev, ino uint64 }

// fileEntry is one file mapped read-only and registered once, shared by
// every response that sends it. refs counts users (responses whose RDMA
// is in flight, exposures not yet revoked); a stale entry (the file
// changed, or the cache evicted it) is released by its last user.
type fileEntry struct {
	key    fileKey
	size   int64
	mtime  int64
	mem    *rdma.Memory
	mr     rdma.MR
	digest [sha256.Size]byte

	refs   int  // guarded by fileCache.mu
	stale  bool // out of the map; release at refs == 0
	closed bool
}

// fileCache is the registration cache for static files (mod_rdma's
// ship_file, registered once instead of per request). Concurrent misses
// on one file share one map+register through singleflight.
type fileCache struct {
	pd     rdma.PD
	access rdma.Access
	max    int
	stats  *stats

	mu sync.Mutex
	m  map[fileKey]*fileEntry
	sf singleflight.Group
}

func newFileCache(pd rdma.PD, access rdma.Access, max int, st *stats) *fileCache {
	return &fileCache{pd: pd, access: access, max: max, stats: st, m: map[fileKey]*fileEntry{}}
}

// get returns f's entry with a reference the caller drops with put. f
// must be a regular file of at least one byte.
func (c *fileCache) get(f *os.File) (*fileEntry, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil, fmt.Errorf("deliver: %s: not a non-empty regular file", f.Name())
	}
	key := fileKey{uint64(st.Dev), st.Ino}
	size, mtime := fi.Size(), fi.ModTime().UnixNano()
	for {
		c.mu.Lock()
		if e := c.m[key]; e != nil {
			if e.size == size && e.mtime == mtime {
				e.refs++
				c.mu.Unlock()
				c.stats.cacheHits.Add(1)
				return e, nil
			}
			// The file changed under its mapping: new readers get a new
			// one; the old one goes when its last reader is done.
			c.retireLocked(e)
		}
		c.mu.Unlock()
		flight := fmt.Sprintf("%d:%d:%d:%d", key.dev, key.ino, size, mtime)
		v, err, _ := c.sf.Do(flight, func() (any, error) { return c.fill(f, key, size, mtime) })
		if err != nil {
			return nil, err
		}
		e := v.(*fileEntry)
		c.mu.Lock()
		if !e.closed {
			e.refs++
			c.mu.Unlock()
			return e, nil
		}
		c.mu.Unlock() // retired and released between the flight and us: again
	}
}

// fill maps and registers the file, computes its digest once, and puts it
// in the map.
func (c *fileCache) fill(f *os.File, key fileKey, size, mtime int64) (*fileEntry, error) {
	c.stats.cacheMisses.Add(1)
	mem, mr, err := c.register(f, size)
	if err != nil {
		return nil, err
	}
	c.stats.liveMRs.Add(1)
	e := &fileEntry{key: key, size: size, mtime: mtime, mem: mem, mr: mr, digest: sha256.Sum256(mem.Bytes())}
	var evicted []*fileEntry
	c.mu.Lock()
	if old := c.m[key]; old != nil {
		c.retireLocked(old)
	}
	c.m[key] = e
	if len(c.m) > c.max {
		for _, o := range c.m {
			if o != e && o.refs == 0 {
				evicted = append(evicted, o)
				delete(c.m, o.key)
				o.stale = true
				if len(c.m) <= c.max {
					break
				}
			}
		}
	}
	for _, o := range evicted {
		o.closed = true
	}
	c.mu.Unlock()
	for _, o := range evicted {
		c.release(o)
	}
	return e, nil
}

// register maps the file and registers the mapping; where the device
// refuses a read-only shared file mapping (Linux 6.1's siw pins for
// write and fails with EFAULT), it registers a private anonymous copy
// instead, still made once per file version.
func (c *fileCache) register(f *os.File, size int64) (*rdma.Memory, rdma.MR, error) {
	mem, err := rdma.MapFile(f, 0, int(size))
	if err != nil {
		return nil, nil, err
	}
	mr, err := c.pd.Register(mem.Bytes(), c.access)
	if err == nil {
		return mem, mr, nil
	}
	mem.Free()
	if mem, err = rdma.Alloc(int(size)); err != nil {
		return nil, nil, err
	}
	if _, err := f.ReadAt(mem.Bytes(), 0); err != nil {
		mem.Free()
		return nil, nil, err
	}
	if mr, err = c.pd.Register(mem.Bytes(), c.access); err != nil {
		mem.Free()
		return nil, nil, err
	}
	c.stats.cacheCopies.Add(1)
	return mem, mr, nil
}

// retireLocked takes e out of the map; it is released now if unused.
func (c *fileCache) retireLocked(e *fileEntry) {
	if c.m[e.key] == e {
		delete(c.m, e.key)
	}
	e.stale = true
	if e.refs == 0 && !e.closed {
		e.closed = true
		// Deregistering under the lock is short (no I/O waits in soft;
		// one ioctl in verbs) and keeps the entry's states simple.
		c.release(e)
	}
}

// put drops a reference from get.
func (c *fileCache) put(e *fileEntry) {
	c.mu.Lock()
	e.refs--
	done := e.refs == 0 && e.stale && !e.closed
	if done {
		e.closed = true
	}
	c.mu.Unlock()
	if done {
		c.release(e)
	}
}

func (c *fileCache) release(e *fileEntry) {
	if err := e.mr.Close(); err == nil {
		c.stats.liveMRs.Add(-1)
	}
	e.mem.Free()
}

// close releases every entry; entries still referenced are an error (the
// caller closes the cache after everything that uses it).
func (c *fileCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for k, e := range c.m {
		delete(c.m, k)
		if e.refs != 0 {
			errs = append(errs, fmt.Errorf("deliver: file cache entry still has %d users", e.refs))
		}
		e.closed, e.stale = true, true
		c.release(e)
	}
	return errors.Join(errs...)
}
