package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	type occurrence struct {
		at   time.Duration // since the first
		log  bool
		want int // occurrences the line stands for
	}
	for _, tt := range []struct {
		name  string
		every time.Duration
		occ   []occurrence
	}{
		{"the first is logged at once", time.Second, []occurrence{{0, true, 1}}},
		{"a burst is one line, then one line for the rest", time.Second, []occurrence{
			{0, true, 1}, {time.Millisecond, false, 0}, {2 * time.Millisecond, false, 0},
			{time.Second, true, 3}, {1500 * time.Millisecond, false, 0}, {2 * time.Second, true, 2},
		}},
		{"occurrences an interval apart are each logged", time.Second, []occurrence{
			{0, true, 1}, {time.Second, true, 1}, {5 * time.Second, true, 1},
		}},
		{"the interval runs from the last line, not the last occurrence", time.Second, []occurrence{
			{0, true, 1}, {999 * time.Millisecond, false, 0}, {1001 * time.Millisecond, true, 2},
		}},
		{"zero Every is DefaultEvery", 0, []occurrence{
			{0, true, 1}, {DefaultEvery - time.Nanosecond, false, 0}, {DefaultEvery, true, 2},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := Limiter{Every: tt.every}
			start := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
			for i, o := range tt.occ {
				log, n := l.Allow(start.Add(o.at))
				if log != o.log || n != o.want {
					t.Errorf("occurrence %d at %v: Allow = %v, %d; want %v, %d", i, o.at, log, n, o.log, o.want)
				}
			}
		})
	}
}
