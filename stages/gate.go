package stages

import (
	"sync"
	"sync/atomic"
	"time"
)

// LoopGate gives the event loops the CPU that CPU-bound workers would
// keep from them.
//
// A loop sleeps parked in Go's network poller (poll.New says why), and
// Go's scheduler polls the network only when it finds no goroutine to run
// (or from sysmon, every 10 ms). Workers that always find another request
// keep it from ever finding none, and yielding (runtime.Gosched) does not
// help: a parked loop is in no run queue to be yielded to. So under load
// a loop whose clients had written sat parked for up to 10 ms, with every
// answer it owed them, the refusals that should leave at once included.
//
// So at its yield point a worker asks Starved whether a sleeping loop has
// events waiting (one ppoll per loop, nothing taken). If one has, the
// worker parks in Wait until some loop starts a turn. Once every worker
// that held a CPU has parked, the scheduler finds nothing to run, polls
// the network, and runs the loop, whose turn releases the workers. A wait
// is bounded (maxGateWait) in case no loop turns: it must never cost more
// than a yield would have.
//
// Loops join the gate they are made with (LoopOptions.Gate) and leave it
// at Close.
type LoopGate struct {
	loops atomic.Pointer[[]*Loop] // copy on write; regMu orders writers
	regMu sync.Mutex

	// Starved answers false while the gate is off; on, it looks at the
	// loops once per gateCheckEvery and answers from starved in between;
	// a turn clears it.
	on      atomic.Bool
	epoch   time.Time
	checked atomic.Int64 // since epoch
	starved atomic.Bool

	nwait   atomic.Int32 // registrations in waiting; a turn with none pays one load
	mu      sync.Mutex
	waiting []chan struct{}
}

// maxGateWait bounds a worker's wait at the gate: a few of the loop
// turns it waits for, well under the 10 ms the scheduler would take.
const maxGateWait = 2 * time.Millisecond

// gateCheckEvery is how often Starved polls the loops, whatever the
// number of workers asking: workers yield by wall time, so behind
// handlers that sleep they ask at nearly every request, and a ppoll per
// sleeping loop each time would cost more than the waits it saves.
const gateCheckEvery = 200 * time.Microsecond

// SetOn turns the gate on or off (off, Starved is false and costs a
// load). Keep it on while the workers are what the CPU is short of: a
// wait at the gate while they sleep in their handlers instead would hold
// requests back for nothing (/sleep?ms=1 at 1,000 connections lost 7-15%
// of its throughput with the gate always on). The server's controller
// turns it on while the backlog waits for CPU rather than places.
func (g *LoopGate) SetOn(on bool) {
	if g.on.Load() != on {
		g.on.Store(on)
	}
}

// NewLoopGate returns a gate with no loops, off.
func NewLoopGate() *LoopGate {
	g := &LoopGate{epoch: time.Now()}
	g.checked.Store(-int64(gateCheckEvery))
	g.loops.Store(&[]*Loop{})
	return g
}

func (g *LoopGate) add(l *Loop) {
	g.regMu.Lock()
	defer g.regMu.Unlock()
	old := *g.loops.Load()
	loops := append(make([]*Loop, 0, len(old)+1), old...)
	loops = append(loops, l)
	g.loops.Store(&loops)
}

func (g *LoopGate) remove(l *Loop) {
	g.regMu.Lock()
	defer g.regMu.Unlock()
	old := *g.loops.Load()
	loops := make([]*Loop, 0, len(old))
	for _, x := range old {
		if x != l {
			loops = append(loops, x)
		}
	}
	g.loops.Store(&loops)
}

// Starved reports whether some loop of the gate sleeps with events
// waiting in its poller: the runtime has not run it since they came. now
// is the caller's recent clock reading. Any goroutine; the first caller
// in each gateCheckEvery pays one ppoll per sleeping loop, the others
// get its answer (or false, once a loop has turned since).
func (g *LoopGate) Starved(now time.Time) bool {
	if !g.on.Load() {
		return false
	}
	t := int64(now.Sub(g.epoch))
	last := g.checked.Load()
	if t-last < int64(gateCheckEvery) || !g.checked.CompareAndSwap(last, t) {
		return g.starved.Load()
	}
	starved := false
	for _, l := range *g.loops.Load() {
		if l.waker != nil && l.waker.asleep() && l.poller.Pending() {
			starved = true
			break
		}
	}
	g.starved.Store(starved)
	return starved
}

// GateWaiter is what one goroutine waits at the gate with; the zero
// value is ready, and it is reused from wait to wait without allocating.
type GateWaiter struct {
	ch    chan struct{}
	timer *time.Timer
}

// Wait parks the caller until a loop of the gate starts a turn, or for
// maxGateWait at most.
func (g *LoopGate) Wait(w *GateWaiter) {
	if w.ch == nil {
		w.ch = make(chan struct{}, 1)
		w.timer = time.NewTimer(time.Hour)
		w.timer.Stop()
	}
	select {
	case <-w.ch: // a release meant for a wait that timed out
	default:
	}
	g.mu.Lock()
	g.waiting = append(g.waiting, w.ch)
	g.nwait.Add(1)
	g.mu.Unlock()
	w.timer.Reset(maxGateWait)
	select {
	case <-w.ch:
	case <-w.timer.C:
	}
	w.timer.Stop()
}

// turned releases the goroutines waiting at the gate: a loop has the
// CPU. Called by every loop of the gate at the start of each turn.
func (g *LoopGate) turned() {
	if g.starved.Load() {
		g.starved.Store(false)
	}
	if g.nwait.Load() == 0 {
		return
	}
	g.mu.Lock()
	for i, ch := range g.waiting {
		select {
		case ch <- struct{}{}:
		default:
		}
		g.waiting[i] = nil
	}
	g.waiting = g.waiting[:0]
	g.nwait.Store(0)
	g.mu.Unlock()
}
