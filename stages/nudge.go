package stages

import (
	"sync"
	"sync/atomic"
	"time"
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
// Loops join with LoopOptions.Nudge and leave at Close.
type LoopNudge struct {
	loops atomic.Pointer[[]*Loop] // copy on write; regMu orders writers
	regMu sync.Mutex

	epoch   time.Time
	checked atomic.Int64 // since epoch: the last look at the loops
	asked   atomic.Int64 // since epoch: the last Nudge (see CPUBound)
	nudged  atomic.Uint64
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
	n := &LoopNudge{epoch: time.Now()}
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
	any := false
	for _, l := range *n.loops.Load() {
		if l.waker != nil && l.waker.asleep() && l.poller.Pending() {
			l.poller.Expire()
			any = true
		}
	}
	if any {
		n.nudged.Add(1)
	}
	return any
}

// CPUBound reports whether a worker has called Nudge lately: workers are
// running requests back to back, and the loops are run by the nudges
// (LoopWaker.wakeBy leaves a sleeping loop to them). Any goroutine.
func (n *LoopNudge) CPUBound() bool {
	return int64(time.Since(n.epoch))-n.asked.Load() < int64(cpuBoundFor)
}

// Nudged returns how many Nudge calls readied a loop.
func (n *LoopNudge) Nudged() uint64 { return n.nudged.Load() }
