package rdmatool

import (
	"testing"
	"time"
)

// TestSliceKeeper drives a sliceKeeper with a fake clock: it yields once a
// slice has lasted sliceLen, only looks at the clock once per sliceCheck
// of work, and starts a new slice after each yield.
func TestSliceKeeper(t *testing.T) {
	tests := []struct {
		name       string
		step       time.Duration // the clock advances this much per call
		weight     int           // weight of each call to did
		calls      int
		wantYields int
		wantReads  int
	}{
		// 3 ms of 1 µs polls: a clock read every 256, no yield.
		{"short polls, one slice", time.Microsecond, 1, 3000, 0, 11},
		// 40 ms of 10 µs polls: reads every 2.56 ms, so every second read
		// finds the 5 ms slice over.
		{"polls across slices", 10 * time.Microsecond, 1, 4000, 7, 15},
		// 80 ms of 200 µs posts (siw's 64 KiB Writes): a read every 8
		// posts (1.6 ms), a yield every fourth.
		{"posts across slices", 200 * time.Microsecond, slicePost, 400, 12, 50},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var clock time.Time
			reads, yields := 0, 0
			k := &sliceKeeper{
				now:   func() time.Time { reads++; return clock },
				yield: func() { yields++ },
				start: clock,
			}
			for i := 0; i < tc.calls; i++ {
				clock = clock.Add(tc.step)
				k.did(tc.weight)
			}
			// A yield reads the clock a second time, to start the new
			// slice after the hand-off rather than before it.
			if got := reads - yields; got != tc.wantReads {
				t.Errorf("clock read %d times outside yields, want %d", got, tc.wantReads)
			}
			if yields != tc.wantYields || k.yields != yields {
				t.Errorf("yielded %d times (counted %d), want %d", yields, k.yields, tc.wantYields)
			}
		})
	}
}

// TestStartSpinning: a busy-polling endpoint has a slice keeper and counts
// its posts; an event-driven one ignores them.
func TestStartSpinning(t *testing.T) {
	var e endpoint
	e.posted() // not spinning: no keeper needed
	e.startSpinning()
	if !e.spin || e.slice == nil {
		t.Fatalf("spin %v keeper %v after startSpinning", e.spin, e.slice)
	}
	for i := 0; i < 8; i++ {
		e.posted()
	}
	if e.slice.work != 0 {
		t.Errorf("8 posts left %d work uncounted, want a clock check at %d", e.slice.work, sliceCheck)
	}
}
