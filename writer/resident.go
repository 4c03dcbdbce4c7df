package writer

import (
	"os"
	"time"
)

// residentMemo remembers the file regions its goroutine last found whole
// in the page cache (pageCached), so that a file sent again and again is
// looked up once a residentFor instead of before every send. The look-up
// decides whether sendfile may go raw (see sendfile); for a 1 MiB file at
// 100 connections it was one of each response's five system calls.
//
// Why trusting an answer for residentFor is safe enough: every send of a
// region reads its pages, and a page read twice is on the kernel's active
// list, the last that reclaim takes from; a region answered "cached" and
// sent within residentFor is, in all but a machine thrashing its page
// cache, still there when the next send reads it. If it was evicted all
// the same, the raw sendfile holds the loop's P through the disk read, as
// it would have in the window between a fresh look-up and the send: the
// loop waits either way (the file is its read), and only the goroutines
// queued on its P wait longer. Only "cached" is remembered: a region not
// in the page cache is looked up again at its next send.
//
// Regions are keyed by *os.File, which the memo keeps reachable, so a
// file closed and collected cannot come back at the same address under a
// remembered region; its owner's Close closes its descriptor all the
// same (a memo holds at most residentRegions closed files' structs). One memo per goroutine (a writer loop, a Direct); it
// allocates nothing.
type residentMemo struct {
	regions [residentRegions]residentRegion
	next    int // the slot the next remembered region takes, round robin
	lookups int // page-cache look-ups made (tests)
}

// residentRegion is one region found whole in the page cache at at; a
// slot with no file is empty.
type residentRegion struct {
	f        *os.File
	off, end int64
	at       time.Time
}

const (
	// rawSendfileMin is the smallest region sent raw: shorter sends end
	// well within sysmon's 20 µs tick, and need no look-up.
	rawSendfileMin = 64 << 10
	// residentFor is how long a "cached" answer is trusted.
	residentFor = 100 * time.Millisecond
	// residentRegions is how many regions a memo holds: a loop sending a
	// few hot files at once keeps each; one sending many looks each up,
	// as it did without the memo.
	residentRegions = 4
)

// cached reports whether f's bytes [off, off+n) were in the page cache
// within residentFor, looking them up (pageCached) when no remembered
// region covers them.
func (m *residentMemo) cached(f *os.File, off int64, n int) bool {
	now := time.Now()
	end := off + int64(n)
	for i := range m.regions {
		r := &m.regions[i]
		if r.f == f && now.Sub(r.at) < residentFor && r.off <= off && end <= r.end {
			return true
		}
	}
	m.lookups++
	if !pageCached(int(f.Fd()), off, n) {
		return false
	}
	m.remember(f, off, end, now)
	return true
}

// remember records [off, end) of f as cached at now, in place of an older
// answer for the same file, or else in the slot whose turn it is.
func (m *residentMemo) remember(f *os.File, off, end int64, now time.Time) {
	i := m.next
	for j := range m.regions {
		if m.regions[j].f == f {
			i = j
			break
		}
	}
	if i == m.next {
		m.next = (m.next + 1) % residentRegions
	}
	m.regions[i] = residentRegion{f: f, off: off, end: end, at: now}
}
