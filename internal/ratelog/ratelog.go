// Package ratelog keeps a failure that repeats from flooding the log: the
// first occurrence is logged at once, the later ones at most once an
// interval, each line saying how many occurrences it stands for. A full fd
// table makes accept(2) fail a hundred times a second and every uncached
// file open fail with it; the operator needs the first line at once and a
// count after, not a hundred lines a second.
//
// golang.org/x/time/rate's Sometimes has the first half (do something
// occasionally) but does not count what it skipped, which is the half an
// operator reads ("failed 1,834 times in the last 10 s").
package ratelog

import (
	"sync"
	"time"
)

// DefaultEvery is a Limiter's interval when Every is zero: often enough
// that a failure still going on shows in the log within seconds, rarely
// enough that it stays readable.
const DefaultEvery = 10 * time.Second

// Limiter decides which occurrences of one failure are logged. The zero
// value logs the first occurrence and then at most one every DefaultEvery.
// Safe for concurrent use.
type Limiter struct {
	Every time.Duration

	mu   sync.Mutex
	next time.Time // the earliest time of the next line; zero: none yet
	held int       // occurrences since the last line
}

// Allow records one occurrence at now. It reports whether to log it and,
// if so, how many occurrences the line stands for: this one and those
// held back since the last line.
func (l *Limiter) Allow(now time.Time) (log bool, occurrences int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held++
	if !l.next.IsZero() && now.Before(l.next) {
		return false, 0
	}
	every := l.Every
	if every <= 0 {
		every = DefaultEvery
	}
	l.next = now.Add(every)
	n := l.held
	l.held = 0
	return true, n
}
