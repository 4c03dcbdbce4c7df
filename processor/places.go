package processor

import (
	"sync/atomic"
	"time"

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
// Resizing. The number of places changes while the pool serves (SetPlaces:
// the runtime's controller, an operator). New places go, like any place
// given back, to resumers first, and are otherwise free (so that the next
// pushes attach them: a goroutine is started only when there is work for
// it). Fewer places retire free places at once and leave the rest as
// excess: a goroutine holding a place gives it up for good, and exits, the
// next time it is between requests (so a retired place's holder finishes
// its request first), and a place given back while there is excess
// vanishes instead of going to a resumer. Idle holders are woken to
// notice.
//
// Spares are goroutines that wait to be handed a place. One that has
// waited longer than the idle period given to RetireSpares exits (Apache's
// MaxSpareThreads, measured in time rather than in count): a burst of
// parked handlers leaves no goroutines behind once it is over.
//
// Invariants (placeBook.check, asserted by the table-driven tests after
// every step):
//
//	I1  held + free == places: every place is held by a goroutine or free.
//	I2  parked <= maxParked; parked counts handlers waiting on their
//	    client and resumers (their wait is over; they wait for a place).
//	I3  resumers wait only while no place is free.
//	I4  spares <= want: a goroutine that would be a spare beyond it
//	    exits, so a burst of parked handlers leaves no more goroutines
//	    behind than the pool may have places.
//	I5  goroutines == held + parked + spares.
//	I6  excess == max(0, places - want), and there is no free place while
//	    there is excess.
//
// I3 holds under the lock. Between a free place and a queued request the
// rule is Dekker's, as for WorkerWaker: Park frees the place, then looks at
// the queue; Wake (after the push) looks at the free places.

// placeBook is the accounting, without goroutines: the pool calls it under
// its mutex and carries out the handoffs it returns. free, waiting and
// excess are atomics so that Wake and the work loop can look without the
// lock.
type placeBook struct {
	places    int // places in existence: held or free
	want      int // places the pool should have (SetPlaces)
	maxParked int
	// wanted is want, for readers without the lock (Pool.Unused).
	wanted atomic.Int32

	free     atomic.Int32 // places no goroutine holds
	waiting  atomic.Int32 // len(resumers)
	excess   atomic.Int32 // places - want, while positive: holders retire between requests
	parked   atomic.Int32 // handlers without a place: waiting on their client, or resumers
	refused  atomic.Uint64
	resumers []*worker // FIFO
	spares   []*worker // LIFO: the oldest spare is spares[0]
	started  int       // goroutines started for places (tests count them)
	retired  uint64    // places retired, and spares that exited idle (Stats)
}

// setWant sets the places the pool should have.
func (b *placeBook) setWant(n int) {
	b.want = n
	b.wanted.Store(int32(n))
}

// handoff is what becomes of a place given back: to is the goroutine that
// now holds it (a resumer or a spare, to be signalled), or spawn asks for
// a new goroutine to hold it; neither means the place is free (or gone).
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

// giveBack releases a place: it vanishes if the pool has too many, else it
// goes to the first resumer, else it is free.
func (b *placeBook) giveBack() handoff {
	if b.excess.Load() > 0 {
		b.excess.Add(-1)
		b.places--
		b.retired++
		return handoff{}
	}
	if len(b.resumers) > 0 {
		return handoff{to: b.takeResumer()}
	}
	b.free.Add(1)
	return handoff{}
}

func (b *placeBook) takeResumer() *worker {
	r := b.resumers[0]
	copy(b.resumers, b.resumers[1:])
	b.resumers[len(b.resumers)-1] = nil
	b.resumers = b.resumers[:len(b.resumers)-1]
	b.waiting.Add(-1)
	b.parked.Add(-1)
	return r
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
// true) from now, or exits if there are as many spares as the pool wants
// places.
func (b *placeBook) yield(wk *worker, now time.Time) (to *worker, spare bool) {
	if len(b.resumers) == 0 {
		return nil, false
	}
	to = b.takeResumer()
	if len(b.spares) < b.want {
		wk.spareSince = now
		b.spares = append(b.spares, wk)
		return to, true
	}
	return to, false
}

// retire is a goroutine between requests giving its place up for good
// because the pool has too many; it then exits. False: no excess (any
// more).
func (b *placeBook) retire() bool {
	if b.excess.Load() == 0 {
		return false
	}
	b.excess.Add(-1)
	b.places--
	b.retired++
	return true
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

// resize sets the number of places the pool should have. New places go to
// resumers (returned, to be signalled) or become free; fewer places retire
// free ones at once and leave the rest as excess, and spares beyond the
// new number are returned in dismissed, oldest first, to be told to exit.
func (b *placeBook) resize(want int) (resumed, dismissed []*worker) {
	b.setWant(want)
	for b.places < want {
		b.places++
		if b.excess.Load() > 0 {
			// A place retiring anyway: keep it instead.
			b.excess.Add(-1)
			b.places--
			continue
		}
		if len(b.resumers) > 0 {
			resumed = append(resumed, b.takeResumer())
		} else {
			b.free.Add(1)
		}
	}
	for b.places > want && b.free.Load() > 0 {
		b.free.Add(-1)
		b.places--
		b.retired++
	}
	b.excess.Store(int32(b.places - want))
	if b.excess.Load() < 0 {
		b.excess.Store(0)
	}
	for len(b.spares) > want {
		dismissed = append(dismissed, b.spares[0])
		b.spares = b.spares[1:]
	}
	return resumed, dismissed
}

// idleSpares takes out the spares that have waited since before cutoff,
// to be told to exit.
func (b *placeBook) idleSpares(cutoff time.Time) []*worker {
	n := 0
	for n < len(b.spares) && b.spares[n].spareSince.Before(cutoff) {
		n++ // oldest first: spares is in the order they became spares
	}
	if n == 0 {
		return nil
	}
	idle := append([]*worker(nil), b.spares[:n]...)
	b.spares = append(b.spares[:0], b.spares[n:]...)
	b.retired += uint64(n)
	return idle
}

// check returns the first broken invariant for held places and goroutines
// counted by the caller, or "".
func (b *placeBook) check(held, goroutines int) string {
	free, parked, excess := int(b.free.Load()), int(b.parked.Load()), int(b.excess.Load())
	switch {
	case held+free != b.places:
		return "I1: held + free != places"
	case parked > b.maxParked || parked < len(b.resumers):
		return "I2: parked out of bounds"
	case len(b.resumers) > 0 && free > 0:
		return "I3: a resumer waits while a place is free"
	case len(b.spares) > b.want:
		return "I4: more spares than the pool wants places"
	case goroutines != held+parked+len(b.spares):
		return "I5: goroutines != held + parked + spares"
	case excess != max(0, b.places-b.want) || (excess > 0 && free > 0):
		return "I6: excess out of step with places and want"
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
	place  chan bool   // true: a place handed over while waiting as a resumer or a spare; false: a spare must exit
	parked bool        // the handler gave its place back (Unpark must get one)
	ready  func() bool // for WorkerWaker.Park; made once, a closure per Park would allocate

	// Time the current request spent parked, so that the service time
	// reported for it is time holding a place (the controller sizes the
	// pool by it; waiting on a client needs no place).
	parkedAt  time.Time
	parkedFor time.Duration

	spareSince time.Time // when it became a spare (under the pool's lock)

	// runningSince is when the worker last gave its CPU up, by parking or
	// by yielding, and lastEnd when its last handler returned: see
	// Pool.work. Both from clock reads the worker makes anyway.
	runningSince time.Time
	lastEnd      time.Time
}

var _ stages.Parker = (*worker)(nil)

func (p *Pool) newWorker() *worker {
	wk := &worker{p: p, place: make(chan bool, 1)}
	wk.w.p = p
	wk.w.record = p.counters
	wk.w.wk = wk
	wk.ready = func() bool { return p.in.Len() > 0 || p.book.waiting.Load() > 0 || p.book.excess.Load() > 0 }
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
	wk.parkedAt = time.Now()
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
	wk.parkedFor += time.Since(wk.parkedAt)
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
		h.to.place <- true
	case h.spawn:
		p.spawn()
	}
}

// yield gives wk's place to a waiting resumer; wk then waits as a spare
// until it is handed a place again (true) or must exit (false).
func (p *Pool) yield(wk *worker, done <-chan struct{}) bool {
	p.mu.Lock()
	to, spare := p.book.yield(wk, time.Now())
	p.mu.Unlock()
	if to == nil {
		return true // another goroutine served the resumers first
	}
	to.place <- true
	if !spare {
		return false
	}
	select {
	case got := <-wk.place:
		return got // false: retired as idle
	case <-done:
	}
	p.mu.Lock()
	exit := p.book.unspare(wk)
	p.mu.Unlock()
	if exit {
		return false
	}
	return <-wk.place
}

// retire gives wk's place up for good if the pool has too many places;
// wk then exits (true).
func (p *Pool) retire() bool {
	p.mu.Lock()
	gone := p.book.retire()
	p.mu.Unlock()
	return gone
}

// leave gives back the place of a goroutine that exits.
func (p *Pool) leave() {
	p.mu.Lock()
	h := p.book.leave()
	p.mu.Unlock()
	p.hand(h)
}
