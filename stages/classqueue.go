package stages

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// ClassQueue is the reader→processor hand-off, one Ring per request class,
// so that a class of slow requests cannot fill the queue in front of a
// class of fast ones (Welsh and Culler's class-based admission, USITS
// 2003, needs a queue per class to be able to treat classes apart).
//
// Producers are the reader loops (Push, after the runtime's admission
// check); consumers are the processor goroutines (Pop). Which class a
// processor serves next is max-min fair over processor places: Pop takes
// from the non-empty class whose requests hold the fewest places now (its
// popped requests not yet Finished). A class of 50 ms handlers ends up
// holding most places only while nobody else waits; a request of a fast
// class waits at most until the next place comes free, whatever the slow
// class has queued. This is least-attained-service over places rather
// than round-robin over requests, which would give a slow class as many
// starts as a fast one and so most of the places.
//
// Class 0 always exists ("other": whatever the classifier cannot tell
// apart); AddClass opens more, up to MaxClasses, and a class is never
// closed, so a Request's Class stays valid. Each class's ring is made when
// the class is opened, so a server whose requests all fall into one or two
// classes pays for one or two rings.
//
// Besides the rings, each class carries what admission control and the
// pool controller read (the counts below) and what the controller writes
// for admission (Limit, RetryAfter). Every count is an atomic on a line of
// its own side: reader-side fields are written only when a request is shed
// or finds the ring full, consumer-side fields once per request finished.
type ClassQueue struct {
	capacity int
	room     func()       // a Push found a full ring and a Pop has since made room
	unused   func() int64 // processor places running nothing now (SetUnused); nil: unknown
	base     time.Time    // monotonic origin of the lanes' times
	target   atomic.Int64 // queue-wait target, ns, for Admit's look at the queue's progress; 0: none
	lateAt   atomic.Int64 // a finished request that waited longer than this, ns, counts as late; 0: none
	n        atomic.Int32
	mu       sync.Mutex // serialises AddClass and StartLimit
	start    [2]int64   // limit and Retry-After a class opens with (StartLimit)
	lanes    [MaxClasses]lane
}

// MaxClasses bounds the classes a ClassQueue keeps apart. Pop scans the
// open classes, so the bound keeps that scan a few cache lines; eight is
// "a handful of routes with their own character" plus everything else.
const MaxClasses = 8

type lane struct {
	_    cpu.CacheLinePad
	ring atomic.Pointer[Ring[*Request]]
	// Written by the controller every tick, read by producers.
	limit      atomic.Int64 // admit while fewer than this wait; <0: no limit
	retryAfter atomic.Int64 // seconds, for a shed request's Retry-After
	_          cpu.CacheLinePad
	// Written by producers, rarely: only on a shed or a full ring.
	shed atomic.Uint64 // requests refused by admission control
	full atomic.Bool   // a producer found the ring full and waits for room
	_    cpu.CacheLinePad
	// Written by consumers, once per request.
	done    atomic.Uint64 // popped requests whose handler has returned (or that were dropped)
	waitNs  atomic.Int64  // of those, total time queued
	runNs   atomic.Int64  // of those, total time running with a place
	emptied atomic.Int64  // when one finished with the class's queue empty, ns since base
	late    atomic.Uint64 // of those, how many waited longer than lateAt
	_       cpu.CacheLinePad
}

// NewClassQueue returns a queue with class 0 open, each class's ring
// holding capacity requests (rounded up as NewRing does). room, if not
// nil, is called by the consumer whose Pop made room in a class that a
// producer had found full; see Push.
func NewClassQueue(capacity int, room func()) *ClassQueue {
	q := &ClassQueue{capacity: capacity, room: room, start: [2]int64{-1, 0}, base: time.Now()}
	for i := range q.lanes {
		q.lanes[i].limit.Store(-1)
		q.lanes[i].emptied.Store(math.MinInt64 / 2) // never yet
	}
	q.lanes[0].ring.Store(NewRing[*Request](capacity))
	q.n.Store(1)
	return q
}

// AddClass opens the next class and returns its number, or reports false
// when MaxClasses are open.
func (q *ClassQueue) AddClass() (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := int(q.n.Load())
	if n == MaxClasses {
		return 0, false
	}
	q.lanes[n].ring.Store(NewRing[*Request](q.capacity))
	q.lanes[n].limit.Store(q.start[0])
	q.lanes[n].retryAfter.Store(q.start[1])
	q.n.Store(int32(n + 1)) // after the ring: whoever sees n+1 sees the ring
	return n, true
}

// StartLimit sets the admission limit and Retry-After that a class opened
// from now on starts with, until the controller sets one for it.
func (q *ClassQueue) StartLimit(limit, retryAfter int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.start = [2]int64{limit, retryAfter}
}

// Classes is the number of open classes (0..Classes()-1).
func (q *ClassQueue) Classes() int { return int(q.n.Load()) }

// Push queues r, whose Class must be open, and reports true; or it reports
// false when that class's ring is full. Then the caller is registered as
// waiting for room: the next Pop from that class calls the room function,
// after which the caller should try again (a Push that fails again
// registers again). Why no room is missed is Dekker's pattern again, as in
// LoopWaker: the producer marks the class full, then pushes once more; a
// consumer pops, then looks at the mark.
func (q *ClassQueue) Push(r *Request) bool {
	l := &q.lanes[r.Class]
	ring := l.ring.Load()
	if ring.Push(r) {
		return true
	}
	l.full.Store(true)
	return ring.Push(r)
}

// Pop takes the next request: from the non-empty class holding the fewest
// places (ties go to the lower class number), or reports false when every
// class is empty.
func (q *ClassQueue) Pop() (*Request, bool) {
	n := int(q.n.Load())
	if n == 1 {
		return q.popFrom(0)
	}
	for range 2 {
		best, bestHeld := -1, uint64(0)
		for c := range n {
			l := &q.lanes[c]
			ring := l.ring.Load()
			if ring.Len() == 0 {
				continue
			}
			held := ring.deq.Load() - l.done.Load()
			if best < 0 || held < bestHeld {
				best, bestHeld = c, held
			}
		}
		if best < 0 {
			return nil, false
		}
		if r, ok := q.popFrom(best); ok {
			return r, true
		}
		// Another consumer emptied that class meanwhile: look again, once.
	}
	return nil, false
}

func (q *ClassQueue) popFrom(c int) (*Request, bool) {
	l := &q.lanes[c]
	r, ok := l.ring.Load().Pop()
	if ok && l.full.Load() && l.full.CompareAndSwap(true, false) && q.room != nil {
		q.room()
	}
	return r, ok
}

// Finished records that a popped request is done with its place (its
// handler returned, or it was dropped unserved) at end: waited is how long
// it was queued, ran how long it ran holding a place (time parked on its
// client excluded). Every popped request must be finished exactly once, or
// its class counts a place held forever.
func (q *ClassQueue) Finished(r *Request, waited, ran time.Duration, end time.Time) {
	q.FinishedClass(r.Class, waited, ran, end)
}

// FinishedClass is Finished for a request of class c that the caller may
// no longer touch (it was handed on before it finished: Protocol.Serve).
func (q *ClassQueue) FinishedClass(c uint8, waited, ran time.Duration, end time.Time) {
	l := &q.lanes[c]
	l.waitNs.Add(int64(waited))
	l.runNs.Add(int64(ran))
	if at := q.lateAt.Load(); at > 0 && int64(waited) > at {
		l.late.Add(1)
	}
	if l.ring.Load().Len() == 0 {
		l.emptied.Store(int64(end.Sub(q.base)))
	}
	l.done.Add(1)
}

// Len is the number of requests queued in every class, approximately (see
// Ring.Len).
func (q *ClassQueue) Len() int {
	n := int(q.n.Load())
	if n == 1 {
		return q.lanes[0].ring.Load().Len()
	}
	total := 0
	for c := range n {
		total += q.lanes[c].ring.Load().Len()
	}
	return total
}

// Cap is the capacity of each class's ring.
func (q *ClassQueue) Cap() int { return q.lanes[0].ring.Load().Cap() }

// Queued is the number of requests of class c waiting, approximately.
func (q *ClassQueue) Queued(c int) int { return q.lanes[c].ring.Load().Len() }

// Limit returns class c's admission limit (admit while fewer requests than
// this wait; negative: no limit) and the Retry-After, in seconds, for the
// requests it refuses.
func (q *ClassQueue) Limit(c int) (limit int64, retryAfter int64) {
	l := &q.lanes[c]
	return l.limit.Load(), l.retryAfter.Load()
}

// SetLimit sets class c's admission limit and Retry-After (the controller,
// every tick).
func (q *ClassQueue) SetLimit(c int, limit, retryAfter int64) {
	l := &q.lanes[c]
	l.limit.Store(limit)
	l.retryAfter.Store(retryAfter)
}

// SetUnused tells Admit how many processor places run no handler now
// (processor.Pool.Unused): as many requests as that start at once, and a
// limit on the requests that wait does not count them. Set it before the
// queue is used.
func (q *ClassQueue) SetUnused(f func() int64) { q.unused = f }

// SetWaitTarget sets the queue-wait target Admit holds the class's recent
// progress to (0: none), and counts as late (ClassCounts.Late) a request
// that waited longer than LateShare of it: admission control aims the
// waits below the target, so that their tail stays within it.
func (q *ClassQueue) SetWaitTarget(d time.Duration) {
	q.target.Store(int64(d))
	q.lateAt.Store(int64(float64(d) * LateShare))
}

// LateShare is the part of the queue-wait target after which a request's
// wait counts as late. What a client sees is the wait plus the rest of
// the pipeline's and the feedback's own lag: under twice one core's
// capacity, with 500 ms targets, waits held under 3/4 of it gave admitted
// requests a p99 of 530 to 600 ms from the client's send, under half of
// it 350 to 370 ms, at the same goodput.
const LateShare = 0.5

// Admit reports whether a request of class c, arriving at now, may join
// the queue: while fewer than the class's limit wait, or, beyond it, if
// the class's queue was seen empty less than half the wait target ago and
// the limit is not 0 (the limit is an estimate a period old, or a guess
// for a class not yet measured; a queue that keeps emptying is one its
// requests leave fast, and their burst is not refused), up to twice the
// limit; never into a full
// ring while a limit is set (admission on). If not, it counts
// the request as shed and returns the Retry-After to answer it with. One
// or two atomic loads when admitted under the limit.
func (q *ClassQueue) Admit(c int, now time.Time) (ok bool, retryAfter int64) {
	l := &q.lanes[c]
	limit := l.limit.Load()
	if limit < 0 {
		return true, 0
	}
	// A full ring refuses too: its request would wait in the reader, and
	// its connection's later ones unread in the socket, where no limit
	// counts them (a limit above the ring's capacity once let 8,000
	// requests wait 1.3 s behind a queue of 4,096).
	ring := l.ring.Load()
	n, room := int64(ring.Len()), int64(ring.Cap())
	if n < min(limit, room) {
		return true, 0
	}
	// Requests that places free now will start do not wait: a burst
	// pushed faster than workers take it is in the queue for a moment.
	// A limit counts only what would wait (pinned at 20 places and idle,
	// 10 requests of 3 s at once met a limit of 3, and half were
	// refused). Not with a limit of 0: the writers are behind.
	if limit > 0 && q.unused != nil && n < min(limit+q.unused(), room) {
		return true, 0
	}
	// A queue seen emptying lets a burst in, unless the limit is 0: the
	// controller sets 0 when the stages behind the processors are already
	// over the target, and a queue that drains fast into them does not
	// make room there. Nor does it let one into a full ring, nor more
	// than twice the limit wait: a burst from idle meets a queue emptied
	// a moment ago, and 12,000 connections of 100 µs handlers on one
	// core filled a ring of 4,096 in that moment, two seconds of work.
	if half := q.target.Load() / 2; half > 0 && limit > 0 && n < min(2*limit, room) && int64(now.Sub(q.base))-l.emptied.Load() < half {
		return true, 0
	}
	l.shed.Add(1)
	return false, l.retryAfter.Load()
}

// ClassCounts is one class's counts, read by the controller and exporters.
type ClassCounts struct {
	Queued  int    // waiting now
	Held    int    // popped and not finished: holding a place (or parked on their client)
	Pushed  uint64 // admitted into the queue, ever
	Taken   uint64 // popped, ever
	Done    uint64 // finished, ever
	Shed    uint64 // refused by admission control, ever
	WaitSum time.Duration
	RunSum  time.Duration
	Late    uint64 // finished after waiting longer than LateShare of the wait target, ever
	Limit   int64  // admission limit in force (<0: none)
	Retry   int64  // Retry-After in force, seconds
}

// Counts reads class c's counts. Consumer-side counts are read first, so
// that Done <= Taken <= Pushed holds in the result.
func (q *ClassQueue) Counts(c int) ClassCounts {
	l := &q.lanes[c]
	ring := l.ring.Load()
	done := l.done.Load()
	wait, run := time.Duration(l.waitNs.Load()), time.Duration(l.runNs.Load())
	taken := ring.deq.Load()
	pushed := ring.enq.Load()
	if taken > pushed {
		taken = pushed // a pop between the two loads; see Ring.Len
	}
	return ClassCounts{
		Queued:  int(pushed - taken),
		Held:    int(taken - min(done, taken)),
		Pushed:  pushed,
		Taken:   taken,
		Done:    done,
		Shed:    l.shed.Load(),
		WaitSum: wait,
		RunSum:  run,
		Late:    l.late.Load(),
		Limit:   l.limit.Load(),
		Retry:   l.retryAfter.Load(),
	}
}
