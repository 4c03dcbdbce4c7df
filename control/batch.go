package control

import "time"

// Causes of a drain-budget change.
const (
	CauseLatency    Cause = "latency"    // turns grew longer: events behind the hand-offs waited
	CauseThroughput Cause = "throughput" // hand-offs per second grew with a larger batch
	CauseDegraded   Cause = "degraded"   // throughput fell after a cut: a little back
	CauseLoadDrop   Cause = "load-drop"  // the load fell by half: start again from the largest batch
)

// BatchConfig tunes a batching controller. Zero fields take the defaults.
type BatchConfig struct {
	// Min and Max bound the budget: the hand-offs a loop takes from its
	// queue per turn (8 and 1024). Max is where the controller starts
	// (SEDA's does too): a loop that takes all it has makes the fewest
	// turns, and so the fewest polls and wake-ups, per hand-off.
	Min, Max int
	// TurnFloor: turns shorter than this are not worth cutting (200 µs):
	// an event that waits for one waits less than a network round trip
	// inside a data centre.
	TurnFloor time.Duration
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
	if c.TurnFloor <= 0 {
		c.TurnFloor = 200 * time.Microsecond
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
// (Welsh et al., SOSP 2001, §3.5.2), with the turn's length as the
// latency it watches: a loop that takes a long batch makes every event
// behind it (a readable socket, a writable one) wait that long. It cuts
// the batch by half while turns grow longer than TurnFloor, grows it by a
// quarter while throughput grows, gives a little back when throughput
// falls after a cut, and starts again from Max when the load drops
// suddenly (SEDA's reset). At low load the queue empties within every
// turn and the budget is not touched: it adds no latency there.
type Batch struct {
	cfg      BatchConfig
	budget   int
	rate     float64       // smoothed hand-offs per second
	turn     time.Duration // smoothed turn time
	cut      bool          // the last change was a cut
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
func (b *Batch) Decide(s BatchSample) BatchDecision {
	d := BatchDecision{Budget: b.budget}
	if s.Elapsed <= 0 || s.Turns <= 0 {
		return d
	}
	d.Rate = float64(s.Taken) / s.Elapsed.Seconds()
	d.PerTurn = float64(s.Taken) / float64(s.Turns)
	d.TurnTime = s.Busy / time.Duration(s.Turns)
	d.Binding = float64(s.Full) >= b.cfg.Binding*float64(s.Turns)
	prevRate, prevTurn, first := b.rate, b.turn, !b.measured
	// A third of the new period in the averages: a period of 100 ms at
	// low rates holds few hand-offs, and one must not swing the budget.
	if first {
		b.rate, b.turn, b.measured = d.Rate, d.TurnTime, true
	} else {
		b.rate = (2*b.rate + d.Rate) / 3
		b.turn = (2*b.turn + d.TurnTime) / 3
	}
	if first {
		return d
	}
	switch {
	case d.Rate < prevRate/2 && b.budget < b.cfg.Max:
		b.set(&d, b.cfg.Max, CauseLoadDrop)
		b.rate, b.turn = d.Rate, d.TurnTime
	case !d.Binding:
		// The queue empties every turn: the budget changes nothing.
	case d.TurnTime > b.cfg.TurnFloor && d.TurnTime > prevTurn+prevTurn/10:
		b.set(&d, b.budget/2, CauseLatency)
	case b.cut && d.Rate < prevRate*0.95:
		b.set(&d, b.budget+max(1, b.budget/4), CauseDegraded)
	case d.Rate > prevRate*1.05 && d.TurnTime <= prevTurn+prevTurn/10:
		b.set(&d, b.budget+max(1, b.budget/4), CauseThroughput)
	}
	return d
}

// set moves the budget to n within the bounds, recording why if it moved.
func (b *Batch) set(d *BatchDecision, n int, why Cause) {
	n = min(max(n, b.cfg.Min), b.cfg.Max)
	if n == b.budget {
		return
	}
	b.cut = n < b.budget
	b.budget, d.Budget, d.Cause = n, n, why
}
