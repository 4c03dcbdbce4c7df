package reader

import "math/bits"

// Large read buffers. A request whose head and body to read before
// dispatch do not fit the default read buffer (a messenger frame of a
// few hundred KiB, a preread HTTP body) is read into a buffer of its
// own. Made fresh each time, such buffers cost the garbage collector
// their size per request: a 1 MiB messenger echo allocated 1 MiB per
// reply. The loop keeps the ones that come back, by size class (powers of
// two from 8 KiB to 16 MiB), up to bigStashBytes per class, and gives
// back what a decayInterval did not use, as its other stashes do. Larger
// buffers are made to measure and left to the collector.
const (
	bigMinShift   = 13 // 8 KiB, above DefaultReadBuffer
	bigMaxShift   = 24 // 16 MiB
	bigStashBytes = 16 << 20
)

// bigBufs is a loop's stash of large buffers, by size class.
type bigBufs [bigMaxShift - bigMinShift + 1]stash[[]byte]

func (b *bigBufs) init() {
	for i := range b {
		b[i].max = max(1, bigStashBytes>>(bigMinShift+i))
	}
}

// bigClass is the class of a buffer of at least n bytes; false above the
// largest.
func bigClass(n int) (int, bool) {
	shift := max(bits.Len(uint(n-1)), bigMinShift)
	if shift > bigMaxShift {
		return 0, false
	}
	return shift - bigMinShift, true
}

// get returns a buffer of at least n bytes (its whole class's size: the
// room past n is usable).
func (b *bigBufs) get(n int) []byte {
	c, ok := bigClass(n)
	if !ok {
		return make([]byte, n)
	}
	if x, ok := b[c].get(); ok {
		return x[:cap(x)]
	}
	return make([]byte, 1<<(bigMinShift+c))
}

// put keeps buf if it is one of get's classes and there is room.
func (b *bigBufs) put(buf []byte) {
	n := cap(buf)
	if n&(n-1) != 0 {
		return // made to measure, or not ours
	}
	if c, ok := bigClass(n); ok && 1<<(bigMinShift+c) == n {
		b[c].put(buf[:0])
	}
}

func (b *bigBufs) decay() {
	for i := range b {
		b[i].decay()
	}
}

func (b *bigBufs) len() int {
	n := 0
	for i := range b {
		n += b[i].len()
	}
	return n
}

// recycleBuf takes back a read buffer nothing aliases any more.
func (l *Loop) recycleBuf(buf []byte) {
	switch {
	case buf == nil:
	case cap(buf) == DefaultReadBuffer:
		l.bufs.put(buf[:DefaultReadBuffer])
	default:
		l.big.put(buf)
	}
}
