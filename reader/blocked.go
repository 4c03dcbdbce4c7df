package reader

import "github.com/quartet-server/quartet/stages"

// blockedQueue holds the requests the processors had no room for (a
// connection's slot, or a launched request's ticket), one FIFO per
// class: a retry pass offers each class's requests in the order they came
// and stops that class at its first refusal, so a pass costs a dispatch
// per request that leaves (and one per full class), not one per request
// waiting, and no request is passed by a later one of its class.
type blockedQueue struct {
	byClass [stages.MaxClasses]idFIFO
	n       int
}

// classIndex maps a request's class to its FIFO; a class out of range
// (none is, from a stages.ClassQueue) shares the first.
func classIndex(c uint8) int {
	if int(c) >= stages.MaxClasses {
		return 0
	}
	return int(c)
}

func (q *blockedQueue) push(class uint8, id int32) {
	q.byClass[classIndex(class)].push(id)
	q.n++
}

// has reports whether class has requests waiting.
func (q *blockedQueue) has(class uint8) bool { return q.byClass[classIndex(class)].len() > 0 }

// retry offers class's requests in order: offer returns whether the
// request left (dispatched, or gone: its connection closed), false when
// the processors refused it, which ends the class's turn.
func (q *blockedQueue) retry(class int, offer func(id int32) bool) (refused bool) {
	f := &q.byClass[class]
	for f.len() > 0 {
		if !offer(f.peek()) {
			return true
		}
		f.pop()
		q.n--
	}
	return false
}

// each calls keep for every request, in order within each class, and
// drops those it returns false for.
func (q *blockedQueue) each(keep func(id int32) bool) {
	q.n = 0
	for c := range q.byClass {
		f := &q.byClass[c]
		kept := f.ids[:0]
		for _, id := range f.ids[f.head:] {
			if keep(id) {
				kept = append(kept, id)
			}
		}
		f.ids, f.head = kept, 0
		q.n += len(kept)
	}
}

// trim lets go of FIFOs' arrays grown past limit ids.
func (q *blockedQueue) trim(limit int) {
	for c := range q.byClass {
		if f := &q.byClass[c]; cap(f.ids) > limit {
			f.ids = append([]int32(nil), f.ids[f.head:]...)
			f.head = 0
		}
	}
}

// idFIFO is a queue of ids in a slice, popped from head.
type idFIFO struct {
	ids  []int32
	head int
}

func (f *idFIFO) len() int      { return len(f.ids) - f.head }
func (f *idFIFO) peek() int32   { return f.ids[f.head] }
func (f *idFIFO) push(id int32) { f.ids = append(f.ids, id) }

func (f *idFIFO) pop() {
	f.head++
	switch {
	case f.head == len(f.ids):
		f.ids, f.head = f.ids[:0], 0
	case f.head >= 256 && 2*f.head >= len(f.ids):
		n := copy(f.ids, f.ids[f.head:])
		f.ids, f.head = f.ids[:n], 0
	}
}

// queueBehind reports whether req is to wait behind the requests of its
// class the processors had no room for, instead of being offered now:
// taking a place a pop made before the retry pass comes would let new
// requests pass the waiting ones again and again (with admission off and
// 12,000 connections on one core, 7,014 waited past the client's 10 s).
// Requests served inline take no place, and never wait.
func (l *Loop) queueBehind(req *stages.Request) bool {
	if l.blocked.n+l.heldBlocked.n == 0 || l.cfg.Classify == nil || l.cfg.Inline != nil && l.cfg.Inline(req) {
		return false
	}
	c := l.cfg.Classify(req)
	if !l.blocked.has(c) && !l.heldBlocked.has(c) {
		return false
	}
	req.Class = c
	return true
}

// countBlocked publishes how many requests wait, for Blocked.
func (l *Loop) countBlocked() { l.nblocked.Store(int32(l.blocked.n + l.heldBlocked.n)) }

// Blocked is the number of parsed requests the loop holds because the
// processors had no room for them. Any goroutine.
func (l *Loop) Blocked() int { return int(l.nblocked.Load()) }

// retryBlocked dispatches again the requests the processors had no room
// for, once Unblock says there is room: a full queue costs no retries
// while it stays full (a request that finds it full again waits for the
// next Unblock: the refused push marked its class's queue full, so the
// next pop there calls Unblock), and each class is offered in order until
// it refuses once. Offering every waiting request on every Unblock, with
// 12,000 connections behind a full queue, took a quarter of the CPU.
// Launched requests (flight.go) go first, as they were read first.
func (l *Loop) retryBlocked() {
	if !l.unblocked.Swap(false) || l.blocked.n+l.heldBlocked.n == 0 {
		return
	}
	now := l.core.Now()
	for c := range stages.MaxClasses {
		refused := l.heldBlocked.retry(c, func(t int32) bool {
			w := l.held[t-1]
			if w == nil {
				return true
			}
			w.req.Dispatched = now
			return l.cfg.Dispatch(&w.req)
		})
		if refused {
			continue
		}
		l.blocked.retry(c, func(slot int32) bool {
			rc := l.conn(slot)
			if rc == nil || rc.state != stateOut {
				return true
			}
			rc.req.Dispatched = now
			return l.cfg.Dispatch(&rc.req)
		})
	}
	l.countBlocked()
}
