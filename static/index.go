package static

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// index is the cache's names, read without a lock. Reader loops on
// several cores look up the same hot names on every request; behind a
// mutex those lookups serialised (BenchmarkDirInlineParallel: two cores
// served no faster than one). Writers (a miss's put, an eviction, a
// forget, close) hold the cache's mutex, which also guards its map, and
// publish each changed bucket as a new slice (read-copy-update): a reader
// sees a bucket before or after a change, never half of one. Buckets are
// at least twice the cache's bound, so they hold an entry or two.
type index struct {
	seed    maphash.Seed
	mask    uint64
	buckets []atomic.Pointer[[]*entry]
}

func newIndex(entries int) *index {
	n := uint64(1) << bits.Len(uint(max(2*entries, 16)-1))
	return &index{seed: maphash.MakeSeed(), mask: n - 1, buckets: make([]atomic.Pointer[[]*entry], n)}
}

func (x *index) bucket(h uint64) *atomic.Pointer[[]*entry] { return &x.buckets[h&x.mask] }

// find is the entry under key, or nil; it does not allocate.
func (x *index) find(key []byte) *entry { return scan(x.bucket(maphash.Bytes(x.seed, key)), key) }

// findString is find for a key held as a string.
func (x *index) findString(key string) *entry {
	return scan(x.bucket(maphash.String(x.seed, key)), key)
}

// scan looks for key in a bucket.
func scan[K string | []byte](p *atomic.Pointer[[]*entry], key K) *entry {
	if b := p.Load(); b != nil {
		for _, e := range *b {
			if e.key == string(key) {
				return e
			}
		}
	}
	return nil
}

// set makes e the entry under e.key, in place of any other. The caller
// holds the cache's mutex.
func (x *index) set(e *entry) {
	p := x.bucket(maphash.String(x.seed, e.key))
	var next []*entry
	if b := p.Load(); b != nil {
		next = make([]*entry, 0, len(*b)+1)
		for _, o := range *b {
			if o.key != e.key {
				next = append(next, o)
			}
		}
	}
	next = append(next, e)
	p.Store(&next)
}

// remove drops key's entry. The caller holds the cache's mutex.
func (x *index) remove(key string) {
	p := x.bucket(maphash.String(x.seed, key))
	b := p.Load()
	if b == nil {
		return
	}
	next := make([]*entry, 0, len(*b))
	for _, o := range *b {
		if o.key != key {
			next = append(next, o)
		}
	}
	if len(next) == 0 {
		p.Store(nil)
		return
	}
	p.Store(&next)
}

// clear drops every entry. The caller holds the cache's mutex.
func (x *index) clear() {
	for i := range x.buckets {
		x.buckets[i].Store(nil)
	}
}
