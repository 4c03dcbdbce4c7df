package control

import (
	"testing"
	"time"
)

// batchPeriod is a synthetic period: rate hand-offs per second, each
// taking cost of loop time, against a budget. A loop that drains perTurn
// hand-offs a turn spends perTurn × cost plus overhead per turn; the
// queue refills with what arrives meanwhile, so the turns taken are
// rate / min(budget, what waits).
func batchPeriod(rate float64, cost, overhead time.Duration, budget int, waiting float64, dt time.Duration) BatchSample {
	perTurn := min(float64(budget), max(1, waiting))
	turns := int64(rate * dt.Seconds() / perTurn)
	if turns < 1 {
		turns = 1
	}
	taken := int64(rate * dt.Seconds())
	s := BatchSample{Elapsed: dt, Turns: turns, Taken: taken,
		Busy: time.Duration(turns) * (overhead + time.Duration(perTurn*float64(cost)))}
	if waiting >= float64(budget) {
		s.Full = turns
	}
	return s
}

func TestBatchDecide(t *testing.T) {
	const dt = 100 * time.Millisecond
	type period struct {
		rate    float64
		cost    time.Duration
		waiting float64 // hand-offs waiting at a turn's start
	}
	repeatP := func(p period, n int) []period {
		out := make([]period, n)
		for i := range out {
			out[i] = p
		}
		return out
	}
	tests := []struct {
		name       string
		periods    []period
		wantBudget func(int) bool
		wantCause  Cause // the last change's (CauseNone: no change at all)
	}{
		{"low load: the queue empties, the budget stays at Max",
			repeatP(period{1000, 5 * time.Microsecond, 1}, 50), func(b int) bool { return b == 1024 }, CauseNone},
		{"steady high load, short turns: stays",
			repeatP(period{200000, 100 * time.Nanosecond, 4096}, 50), func(b int) bool { return b == 1024 }, CauseNone},
		{"turns grow long: the batch is cut",
			append(repeatP(period{100000, 2 * time.Microsecond, 4096}, 3), repeatP(period{100000, 8 * time.Microsecond, 4096}, 3)...),
			func(b int) bool { return b < 1024 }, CauseLatency},
		{"a cut floors at Min",
			func() []period {
				var ps []period
				c := 2 * time.Microsecond
				for range 30 {
					ps = append(ps, period{100000, c, 1 << 20})
					c = c * 3 / 2
				}
				return ps
			}(), func(b int) bool { return b == 8 }, CauseLatency},
		{"load drops by half after cuts: back to Max",
			append(append(repeatP(period{100000, 2 * time.Microsecond, 4096}, 2), repeatP(period{100000, 8 * time.Microsecond, 4096}, 2)...),
				repeatP(period{1000, 2 * time.Microsecond, 1}, 2)...),
			func(b int) bool { return b == 1024 }, CauseLoadDrop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBatch(BatchConfig{})
			last := CauseNone
			for _, p := range tt.periods {
				d := b.Decide(batchPeriod(p.rate, p.cost, 2*time.Microsecond, b.Budget(), p.waiting, dt))
				if d.Budget < 8 || d.Budget > 1024 {
					t.Fatalf("budget %d outside 8..1024", d.Budget)
				}
				if d.Cause != CauseNone {
					last = d.Cause
				}
			}
			if !tt.wantBudget(b.Budget()) || (tt.wantCause != CauseNone && last != tt.wantCause) || (tt.wantCause == CauseNone && last != CauseNone) {
				t.Errorf("budget %d, last cause %q; want cause %q", b.Budget(), last, tt.wantCause)
			}
		})
	}
}

// Throughput that grows with the batch grows it; a cut that costs
// throughput is partly undone.
func TestBatchGrowsWithThroughput(t *testing.T) {
	b := NewBatch(BatchConfig{Max: 64})
	b.budget = 16
	rate := 10000.0
	d := b.Decide(BatchSample{Elapsed: time.Second, Turns: 1000, Taken: int64(rate), Full: 1000, Busy: 100 * time.Millisecond})
	if d.Cause != CauseNone {
		t.Fatalf("first sample changed the budget: %+v", d)
	}
	d = b.Decide(BatchSample{Elapsed: time.Second, Turns: 1000, Taken: int64(2 * rate), Full: 1000, Busy: 100 * time.Millisecond})
	if d.Cause != CauseThroughput || d.Budget != 20 {
		t.Errorf("throughput doubled at the same turn time: %+v, want growth to 20", d)
	}
	b.cut = true
	d = b.Decide(BatchSample{Elapsed: time.Second, Turns: 1000, Taken: int64(rate), Full: 1000, Busy: 100 * time.Millisecond})
	if d.Cause != CauseDegraded || d.Budget != 25 {
		t.Errorf("throughput fell after a cut: %+v, want 25 (degraded)", d)
	}
}
