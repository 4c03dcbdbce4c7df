package control

import (
	"math"
	"time"
)

// Causes of a loop-count change (and CauseBounds).
const (
	CauseBusy  Cause = "busy"  // the loops were busier than LoopConfig.GrowAbove
	CauseQuiet Cause = "quiet" // one loop fewer would have been less busy than LoopConfig.ShrinkBelow, for LoopConfig.ShrinkAfter
	// With the CPUs full, busy fractions include waiting for a CPU, and
	// a change is judged by what it did to the requests served:
	CauseProbe   Cause = "probe"    // a loop removed to see whether the stage serves as much with one fewer
	CauseNoGain  Cause = "no-gain"  // the loop added last served no more: removed again, and a ceiling for ProbeAfter
	CauseLostOne Cause = "lost-one" // the probe's removal served less: the loop is back
)

// LoopConfig tunes a loop-count controller. Zero fields take the
// defaults.
type LoopConfig struct {
	// GrowAbove: a stage whose loops were busy more than this fraction of
	// the period on average gets more loops (0.75). Above it a loop's
	// queue of events and hand-offs waits noticeably: at 75% busy an
	// arriving event finds the loop working three times in four.
	GrowAbove float64
	// Aim is the busy fraction growth aims at: the stage gets
	// ceil(work / Aim) loops, work being the sum of the loops' busy
	// fractions (0.5).
	Aim float64
	// ShrinkBelow: a loop is removed when the work would keep one loop
	// fewer less busy than this (0.4), for ShrinkAfter. The gap to
	// GrowAbove is the hysteresis: after a removal the loops are below
	// 0.4 × n/(n−1) ≤ 0.8 busy at n = 2, and the gap grows with n.
	ShrinkBelow float64
	// ShrinkAfter is how long the work must stay that low (3 s): loops
	// are cheap to keep (a goroutine, a poller, a few KiB) and moving
	// connections is not free, so a lull of a second does not count.
	ShrinkAfter time.Duration
	// Settle is the time after a change before the next (1 s): the
	// connections move to a new loop over a few periods and the busy
	// fractions are measured anew.
	Settle time.Duration
	// MaxShrinkAfter bounds how far ShrinkAfter backs off (60 s). A loop
	// removed only to be added again within twice the wait was a flap:
	// the busy fractions of n loops do not add up to what one loop
	// fewer would show (each turn of a busier loop batches more, and on
	// full CPUs a turn's wall time includes waiting for one), so the
	// same work can read as quiet at n and busy at n−1. Each flap
	// doubles the wait before the next removal; a removal that holds
	// for twice the wait halves it again.
	MaxShrinkAfter time.Duration
	// Judge is how long a change made with the CPUs full is measured,
	// after Settle, against as long a stretch before it (2 s): the
	// requests served per second vary by a few percent from one second
	// to the next, and the judgement must see past that.
	Judge time.Duration
	// Gain is the part by which a change must raise the requests served
	// to be kept when it added a loop, or may lower them when it removed
	// one (0.03): below it, the loop is not worth its wake-ups.
	Gain float64
	// ProbeAfter is how long a ceiling from a loop that did not pay
	// holds (30 s): the workload may have changed since.
	ProbeAfter time.Duration
}

// Why a stage is grown even when the CPUs are full: a loop is a serial
// stage, and one that is always busy holds up every connection it owns
// whatever the other goroutines do; a second loop lets the scheduler give
// the stage two CPUs' worth of turns. Measured first in process (quartet
// sweep, /hello at 1000 connections, GOMAXPROCS 2, the CPUs full
// throughout): two reader loops served 1.2 to 2.3 times what one did,
// point by point. In process the loops share the generator's scheduler,
// which flatters a second loop; with quartet serve as a process of its
// own (bench/examples/phases.yaml, /hello at 100 connections, two
// cores shared with the generator), static R2 W2 still served 76k/s in
// two runs of three against 45-59k/s for every R1 configuration.

func (c LoopConfig) withDefaults() LoopConfig {
	if c.GrowAbove <= 0 {
		c.GrowAbove = 0.75
	}
	if c.Aim <= 0 {
		c.Aim = 0.5
	}
	if c.ShrinkBelow <= 0 {
		c.ShrinkBelow = 0.4
	}
	if c.ShrinkAfter <= 0 {
		c.ShrinkAfter = 3 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = time.Second
	}
	if c.MaxShrinkAfter <= 0 {
		c.MaxShrinkAfter = time.Minute
	}
	c.MaxShrinkAfter = max(c.MaxShrinkAfter, c.ShrinkAfter)
	if c.Judge <= 0 {
		c.Judge = 2 * time.Second
	}
	if c.Gain <= 0 {
		c.Gain = 0.03
	}
	if c.ProbeAfter <= 0 {
		c.ProbeAfter = 30 * time.Second
	}
	return c
}

// LoopSample is one period of a reader or writer stage.
type LoopSample struct {
	Elapsed time.Duration // the period
	Size    int           // loops serving now
	// Busy is the time each loop that served the whole period worked in
	// it (stages.Loop.Busy's growth); loops added or removed within the
	// period are left out.
	Busy []time.Duration
	// Served is the requests the server served in the period, per
	// second: what a change made with the CPUs full must not lower.
	Served float64
	// CPUFull: the process used (nearly) every CPU it may in the period,
	// so a loop's busy time includes time waiting for a CPU, and more
	// loops may only share the same CPUs more finely.
	CPUFull bool
	// Hold: another stage's change is being judged; a change here would
	// confound both judgements, so none is tried (growth from busy loops
	// still happens).
	Hold bool
}

// LoopDecision is what Loops.Decide decided, and from what.
type LoopDecision struct {
	Size  int
	Cause Cause   // CauseNone when Size is the sample's
	Load  float64 // the loops' mean busy fraction
	Work  float64 // the sum of their busy fractions: loops' worth of work
}

// Loops is the loop-count controller of one I/O stage: it sizes the
// stage from how busy its loops are, the event-loop counterpart of SEDA's
// thread-pool controller (a loop that is never idle is a queue that
// grows; loops that idle are goroutines and pollers for nothing).
type Loops struct {
	cfg   LoopConfig
	since time.Duration // since the last change
	quiet time.Duration // how long the work has been low enough to lose a loop
	// wait is how long the work must stay low before a removal: at
	// least ShrinkAfter, doubled by each flap (MaxShrinkAfter).
	wait time.Duration
	// shrank: the last change was a removal, not yet judged a flap or
	// not.
	shrank bool

	// served holds the last Judge's worth of Served, newest last: the
	// "before" of the next change.
	served []float64
	// trial is a change made with the CPUs full, being judged: from the
	// size before it, served before it, and what it has served since
	// (after Settle).
	trial struct {
		pending     bool
		cause       Cause // CauseBusy (a growth), CauseProbe (a removal), or CauseNoGain (a growth undone, its verdict checked)
		from        int
		before      float64
		sum, passed time.Duration
		served      float64 // the Elapsed-weighted sum of Served since Settle
	}
	ceiling     int           // no growth beyond this while ceilingLeft lasts; 0: none
	ceilingLeft time.Duration // how long the ceiling still holds
}

// NewLoops returns a loop-count controller.
func NewLoops(cfg LoopConfig) *Loops {
	cfg = cfg.withDefaults()
	return &Loops{cfg: cfg, since: cfg.Settle, wait: cfg.ShrinkAfter}
}

// Trying reports whether a change is being judged (LoopSample.Hold for
// the other I/O stage).
func (c *Loops) Trying() bool { return c.trial.pending }

// ShrinkWait is how long the work must now stay low before a loop is
// removed (LoopConfig.MaxShrinkAfter).
func (c *Loops) ShrinkWait() time.Duration { return c.wait }

// Config returns the controller's configuration, defaults filled in.
func (c *Loops) Config() LoopConfig { return c.cfg }

// Decide takes one period's sample and returns the stage's loop count,
// within [lo, hi].
func (c *Loops) Decide(s LoopSample, lo, hi int) LoopDecision {
	d := LoopDecision{Size: s.Size}
	c.since += s.Elapsed
	if s.Size < lo || s.Size > hi {
		d.Size, d.Cause = min(max(s.Size, lo), hi), CauseBounds
		c.changed()
		return d
	}
	if len(s.Busy) == 0 || s.Elapsed <= 0 {
		return d
	}
	for _, b := range s.Busy {
		d.Work += min(max(b.Seconds()/s.Elapsed.Seconds(), 0), 1)
	}
	d.Load = d.Work / float64(len(s.Busy))
	if c.ceiling > 0 {
		if c.ceilingLeft -= s.Elapsed; c.ceilingLeft <= 0 {
			c.ceiling = 0
		}
	}
	if c.trial.pending {
		c.judge(s, &d, lo, hi)
		return d
	}
	c.remember(s)
	settled := c.since >= c.cfg.Settle
	if c.shrank && c.since >= 2*c.wait {
		// The removal held: the work really had gone.
		c.shrank, c.wait = false, max(c.wait/2, c.cfg.ShrinkAfter)
	}
	switch {
	case d.Load > c.cfg.GrowAbove:
		c.quiet = 0
		if !settled || s.Size >= hi || (c.ceiling > 0 && s.Size >= c.ceiling) {
			return d
		}
		// Busy loops hide how much work there is (none can be more than
		// 100% busy), so growth is at least one loop and at most twice
		// the stage.
		want := int(math.Ceil(d.Work / c.cfg.Aim))
		d.Size = min(max(want, s.Size+1), 2*s.Size, hi)
		if c.ceiling > 0 {
			d.Size = min(d.Size, c.ceiling)
		}
		d.Cause = CauseBusy
		if c.shrank { // a flap: wait longer before the next removal
			c.shrank, c.wait = false, min(2*c.wait, c.cfg.MaxShrinkAfter)
		}
		c.changed()
		if s.CPUFull && !s.Hold && c.steady() {
			c.try(CauseBusy, s.Size)
		}
	case s.Size > lo && d.Work/float64(s.Size-1) < c.cfg.ShrinkBelow:
		c.quiet += s.Elapsed
		if c.quiet < c.wait || !settled {
			return d
		}
		d.Size, d.Cause = s.Size-1, CauseQuiet // one at a time: each one's connections move
		c.changed()
		c.shrank = true
	case s.CPUFull && !s.Hold && s.Size > lo && settled && c.since >= c.wait && len(c.served) > 0 && c.steady():
		// The CPUs are full and the loops read as neither busy nor
		// quiet: their busy fractions include waiting for a CPU, so
		// only the requests served can say whether the stage needs all
		// of them (doc.go).
		c.quiet = 0
		d.Size, d.Cause = s.Size-1, CauseProbe
		c.changed()
		c.try(CauseProbe, s.Size)
	default:
		c.quiet = 0
	}
	return d
}

// remember keeps the last Judge's worth of Served.
func (c *Loops) remember(s LoopSample) {
	keep := max(1, int(c.cfg.Judge/s.Elapsed))
	c.served = append(c.served, s.Served)
	if len(c.served) > keep {
		c.served = append(c.served[:0], c.served[len(c.served)-keep:]...)
	}
}

// steady reports whether the requests served were steady over the last
// Judge: its two halves within unsteadyGains times Gain of each other. A
// change is judged against that stretch, so one made while the workload
// itself was changing would be judged by the workload: on /hello turning
// to /sleep?ms=1, the served rate falls by a third whatever the loops
// do, and a writer grown then from busy loops was undone as "no-gain"
// and held at one, busy, for 30 s. Unsteady, a busy stage grows without
// a trial, as when the CPUs are not full, and no probe is made.
func (c *Loops) steady() bool {
	n := len(c.served)
	if n < 2 {
		return true
	}
	var a, b float64
	for i, v := range c.served {
		if i < n/2 {
			a += v
		} else {
			b += v
		}
	}
	a, b = a/float64(n/2), b/float64(n-n/2)
	return math.Abs(a-b) <= unsteadyGains*c.cfg.Gain*max(a, b)
}

// unsteadyGains: the halves of the stretch before a change may differ by
// this many times Gain (15%) and still be one workload; the served rate
// of one workload varies by a few percent from second to second on a
// loaded machine (±5-10% on two cores shared with the generator).
const unsteadyGains = 5

// try starts judging a change from size from, against what was served
// before it.
func (c *Loops) try(cause Cause, from int) {
	t := &c.trial
	t.pending, t.cause, t.from = true, cause, from
	t.before = 0
	for _, v := range c.served {
		t.before += v
	}
	if len(c.served) > 0 {
		t.before /= float64(len(c.served))
	}
	t.sum, t.passed, t.served = 0, 0, 0
	c.served = c.served[:0]
}

// judge measures a pending change once the stage has settled after it,
// and undoes it if it did not pay: a loop added that served no more
// than Gain beyond before (a ceiling then holds for ProbeAfter), a loop
// removed that served less than Gain below.
func (c *Loops) judge(s LoopSample, d *LoopDecision, lo, hi int) {
	t := &c.trial
	t.passed += s.Elapsed
	if t.passed <= c.cfg.Settle {
		return
	}
	t.sum += s.Elapsed
	t.served += s.Served * s.Elapsed.Seconds()
	after := t.served / t.sum.Seconds()
	if t.sum < c.cfg.Judge && !c.clearLoss(after) {
		return
	}
	t.pending = false
	if t.before <= 0 {
		return // nothing served before: nothing to judge by
	}
	back := min(max(t.from, lo), hi)
	switch t.cause {
	case CauseBusy:
		if after < t.before*(1+c.cfg.Gain) && back < s.Size {
			d.Size, d.Cause = back, CauseNoGain
			c.ceiling, c.ceilingLeft = back, c.cfg.ProbeAfter
			c.changed()
			// Then check the verdict: back at the old size, the stage
			// should serve what it did before the growth.
			before := t.before
			c.try(CauseNoGain, back)
			t.before = before
		}
	case CauseNoGain:
		// If it does not, the workload changed during the trial (on
		// /hello turning to /sleep?ms=1 the rate falls by a third
		// whatever the loops do), the verdict was the workload's, and
		// the ceiling goes: the busy loops may grow again, judged
		// against the new workload.
		if math.Abs(after-t.before) > unsteadyGains*c.cfg.Gain*t.before {
			c.ceiling = 0
		}
	case CauseProbe:
		if after < t.before*(1-c.cfg.Gain) && back > s.Size {
			d.Size, d.Cause = back, CauseLostOne
			c.wait = min(2*c.wait, c.cfg.MaxShrinkAfter) // probe less often where it costs
			c.changed()
		} else {
			c.shrank = true // judged like a quiet removal: held, the wait halves
		}
	}
}

// A change that serves far less than before is undone without waiting
// out Judge: a lost probe on /hello costs about a third of the requests
// for as long as it lasts (quartet sweep, two reader loops on two
// cores), and a drop of clearLossGains times Gain over a quarter of
// Judge is past the second-to-second scatter that Judge averages away.
// Cutting it short can only keep a loop that was not needed, never
// remove one that was.
const (
	clearLossGains   = 3
	clearLossWindows = 4 // the shortest judgement: Judge / clearLossWindows
)

// clearLoss reports whether the pending change has served clearly less
// than before it, over long enough to say so.
func (c *Loops) clearLoss(after float64) bool {
	t := &c.trial
	return t.before > 0 && t.sum >= c.cfg.Judge/clearLossWindows &&
		after < t.before*(1-clearLossGains*c.cfg.Gain)
}

func (c *Loops) changed() { c.since, c.quiet = 0, 0 }
