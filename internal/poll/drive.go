package poll

import (
	"errors"
	"os"
	"time"
)

// Steps is what a loop gives Drive: its turn, and the two halves of its
// sleep protocol (stages.LoopWaker).
type Steps struct {
	// Turn handles the events of the latest poll (none on Drive's first
	// call, and after a wait that ended on its deadline with nothing
	// queued), does the loop's other work, and says how long the loop may
	// wait for the next events: negative without limit, zero to poll at
	// once. done ends Drive, which returns nil. The events are valid
	// until Turn returns.
	Turn func(evs []Event) (wait time.Duration, done bool)
	// Sleep announces a wait that may park, after its deadline is set
	// (an Expire that follows the announcement must not be overwritten),
	// and re-checks what producers signal: park false turns the wait
	// into a poll; an error ends Drive with it. nil: the loop parks
	// without announcing.
	Sleep func() (park bool, err error)
	// Awake ends the sleep Sleep announced, once per announcement, before
	// Turn sees the wait's events. nil with Sleep.
	Awake func()
}

// Drive runs a loop on the poller until Turn reports done or the poller
// fails (ErrClosed once it is closed). It is Wait turned inside out, and
// parks with fewer polls.
//
// Why: Wait parks through RawConn.Read, whose first step (the runtime's
// pollReset) forgets any readiness Go's network poller has recorded for
// the poller fd. An edge that arrived while the loop was working is lost
// that way, so Wait must poll once before it parks, and a loop that
// sleeps between its requests pays four epoll_waits a sleep: that poll,
// the scheduler's non-blocking look at the network and its blocking one,
// and the poll that collects the events once it is woken. Drive runs the
// loop's turns inside one RawConn.Read instead, from the callback, and
// parks by returning false from it: nothing resets the recorded
// readiness between two parks, and an edge that came while the loop
// worked makes the next park return at once. The loop leaves the Read,
// and enters it again, only when its deadline fires or Expire ends the
// wait. One epoll_wait less a sleep: at one connection, one system call
// in six of a keep-alive request.
//
// A park must still look first (poll, and park only if it finds nothing)
// where that is needed or pays: the first park in a Read; every park
// while the poller holds a level-triggered fd (levelSet says why: a
// writer loop with completion sources); and the parks of a loop whose
// looks find events, because it is under load (maxLookSkip).
//
// The poller fd's read lock is held while Drive runs, so Close does not
// return until Drive has returned (it ends a park at once); close the
// poller after the loop, as stages.Loop does.
func (p *Poller) Drive(dst []Event, s Steps) error {
	if p.blocking {
		return p.driveBlocking(dst, s)
	}
	d := &driver{p: p, s: s, evs: dst[:0]}
	d.runFn = d.run // once: a method value passed to Read is allocated
	d.wait, d.done = s.Turn(d.evs)
	for !d.done {
		if d.wait != 0 {
			if d.sleep() {
				d.park()
				if d.err != nil {
					break
				}
				continue
			}
			if d.err != nil {
				break
			}
			// The re-check found work: poll instead of parking.
		}
		if d.poll(p.pollerFD()) {
			break
		}
		d.turn()
	}
	if d.announced {
		d.s.Awake()
	}
	if d.err != nil {
		if errors.Is(d.err, errBadFD) {
			return ErrClosed
		}
		return d.err
	}
	return nil
}

// maxLookSkip bounds how many parks in a row go without a look first.
//
// The look before a park is not needed for correctness once inside the
// Read, but it pays when events came during the turn: it finds them for
// one poll, where a park costs a trip through the scheduler, its
// netpoll, and the poll after the wake. Under load it finds them nearly
// every time: without any look, GET /hello at c=100 (server pinned, eight
// alternating rounds) took 1.035x the CPU a request of Wait's way, 1
// round of 8 below. A lightly loaded loop finds nothing there. So a look that
// finds nothing lets the next park skip it, then the next two, four, up
// to maxLookSkip, and a look that finds events, or a wake whose poll
// finds more than one, brings the looks back at every park.
const maxLookSkip = 16

// driver is one Drive's state.
type driver struct {
	p    *Poller
	s    Steps
	evs  []Event
	wait time.Duration // what the latest Turn asked for
	done bool
	err  error
	// announced: Sleep was called and Awake not yet.
	announced bool
	// entered: the next call of run is the first in its RawConn.Read.
	entered bool
	// parkedAt is when the loop last set out to park, from p.epoch.
	parkedAt time.Duration
	// skip is how many parks to come may go without a look first, and
	// backoff what it was set to last (see maxLookSkip).
	skip, backoff int
	runFn         func(uintptr) bool
}

// park runs the loop inside RawConn.Read (run) until it is done, fails,
// or a park ends on its deadline or Expire; in that case it takes the
// turn that follows, and Drive enters the Read again for the next park.
func (d *driver) park() {
	p := d.p
	d.entered = true
	err := p.rc.Read(d.runFn)
	if d.err != nil || d.done {
		return
	}
	p.parked += time.Since(p.epoch) - d.parkedAt
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		d.err = ErrClosed
		return
	}
	p.armedOK = false // it fired, or Expire moved it into the past
	d.evs = d.evs[:0]
	if p.expired.Swap(false) && d.poll(p.pollerFD()) {
		return
	}
	d.turn()
}

// run is the RawConn.Read callback: false parks the loop until the
// poller fd's next edge (or the deadline, or Expire, which end the Read);
// true leaves the Read, done or failed.
func (d *driver) run(fd uintptr) bool {
	if d.entered {
		// The Read began by forgetting the fd's recorded readiness: look
		// before parking. The sleep is announced and the deadline set.
		d.entered = false
		if d.poll(int(fd)) {
			return true
		}
		if len(d.evs) == 0 {
			return false
		}
	} else {
		// Woken by an edge, perhaps one whose events a poll already took.
		now := time.Since(d.p.epoch)
		d.p.parked += now - d.parkedAt
		if d.poll(int(fd)) {
			return true
		}
		if len(d.evs) == 0 {
			d.parkedAt = now
			return false
		}
		if len(d.evs) > 1 {
			d.backoff, d.skip = 0, 0 // busy: look before the next park
		}
	}
	d.turn()
	for !d.done {
		if d.wait != 0 {
			if d.sleep() {
				levels := d.p.levels.any()
				if !levels && d.skip > 0 {
					d.skip--
					return false
				}
				// Look before parking: a level-triggered fd left ready
				// brings no edge, and a loop under load finds events here
				// that would otherwise cost it a trip through the
				// scheduler (see skip).
				if d.poll(int(fd)) {
					return true
				}
				if len(d.evs) == 0 {
					if !levels {
						d.backoff = min(max(2*d.backoff, 1), maxLookSkip)
						d.skip = d.backoff
					}
					return false
				}
				d.backoff, d.skip = 0, 0
				d.turn()
				continue
			}
			if d.err != nil {
				return true
			}
		}
		if d.poll(int(fd)) {
			return true
		}
		d.turn()
	}
	return true
}

// sleep sets the deadline of the park d.wait asks for and announces it.
// false: do not park, because the re-check found work or d.err is set.
func (d *driver) sleep() bool {
	now, err := d.p.setDeadline(d.wait)
	if err != nil {
		d.err = ErrClosed
		return false
	}
	d.parkedAt = now
	if d.s.Sleep == nil {
		return true
	}
	park, err := d.s.Sleep()
	if err != nil {
		d.err = err
		return false
	}
	d.announced = true
	return park
}

// turn ends an announced sleep and hands the events to a turn.
func (d *driver) turn() {
	if d.announced {
		d.announced = false
		d.s.Awake()
	}
	d.wait, d.done = d.s.Turn(d.evs)
}

// poll collects the ready events into d.evs without blocking; true means
// it failed (d.err).
func (d *driver) poll(fd int) bool {
	d.p.drivePolls++
	n, err := d.p.poll(fd)
	if err != nil {
		d.err = err
		return true
	}
	d.evs = d.p.collect(d.evs[:0], n)
	return false
}

// driveBlocking is Drive for a poller whose waits block the thread.
func (p *Poller) driveBlocking(dst []Event, s Steps) error {
	evs := dst[:0]
	wait, done := s.Turn(evs)
	for !done {
		park, announced := wait != 0, false
		if park && s.Sleep != nil {
			var err error
			if park, err = s.Sleep(); err != nil {
				return err
			}
			announced = true
		}
		var err error
		if park {
			evs, err = p.Wait(evs, wait)
		} else {
			evs, err = p.Wait(evs, 0)
		}
		if announced {
			s.Awake()
		}
		if err != nil {
			return err
		}
		wait, done = s.Turn(evs)
	}
	return nil
}
