package control

import (
	"testing"
	"time"
)

// loopStage is a synthetic I/O stage with work loops' worth of work,
// spread evenly over its loops (connections are rebalanced): each loop is
// busy min(1, work/n) of the time.
func loopStage(n int, work float64, dt time.Duration) LoopSample {
	s := LoopSample{Elapsed: dt, Size: n}
	per := min(1, work/float64(n))
	for range n {
		s.Busy = append(s.Busy, time.Duration(per*float64(dt)))
	}
	return s
}

func TestLoopsDecide(t *testing.T) {
	const dt = 100 * time.Millisecond
	tests := []struct {
		name     string
		start    int
		lo, hi   int
		work     []float64 // loops' worth of work, one period each
		want     int       // the size at the end
		changes  int       // how many periods changed the size
		wantLast Cause     // the last change's cause
	}{
		{"idle one loop stays", 1, 1, 4, repeat(0.01, 50), 1, 0, CauseNone},
		{"moderate load holds", 2, 1, 4, repeat(1.2, 50), 2, 0, CauseNone},
		{"saturated grows until below GrowAbove", 1, 1, 8, repeat(3, 40), 4, 2, CauseBusy}, // 1 → 2 (both full) → 4 (75% each)
		{"growth stops at the bound", 1, 1, 2, repeat(3, 40), 2, 1, CauseBusy},
		{"growth waits for settling", 1, 1, 8, repeat(3, 5), 2, 1, CauseBusy},
		{"quiet shrinks one at a time", 4, 1, 4, repeat(0.2, 80), 2, 2, CauseQuiet},
		{"quiet waits ShrinkAfter", 4, 1, 4, repeat(0.2, 25), 4, 0, CauseNone},
		{"a lull resets the wait", 4, 1, 4, append(append(repeat(0.2, 25), repeat(2, 1)...), repeat(0.2, 25)...), 4, 0, CauseNone},
		{"not below the minimum", 3, 3, 4, repeat(0.01, 100), 3, 0, CauseNone},
		{"outside new bounds: brought in", 6, 1, 4, repeat(0.01, 1), 4, 1, CauseBounds},
		{"hysteresis: no flapping at the edge", 2, 1, 4, repeat(0.9, 200), 2, 0, CauseNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewLoops(LoopConfig{})
			n, changes, last := tt.start, 0, CauseNone
			for _, w := range tt.work {
				s := loopStage(n, w, dt)
				d := c.Decide(s, tt.lo, tt.hi)
				if d.Size < tt.lo || d.Size > tt.hi {
					t.Fatalf("size %d outside %d..%d", d.Size, tt.lo, tt.hi)
				}
				if d.Size != n {
					changes++
					last = d.Cause
					if d.Size < n && n-d.Size > 1 && d.Cause != CauseBounds {
						t.Errorf("shrank %d → %d: more than one loop at a time", n, d.Size)
					}
				}
				n = d.Size
			}
			if n != tt.want || changes != tt.changes || last != tt.wantLast {
				t.Errorf("ended at %d after %d changes (last %q), want %d after %d (%q)", n, changes, last, tt.want, tt.changes, tt.wantLast)
			}
		})
	}
}

// flapWork is a stage whose work reads as quiet at two loops and busy at
// one: work spread over two loops reads 0.3 in all, one loop doing it
// reads 0.9 (batching and CPU waits make busy fractions not add up).
func flapWork(n int) float64 {
	if n >= 2 {
		return 0.3
	}
	return 0.9
}

// A loop removed only to be added again is a flap: each one doubles the
// wait before the next removal, up to MaxShrinkAfter, and a removal that
// holds halves it again.
func TestLoopsBackOffFromFlapping(t *testing.T) {
	const dt = 100 * time.Millisecond
	tests := []struct {
		name     string
		periods  int
		work     func(n int) float64
		maxFlaps int           // removals at most over the run
		wait     time.Duration // ShrinkWait at the end
	}{
		// 120 s: without the back-off a removal every ~4 s (30 of them).
		{"flapping backs off", 1200, flapWork, 5, time.Minute},
		// Quiet for good after the flaps: the wait comes back down.
		{"a removal that holds", 1200, func(n int) float64 { return 0.1 }, 1, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewLoops(LoopConfig{})
			n, removals := 2, 0
			for range tt.periods {
				d := c.Decide(loopStage(n, tt.work(n), dt), 1, 2)
				if d.Size < n {
					removals++
				}
				n = d.Size
			}
			if removals > tt.maxFlaps {
				t.Errorf("%d removals in %v, want at most %d", removals, time.Duration(tt.periods)*dt, tt.maxFlaps)
			}
			if got := c.ShrinkWait(); got != tt.wait {
				t.Errorf("shrink wait %v at the end, want %v", got, tt.wait)
			}
		})
	}
}

// The mean and the work are reported whatever the decision.
func TestLoopsDecideReportsLoad(t *testing.T) {
	c := NewLoops(LoopConfig{})
	d := c.Decide(LoopSample{Elapsed: time.Second, Size: 2, Busy: []time.Duration{500 * time.Millisecond, 300 * time.Millisecond}}, 1, 4)
	if d.Work < 0.79 || d.Work > 0.81 || d.Load < 0.39 || d.Load > 0.41 {
		t.Errorf("work %.2f load %.2f, want 0.8 and 0.4", d.Work, d.Load)
	}
}

func repeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}
