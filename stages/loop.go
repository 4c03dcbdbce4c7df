package stages

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/internal/poll"
)

// Loop is the event loop every stage runs, written once: the listener's
// accept loops, the reader and writer loops and the load generator's loops
// are each a Loop and a set of LoopHooks. The stage owns its connections
// and its hand-off queue; the Loop owns the poller, the waker, the order of
// a turn and the sleep protocol, and measures how busy the loop is.
//
// One turn:
//
//	now := time.Now()                  the turn's one clock read
//	Drain(budget)                      take hand-offs from the queue
//	wait, done := Turn(now, stopping)  serve ready work, expire timers,
//	                                   decide how long to wait; or return
//	if wait != 0:
//		set the wait's deadline
//		waker.Sleep()                  announce sleep
//		if Stop came since Turn looked, or Pending():
//			wait = 0                   the re-check: poll, don't block
//	events := poll, or park and poll   (poll.Poller.Drive)
//	waker.Awake()
//	for each event: the waker's needs nothing (Awake drained it);
//	                Event(ev) for the others
//
// The poller drives the turns (Drive) rather than the loop calling its
// Wait: a loop that stays inside Go's network poller between parks keeps
// the readiness it recorded there, and a lightly loaded one parks
// without polling first (one epoll_wait a sleep less; Drive says why).
//
// This is the split of Go's scheduler loop (findRunnable: local queue,
// global queue, netpoll(0), then announce, re-check and block in
// netpoll(delay)) and of gnet's eventloop (a poller that calls back per
// event, with its task queue drained on the wake-up fd's event); unlike
// gnet's, the queue here is drained on every turn, so a hand-off made
// while the loop runs costs no syscall.
//
// Why no hand-off is ever left waiting while the loop sleeps: a producer
// pushes to the stage's queue and then calls Wake; the loop announces
// sleep and then re-checks the queue (Pending). That is the store-then-load
// pair on each side of Dekker's pattern, and Go's atomics are sequentially
// consistent, so either the producer sees the loop asleep and writes the
// waker's eventfd or expires the wait's deadline (which ends the park),
// or the loop's re-check sees the item and only polls. LoopWaker's
// comment has the argument in full and the measurements of what it
// saves. Three rules follow; the Loop keeps what it can, and the hooks
// the rest:
//
//   - Whatever a producer signals with Wake must be looked at again after
//     Sleep: a check made before it, in Turn, does not count. The Loop
//     re-checks its own stop flag (whether Stop came since Turn looked,
//     not whether it was called: a stopping loop that is not yet done
//     must still sleep); Pending re-checks the rest (the queue, a
//     connection limit the stage paused at).
//   - Pending runs between Sleep and Wait, concurrently with producers:
//     it may only read what producers publish atomically.
//   - Work left ready must not wait for an event that may never come: a
//     Drain that took its whole budget makes the Loop poll, and a Turn
//     that leaves work ready (a connection with read budget left) returns
//     wait 0.
//
// Busy time: the time between two turns' clock reads, less what Wait spent
// parked, is the time the loop worked. Busy adds it up every turn (one
// atomic store); a controller that samples it twice and divides by the
// wall time between the samples has the loop's busy fraction.
//
// What the Loop does not do, so that loops can be added and removed while
// serving: it keeps no connection table and closes no stage fd, so a stage
// that retires its loop can Delete its registrations and hand its
// connections to other loops, fds open, from its hooks.
type Loop struct {
	poller *poll.Poller
	waker  *LoopWaker // nil for a loop nobody hands work to
	nudge  *LoopNudge // nil unless LoopOptions.Nudge
	// owedTurn: a Nudge found the loop asleep with events queued, and it
	// has not run since (LoopNudge.AwaitLoops).
	owedTurn atomic.Bool
	hooks    LoopHooks
	events   []poll.Event

	// now is the turn's clock read (nginx's cached time, ngx_time_update
	// once per epoll_wait): see Now. Loop goroutine only.
	now time.Time

	stop   atomic.Bool
	budget atomic.Int64 // Drain's budget per turn; 0 means no limit
	busy   atomic.Int64 // ns, see Busy
	turns  atomic.Int64 // see Counts
	taken  atomic.Int64
	full   atomic.Int64

	// mu keeps Notify's and Stop's wake-ups apart from Close closing the
	// waker, which LoopWaker.Close requires: a Wake that is between its CAS
	// and its eventfd write when the fd closes would write to whatever file
	// next gets the number. Hand-offs (Wake) don't take it: they must not
	// follow Close at all.
	mu     sync.RWMutex
	closed bool
}

// LoopHooks is what a stage gives its Loop. Only Turn is required. Each
// runs on the loop's goroutine; Pending also runs concurrently with the
// stage's producers.
type LoopHooks struct {
	// Drain takes up to budget items off the stage's hand-off queue, acts
	// on them, and returns how many it took; taking the whole budget makes
	// the turn poll rather than sleep. nil: the loop has no queue.
	Drain func(budget int) int
	// Turn serves the work that is ready without waiting (connections
	// with budget left from the last turn, retries), expires the timers
	// due at now, and says how long the loop may wait for events: negative
	// without limit, zero to poll. stopping is whether Stop was called, as
	// of this turn. done makes Run return nil at once.
	Turn func(now time.Time, stopping bool) (wait time.Duration, done bool)
	// Pending is the re-check (see Loop): whether anything that producers
	// signal with Wake has come since Drain and Turn looked, such as an
	// item in the queue. nil: nothing but Stop wakes the loop.
	Pending func() bool
	// Gather sees a wait's events before Event handles each, so that the
	// stage can start their I/O in one system call (the reader's batched
	// reads). nil: nothing to gather.
	Gather func([]poll.Event)
	// Event handles one event for a registration of the stage's (every
	// token but the waker's). nil: events only end the wait, and the next
	// Turn finds what is ready (the listener's accept loops).
	Event func(poll.Event)
}

// LoopOptions are the ways a Loop differs from the reader's and writer's.
type LoopOptions struct {
	// Solo: no other goroutine hands the loop work, so it needs no waker
	// (the load generator's loops). Its Turn must bound the wait, or Stop
	// is not seen until an event comes.
	Solo bool
	// Blocking makes the loop block its thread in the kernel instead of
	// parking its goroutine in Go's network poller (poll.NewBlocking): for
	// a loop locked to its thread that measures the thread's CPU time.
	Blocking bool
	// Nudge, if set, is the LoopNudge the loop joins, so that CPU-bound
	// workers hand it the CPU when it has events queued.
	Nudge *LoopNudge
}

// eventsPerWait: a turn takes at most this many events, Go netpoll's batch.
const eventsPerWait = 128

// errLoopClosed: the waker was closed under a running loop, which Close's
// precondition forbids.
var errLoopClosed = errors.New("quartet: loop closed while running")

// wakerToken is the waker's registration; the Loop consumes its events.
var wakerToken = poll.MakeToken(poll.KindWaker, 0, 0)

// NewLoop opens a loop's poller and (unless Solo) its waker, registered in
// the poller. The caller owns the Loop and releases it with Close.
func NewLoop(h LoopHooks, o LoopOptions) (*Loop, error) {
	if h.Turn == nil {
		return nil, errors.New("quartet: LoopHooks.Turn is required")
	}
	if h.Event == nil {
		h.Event = func(poll.Event) {}
	}
	open := poll.New
	if o.Blocking {
		open = poll.NewBlocking
	}
	p, err := open()
	if err != nil {
		return nil, err
	}
	l := &Loop{poller: p, hooks: h, events: make([]poll.Event, 0, eventsPerWait)}
	if o.Solo {
		return l, nil
	}
	if l.waker, err = NewLoopWaker(); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.Add(l.waker.Fd(), poll.Readable, wakerToken); err != nil {
		l.waker.Close()
		p.Close()
		return nil, err
	}
	if !o.Blocking {
		var lazy func() bool
		if o.Nudge != nil {
			lazy = o.Nudge.CPUBound
		}
		l.waker.wakeBy(p.Expire, lazy)
	}
	if o.Nudge != nil {
		l.nudge = o.Nudge
		l.nudge.add(l)
	}
	return l, nil
}

// Poller is where the stage registers its fds, with tokens of its kinds.
func (l *Loop) Poller() *poll.Poller { return l.poller }

// Wake makes sure the loop looks at its queue soon: call it after every
// push, from any goroutine, but never after Close (the stages' hand-off
// rules see to that). It costs no syscall: while the loop runs, one load;
// while it sleeps parked, a timer update that readies it
// (LoopWaker.wakeBy); a blocking loop's eventfd write otherwise.
func (l *Loop) Wake() { l.waker.Wake() }

// Notify is Wake for rare signals that may come at any time, also while or
// after the loop closes (a connection released below the limit, a shutdown
// request): it takes a lock that Close takes too.
func (l *Loop) Notify() {
	l.mu.RLock()
	if !l.closed && l.waker != nil {
		l.waker.Wake()
	}
	l.mu.RUnlock()
}

// Stop tells the loop to stop: Turn sees stopping from its next turn on,
// and decides when to return. Any goroutine, any number of times, also
// after Run has returned.
func (l *Loop) Stop() {
	l.stop.Store(true)
	l.Notify()
}

// Stopping reports whether Stop has been called. Any goroutine.
func (l *Loop) Stopping() bool { return l.stop.Load() }

// SetDrainBudget bounds how many hand-offs Drain takes per turn; 0 (the
// default) means all there are. Any goroutine, at any time.
func (l *Loop) SetDrainBudget(n int) { l.budget.Store(int64(max(n, 0))) }

// Now is the loop's clock: read once per turn, before Drain, and again
// only when Wait parked, so the events after a sleep see the time they
// came. Hooks use it for every timestamp and deadline of the turn instead
// of reading the clock per connection and per request (a vDSO call, 76 ns
// on a PVM guest, eleven times per request before); it is behind the
// wall clock by at most one turn's work. Loop goroutine only.
func (l *Loop) Now() time.Time { return l.now }

// Busy is the time the loop has worked since Run started (wall time less
// what it spent parked in Wait), as of its latest turn. Any goroutine.
func (l *Loop) Busy() time.Duration { return time.Duration(l.busy.Load()) }

// LoopCounts is what a loop has done since Run started, for the
// controllers that size the stages: the busy fraction (loop counts) and
// the hand-offs per turn (the drain budget).
type LoopCounts struct {
	Busy  time.Duration // time worked (see Busy)
	Turns int64         // turns taken
	Taken int64         // hand-offs Drain took
	Full  int64         // turns whose Drain took its whole budget
}

// Counts returns the loop's counts as of its latest turn. Any goroutine.
func (l *Loop) Counts() LoopCounts {
	return LoopCounts{Busy: time.Duration(l.busy.Load()), Turns: l.turns.Load(), Taken: l.taken.Load(), Full: l.full.Load()}
}

// Run turns the loop until Turn reports done (Run returns nil) or the
// poller fails. ctx's end calls Stop. Run does not release the loop: the
// stage calls Close after whatever must still use the poller.
func (l *Loop) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, l.Stop)
	defer stop()
	h := &l.hooks
	last, lastParked := time.Now(), l.poller.Parked()
	busy := time.Duration(l.busy.Load())
	turns, taken, full := l.turns.Load(), l.taken.Load(), l.full.Load()
	var parked time.Duration // the poller's Parked as of the turn's clock read
	var stopping bool        // Stop as Turn saw it
	turn := func(evs []poll.Event) (time.Duration, bool) {
		if len(evs) > 0 {
			if l.poller.Parked() != parked {
				l.now = time.Now() // slept: the events are from now, not from before
			}
			if h.Gather != nil {
				h.Gather(evs)
			}
			for _, ev := range evs {
				if ev.Token == wakerToken {
					continue
				}
				h.Event(ev)
			}
		}
		now := time.Now()
		l.now = now
		parked = l.poller.Parked()
		busy += now.Sub(last) - (parked - lastParked)
		l.busy.Store(int64(busy))
		last, lastParked = now, parked
		turns++
		l.turns.Store(turns)

		more := false
		if h.Drain != nil {
			budget := int(l.budget.Load())
			if budget == 0 {
				budget = math.MaxInt
			}
			n := h.Drain(budget)
			more = n >= budget
			if n > 0 {
				taken += int64(n)
				l.taken.Store(taken)
			}
			if more {
				full++
				l.full.Store(full)
			}
		}
		stopping = l.stop.Load()
		wait, done := h.Turn(now, stopping)
		if more {
			wait = 0
		}
		return wait, done
	}
	steps := poll.Steps{Turn: turn}
	if l.waker != nil {
		steps.Sleep = func() (bool, error) {
			if !l.waker.Sleep() {
				return false, errLoopClosed
			}
			return l.stop.Load() == stopping && (h.Pending == nil || !h.Pending()), nil
		}
		steps.Awake = func() {
			l.waker.Awake()
			if l.nudge != nil {
				l.nudge.ran(l)
			}
		}
	}
	return l.poller.Drive(l.events, steps)
}

// Close releases the waker and the poller; it is idempotent. Call it when
// Run has returned, or instead of Run.
func (l *Loop) Close() error {
	l.mu.Lock()
	was := l.closed
	l.closed = true
	l.mu.Unlock()
	if was {
		return nil
	}
	if l.nudge != nil {
		l.nudge.remove(l) // before the poller closes: Nudge must not reach a reused fd
	}
	var err error
	if l.waker != nil {
		err = l.waker.Close()
	}
	if l.nudge != nil {
		l.nudge.ran(l) // a closed loop owes no turn
	}
	return errors.Join(err, l.poller.Close())
}
