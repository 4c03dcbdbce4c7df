package runtime

import (
	goruntime "runtime"
	"runtime/debug"
	"time"
)

// Giving memory back after a burst of connections.
//
// When a burst of connections leaves (slow clients, a load spike), the
// reader loops give their stashed buffers and records back within a few
// seconds (reader/stash.go) and the heap they held becomes garbage. Go's
// runtime returns freed heap to the OS only after a collection, and an
// idle server allocates too little to start one: the runtime's forced
// collection comes every two minutes, and until then the process keeps
// the burst's peak RSS (issue 16 item 7: "a server that holds many
// connections must give memory back when they go"). So once a burst of at
// least burstConns connections has shrunk to a quarter of its peak and
// stayed there for burstQuiet (past the stashes' decay), the control loop
// collects and returns the memory (debug.FreeOSMemory), at most once per
// returnEvery. A server that never sees a burst never pays for it, and
// Config.KeepFreedMemory turns it off for an embedder with a memory policy
// of its own.
const (
	burstConns  = 100
	burstQuiet  = 5 * time.Second
	returnEvery = 30 * time.Second
)

// memoryReturn is the control loop's record of the current burst. The
// control loop alone touches it.
type memoryReturn struct {
	peak     int       // connections at the peak since the last return
	lowSince time.Time // since when the count has stayed at or below a quarter of the peak
	last     time.Time // the last return
	returns  int       // how many so far (Stats)
}

// observe takes the open connection count at now and reports whether the
// memory a burst left behind should be returned now.
func (m *memoryReturn) observe(now time.Time, conns int) bool {
	if conns > m.peak {
		m.peak, m.lowSince = conns, time.Time{}
		return false
	}
	if m.peak < burstConns || conns > m.peak/4 {
		m.lowSince = time.Time{}
		return false
	}
	if m.lowSince.IsZero() {
		m.lowSince = now
	}
	if now.Sub(m.lowSince) < burstQuiet || (!m.last.IsZero() && now.Sub(m.last) < returnEvery) {
		return false
	}
	m.peak, m.lowSince, m.last = conns, time.Time{}, now
	m.returns++
	return true
}

// returnMemory runs on each control period: it gives back what a burst
// left behind, when observe says so.
func (s *Server) returnMemory(now time.Time) {
	if s.cfg.KeepFreedMemory || !s.memReturn.observe(now, s.openConns()) {
		return
	}
	// Two collections: the first moves what the sync.Pools hold (response
	// records and their buffers) to their victim caches, the second, in
	// FreeOSMemory, frees it with the rest and returns the lot.
	goruntime.GC()
	debug.FreeOSMemory()
	s.memReturns.Add(1)
	s.cfg.Logger.Debug("quartet: memory returned after a burst of connections")
}
