package stages

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// LoopNudge lets CPU-bound workers hand the CPU to event loops that Go's
// scheduler would leave parked.
//
// A loop sleeps parked in Go's network poller (poll.New says why), and the
// scheduler polls the network only when it finds no goroutine to run, or
// from sysmon every 10 ms. Workers that always find another request keep
// it from ever finding none, and their yield (runtime.Gosched) does not
// help: a parked loop is in no run queue to be yielded to. So under
// CPU-bound load a loop whose clients had written sat parked for up to
// 10 ms, with every answer it owed them: the refusals that admission
// control means to send at once were 2.5 ms late at the median.
//
// So a worker at its yield point calls Nudge first. Nudge looks at the
// sleeping loops (a ppoll per loop, nothing taken) and expires the wait of
// each that has events queued (poll.Poller.Expire): the runtime readies
// the loop next to run on the worker's P, and the worker's yield runs it.
// Nobody waits: a worker only steps aside for the one turn, and keeps its
// place. (A gate where workers waited for a loop's turn, tried before
// this, starved the loops behind 1 ms handlers: waiting workers kept
// their places while the queue grew behind them.)
//
// Two cases the expiry alone did not help, both a loop made runnable but
// queued behind workers, each of which then ran a whole handler first:
//
//   - sysmon found the loop's events before a Nudge did. Nobody else
//     polls the network while the workers keep the Ps busy, so sysmon
//     does, every 10 ms, and it puts what it finds at the tail of the
//     global run queue, having no P of its own;
//   - a Nudge readied two loops (the reader and the writer, say). Only
//     one can be next to run; the second readied takes that place and
//     pushes the first to the tail of the P's queue.
//
// In execution traces of one P under 2x overload with 1 ms handlers,
// readers readied by sysmon (9% of their wake-ups) waited 3 ms for the
// CPU at the median, and writers pushed back waited up to 3 ms: the
// refusals' tail. So a Nudge that finds a loop asleep with events queued
// counts it owed a turn until it runs, and a worker about to take a
// request first steps aside while a loop is owed (AwaitLoops): the
// workers queued in front of the loop step aside in turn, and the loop
// runs after the one handler that was on the CPU. In the same traces the
// writers' waits fell to 55 µs at the 90th percentile and the readers'
// from sysmon to under a millisecond; refusals left at 1.1 ms at the 99th
// percentile instead of 3.5 (README, overload).
//
// Loops join with LoopOptions.Nudge and leave at Close.
type LoopNudge struct {
	loops atomic.Pointer[[]*Loop] // copy on write; regMu orders writers
	regMu sync.Mutex

	epoch   time.Time
	checked atomic.Int64 // since epoch: the last look at the loops
	asked   atomic.Int64 // since epoch: the last Nudge (see CPUBound)
	nudged  atomic.Uint64

	// owed counts the loops a Nudge found asleep with events queued that
	// have not run since (Loop.owedTurn); see AwaitLoops. Every worker
	// reads it before each request, so it has a line of its own: the
	// lines beside it are written by every Nudge.
	_    cpu.CacheLinePad
	owed atomic.Int32
	_    cpu.CacheLinePad
	// oneP: GOMAXPROCS was 1 at the last look (Nudge), read by AwaitLoops
	// instead of asking the runtime, which takes the scheduler's lock.
	oneP  atomic.Bool
	waits atomic.Uint64 // AwaitLoops calls that found a loop owed, each of which yielded once
	// waiting counts the workers parked in AwaitLoops; a loop that pays
	// its turn while one waits closes turned and replaces it (under
	// turnMu). The pair is Dekker's, as the wakers': a worker adds itself
	// to waiting, then loads owed; a loop takes itself off owed, then
	// loads waiting.
	waiting   atomic.Int32
	turnMu    sync.Mutex
	turned    chan struct{}
	parks     atomic.Uint64 // AwaitLoops calls that parked
	backstops atomic.Uint64 // parks that awaitLoopFor ended
}

// cpuBoundFor is how long after a worker's last Nudge the workers count
// as CPU-bound: twice the nudge interval, so that a steady stream of
// yields keeps them so.
const cpuBoundFor = 2 * nudgeEvery

// nudgeEvery is how often Nudge looks at the loops, whatever the number
// of workers asking, and so about how long a loop may sit parked behind
// busy workers. Each nudge costs its loops a turn they would otherwise
// have folded into a later one, with fewer events in each, and fewer
// responses per write batch (on loopback, a wake-up of the client per
// batch, paid on the server's CPU). Measured on one core at 12,000
// connections (/compute?n=100, closed loop): every 200 µs cost 7-13% of
// the throughput, every 500 µs 2-13%, every 1 ms 0-4%; under 2x overload
// refusals then left at 0.22, 0.28 and 0.40 ms at the median (1.2, 1.4
// and 1.5 ms at the 99th percentile), against 2.5 ms (8 ms) without.
const nudgeEvery = time.Millisecond

// NewLoopNudge returns a nudge with no loops.
func NewLoopNudge() *LoopNudge {
	n := &LoopNudge{epoch: time.Now(), turned: make(chan struct{})}
	n.checked.Store(-int64(nudgeEvery))
	n.asked.Store(-int64(cpuBoundFor))
	n.loops.Store(&[]*Loop{})
	return n
}

func (n *LoopNudge) add(l *Loop) {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	old := *n.loops.Load()
	loops := append(append(make([]*Loop, 0, len(old)+1), old...), l)
	n.loops.Store(&loops)
}

func (n *LoopNudge) remove(l *Loop) {
	n.regMu.Lock()
	defer n.regMu.Unlock()
	old := *n.loops.Load()
	loops := make([]*Loop, 0, len(old))
	for _, x := range old {
		if x != l {
			loops = append(loops, x)
		}
	}
	n.loops.Store(&loops)
}

// longRun is a run of work after which a worker's Nudge looks at the loops
// if they were last looked at longRun ago, not nudgeEvery: half of it.
// Handlers that take about as long as nudgeEvery (1 ms of compute, 0.88 ms
// of it on a CPU) yield once per request, a little less than nudgeEvery
// apart, so the rate limit alone skipped every other yield and a loop
// waited two handlers, not one. The looks stay rate-limited, at twice the
// rate: a run is wall time, and handlers that block (a 1 ms sleep) make
// runs as long with no CPU taken from anyone, tens of thousands a second.
const longRun = nudgeEvery / 2

// Nudge readies every loop that sleeps with events queued in its poller,
// next to run on the caller's P, and reports whether there was one; the
// caller should then yield. now is the caller's recent clock reading, ran
// how long it has run requests back to back. Any goroutine; the first
// caller in each nudgeEvery (in each longRun, after a run of longRun) pays
// one ppoll per sleeping loop, the others return false at the cost of two
// loads.
func (n *LoopNudge) Nudge(now time.Time, ran time.Duration) bool {
	t := int64(now.Sub(n.epoch))
	if t-n.asked.Load() > int64(nudgeEvery)/8 {
		n.asked.Store(t) // a store per 125 µs at most: the line stays quiet
	}
	every := int64(nudgeEvery)
	if ran >= longRun {
		every = int64(longRun)
	}
	last := n.checked.Load()
	if t-last < every || !n.checked.CompareAndSwap(last, t) {
		return false
	}
	n.oneP.Store(runtime.GOMAXPROCS(0) == 1)
	any := false
	for _, l := range *n.loops.Load() {
		if l.waker != nil && l.waker.asleep() && l.poller.Pending() {
			if l.owedTurn.CompareAndSwap(false, true) {
				n.owed.Add(1)
			}
			l.poller.Expire()
			if !l.waker.asleep() {
				// It woke (or closed) meanwhile, and its word that it
				// ran may have come before the mark: take it back.
				// Awake stores the state and then loads the mark, as
				// here the other way round, so one of the two sees it.
				n.ran(l)
			}
			any = true
		}
	}
	if any {
		n.nudged.Add(1)
	}
	return any
}

// awaitLoopFor bounds each of a worker's parks in AwaitLoops, and
// awaitLoopParks how many it makes. An owed loop is in a run queue and
// runs as soon as the workers ahead of it have stepped aside, so these
// are only a backstop. Each park has its own bound, counted from when the
// worker parks: a worker that a loop's turn released may sit a handler
// or more in the run queue before it looks again.
const (
	awaitLoopFor   = nudgeEvery
	awaitLoopParks = 8
)

// AwaitLoops holds a worker back while loops that a Nudge found with
// events queued have not run since: a worker calls it before it takes a
// request, so that it does not start one ahead of a loop in the run queue
// (see LoopNudge). It costs one load when no loop is owed.
//
// It yields first: that puts the worker at the tail of the global run
// queue, behind a loop that sysmon put there and behind the P's own
// queue. With one P, if a loop is still owed, it then parks until every
// owed loop has run: parked, it is in no queue at all. Yielding alone,
// tried first, left loops waiting behind workers that came back from
// their yields into the next loop's wait and used up their bound there
// (refusals at 2x on one P: p99 1.6-1.9 ms, against 1.1-1.2 ms parked).
// With more Ps a parked worker idles its P, and its wake-up goes through
// the OS: on two cores that cost /sleep?ms=1 2-4% of its requests per
// second, in runs too noisy to say more, so there the worker yields once
// and goes on, and an owed loop queued on another P waits for that P.
// Any goroutine.
func (n *LoopNudge) AwaitLoops() {
	if n.owed.Load() == 0 {
		return
	}
	n.waits.Add(1)
	runtime.Gosched()
	if n.owed.Load() == 0 || !n.oneP.Load() {
		return
	}
	n.parks.Add(1)
	n.waiting.Add(1)
	defer n.waiting.Add(-1)
	var t *time.Timer
	for range awaitLoopParks {
		n.turnMu.Lock()
		turned := n.turned
		n.turnMu.Unlock()
		if n.owed.Load() == 0 {
			return
		}
		if t == nil {
			t = time.NewTimer(awaitLoopFor)
			defer t.Stop()
		} else {
			t.Reset(awaitLoopFor)
		}
		// Until every owed loop has run, not only the first: a second
		// loop readied by the same Nudge waits behind the workers the
		// first one's turn released.
		select {
		case <-turned:
		case <-t.C:
			n.backstops.Add(1)
		}
	}
}

// ran is the loop's word that it has run since a Nudge counted it owed:
// it releases the workers parked in AwaitLoops. Called by the loop as it
// wakes, and once its waker is closed (Loop.Close), by when no Nudge can
// count it owed and leave it so. One load when it owed nothing.
func (n *LoopNudge) ran(l *Loop) {
	if !l.owedTurn.Load() || !l.owedTurn.CompareAndSwap(true, false) {
		return
	}
	n.owed.Add(-1)
	if n.waiting.Load() == 0 {
		return
	}
	n.turnMu.Lock()
	close(n.turned)
	n.turned = make(chan struct{})
	n.turnMu.Unlock()
}

// Waits returns how many AwaitLoops calls found a loop owed and yielded.
func (n *LoopNudge) Waits() uint64 { return n.waits.Load() }

// CPUBound reports whether a worker has called Nudge lately: workers are
// running requests back to back, and the loops are run by the nudges
// (LoopWaker.wakeBy leaves a sleeping loop to them). Any goroutine.
func (n *LoopNudge) CPUBound() bool {
	return int64(time.Since(n.epoch))-n.asked.Load() < int64(cpuBoundFor)
}

// Nudged returns how many Nudge calls readied a loop.
func (n *LoopNudge) Nudged() uint64 { return n.nudged.Load() }
