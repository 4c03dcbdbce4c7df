package stages

import (
	"testing"
	"time"
)

func TestStageCountersSnapshot(t *testing.T) {
	var c StageCounters
	r := NewRing[int](8)
	for i := 0; i < 10; i++ {
		if r.Push(i) {
			c.Enqueued.Add(1)
		} else {
			c.Rejected.Add(1)
		}
	}
	for i := 0; i < 5; i++ {
		r.Pop()
		c.Dequeued.Add(1)
		c.Service.Record(time.Duration(i+1) * time.Millisecond)
	}
	s := c.Snapshot("reader", r.Len(), r.Cap())
	want := StageSnapshot{Name: "reader", QueueDepth: 3, QueueCap: 8, Enqueued: 8, Dequeued: 5, Rejected: 2, Count: 5, Max: 5 * time.Millisecond}
	if s.Name != want.Name || s.QueueDepth != want.QueueDepth || s.QueueCap != want.QueueCap ||
		s.Enqueued != want.Enqueued || s.Dequeued != want.Dequeued || s.Rejected != want.Rejected ||
		s.Count != want.Count || s.Max != want.Max {
		t.Fatalf("Snapshot = %+v, want %+v", s, want)
	}
	near := func(got, want time.Duration) bool { d := got - want; return d >= -want/100 && d <= want/100 }
	if !near(s.P50, 3*time.Millisecond) || !near(s.P99, 5*time.Millisecond) || !near(s.P90, 5*time.Millisecond) {
		t.Fatalf("percentiles P50 %v P90 %v P99 %v", s.P50, s.P90, s.P99)
	}
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur uint64
		dt        time.Duration
		want      float64
	}{
		{"steady", 100, 1100, time.Second, 1000},
		{"half second", 0, 500, time.Second / 2, 1000},
		{"idle", 7, 7, time.Second, 0},
		{"zero dt", 0, 10, 0, 0},
		{"backwards", 10, 5, time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Rate(StageSnapshot{Dequeued: tc.prev}, StageSnapshot{Dequeued: tc.cur}, tc.dt)
			if got != tc.want {
				t.Fatalf("Rate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStageCountersRecordAllocs(t *testing.T) {
	var c StageCounters
	n := testing.AllocsPerRun(1000, func() {
		c.Enqueued.Add(1)
		c.Dequeued.Add(1)
		c.Service.Record(time.Millisecond)
	})
	if n != 0 {
		t.Fatalf("recording allocates %v times", n)
	}
}
