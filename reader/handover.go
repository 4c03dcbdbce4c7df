package reader

import (
	"time"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// Handing connections to other loops
//
// A reader loop can be removed while serving (Retire) and can give some of
// its connections to a loop just added (Rebalance). Either way a
// connection moves whole: its record (read buffer, parser state, the
// request that aliases the buffer, its body pipe, its timer's deadline)
// goes through the target loop's queue as one pointer, and its fd stays
// open all along, so the client notices nothing.
//
// Which connections move, and when:
//
//   - Those the loop owns (idle, reading a header or a small body,
//     discarding an unread body, lingering) move at once: the loop
//     deletes the registration from its poller, frees the slot and the
//     timer, and sends the record; the target registers the fd under a
//     slot and generation of its own, puts the timer back with the same
//     deadline, and reads, because an edge the old loop's epoll consumed
//     raises no new event for the new one.
//   - Those another stage holds (a request out at a processor or the
//     writer, a streamed body still being fed) stay until they come back:
//     the loop keeps feeding the body and sees the hang-ups meanwhile. On
//     Return, a keep-alive or lingering connection moves with its fate,
//     which the target carries out as if the Return had come to it; a
//     connection to be closed is closed here.
//   - Requests the processors had no room for (blocked) are out too: they
//     move once dispatched and returned.
//
// A retiring loop gets no new connections from the runtime, but an Adopt
// or a move may have been on its way as it retired: those are passed on
// (forward) unopened. It stops once it holds none (exit).
//
// Why the loop cannot vanish under a connection sent to it: every sender
// first reserves a place (reserve: open+1, then look whether the loop has
// exited), and the loop exits only by marking itself exited and then
// finding open at zero (exit). That is the store-then-load pair on both
// sides again (see stages.Loop): either the sender sees the loop gone and
// tries another, or the loop sees the reservation and stays.

// A loop's life, in order; lifeRetiring may go back to lifeServing (Stay).
const (
	lifeServing  int32 = iota // takes connections
	lifeRetiring              // gives its connections away; exits when it holds none
	lifeExited                // gone, or going: refuses connections
)

// maxHandoverTries bounds how often a connection looks for a target that
// has not just exited (a target is picked among serving loops, so a
// refusal means the set changed as it was picked).
const maxHandoverTries = 8

// ID is the loop's index in its stage.
func (l *Loop) ID() int { return l.id }

// Counts is what the loop has done since it started: busy time, turns,
// hand-offs taken (stages.Loop.Counts). Any goroutine.
func (l *Loop) Counts() stages.LoopCounts { return l.core.Counts() }

// SetDrainBudget bounds how many hand-offs the loop takes per turn
// (stages.Loop.SetDrainBudget).
func (l *Loop) SetDrainBudget(n int) { l.core.SetDrainBudget(n) }

// Moved is the number of connections the loop has given to other loops.
func (l *Loop) Moved() uint64 { return l.moved.Load() }

// Retire makes the loop give every connection to the other loops of its
// stage (Config.Handover picks each one's) and stop, Run returning nil,
// once it holds none. The caller must already have stopped sending it new
// connections. It reports false if the loop was not serving. Any
// goroutine.
func (l *Loop) Retire() bool {
	if !l.life.CompareAndSwap(lifeServing, lifeRetiring) {
		return false
	}
	l.sweepReq.Store(true)
	l.core.Notify()
	return true
}

// Stay takes back a Retire that has not yet ended in the loop's exit: the
// loop serves again, keeping the connections it still has. It reports
// false when the loop has exited or is exiting. Any goroutine.
func (l *Loop) Stay() bool {
	if !l.life.CompareAndSwap(lifeRetiring, lifeServing) {
		return l.life.Load() == lifeServing
	}
	l.core.Notify()
	return true
}

// Retiring reports whether Retire was called and not taken back.
func (l *Loop) Retiring() bool { return l.life.Load() != lifeServing }

// Giving reports whether the loop is giving connections away (Retire, or
// a Rebalance not yet done). Any goroutine. A stage should give such a
// loop none while another is free: two loops handing connections to each
// other could each wait on the other's full queue.
func (l *Loop) Giving() bool { return l.life.Load() != lifeServing || l.giveAway.Load() > 0 }

// Rebalance asks the loop to give n of its connections to the other loops
// (to one just added, say): those it owns now, then others as they come
// back. It replaces an earlier request not yet met: the caller counts
// afresh. Any goroutine.
func (l *Loop) Rebalance(n int) {
	if n <= 0 {
		return
	}
	l.giveAway.Store(int64(n))
	l.sweepReq.Store(true)
	l.core.Notify()
}

// reserve counts a connection about to be sent to the loop, unless the
// loop has exited. The sender then must send it.
func (l *Loop) reserve() bool {
	l.open.Add(1)
	if l.life.Load() == lifeExited {
		l.open.Add(-1)
		return false
	}
	return true
}

// exit ends a retiring loop that holds nothing, unless a connection was
// reserved as it looked; it reports whether the loop may return.
func (l *Loop) exit() bool {
	if !l.life.CompareAndSwap(lifeRetiring, lifeExited) {
		return false // taken back (Stay)
	}
	if l.open.Load() == 0 {
		return true
	}
	l.life.Store(lifeRetiring)
	return false
}

// giving reports whether the loop is handing connections over now.
func (l *Loop) giving() bool {
	if l.draining || l.cfg.Handover == nil {
		return false
	}
	return l.life.Load() == lifeRetiring || l.giveAway.Load() > 0
}

// gave counts one connection handed over against Rebalance's request.
func (l *Loop) gave() {
	l.moved.Add(1)
	if l.life.Load() != lifeRetiring && l.giveAway.Add(-1) < 0 {
		l.giveAway.Store(0)
	}
}

// sweep hands over the connections the loop owns, once per Retire or
// Rebalance; those out come back later, one by one (giveBackOnReturn).
func (l *Loop) sweep() {
	if !l.sweepReq.Load() || !l.sweepReq.Swap(false) {
		return
	}
	for slot := range l.conns {
		if !l.giving() {
			break
		}
		if rc := l.conns[slot]; rc != nil && movable(rc.state) && l.handOver(int32(slot), false, 0) {
			l.gave()
		}
	}
	// A ready entry now names a free slot, or one a later connection
	// takes: a read attempt on an edge-triggered socket is harmless
	// either way, but there is no need to make it.
	kept := l.ready[:0]
	for _, slot := range l.ready {
		if l.conn(slot) != nil {
			kept = append(kept, slot)
		}
	}
	l.ready = kept
}

// movable: the loop alone holds a connection in these states.
func movable(s connState) bool {
	switch s {
	case stateIdle, stateHeader, stateBody, stateDrain, stateLinger:
		return true
	}
	return false
}

// giveBackOnReturn hands over a connection that has just come back, with
// its fate, if the loop is giving connections away and the connection
// lives on; it reports whether it did.
func (l *Loop) giveBackOnReturn(slot int32, f stages.Fate) bool {
	if f != stages.FateKeepAlive && f != stages.FateLinger {
		return false // closed here; nothing to move
	}
	if !l.giving() || l.conns[slot].state != stateOut {
		return false
	}
	if !l.handOver(slot, true, f) {
		return false
	}
	l.gave()
	return true
}

// target picks and reserves the loop a connection moves to, or returns
// nil.
func (l *Loop) target() *Loop {
	for range maxHandoverTries {
		to := l.cfg.Handover(l)
		if to == nil || to == l {
			return nil
		}
		if to.reserve() {
			return to
		}
	}
	return nil
}

// handOver moves the connection in slot to another loop (see the top of
// this file); back with f: it has just come back from its request. It
// reports false, keeping the connection, when there is no other loop.
func (l *Loop) handOver(slot int32, back bool, f stages.Fate) bool {
	rc := l.conns[slot]
	if rc.inFlight() > 0 {
		return false // its answers come back here, by its slot; flightDone moves it after
	}
	to := l.target()
	if to == nil {
		return false
	}
	if err := l.poller.Delete(rc.c.FD); err != nil {
		// Not registered here (it cannot be otherwise): the connection
		// is broken as far as this loop can tell. Keep it and let its
		// next read or the timer say so.
		to.open.Add(-1)
		return false
	}
	class := uint8(rc.class)
	l.clearTimer(slot) // rc.deadline stays: the target's timer takes it
	l.rebase(rc, to)
	l.untrack(rc)
	l.conns[slot] = nil
	l.free = append(l.free, slot)
	l.open.Add(-1)
	to.send(msg{c: rc.c, rc: rc, op: opMove, back: back, fate: f, class: class})
	return true
}

// forward passes on, unopened, a connection that reached a retiring loop
// (an Adopt, or a move, sent as it retired); it reports false when the loop
// keeps it (it is serving, or there is no other loop).
func (l *Loop) forward(m msg) bool {
	if l.life.Load() != lifeRetiring || l.cfg.Handover == nil {
		return false
	}
	to := l.target()
	if to == nil {
		return false
	}
	l.open.Add(-1) // reserved by whoever sent it here
	if m.op == opMove {
		l.rebase(m.rc, to)
	}
	to.send(m)
	return true
}

// arrive takes in a connection another loop gave away: a slot and
// generation of this loop's, the registration, its timer; then whatever
// its state asks (see the top of this file).
func (l *Loop) arrive(m msg) {
	rc := m.rc
	slot := l.takeSlot()
	l.gen++
	rc.gen = l.gen
	rc.class, rc.prev, rc.next = classNone, -1, -1
	l.conns[slot] = rc
	l.track(rc)
	c := rc.c
	c.RSlot, c.Reader = slot, l.id
	if err := l.poller.Add(c.FD, poll.Readable|poll.EdgeTriggered, poll.MakeToken(poll.KindConn, rc.gen, int(slot))); err != nil {
		l.close(slot)
		return
	}
	if m.back {
		l.returned(slot, m.fate)
		return
	}
	if m.class != classNone {
		l.setTimer(slot, int(m.class), l.epoch.Add(time.Duration(rc.deadline)))
	}
	if rc.work != nil {
		rc.drained = false // a new registration: read rather than trust the old loop's view
	}
	if l.draining && (rc.state == stateIdle || (rc.state == stateHeader && (rc.work == nil || rc.end == rc.start))) {
		l.close(slot)
		return
	}
	l.readable(slot, false)
}

// rebase makes rc's timer deadline, counted from this loop's epoch,
// count from to's: each loop counts from its own (Loop.epoch), and a
// moved connection keeps its deadline.
func (l *Loop) rebase(rc *rconn, to *Loop) {
	rc.deadline += int64(l.epoch.Sub(to.epoch))
}
