package control

import "time"

// Causes of a drain-budget change.
const (
	CauseLatency    Cause = "latency"    // turns worked longer than BatchConfig.TurnTarget: events behind the batch waited
	CauseThroughput Cause = "throughput" // the budget ended turns that were short: a larger batch takes more per wake-up
	CauseLoadDrop   Cause = "load-drop"  // the load fell by half, or to nothing (a period without a turn): start again from the largest batch
	CauseBacklog    Cause = "backlog"    // hand-offs piled up behind the budget: a smaller batch would only leave more waiting
)

// BatchConfig tunes a batching controller. Zero fields take the defaults.
type BatchConfig struct {
	// Min and Max bound the budget: the hand-offs a loop takes from its
	// queue per turn (8 and 1024). Max is where the controller starts
	// (SEDA's does too): a loop that takes all it has makes the fewest
	// turns, and so the fewest polls and wake-ups, per hand-off.
	Min, Max int
	// TurnTarget is the longest a turn should work (500 µs): an event
	// that becomes ready while the loop works through a batch waits that
	// long, so it is the latency the batch adds. Well under a
	// millisecond, a network round trip inside a data centre.
	TurnTarget time.Duration
	// Binding is the fraction of turns that must take the whole budget
	// for the budget to matter (0.05): below it the queue empties every
	// turn, and the budget changes nothing.
	Binding float64
}

func (c BatchConfig) withDefaults() BatchConfig {
	if c.Min <= 0 {
		c.Min = 8
	}
	if c.Max <= 0 {
		c.Max = 1024
	}
	c.Max = max(c.Max, c.Min)
	if c.TurnTarget <= 0 {
		c.TurnTarget = 500 * time.Microsecond
	}
	if c.Binding <= 0 {
		c.Binding = 0.05
	}
	return c
}

// BatchSample is one period of an I/O stage's loops, summed
// (stages.LoopCounts' growth).
type BatchSample struct {
	Elapsed time.Duration
	Turns   int64         // turns taken
	Taken   int64         // hand-offs taken
	Full    int64         // turns that took their whole budget
	Busy    time.Duration // time worked
	Queued  int64         // hand-offs waiting in the loops' queues at the period's end
}

// BatchDecision is the budget Batch.Decide set, and from what.
type BatchDecision struct {
	Budget   int
	Cause    Cause         // CauseNone when unchanged
	Rate     float64       // hand-offs per second
	PerTurn  float64       // hand-offs per turn
	TurnTime time.Duration // mean time a turn worked
	Binding  bool          // the budget was what ended turns' draining
}

// Batch is SEDA's batching controller for an event loop's hand-off queue
// (Welsh et al., SOSP 2001, §3.5.2), with the turn's working time as the
// latency it watches: a loop that takes a long batch makes every event
// behind it (a readable socket, a writable one) wait that long. While the
// budget binds (turns end with hand-offs left in the queue), it cuts the
// budget in proportion when the turns (smoothed) work longer than
// TurnTarget, and doubles it when they work less than half of it: a
// larger batch then takes more per wake-up and poll, and throughput grows,
// at a latency still within the target. The band between half the target
// and the target keeps it from swinging. When the load halves at once it
// starts again from Max (SEDA's reset). At low load the queue empties
// within every turn and the budget is not touched: it adds no latency
// there.
//
// A queue that grows over a period while the budget binds is the one
// case where a long turn does not mean the batch is too large: the
// hand-offs left behind wait too, and longer than the turn (a loop's turn
// on a CPU shared with handlers that compute is slow because it is
// preempted, not because it takes much). Cutting then only piled up more:
// 10,000 responses waited in the writers' queues for seconds, taken 8 per
// turn. So a growing backlog doubles the budget instead; the loop
// controller adds loops from the same busy time.
type Batch struct {
	cfg      BatchConfig
	budget   int
	rate     float64       // smoothed hand-offs per second
	turn     time.Duration // smoothed turn time
	queued   int64         // Queued at the last sample
	measured bool
}

// NewBatch returns a batching controller with the budget at Max.
func NewBatch(cfg BatchConfig) *Batch {
	cfg = cfg.withDefaults()
	return &Batch{cfg: cfg, budget: cfg.Max}
}

// Budget is the budget as last decided.
func (b *Batch) Budget() int { return b.budget }

// Decide takes one period's sample and returns the budget.
//
// A period in which the loops took no turn is information too: they had
// nothing to batch. If nothing waits at its end, the loops slept through
// it, the load fell to nothing, and the budget goes back to Max as for
// any load drop; the averages start again from the next busy period, so
// a loop busy again is judged by its first turns, not by turns it worked
// before it slept (skipping such periods left an idle-then-busy loop
// with a budget cut for a load long gone, and averages that took periods
// to forget it). If hand-offs wait at its end, the loops were kept off
// the CPU for the whole period: nothing was measured about turns, so the
// budget stays, but the queue is remembered, so that the next period
// judges a backlog against it. A period of no length measures nothing.
func (b *Batch) Decide(s BatchSample) BatchDecision {
	d := BatchDecision{Budget: b.budget}
	if s.Elapsed <= 0 {
		return d
	}
	d.Rate = float64(s.Taken) / s.Elapsed.Seconds()
	grew := s.Queued > b.queued && s.Queued > int64(b.budget)
	b.queued = s.Queued
	if s.Turns <= 0 {
		if s.Queued == 0 {
			b.rate, b.turn, b.measured = 0, 0, false
			b.set(&d, b.cfg.Max, CauseLoadDrop)
		}
		return d
	}
	d.PerTurn = float64(s.Taken) / float64(s.Turns)
	d.TurnTime = s.Busy / time.Duration(s.Turns)
	d.Binding = float64(s.Full) >= b.cfg.Binding*float64(s.Turns)
	prevRate := b.rate
	// A third of the new period in the averages: one period's turns on a
	// shared machine are noisy (a loop preempted mid-turn counts the wait
	// as work), and one must not swing the budget. The first period after
	// none (the start, or an idle one) is all there is to go by.
	if b.measured {
		b.rate = (2*b.rate + d.Rate) / 3
		b.turn = (2*b.turn + d.TurnTime) / 3
	} else {
		b.rate, b.turn, b.measured = d.Rate, d.TurnTime, true
		prevRate = 0 // no load to have dropped from
	}
	switch {
	case d.Rate < prevRate/2 && b.budget < b.cfg.Max:
		b.set(&d, b.cfg.Max, CauseLoadDrop)
		b.rate, b.turn = d.Rate, d.TurnTime
	case !d.Binding:
		// The queue empties every turn: the budget changes nothing.
	case grew:
		b.set(&d, 2*b.budget, CauseBacklog)
	case b.turn > b.cfg.TurnTarget:
		b.set(&d, int(float64(b.budget)*float64(b.cfg.TurnTarget)/float64(b.turn)), CauseLatency)
	case b.turn < b.cfg.TurnTarget/2:
		b.set(&d, 2*b.budget, CauseThroughput)
	}
	return d
}

// set moves the budget to n within the bounds, recording why if it moved.
func (b *Batch) set(d *BatchDecision, n int, why Cause) {
	n = min(max(n, b.cfg.Min), b.cfg.Max)
	if n == b.budget {
		return
	}
	b.budget, d.Budget, d.Cause = n, n, why
}
