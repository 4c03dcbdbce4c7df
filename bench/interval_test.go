package bench

import (
	"fmt"
	"testing"
	"time"
)

func TestIntervalCollectorOrder(t *testing.T) {
	type part struct {
		loop     int
		idx      int64
		requests uint64
		next     int64
	}
	tests := []struct {
		name  string
		parts []part
		// emitted after each part: "idx:requests" lists
		want []string
	}{
		{name: "waits for every loop", parts: []part{{0, 0, 5, 1}, {1, 0, 7, 1}, {0, 1, 1, 2}, {1, 1, 2, 3}},
			want: []string{"", "0:12", "", "1:3"}},
		{name: "a loop that skipped intervals", parts: []part{{0, 0, 5, 3}, {1, 0, 1, 1}, {1, 1, 1, 2}, {1, 2, 1, 3}},
			want: []string{"", "0:6", "1:1", "2:1"}},
		{name: "final parts flush", parts: []part{{0, 4, 2, 1 << 62}, {1, 4, 3, 1 << 62}},
			want: []string{"", "4:5"}},
		{name: "negative index before the base", parts: []part{{0, -1, 2, 0}, {1, -1, 1, 0}},
			want: []string{"", "-1:3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var cur string
			iv := newIntervals(Config{Interval: time.Second, OnInterval: func(s IntervalSample) {
				cur += fmt.Sprintf("%d:%d", s.Index, s.Requests)
			}}, time.Unix(100, 0), 2)
			for _, p := range tt.parts {
				cur = ""
				h := iv.hist()
				if p.requests > 0 {
					_ = h.RecordValue(100)
				}
				iv.collect(intervalPart{loop: p.loop, idx: p.idx, counts: Counts{Requests: p.requests}, hist: h, next: p.next})
				got = append(got, cur)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("emitted %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIntervalIndex(t *testing.T) {
	base := time.Unix(1000, 0)
	tests := []struct {
		runStart time.Duration // after base
		ns       int64         // since the run's start
		idx      int64
		end      int64
	}{
		{0, 0, 0, 1e9},
		{0, 999_999_999, 0, 1e9},
		{0, 1e9, 1, 2e9},
		{2500 * time.Millisecond, 0, 2, 5e8},
		{2500 * time.Millisecond, 6e8, 3, 15e8},
		{-500 * time.Millisecond, 0, -1, 5e8},
	}
	for _, tt := range tests {
		iv := newIntervals(Config{Interval: time.Second, IntervalBase: base}, base.Add(tt.runStart), 1)
		if idx := iv.index(tt.ns); idx != tt.idx || iv.end(idx) != tt.end {
			t.Errorf("run at %v, %d ns: index %d end %d, want %d %d", tt.runStart, tt.ns, idx, iv.end(idx), tt.idx, tt.end)
		}
	}
}
