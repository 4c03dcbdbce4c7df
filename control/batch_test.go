package control

import (
	"testing"
	"time"
)

// batchLoad is a synthetic period of an I/O stage: rate hand-offs a
// second arrive, each costs cost of loop time, and waiting are in the
// queue when a turn starts. A turn takes min(budget, waiting) and works
// overhead plus that many costs; noise scales the turn time (a loop
// preempted mid-turn on a shared machine).
type batchLoad struct {
	rate    float64
	cost    time.Duration
	waiting int
	noise   float64 // turn time × (1 ± noise), alternating
	growth  int64   // hand-offs the queue gains each period (it falls behind)
	// A rate of 0 is a period without a turn: the loops slept through it
	// (stuck 0) or were kept off the CPU with stuck hand-offs waiting.
	stuck int64
}

func (w batchLoad) period(budget int, dt time.Duration, i int) BatchSample {
	const overhead = 2 * time.Microsecond
	if w.rate == 0 {
		return BatchSample{Elapsed: dt, Queued: w.stuck}
	}
	perTurn := max(1, min(budget, w.waiting))
	taken := int64(w.rate * dt.Seconds())
	turns := max(1, taken/int64(perTurn))
	turn := overhead + time.Duration(perTurn)*w.cost
	if w.noise > 0 {
		f := 1 + w.noise
		if i%2 == 1 {
			f = 1 - w.noise
		}
		turn = time.Duration(float64(turn) * f)
	}
	s := BatchSample{Elapsed: dt, Turns: turns, Taken: taken, Busy: time.Duration(turns) * turn, Queued: int64(i+1) * w.growth}
	if w.waiting >= budget {
		s.Full = turns
	}
	return s
}

func TestBatchDecide(t *testing.T) {
	const dt = 100 * time.Millisecond
	low := batchLoad{rate: 1000, cost: 5 * time.Microsecond, waiting: 1}
	cheap := batchLoad{rate: 500000, cost: 100 * time.Nanosecond, waiting: 1 << 20}
	costly := batchLoad{rate: 200000, cost: 4 * time.Microsecond, waiting: 1 << 20}
	noisy := batchLoad{rate: 200000, cost: 4 * time.Microsecond, waiting: 1 << 20, noise: 0.3}
	// Turns as long as costly's, but because the loop is preempted, and
	// the queue falls behind by 2,000 hand-offs a period.
	behind := batchLoad{rate: 150000, cost: 10 * time.Microsecond, waiting: 1 << 20, growth: 2000}
	phases := func(ps ...any) []batchLoad { // load, periods, load, periods...
		var out []batchLoad
		for i := 0; i < len(ps); i += 2 {
			for range ps[i+1].(int) {
				out = append(out, ps[i].(batchLoad))
			}
		}
		return out
	}
	tests := []struct {
		name    string
		periods []batchLoad
		lo, hi  int   // the budget at the end, within
		last    Cause // the last change's cause (CauseNone: no change at all)
		settled int   // the period by which the last change was made (the smoothing takes a few)
	}{
		{"low load: the queue empties, the budget stays at Max", phases(low, 50), 1024, 1024, CauseNone, 0},
		{"cheap hand-offs: short turns at Max, it stays", phases(cheap, 50), 1024, 1024, CauseNone, 0},
		// 4 µs each: the target's 500 µs hold 124, half of it 62.
		{"costly hand-offs: cut into the band within 3 s, then still", phases(costly, 60), 62, 125, CauseLatency, 30},
		{"noise of ±30% around the band does not swing it", phases(costly, 30, noisy, 60), 62, 125, CauseLatency, 35}, // one step as the noise starts
		{"cheaper again: grows back within a second", phases(costly, 30, cheap, 30), 1024, 1024, CauseThroughput, 40},
		{"load drops by half after cuts: back to Max at once", phases(costly, 30, low, 3), 1024, 1024, CauseLoadDrop, 31},
		{"a growing backlog doubles a cut budget despite long turns", phases(costly, 30, behind, 10), 1024, 1024, CauseBacklog, 40},
		{"long turns with a growing backlog never cut", phases(behind, 30), 1024, 1024, CauseNone, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBatch(BatchConfig{})
			last, lastMove := CauseNone, 0
			for i, w := range tt.periods {
				d := b.Decide(w.period(b.Budget(), dt, i))
				if d.Budget < 8 || d.Budget > 1024 {
					t.Fatalf("budget %d outside 8..1024", d.Budget)
				}
				if d.Cause != CauseNone {
					last, lastMove = d.Cause, i
				}
			}
			if b.Budget() < tt.lo || b.Budget() > tt.hi || last != tt.last || lastMove > tt.settled {
				t.Errorf("budget %d, last changed (%q) at period %d; want %d..%d, last %q by period %d",
					b.Budget(), last, lastMove, tt.lo, tt.hi, tt.last, tt.settled)
			}
		})
	}
}

// The decision reports what it was made from.
func TestBatchDecideReports(t *testing.T) {
	b := NewBatch(BatchConfig{})
	d := b.Decide(BatchSample{Elapsed: time.Second, Turns: 1000, Taken: 50000, Full: 10, Busy: 200 * time.Millisecond})
	if d.Rate != 50000 || d.PerTurn != 50 || d.TurnTime != 200*time.Microsecond || d.Binding {
		t.Errorf("%+v", d)
	}
}

// A period in which the loops took no turn decides too: with nothing
// waiting, the load fell to nothing and the budget goes back to Max, and
// the next busy period is judged by its own turns; with hand-offs waiting
// (the loops kept off the CPU), nothing was measured about turns and the
// budget stays. Skipping such periods left a loop busy again after an
// idle spell with a budget cut for a load long gone.
func TestBatchPeriodsWithoutTurns(t *testing.T) {
	const dt = 100 * time.Millisecond
	idle := batchLoad{}
	stalled := batchLoad{stuck: 5000}
	cheap := batchLoad{rate: 500000, cost: 100 * time.Nanosecond, waiting: 1 << 20}
	costly := batchLoad{rate: 200000, cost: 4 * time.Microsecond, waiting: 1 << 20}
	// Falls behind by 20,000 hand-offs a period, with long (preempted)
	// turns: the budget is never cut, and the queue ends large.
	behind := batchLoad{rate: 150000, cost: 10 * time.Microsecond, waiting: 1 << 20, growth: 20000}
	// Behind by a little, for one period: 3,000 waiting, more than the
	// budget, after an idle spell in which the queue emptied.
	backlog := batchLoad{rate: 150000, cost: 10 * time.Microsecond, waiting: 1 << 20, growth: 3000}
	type phase struct {
		load batchLoad
		n    int
	}
	tests := []struct {
		name   string
		phases []phase
		lo, hi int   // the budget after the last period, within
		cause  Cause // the last period's decision
	}{
		{"idle after a cut: back to Max at once", []phase{{costly, 30}, {idle, 1}}, 1024, 1024, CauseLoadDrop},
		{"idle at Max: nothing to change", []phase{{cheap, 5}, {idle, 1}}, 1024, 1024, CauseNone},
		{"a long idle spell: Max, decided once", []phase{{costly, 30}, {idle, 20}}, 1024, 1024, CauseNone},
		// 4 µs each: the target's 500 µs hold 124, half of it 62.
		{"busy again: the first busy period cuts into the band", []phase{{costly, 30}, {idle, 3}, {costly, 1}}, 62, 125, CauseLatency},
		{"cheap after costly and an idle spell: at Max from the first period", []phase{{costly, 30}, {idle, 5}, {cheap, 1}}, 1024, 1024, CauseNone},
		{"kept off the CPU with hand-offs waiting: the budget stays", []phase{{costly, 30}, {stalled, 1}}, 62, 125, CauseNone},
		{"a backlog after an idle spell grows from the empty queue, not from the one before", []phase{{behind, 10}, {idle, 2}, {backlog, 1}}, 1024, 1024, CauseNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBatch(BatchConfig{})
			var d BatchDecision
			for _, p := range tt.phases {
				for i := range p.n {
					d = b.Decide(p.load.period(b.Budget(), dt, i))
				}
			}
			if d.Budget != b.Budget() {
				t.Fatalf("decision says %d, Budget() %d", d.Budget, b.Budget())
			}
			if b.Budget() < tt.lo || b.Budget() > tt.hi || d.Cause != tt.cause {
				t.Errorf("budget %d (%q); want %d..%d (%q)", b.Budget(), d.Cause, tt.lo, tt.hi, tt.cause)
			}
		})
	}
}

// A period of no length measures nothing: the budget and the averages
// stay as they were.
func TestBatchEmptyPeriod(t *testing.T) {
	b := NewBatch(BatchConfig{})
	busy := BatchSample{Elapsed: 100 * time.Millisecond, Turns: 100, Taken: 100000, Full: 100, Busy: 90 * time.Millisecond}
	b.Decide(busy)
	before := *b
	if d := b.Decide(BatchSample{}); d.Cause != CauseNone || d.Budget != before.budget || *b != before {
		t.Errorf("a period of no length moved the controller: %+v, %+v → %+v", d, before, *b)
	}
}
