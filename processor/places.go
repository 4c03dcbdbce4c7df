package processor

import (
	"sync/atomic"

	"github.com/quartet-server/quartet/stages"
)

// Places: a handler waiting on its client does not hold a processor.
//
// Pane's design exists so that "the Request Processor thread won't ever
// find itself blocked on a network write, so it can produce all its output
// quickly and move on to another request (which is the key to keeping the
// number of threads low)". Yet a handler does wait on its client in two
// places: when the client reads slower than the handler writes (back-
// pressure above the high-water mark, Response.WaitDrained), and when it
// reads a streamed request body whose bytes have not arrived (the reader's
// pipe). If those waits held a worker, eight clients that never read would
// stop a pool of eight.
//
// So the pool has Workers places, not Workers goroutines, and a handler
// about to wait on its client gives its place back (Park), as Go's runtime
// hands off its P when a goroutine blocks in a system call and Apache's
// event MPM hands write completion to its listener thread: another
// goroutine takes the place and runs the next request. When the wait is
// over the handler takes a place again (Unpark), waiting for one if every
// place is held. Workers therefore bounds the handlers that run (computing,
// or blocked on their own work: a database, a sleep); parked handlers are
// bounded separately by MaxParked, and beyond it a handler waits on its
// client holding its place, as before. Memory stays bounded: a parked
// handler holds at most HighWater of response and its goroutine.
//
// The goroutines: each holds a place (idle in the work loop, or running a
// handler), or has a parked handler, or is a spare (no place, no handler:
// it gave its place to a resumer and waits to be given one). A place given
// back goes, in this order, to the first resumer (a parked handler whose
// wait is over: it has a response half done, so it goes before new work),
// to a spare or a new goroutine if requests are queued, or else stays free.
// Free places cost nothing; a request pushed while a place is free gets
// it through Pool.Wake, and a resumer takes a free place at once, so a
// handler that hits the high-water mark against a fast client parks and
// unparks without waking any other goroutine.
//
// Invariants (placeBook.check, asserted by the table-driven tests after
// every step):
//
//	I1  held + free == places: every place is held by a goroutine or free.
//	I2  parked <= maxParked; parked counts handlers waiting on their
//	    client and resumers (their wait is over; they wait for a place).
//	I3  resumers wait only while no place is free.
//	I4  spares <= maxSpares; a goroutine that would be a spare beyond it
//	    exits, so a burst of parked handlers leaves no goroutines behind.
//	I5  goroutines == held + parked + spares.
//
// I3 holds under the lock. Between a free place and a queued request the
// rule is Dekker's, as for WorkerWaker: Park frees the place, then looks at
// the queue; Wake (after the push) looks at the free places.

// placeBook is the accounting, without goroutines: the pool calls it under
// its mutex and carries out the handoffs it returns. free and waiting are
// atomics so that Wake and the work loop can look without the lock.
type placeBook struct {
	places, maxParked, maxSpares int

	free     atomic.Int32 // places no goroutine holds
	waiting  atomic.Int32 // len(resumers)
	parked   atomic.Int32 // handlers without a place: waiting on their client, or resumers
	refused  atomic.Uint64
	resumers []*worker // FIFO
	spares   []*worker // LIFO
	started  int       // goroutines started for places (tests count them)
}

// handoff is what becomes of a place given back: to is the goroutine that
// now holds it (a resumer or a spare, to be signalled), or spawn asks for
// a new goroutine to hold it; neither means the place is free.
type handoff struct {
	to    *worker
	spawn bool
}

func (h handoff) none() bool { return h.to == nil && !h.spawn }

// park gives back the place of a handler about to wait on its client. It
// reports false, and changes nothing, when maxParked handlers are parked
// already: the handler then waits holding its place.
func (b *placeBook) park() (bool, handoff) {
	if int(b.parked.Load()) >= b.maxParked {
		b.refused.Add(1)
		return false, handoff{}
	}
	b.parked.Add(1)
	return true, b.giveBack()
}

// giveBack releases a place: to the first resumer, else it is free.
func (b *placeBook) giveBack() handoff {
	if len(b.resumers) > 0 {
		r := b.resumers[0]
		copy(b.resumers, b.resumers[1:])
		b.resumers[len(b.resumers)-1] = nil
		b.resumers = b.resumers[:len(b.resumers)-1]
		b.waiting.Add(-1)
		b.parked.Add(-1)
		return handoff{to: r}
	}
	b.free.Add(1)
	return handoff{}
}

// attach gives a free place, if there is one, to a goroutine that will
// take queued work: a spare, or a new one.
func (b *placeBook) attach() handoff {
	if b.free.Load() == 0 {
		return handoff{}
	}
	b.free.Add(-1)
	if n := len(b.spares); n > 0 {
		s := b.spares[n-1]
		b.spares[n-1] = nil
		b.spares = b.spares[:n-1]
		return handoff{to: s}
	}
	b.started++
	return handoff{spawn: true}
}

// unpark takes a place for a parked handler whose wait is over: a free one
// at once (true), or else wk joins the resumers and waits to be handed one.
func (b *placeBook) unpark(wk *worker) bool {
	if b.free.Load() > 0 {
		b.free.Add(-1)
		b.parked.Add(-1)
		return true
	}
	b.resumers = append(b.resumers, wk)
	b.waiting.Add(1)
	return false
}

// yield is a goroutine between requests giving its place to the first
// resumer, if any (to is nil otherwise). wk then becomes a spare (spare
// true), or exits if there are maxSpares already.
func (b *placeBook) yield(wk *worker) (to *worker, spare bool) {
	if len(b.resumers) == 0 {
		return nil, false
	}
	h := b.giveBack()
	if len(b.spares) < b.maxSpares {
		b.spares = append(b.spares, wk)
		return h.to, true
	}
	return h.to, false
}

// leave is a goroutine that holds a place exiting (the pool is stopping).
func (b *placeBook) leave() handoff { return b.giveBack() }

// unspare takes wk out of the spares when it must exit (the pool is
// stopping). It reports false if wk is no longer a spare: it was handed a
// place meanwhile and must take it.
func (b *placeBook) unspare(wk *worker) bool {
	for i, s := range b.spares {
		if s == wk {
			b.spares = append(b.spares[:i], b.spares[i+1:]...)
			return true
		}
	}
	return false
}

// check returns the first broken invariant for held places and goroutines
// counted by the caller, or "".
func (b *placeBook) check(held, goroutines int) string {
	free, parked := int(b.free.Load()), int(b.parked.Load())
	switch {
	case held+free != b.places:
		return "I1: held + free != places"
	case parked > b.maxParked || parked < len(b.resumers):
		return "I2: parked out of bounds"
	case len(b.resumers) > 0 && free > 0:
		return "I3: a resumer waits while a place is free"
	case len(b.spares) > b.maxSpares:
		return "I4: too many spares"
	case goroutines != held+parked+len(b.spares):
		return "I5: goroutines != held + parked + spares"
	case int(b.waiting.Load()) != len(b.resumers):
		return "waiting != len(resumers)"
	}
	return ""
}

// worker is one goroutine of the pool, with the ResponseWriter it reuses
// for every request it serves. It is the stages.Parker its handler's waits
// on the client report to.
type worker struct {
	p      *Pool
	w      ResponseWriter
	place  chan struct{} // a place handed over while waiting as a resumer or a spare
	parked bool          // the handler gave its place back (Unpark must get one)
	ready  func() bool   // for WorkerWaker.Park; made once, a closure per Park would allocate
}

var _ stages.Parker = (*worker)(nil)

func (p *Pool) newWorker() *worker {
	wk := &worker{p: p, place: make(chan struct{}, 1)}
	wk.w.p = p
	wk.w.wk = wk
	wk.ready = func() bool { return p.in.Len() > 0 || p.book.waiting.Load() > 0 }
	return wk
}

// Park gives the handler's place back while it waits on its client (see
// Places). Worker goroutine only, from inside its handler.
func (wk *worker) Park() {
	p := wk.p
	p.mu.Lock()
	ok, h := p.book.park()
	if ok && h.none() && p.in.Len() > 0 {
		h = p.book.attach() // the place is free and work is queued
	}
	p.mu.Unlock()
	if !ok {
		return
	}
	wk.parked = true
	p.running.Add(-1)
	wk.setPhase(stages.PhaseParked)
	p.hand(h)
}

// Unpark takes a place again once the wait is over, waiting for one if
// every place is held.
func (wk *worker) Unpark() {
	if !wk.parked {
		return
	}
	wk.parked = false
	p := wk.p
	p.mu.Lock()
	got := p.book.unpark(wk)
	p.mu.Unlock()
	if !got {
		p.wake.Wake() // an idle goroutine hands its place over (its ready sees waiting)
		<-wk.place
	}
	p.running.Add(1)
	wk.setPhase(stages.PhaseRunning)
}

func (wk *worker) setPhase(ph stages.Phase) {
	if r := wk.w.req; r != nil && r.Conn != nil {
		r.Conn.SetPhase(ph)
	}
}

// hand carries out a handoff.
func (p *Pool) hand(h handoff) {
	switch {
	case h.to != nil:
		h.to.place <- struct{}{}
	case h.spawn:
		p.spawn()
	}
}

// yield gives wk's place to a waiting resumer; wk then waits as a spare
// until it is handed a place again (true) or must exit (false).
func (p *Pool) yield(wk *worker, done <-chan struct{}) bool {
	p.mu.Lock()
	to, spare := p.book.yield(wk)
	p.mu.Unlock()
	if to == nil {
		return true // another goroutine served the resumers first
	}
	to.place <- struct{}{}
	if !spare {
		return false
	}
	select {
	case <-wk.place:
		return true
	case <-done:
	}
	p.mu.Lock()
	exit := p.book.unspare(wk)
	p.mu.Unlock()
	if exit {
		return false
	}
	<-wk.place
	return true
}

// leave gives back the place of a goroutine that exits.
func (p *Pool) leave() {
	p.mu.Lock()
	h := p.book.leave()
	p.mu.Unlock()
	p.hand(h)
}
