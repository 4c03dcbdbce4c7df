package stages

import (
	"sync"
	"sync/atomic"
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

// Shards count apart and read as one: every sum and the merged histogram
// cover the stage's own counters and each shard, a shard asked for again
// is the same one, and one made later joins the sums without losing what
// the others counted.
func TestStageCountersShards(t *testing.T) {
	var c StageCounters
	record := func(s *StageCounters, enq, deq, rej, drop uint64, service ...time.Duration) {
		s.Enqueued.Add(enq)
		s.Dequeued.Add(deq)
		s.Rejected.Add(rej)
		s.Dropped.Add(drop)
		for _, d := range service {
			s.Service.Record(d)
		}
	}
	record(&c, 1, 1, 1, 0, 1*time.Millisecond)
	two := c.Shard(2)
	record(two, 10, 10, 0, 1, 2*time.Millisecond, 3*time.Millisecond)
	if c.Shard(2) != two {
		t.Fatal("Shard(2) asked twice gave two shards")
	}
	for _, tt := range []struct {
		name   string
		change func()
		want   StageSnapshot
		sum    time.Duration
	}{
		{"the stage's own and shard 2", func() {},
			StageSnapshot{Enqueued: 11, Dequeued: 11, Rejected: 1, Dropped: 1, Count: 3, Max: 3 * time.Millisecond}, 6 * time.Millisecond},
		{"shard 0 made after shard 2", func() { record(c.Shard(0), 5, 4, 2, 0, 9*time.Millisecond) },
			StageSnapshot{Enqueued: 16, Dequeued: 15, Rejected: 3, Dropped: 1, Count: 4, Max: 9 * time.Millisecond}, 15 * time.Millisecond},
		{"shard 2 again, after shard 0's growth", func() { record(c.Shard(2), 1, 1, 0, 0, time.Millisecond) },
			StageSnapshot{Enqueued: 17, Dequeued: 16, Rejected: 3, Dropped: 1, Count: 5, Max: 9 * time.Millisecond}, 16 * time.Millisecond},
	} {
		tt.change()
		s := c.Snapshot("", 0, 0)
		if s.Enqueued != tt.want.Enqueued || s.Dequeued != tt.want.Dequeued || s.Rejected != tt.want.Rejected ||
			s.Dropped != tt.want.Dropped || s.Count != tt.want.Count || s.Max != tt.want.Max {
			t.Errorf("%s: Snapshot = %+v, want %+v", tt.name, s, tt.want)
		}
		if h := c.ServiceSnapshot(); h.Count != tt.want.Count || h.Sum != tt.sum || h.Max != tt.want.Max {
			t.Errorf("%s: ServiceSnapshot count %d sum %v max %v, want %d %v %v", tt.name, h.Count, h.Sum, h.Max, tt.want.Count, tt.sum, tt.want.Max)
		}
		if n := c.ServiceCount(); n != tt.want.Count {
			t.Errorf("%s: ServiceCount = %d, want %d", tt.name, n, tt.want.Count)
		}
	}
}

// Loops made and asked for their shards at the same time while a reader
// sums (the race detector watches): each loop gets one shard of its own,
// and no count is lost.
func TestStageCountersShardsConcurrent(t *testing.T) {
	var c StageCounters
	const loops, each = 8, 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c.ServiceCount() < loops*each {
			c.Snapshot("", 0, 0)
		}
	}()
	var wg sync.WaitGroup
	for i := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				s := c.Shard(loops - 1 - i)
				s.Dequeued.Add(1)
				s.Service.Record(time.Microsecond)
			}
		}()
	}
	wg.Wait()
	<-done
	if s := c.Snapshot("", 0, 0); s.Dequeued != loops*each || s.Count != loops*each {
		t.Fatalf("Dequeued %d, Count %d, want %d each", s.Dequeued, s.Count, loops*each)
	}
}

// BenchmarkStageCountersRecord is a loop's per-request accounting
// (Dequeued and a service time) on every P at once, into one set of
// counters or a shard per goroutine: ns/op is wall time per record across
// them. On this project's 2-core machine one shared line written per
// request is enough to stop two cores from doing more than one.
//
//	go test -run '^$' -bench StageCountersRecord -cpu 1,2 ./stages
func BenchmarkStageCountersRecord(b *testing.B) {
	for _, sharded := range []bool{false, true} {
		name := "shared"
		if sharded {
			name = "sharded"
		}
		b.Run(name, func(b *testing.B) {
			var c StageCounters
			var next atomic.Int32
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				s := &c
				if sharded {
					s = c.Shard(int(next.Add(1)))
				}
				d := time.Duration(0)
				for pb.Next() {
					s.Dequeued.Add(1)
					s.Service.Record(d)
					d = (d + 37*time.Microsecond) % (10 * time.Millisecond)
				}
			})
		})
	}
}
