package reader

import (
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// Several requests of a connection in flight (stages.Pipelined).
//
// A connection of a pipelined protocol stays in the loop's care while its
// requests run: each request the parser completes is launched, that is
// its request record (work) leaves the connection with it, read buffer
// and all, so the bytes its fields alias stay put however far the
// connection reads on; the bytes after it (the next requests' start)
// move to a fresh record, which carries the connection's count of
// requests in flight. The record comes back when the request's answer has
// been written (Answered, with the request's ticket), and goes back to
// the loop's stash.
//
// The window bounds what a client may have in flight: a request that
// would exceed it, or one that may not overtake (stages.Head.Overtake
// false) while earlier ones are out, is parked, parsed, in the
// connection's record, and the connection is not read (stateFull) until
// an answer comes back. Parking the request rather than leaving its
// bytes unparsed costs nothing more: it is in the buffer either way.
//
// The fd is closed only once no request of the connection is in flight
// (closeLater): a writer may still be writing one of its answers, and an
// fd closed under it could be reused by a new connection meanwhile.

// window is a pipelined protocol's bound on a connection's requests in
// flight; requests 0 means one at a time (the protocol is not pipelined).
type window struct {
	requests int32
	bytes    int64
}

// windows reads each protocol's window once.
func windows(protocols []stages.Protocol) []window {
	ws := make([]window, len(protocols))
	for i, p := range protocols {
		if pp, ok := p.(stages.Pipelined); ok {
			n, b := pp.Window()
			if n > 1 {
				ws[i] = window{requests: int32(min(n, 1<<15)), bytes: max(b, 1)}
			}
		}
	}
	return ws
}

// windowOf is rc's protocol's window.
func (l *Loop) windowOf(rc *rconn) window {
	if id := int(rc.c.Protocol); id < len(l.windows) {
		return l.windows[id]
	}
	return window{}
}

// inFlight is the number of rc's requests launched and not yet answered.
// The count lives in the connection's request record, which the
// connection keeps while it is not zero (dropWork).
func (rc *rconn) inFlight() int32 {
	if rc.work == nil {
		return 0
	}
	return rc.out
}

// Answered hands back the record of a request that was in flight beside
// others of its connection (Request.Ticket), once its answer has been
// written or given up on, with the fate the answer decided. The
// connection itself stays with the loop. The stage that let go of the
// request last calls it, as for Return.
func (l *Loop) Answered(c *stages.Conn, ticket int32, f stages.Fate) {
	l.send(msg{c: c, op: opAnswered, ticket: ticket, fate: f})
}

// launch dispatches the request parsed in rc's record and lets the
// connection read on, or parks the request if the window does not let it
// go yet.
func (l *Loop) launch(slot int32, win window) {
	rc := l.conns[slot]
	size := int64(rc.consumed)
	if !rc.parked && rc.key != 0 {
		for o := rc.flight; o != nil; o = o.nextOut {
			if o.key == rc.key {
				l.reject(slot, stages.ErrDuplicateKey)
				return
			}
		}
	}
	if rc.out > 0 && (!rc.overtake || rc.out >= win.requests || rc.outBytes+size > win.bytes) {
		rc.parked = true
		l.setState(rc, stateFull)
		l.clearTimer(slot)
		return
	}
	w := rc.work
	rest := w.buf[w.start+w.consumed : w.end]
	rc.work = nil // it goes out with the request; takeWork gives rc another
	l.worked--
	l.takeWork(rc)
	if len(rest) > len(rc.buf) {
		l.recycleBuf(rc.buf)
		rc.buf = l.big.get(len(rest))
	}
	rc.start, rc.end = 0, copy(rc.buf, rest)
	rc.out, rc.outBytes = w.out+1, w.outBytes+size
	rc.flight, w.nextOut, w.flight = w, w.flight, nil
	w.out, w.outBytes, w.parked = 0, 0, false
	w.end, w.size = w.start+w.consumed, size
	w.drained, rc.drained = false, w.drained
	rc.finQueued = w.finQueued

	ticket := l.hold(w)
	now := l.clock() // the launch, to within one request (clock)
	w.req.Ticket, w.req.Follows, w.req.Dispatched = ticket, rc.out > 1, now
	rc.c.SetPhase(stages.PhaseQueued)
	l.clearTimer(slot)
	if rc.out >= win.requests || rc.outBytes >= win.bytes {
		l.setState(rc, stateFull) // read on when an answer comes back
	} else {
		l.startRequest(slot, rc.end == rc.start)
	}
	if l.queueBehind(&w.req) || !l.cfg.Dispatch(&w.req) {
		l.heldBlocked.push(w.req.Class, ticket)
		l.countBlocked()
	}
	if l.draining || l.forced {
		l.close(slot) // after its requests in flight
	}
}

// hold records a launched request's record and returns its ticket.
func (l *Loop) hold(w *work) int32 {
	if n := len(l.heldFree); n > 0 {
		i := l.heldFree[n-1]
		l.heldFree = l.heldFree[:n-1]
		l.held[i] = w
		return i + 1
	}
	l.held = append(l.held, w)
	return int32(len(l.held))
}

// unhold takes a launched request's record back by its ticket, nil if
// the ticket names none of c's.
func (l *Loop) unhold(c *stages.Conn, ticket int32) *work {
	if ticket <= 0 || int(ticket) > len(l.held) {
		return nil
	}
	w := l.held[ticket-1]
	if w == nil || w.req.Conn != c {
		return nil
	}
	l.held[ticket-1] = nil
	l.heldFree = append(l.heldFree, ticket-1)
	return w
}

// answered takes back a launched request's record and carries out the
// fate its answer decided.
func (l *Loop) answered(c *stages.Conn, ticket int32, f stages.Fate) {
	w := l.unhold(c, ticket)
	if w == nil {
		return
	}
	size := w.size
	slot := c.RSlot
	rc := l.conn(slot)
	if rc == nil || rc.c != c || rc.work == nil {
		l.releaseHeld(w)
		return // cannot be: a connection with requests in flight is neither closed nor moved
	}
	rc.unlink(w)
	l.releaseHeld(w)
	rc.out--
	rc.outBytes -= size
	if f != stages.FateKeepAlive {
		l.endAfterAnswer(slot, f)
		if l.conns[slot] != rc {
			return
		}
	}
	l.flightDone(slot)
}

// endAfterAnswer ends a connection whose answer said it ends (the writer
// shut the socket for a lingering close, or gave up on it).
func (l *Loop) endAfterAnswer(slot int32, f stages.Fate) {
	rc := l.conns[slot]
	rc.peerClosed = true // no further request is read
	switch {
	case rc.state == stateOut:
		// The connection's own request is out (one the reader refused,
		// or one with a streamed body): its return ends it.
	case f == stages.FateReset:
		l.reset(slot)
	case f == stages.FateClose:
		l.close(slot)
	case rc.state != stateLinger && rc.state != stateClosing:
		l.lingerClose(slot)
	}
}

// flightDone goes on with a connection one of whose requests in flight
// has just been answered.
func (l *Loop) flightDone(slot int32) {
	rc := l.conns[slot]
	switch rc.state {
	case stateFull:
		if rc.work != nil && rc.refusal != nil {
			if rc.out == 0 {
				err := rc.refusal
				rc.refusal = nil
				l.reject(slot, err)
			}
			return
		}
		l.resume(slot)
		return
	case stateClosing:
		if rc.out == 0 {
			l.close(slot)
		}
		return
	case stateIdle:
		if rc.out == 0 {
			l.setTimer(slot, classIdle, l.core.Now().Add(l.cfg.IdleTimeout))
			if rc.end == rc.start {
				l.dropWork(rc) // an idle connection holds no record
			}
		}
	}
	if rc.inFlight() == 0 && l.giving() && movable(rc.state) && l.handOver(slot, false, 0) {
		l.gave()
	}
}

// resume reads a full connection on once the window lets it: its parked
// request first.
func (l *Loop) resume(slot int32) {
	rc := l.conns[slot]
	win := l.windowOf(rc)
	if rc.parked {
		l.launch(slot, win)
	} else if rc.out < win.requests && rc.outBytes < win.bytes {
		l.startRequest(slot, rc.end == rc.start)
	}
	if l.conns[slot] == rc && (rc.state == stateHeader || rc.state == stateIdle) {
		l.readRequest(slot)
	}
}

// closeLater is close for a connection with requests in flight: it
// reads no more, gives back the launched requests the processors have
// not taken yet, and closes once the last answer is back.
func (l *Loop) closeLater(slot int32) {
	rc := l.conns[slot]
	l.clearTimer(slot)
	l.setState(rc, stateClosing)
	rc.parked, rc.peerClosed, rc.feeding = false, true, false
	l.heldBlocked.each(func(t int32) bool {
		w := l.held[t-1]
		if w == nil || w.req.Conn != rc.c {
			return true
		}
		l.unhold(rc.c, t)
		rc.out--
		rc.outBytes -= w.size
		rc.unlink(w)
		l.releaseHeld(w)
		return false
	})
	l.countBlocked()
	if rc.out == 0 {
		l.close(slot)
	}
}

// releaseHeld returns a launched request's record and its buffer to the
// loop's stashes. Its body was read whole: it has no pipe to end.
func (l *Loop) releaseHeld(w *work) {
	l.recycleBuf(w.buf)
	w.buf, w.start, w.end = nil, 0, 0
	l.stashWork(w)
}

// shutFlight is force for a connection with requests in flight: its
// socket is shut so that writers fail fast and answer, and it closes
// when they have.
func (l *Loop) shutFlight(slot int32) {
	_ = unix.Shutdown(l.conns[slot].c.FD, unix.SHUT_RDWR)
	l.close(slot)
}

// goneWithFlight records, for a connection whose client closed (or
// broke) it with requests in flight and nothing more to read, that the
// client has gone: their answers have nobody to read them, so those not
// started are not started (stages.Conn.Gone), as hangUp does for a
// connection whose one request is out.
func (l *Loop) goneWithFlight(rc *rconn) {
	if rc.inFlight() == 0 || rc.c.Gone() {
		return
	}
	l.hangups.Add(1)
	rc.c.HangUp()
}

// unlink takes w off rc's list of requests in flight.
func (rc *rconn) unlink(w *work) {
	for p := &rc.flight; *p != nil; p = &(*p).nextOut {
		if *p == w {
			*p, w.nextOut = w.nextOut, nil
			return
		}
	}
}
