package stages

import (
	"math/bits"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

// Ring is a bounded multi-producer multi-consumer FIFO: Dmitry Vyukov's
// bounded MPMC queue (1024cores.net, "Bounded MPMC queue", 2010). Every slot
// carries a sequence number that is its ownership flag, so producers and
// consumers never share anything but the two position counters and the slot
// they are handing over, and no push or pop allocates.
//
// Quartet's rings and who uses them:
//
//	Listener, Writers -> Reader     accepted and kept-alive connections,
//	                                one ring per reader loop (LoopWaker)
//	Readers -> Processor pool       *Request, one ring shared by the P
//	                                processors (WorkerWaker)
//	Processors -> Writer            *Response, one ring per writer loop
//	                                (LoopWaker)
//
// Every ring has several producers and the processors' ring several
// consumers, hence MPMC rather than the SPSC ring STYLE.md sketches; the
// per-slot sequence number is the ownership flag it asks for, and a ring
// with one producer and one consumer pays only uncontended CASes for the
// generality.
//
// The algorithm, for a slot array of size n (a power of two, mask = n-1);
// slot i starts with seq = i:
//
//	enqueue(v):                            dequeue():
//	  pos := enqueuePos                      pos := dequeuePos
//	  loop:                                  loop:
//	    cell := &slots[pos & mask]             cell := &slots[pos & mask]
//	    dif := cell.seq - pos                  dif := cell.seq - (pos+1)
//	    if dif == 0:                           if dif == 0:
//	      if CAS(enqueuePos, pos, pos+1):        if CAS(dequeuePos, pos, pos+1):
//	        break                                  break
//	    elif dif < 0: return full              elif dif < 0: return empty
//	    else: pos = enqueuePos                 else: pos = dequeuePos
//	  cell.data = v                          v = cell.data
//	  cell.seq = pos + 1   // release        cell.seq = pos + mask + 1 // release
//
// seq == pos means "free for the producer of lap pos/n"; seq == pos+1 means
// "full, for the consumer of that lap"; seq == pos+n hands the slot to the
// producer of the next lap. The winning CAS makes the slot exclusively the
// caller's until its seq store, which publishes the data (Go's atomics are
// sequentially consistent, so the plain data write before the store is
// visible to whoever loads the new seq).
//
// Ring is not linearizable as a whole: a pop can report empty while a
// producer that has claimed a slot has not yet published it. That push
// completes moments later, and it is the wake-up protocol (LoopWaker,
// WorkerWaker), not the ring, that makes sure the consumer looks again.
type Ring[T any] struct {
	_ cpu.CacheLinePad
	// enq is the next position to push; producers contend on it.
	enq atomic.Uint64
	_   cpu.CacheLinePad
	// deq is the next position to pop; consumers contend on it.
	deq atomic.Uint64
	_   cpu.CacheLinePad
	// mask and slots are read-only after NewRing, shared by both sides.
	mask  uint64
	slots []ringSlot[T]
	_     cpu.CacheLinePad
}

// ringSlot is one cell. Neighbouring slots share cache lines; padding each
// would multiply the ring's size by up to 16 for a gain only under heavy
// contention on adjacent positions, which the position CASes already
// serialize.
type ringSlot[T any] struct {
	seq atomic.Uint64
	val T
}

// NewRing returns an empty ring holding up to capacity items, rounded up to
// a power of two (so a position maps to a slot with a mask) and at least 2
// (with one slot, "full for this lap" and "free for the next" would be the
// same sequence number).
func NewRing[T any](capacity int) *Ring[T] {
	n := uint64(2)
	if capacity > 2 {
		n = 1 << bits.Len64(uint64(capacity-1))
	}
	r := &Ring[T]{mask: n - 1, slots: make([]ringSlot[T], n)}
	for i := range r.slots {
		r.slots[i].seq.Store(uint64(i))
	}
	return r
}

// Push appends v and reports true, or reports false without blocking when
// the ring is full. A full ring is back-pressure: the caller decides whether
// to retry, shed the work, or stop reading from its sockets.
func (r *Ring[T]) Push(v T) bool {
	pos := r.enq.Load()
	for {
		s := &r.slots[pos&r.mask]
		seq := s.seq.Load()
		switch dif := int64(seq - pos); {
		case dif == 0:
			// The slot is free for this lap: claim it.
			if r.enq.CompareAndSwap(pos, pos+1) {
				s.val = v
				s.seq.Store(pos + 1) // publish to the consumer of this lap
				return true
			}
			pos = r.enq.Load()
		case dif < 0:
			// The slot still holds the previous lap's item: full.
			return false
		default:
			// Another producer claimed pos first; catch up.
			pos = r.enq.Load()
		}
	}
}

// Pop removes and returns the oldest item, or reports false when the ring is
// empty. It zeroes the slot, so a popped pointer is not kept alive by the
// ring until the slot is reused a lap later.
func (r *Ring[T]) Pop() (T, bool) {
	pos := r.deq.Load()
	for {
		s := &r.slots[pos&r.mask]
		seq := s.seq.Load()
		switch dif := int64(seq - (pos + 1)); {
		case dif == 0:
			// The slot is full for this lap: claim it.
			if r.deq.CompareAndSwap(pos, pos+1) {
				v := s.val
				var zero T
				s.val = zero
				s.seq.Store(pos + r.mask + 1) // free for the next lap's producer
				return v, true
			}
			pos = r.deq.Load()
		case dif < 0:
			// Not yet written for this lap: empty.
			var zero T
			return zero, false
		default:
			// Another consumer claimed pos first; catch up.
			pos = r.deq.Load()
		}
	}
}

// Len returns the number of items in the ring, approximately: the two
// positions are read at different moments, so under concurrent use the
// result is only good for statistics. It is clamped to [0, Cap()].
func (r *Ring[T]) Len() int {
	deq := r.deq.Load()
	enq := r.enq.Load()
	n := int64(enq - deq)
	if n < 0 {
		return 0
	}
	if n > int64(len(r.slots)) {
		return len(r.slots)
	}
	return int(n)
}

// Cap returns the ring's capacity, a power of two.
func (r *Ring[T]) Cap() int { return len(r.slots) }
