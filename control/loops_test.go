package control

import (
	"fmt"
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

// With the CPUs full, a loop-count change is judged by the requests
// served: a removal (probe) that serves as much is kept, one that serves
// less is undone; a growth that serves no more is undone and caps
// further growth for ProbeAfter.
func TestLoopsJudgedByServed(t *testing.T) {
	const dt = 100 * time.Millisecond
	tests := []struct {
		name    string
		start   int
		work    float64             // loops' worth of work (busy fractions, CPU waits included)
		served  func(n int) float64 // requests per second at n loops
		hold    bool
		periods int
		want    int
		causes  []Cause // every change's, in order
	}{
		{name: "fewer loops serve more: the probe holds, growth back does not pay",
			start: 2, work: 1, served: func(n int) float64 { return map[int]float64{1: 58000, 2: 51000}[n] }, periods: 100,
			want: 1, causes: []Cause{CauseProbe, CauseBusy, CauseNoGain}},
		{name: "the second loop pays: the probe is undone, and tried again later",
			start: 2, work: 1.2, served: func(n int) float64 { return map[int]float64{1: 62000, 2: 67000}[n] }, periods: 100,
			want: 2, causes: []Cause{CauseProbe, CauseLostOne}},
		{name: "a growth that pays is kept",
			start: 1, work: 4, served: func(n int) float64 { return 20000 * float64(n) }, periods: 30,
			want: 2, causes: []Cause{CauseBusy}},
		{name: "another stage's trial holds probes",
			start: 2, work: 1, served: func(int) float64 { return 50000 }, hold: true, periods: 100,
			want: 2},
		{name: "at the minimum, no probe",
			start: 1, work: 0.5, served: func(int) float64 { return 50000 }, periods: 100,
			want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewLoops(LoopConfig{})
			n := tt.start
			var causes []Cause
			for range tt.periods {
				s := loopStage(n, tt.work, dt)
				s.CPUFull, s.Served, s.Hold = true, tt.served(n), tt.hold
				d := c.Decide(s, 1, 4)
				if d.Size != n {
					causes = append(causes, d.Cause)
				}
				n = d.Size
			}
			if n != tt.want || len(causes) != len(tt.causes) {
				t.Fatalf("ended at %d after changes %v, want %d after %v", n, causes, tt.want, tt.causes)
			}
			for i := range causes {
				if causes[i] != tt.causes[i] {
					t.Errorf("changes %v, want %v", causes, tt.causes)
					break
				}
			}
		})
	}
}

// A probe or a growth that serves clearly less is undone after a
// quarter of Judge; one that loses a little is judged over all of it.
func TestLoopsUndoClearLossesSooner(t *testing.T) {
	const dt = 100 * time.Millisecond
	tests := []struct {
		name   string
		start  int
		work   float64
		served map[int]float64
		want   Cause
		after  time.Duration // from the change to its undoing
	}{
		{"a probe losing a third", 2, 1.2, map[int]float64{1: 44000, 2: 66000}, CauseLostOne, 1500 * time.Millisecond},
		{"a probe losing 5%", 2, 1.2, map[int]float64{1: 62700, 2: 66000}, CauseLostOne, 3 * time.Second},
		{"a growth losing a third", 1, 4, map[int]float64{1: 66000, 2: 44000}, CauseNoGain, 1500 * time.Millisecond},
		{"a growth gaining 2%", 1, 4, map[int]float64{1: 66000, 2: 67300}, CauseNoGain, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewLoops(LoopConfig{})
			n := tt.start
			var changedAt, now time.Duration
			for range 200 {
				now += dt
				s := loopStage(n, tt.work, dt)
				s.CPUFull, s.Served = true, tt.served[n]
				d := c.Decide(s, 1, 2)
				switch {
				case d.Size == n:
				case d.Cause == tt.want:
					if got := now - changedAt; got != tt.after {
						t.Errorf("undone %v after the change, want %v", got, tt.after)
					}
					return
				default:
					changedAt = now
				}
				n = d.Size
			}
			t.Fatalf("no %s in 20 s", tt.want)
		})
	}
}

// A change is judged only against a steady stretch. Here /hello
// (70k/s served, one loop half busy) turns into a workload that keeps
// one loop busy and serves 45k/s with it, 55k/s with two: the loop
// added a second into the new workload must stay, not be judged against
// the old one's rate and undone. And no probe is made while the rate is
// still moving.
func TestLoopsJudgeOnlyASteadyStretch(t *testing.T) {
	const dt = 100 * time.Millisecond
	tests := []struct {
		name   string
		busyAt int // periods after the switch at which the loop is busy
		want   []Cause
	}{
		// The growth's stretch before was all /hello: judged against
		// it, the growth lost, and was undone; but back at one loop the
		// stage served less still, so the verdict was the workload's:
		// the ceiling goes, and the next growth is judged fairly.
		{"the loop busy at once", 0, []Cause{CauseBusy, CauseNoGain, CauseBusy}},
		// The stretch before straddles the switch: unsteady, so the
		// growth is not put on trial at all.
		{"the loop busy a second later", 10, []Cause{CauseBusy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewLoops(LoopConfig{})
			n := 1
			var causes []Cause
			for i := range 150 {
				work, served := 0.5, 70000.0
				if i >= 30 {
					served = map[int]float64{1: 45000, 2: 55000}[n]
				}
				if i >= 30+tt.busyAt {
					work = 0.9 * float64(n) // every loop busy: nothing to probe
				}
				s := loopStage(n, work, dt)
				s.CPUFull, s.Served = true, served
				d := c.Decide(s, 1, 2)
				if d.Size != n {
					causes = append(causes, d.Cause)
				}
				n = d.Size
			}
			if n != 2 || fmt.Sprint(causes) != fmt.Sprint(tt.want) {
				t.Errorf("ended at %d loops after %v, want 2 after %v", n, causes, tt.want)
			}
		})
	}
}

// A probe that lost doubles the wait before the next one, as a flap
// does, so a stage that needs its loops is probed less and less often.
func TestLoopsProbeBacksOff(t *testing.T) {
	const dt = 100 * time.Millisecond
	c := NewLoops(LoopConfig{})
	n, probes := 2, 0
	for range 600 { // a minute
		s := loopStage(n, 1.2, dt)
		s.CPUFull, s.Served = true, map[int]float64{1: 60000, 2: 66000}[n]
		d := c.Decide(s, 1, 2)
		if d.Cause == CauseProbe {
			probes++
		}
		n = d.Size
	}
	// Probes after waits of 3, 6, 12 and 24 s, each taking 3 s to judge:
	// 4 in a minute, where a fixed 3 s wait would make 10.
	if probes != 4 || c.ShrinkWait() != 48*time.Second {
		t.Errorf("%d probes in a minute, wait now %v; want 4 and 48s", probes, c.ShrinkWait())
	}
}
