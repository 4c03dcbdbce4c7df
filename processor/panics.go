package processor

import (
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
)

// maxPanicSites bounds the sites panicSites tells apart; the panics of
// any further site share one limiter.
const maxPanicSites = 256

// panicSites decides which handler panics are logged with their stacks.
// A handler that panics on every request (a nil map after a bad deploy)
// would otherwise write a stack a request: at tens of thousands of
// requests a second, hundreds of megabytes of log a second, and a
// debug.Stack (tens of µs) on every one of them, while the same few lines
// say all there is to say. So each site (the line that panicked) is
// logged the first time, with its stack, and then at most once every
// ratelog.DefaultEvery, with the count of its panics since; panics at
// different sites are different bugs, and each gets its first line at
// once. Every panic is counted in the stage's Failed counter.
type panicSites struct {
	mu    sync.Mutex
	sites map[uintptr]*ratelog.Limiter
}

// allow reports whether a panic at site should be logged now, and how
// many panics at it the line stands for.
func (s *panicSites) allow(site uintptr, now time.Time) (bool, int) {
	s.mu.Lock()
	l := s.sites[site]
	if l == nil {
		if s.sites == nil {
			s.sites = make(map[uintptr]*ratelog.Limiter)
		}
		if len(s.sites) >= maxPanicSites {
			site = 0
			l = s.sites[0]
		}
		if l == nil {
			l = new(ratelog.Limiter)
			s.sites[site] = l
		}
	}
	s.mu.Unlock()
	return l.Allow(now)
}

// panicSite is the program counter of the call that panicked, for a
// deferred function that has recovered (it runs on top of the panicking
// frames): the first frame below the runtime's panic machinery
// (runtime.gopanic, and runtime.sigpanic's frames for a nil dereference
// or an index out of range). 0 if there is none.
func panicSite() uintptr {
	var pcs [32]uintptr
	n := runtime.Callers(2, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	inPanic := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			inPanic = true
		case inPanic && !strings.HasPrefix(f.Function, "runtime."):
			return f.PC
		}
		if !more {
			return 0
		}
	}
}
