package runtime

import (
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/stages"
)

// The reader and writer stages' controllers, run by the control loop
// (tuning.go) every period: the loop count from the loops' busy fraction
// (control.Loops), and the drain budget, the hand-offs a loop takes per
// turn, from its turns' length and throughput (control.Batch). Both read
// stages.LoopCounts, which each loop keeps with a few atomic stores per
// turn.

// ioTuner is one I/O stage's controllers and what they saw.
type ioTuner struct {
	stage  Stage
	loops  *control.Loops
	batch  *control.Batch
	budget atomic.Int64 // the budget in force, for loops added between periods

	prev map[drainBudgeted]stages.LoopCounts // by loop, those serving at the last sample
	seen map[drainBudgeted]bool
	busy []time.Duration
	last LoopControl
	// queued is the hand-offs in the stage's queues at the last sample.
	queued int64
}

// LoopControl is what an I/O stage's controllers saw and did in the last
// period.
type LoopControl struct {
	Stage        Stage
	Load         float64       // the loops' mean busy fraction
	Work         float64       // the sum of their busy fractions
	Cause        control.Cause // why the last period changed the loop count ("" if it did not)
	Budget       int           // hand-offs a loop takes per turn
	BudgetCause  control.Cause // why the last period changed it
	PerTurn      float64       // hand-offs taken per turn
	TurnTime     time.Duration // mean time a turn worked
	HandoffsRate float64       // hand-offs per second
}

func newIOTuner(st Stage) *ioTuner {
	t := &ioTuner{stage: st, loops: control.NewLoops(control.LoopConfig{}), batch: control.NewBatch(control.BatchConfig{}),
		prev: map[drainBudgeted]stages.LoopCounts{}, seen: map[drainBudgeted]bool{}}
	t.budget.Store(int64(t.batch.Budget()))
	t.last = LoopControl{Stage: st, Budget: t.batch.Budget()}
	return t
}

// budget is the drain budget a new loop of st starts with.
func (t *tuner) budget(st Stage) int {
	if st == StageReader {
		return int(t.io[0].budget.Load())
	}
	return int(t.io[1].budget.Load())
}

// ioLoop is what the controllers need of one loop.
type ioLoop struct {
	loop   drainBudgeted // and the key of what the tuner keeps of it
	counts stages.LoopCounts
	queued int
}

// drainBudgeted is a reader or a writer loop, as the batching controller
// sets it. (An interface, not a method value: those are allocated, two a
// period.)
type drainBudgeted interface{ SetDrainBudget(int) }

// ioLoops lists the serving loops of st into out.
func (s *Server) ioLoops(st Stage, out []ioLoop) []ioLoop {
	out = out[:0]
	if st == StageReader {
		for _, r := range s.readers.live() {
			out = append(out, ioLoop{loop: r, counts: r.Counts(), queued: r.QueueDepth()})
		}
		return out
	}
	for _, w := range s.writers.live() {
		out = append(out, ioLoop{loop: w, counts: w.Counts(), queued: w.QueueDepth()})
	}
	return out
}

// processCPU is the process's CPU time so far (0 where it cannot be read).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sampleLoops runs one I/O stage's controllers for the period of ls (its
// Served, CPUFull and Hold filled in), in which the process used cpu, and
// reports whether the stage was quiet (see sample): under half busy, no
// change made and none being judged. t.mu held.
func (s *Server) sampleLoops(it *ioTuner, ls control.LoopSample, cpu time.Duration, scratch []ioLoop) ([]ioLoop, bool) {
	elapsed := ls.Elapsed
	scratch = s.ioLoops(it.stage, scratch)
	it.busy = it.busy[:0]
	var bs control.BatchSample
	bs.Elapsed = elapsed
	clear(it.seen)
	for _, l := range scratch {
		it.seen[l.loop] = true
		bs.Queued += int64(l.queued)
		p, ok := it.prev[l.loop]
		it.prev[l.loop] = l.counts
		if !ok {
			continue // not serving the whole period
		}
		it.busy = append(it.busy, l.counts.Busy-p.Busy)
		bs.Turns += l.counts.Turns - p.Turns
		bs.Taken += l.counts.Taken - p.Taken
		bs.Full += l.counts.Full - p.Full
		bs.Busy += l.counts.Busy - p.Busy
	}
	for k := range it.prev {
		if !it.seen[k] {
			delete(it.prev, k) // removed: let it go
		}
	}

	it.queued = bs.Queued
	bd := it.batch.Decide(bs)
	if bd.Cause != control.CauseNone {
		it.budget.Store(int64(bd.Budget))
		for _, l := range scratch {
			l.loop.SetDrainBudget(bd.Budget)
		}
		s.cfg.Logger.Debug("quartet: drain budget changed", "stage", it.stage, "budget", bd.Budget, "cause", "controller: "+string(bd.Cause),
			slog.Float64("per_turn", round1(bd.PerTurn)), slog.Duration("turn_time", bd.TurnTime.Round(time.Microsecond)),
			slog.Float64("handoffs_rate", round1(bd.Rate)))
	}

	z := s.stageSizing(it.stage)
	z.mu.Lock()
	lo, hi := z.size, z.size
	if z.auto {
		lo, hi = z.min, z.max
	}
	ls.Size, ls.Busy = z.size, it.busy
	d := it.loops.Decide(ls, lo, hi)
	if z.auto && d.Size != z.size {
		err := s.resizeLoopsLocked(it.stage, z, d.Size, "controller: "+string(d.Cause),
			slog.Float64("load", round2(d.Load)), slog.Float64("work", round2(d.Work)),
			slog.Float64("cpus_used", round2(cpu.Seconds()/elapsed.Seconds())), slog.Float64("served_rate", round1(ls.Served)))
		if err != nil && s.state.Load() == stateServing {
			// A loop that cannot be added (its stage-init failed: a
			// module that cannot attach another loop) would fail again
			// every period: the controller stops, and says so once; an
			// operator may turn it on again.
			z.auto = false
			s.cfg.Logger.Error("quartet: stage controller turned off", "stage", it.stage, "size", z.size, "err", err)
		}
	}
	z.mu.Unlock()
	it.last = LoopControl{Stage: it.stage, Load: d.Load, Work: d.Work, Cause: d.Cause, Budget: it.batch.Budget(), BudgetCause: bd.Cause,
		PerTurn: bd.PerTurn, TurnTime: bd.TurnTime, HandoffsRate: bd.Rate}
	quiet := d.Cause == control.CauseNone && bd.Cause == control.CauseNone && !it.loops.Trying() &&
		d.Load < it.loops.Config().Aim
	return scratch, quiet
}

// startBudgets gives the loops that started with the server the
// batching controller's first budget.
func (s *Server) startBudgets() {
	for _, r := range s.readers.live() {
		r.SetDrainBudget(s.tuner.budget(StageReader))
	}
	for _, w := range s.writers.live() {
		w.SetDrainBudget(s.tuner.budget(StageWriter))
	}
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }
