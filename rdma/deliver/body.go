package deliver

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// segment is one piece of a body, in order: bytes in the staging memory
// (file == nil; off is the staging offset) or a file region.
type segment struct {
	file   *os.File
	off, n int64
	fe     *fileEntry // the file's cache entry, once mapped
}

// Body is the bytes of one reply, collected for delivery: heap bytes are
// copied into staging memory (the caller's slice may die, or be Go heap
// the device cannot use), file regions are noted and, at Map, mapped and
// registered once per file version through the engine's file cache.
//
// Ownership. NewBody returns a Body with one reference, the caller's.
// Deliver takes that reference when it succeeds (the engine then owns
// the body until the unit retires, and the caller must not touch it);
// when it fails the body is still the caller's, to send another way
// (Each) and then Release. A caller that needs the bytes after a
// successful Deliver (the TCP alternative of a held reply) takes a
// reference of its own with Retain before, and Releases it when done.
// The staging memory and the cache references go when the last
// reference does. Collecting (AddHeap, AddFile, Map, Digest) is for one
// goroutine; Retain and Release for any.
type Body struct {
	e      *Engine
	segs   []segment
	total  int64
	stage  *stageBuf
	used   int64
	mapped bool
	t0     time.Time // Map: when delivery work started, for Stats.CollectTime
	refs   atomic.Int32
}

// NewBody returns an empty body with the caller's reference.
func (e *Engine) NewBody() *Body {
	b := &Body{e: e}
	b.refs.Store(1)
	return b
}

// Len is the body's length so far.
func (b *Body) Len() int64 { return b.total }

// AddHeap appends a copy of p (p may be reused once AddHeap returns).
func (b *Body) AddHeap(p []byte) error {
	n := int64(len(p))
	if n == 0 {
		return nil
	}
	if err := b.grow(b.used + n); err != nil {
		return err
	}
	copy(b.stage.bytes()[b.used:], p)
	if k := len(b.segs); k > 0 && b.segs[k-1].file == nil && b.segs[k-1].off+b.segs[k-1].n == b.used {
		b.segs[k-1].n += n
	} else {
		b.segs = append(b.segs, segment{off: b.used, n: n})
	}
	b.used += n
	b.total += n
	return nil
}

// AddFile appends n bytes of f from off. f must stay open until the
// body is released (the engine maps it at Map, and Each hands it out).
func (b *Body) AddFile(f *os.File, off, n int64) {
	if n == 0 {
		return
	}
	b.segs = append(b.segs, segment{file: f, off: off, n: n})
	b.total += n
}

// grow makes the staging memory hold at least need bytes, at least
// doubling it so a body added piece by piece is copied O(1) times per
// byte.
func (b *Body) grow(need int64) error {
	if b.stage != nil && int64(len(b.stage.bytes())) >= need {
		return nil
	}
	if max := b.e.cfg.MaxStaging; need > max {
		return fmt.Errorf("deliver: %d bytes of staging, over the %d limit", need, max)
	}
	size := need
	if b.stage != nil {
		size = max(need, min(2*int64(len(b.stage.bytes())), b.e.cfg.MaxStaging))
	}
	nb, err := b.e.pool.get(int(size))
	if err != nil {
		return err
	}
	if b.stage != nil {
		copy(nb.bytes(), b.stage.bytes()[:b.used])
		b.e.pool.put(b.stage)
	}
	b.stage = nb
	return nil
}

// Each calls fn with each piece of the body in order: heap bytes (valid
// until the body is released) or a file region. It is how a caller sends
// a body over its own connection after a fallback.
func (b *Body) Each(fn func(heap []byte, f *os.File, off, n int64) error) error {
	for _, sg := range b.segs {
		var err error
		if sg.file != nil {
			err = fn(nil, sg.file, sg.off, sg.n)
		} else {
			err = fn(b.stage.bytes()[sg.off:sg.off+sg.n], nil, 0, 0)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Map maps and registers the body's file regions through the file
// cache (once per file version; later bodies of the same file reuse the
// registration). It is called before Digest and Deliver; a second call
// does nothing. A failure is a *Fallback (ReasonRegisterFailed).
func (b *Body) Map() error {
	if b.mapped {
		return nil
	}
	b.mapped = true
	b.t0 = time.Now()
	for i := range b.segs {
		sg := &b.segs[i]
		if sg.file == nil {
			continue
		}
		e, err := b.e.cache.get(sg.file)
		if err != nil {
			return fallback(ReasonRegisterFailed, err.Error())
		}
		sg.fe = e // released with the body, even if the range is wrong
		if sg.off < 0 || sg.off+sg.n > e.size {
			return fallback(ReasonRegisterFailed, fmt.Sprintf("region beyond the file's %d bytes", e.size))
		}
	}
	return nil
}

// Digest is the SHA-256 of the body as it will be delivered (HTTP's
// Repr-Digest); a body that is one whole file uses the digest the cache
// computed once for that file version. After Map.
func (b *Body) Digest() [sha256.Size]byte {
	if len(b.segs) == 1 && b.segs[0].fe != nil && b.segs[0].off == 0 && b.segs[0].n == b.segs[0].fe.size {
		return b.segs[0].fe.digest
	}
	h := sha256.New()
	for _, sg := range b.segs {
		if sg.fe != nil {
			h.Write(sg.fe.mem.Bytes()[sg.off : sg.off+sg.n])
		} else if sg.file == nil {
			h.Write(b.stage.bytes()[sg.off : sg.off+sg.n])
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Retain takes another reference (see Body).
func (b *Body) Retain() { b.refs.Add(1) }

// Release drops a reference; the last one frees the staging memory and
// the cache references.
func (b *Body) Release() {
	n := b.refs.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("deliver: Body released more often than referenced")
	}
	for i := range b.segs {
		if fe := b.segs[i].fe; fe != nil {
			b.e.cache.put(fe)
			b.segs[i].fe = nil
		}
	}
	if b.stage != nil {
		b.e.pool.put(b.stage)
		b.stage = nil
	}
}

// Cleanup is Release, so a body can be a response's recycle clean-up
// (stages.Cleanup) for the reference a TCP alternative holds.
func (b *Body) Cleanup() { b.Release() }

// oneFile reports whether the body is a single file region (mapped).
func (b *Body) oneFile() (segment, bool) {
	if len(b.segs) == 1 && b.segs[0].fe != nil {
		return b.segs[0], true
	}
	return segment{}, false
}

// flatten copies every segment, in order, into one staging buffer, so
// a mixed heap and file body can be exposed as one contiguous region.
// The cache references go (the bytes are copied); the staging memory is
// replaced.
func (b *Body) flatten() error {
	nb, err := b.e.pool.get(int(b.total))
	if err != nil {
		return err
	}
	dst := nb.bytes()
	pos := int64(0)
	for _, sg := range b.segs {
		switch {
		case sg.fe != nil:
			copy(dst[pos:], sg.fe.mem.Bytes()[sg.off:sg.off+sg.n])
		case sg.file != nil:
			if _, err := sg.file.ReadAt(dst[pos:pos+sg.n], sg.off); err != nil && err != io.EOF {
				b.e.pool.put(nb)
				return err
			}
		default:
			copy(dst[pos:], b.stage.bytes()[sg.off:sg.off+sg.n])
		}
		pos += sg.n
	}
	for i := range b.segs {
		if fe := b.segs[i].fe; fe != nil {
			b.e.cache.put(fe)
		}
	}
	if b.stage != nil {
		b.e.pool.put(b.stage)
	}
	b.stage, b.used = nb, b.total
	b.segs = append(b.segs[:0], segment{off: 0, n: b.total})
	return nil
}

// clearSlack zeroes the staging buffer past the body, so a window that
// reaches its whole MR (a device without CapMWRangeChecked) shows no
// earlier body's bytes.
func (b *Body) clearSlack() {
	clear(b.stage.bytes()[b.used:])
}
