package stages

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHistIndexBounds(t *testing.T) {
	// Every value must land in a bucket whose bounds contain it, and the
	// buckets must tile the range without gaps.
	prevUpper := uint64(0)
	for i := 0; i < histBuckets; i++ {
		lower, width := histBounds(i)
		if lower != prevUpper {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lower, prevUpper)
		}
		if width > 1 && float64(width)/float64(lower) > 1.0/histSub+1e-12 {
			t.Fatalf("bucket %d [%d,+%d) wider than 1/%d of its lower bound", i, lower, width, histSub)
		}
		for _, v := range []uint64{lower, lower + width - 1} {
			if got := histIndex(v); got != i {
				t.Fatalf("histIndex(%d) = %d, want %d", v, got, i)
			}
		}
		prevUpper = lower + width
	}
	if prevUpper != histMaxNs+1 {
		t.Fatalf("buckets end at %d, want %d", prevUpper, uint64(histMaxNs+1))
	}
	if got := histIndex(1 << 62); got != histBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last (%d)", got, histBuckets-1)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		gen  func() time.Duration
	}{
		{"constant", func() time.Duration { return 42 * time.Microsecond }},
		{"uniform 0-1ms", func() time.Duration { return time.Duration(rng.Int64N(int64(time.Millisecond))) }},
		{"log-uniform 1us-1min", func() time.Duration {
			return time.Duration(float64(time.Microsecond) * math.Pow(6e7, rng.Float64()))
		}},
		{"bimodal", func() time.Duration {
			if rng.IntN(100) < 95 {
				return time.Duration(200+rng.IntN(100)) * time.Microsecond
			}
			return time.Duration(50+rng.IntN(50)) * time.Millisecond
		}},
		{"sub-microsecond", func() time.Duration { return time.Duration(rng.IntN(300)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			ref := make([]time.Duration, 20000)
			var sum time.Duration
			for i := range ref {
				ref[i] = tc.gen()
				sum += ref[i]
				h.Record(ref[i])
			}
			slices.Sort(ref)
			s := h.Snapshot()
			if s.Count != uint64(len(ref)) || s.Sum != sum || s.Max != ref[len(ref)-1] {
				t.Fatalf("Count, Sum, Max = %d, %v, %v; want %d, %v, %v", s.Count, s.Sum, s.Max, len(ref), sum, ref[len(ref)-1])
			}
			for _, q := range []float64{0, 0.001, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
				rank := int(math.Ceil(q * float64(len(ref))))
				if rank < 1 {
					rank = 1
				}
				want := ref[rank-1]
				got := s.Quantile(q)
				// Half a bucket from the midpoint: 1/(2*histSub) of the value.
				tol := want/(2*histSub) + 1
				if got < want-tol || got > want+tol {
					t.Errorf("Quantile(%v) = %v, want %v ± %v", q, got, want, tol)
				}
			}
			var n uint64
			for _, b := range s.Buckets() {
				if b.Count == 0 || b.Upper <= b.Lower {
					t.Fatalf("bad bucket %+v", b)
				}
				n += b.Count
			}
			if n != s.Count {
				t.Fatalf("buckets hold %d, Count %d", n, s.Count)
			}
		})
	}
}

func TestHistogramEmptyAndEdges(t *testing.T) {
	var h Histogram
	s := h.Snapshot()
	if s.Count != 0 || s.Quantile(0.5) != 0 || s.Mean() != 0 || len(s.Buckets()) != 0 {
		t.Fatalf("empty snapshot: %+v", s)
	}
	h.Record(-time.Second)  // clock step backwards: counted as zero
	h.Record(2 * time.Hour) // beyond the range: last bucket, exact Max
	s = h.Snapshot()
	if s.Count != 2 || s.Max != 2*time.Hour || s.Quantile(0) != 0 || s.Quantile(1) != 2*time.Hour {
		t.Fatalf("edges: count %d max %v q0 %v q1 %v", s.Count, s.Max, s.Quantile(0), s.Quantile(1))
	}
}

func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	const goroutines, per = 4, 5000
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				h.Record(time.Duration(g*per+i) * time.Microsecond)
				if i%1000 == 0 {
					_ = h.Snapshot() // snapshots race with records
				}
			}
		}(g)
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count != goroutines*per || s.Max != (goroutines*per-1)*time.Microsecond {
		t.Fatalf("Count %d Max %v", s.Count, s.Max)
	}
}

func TestHistogramRecordAllocs(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(1000, func() { h.Record(123 * time.Microsecond) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}
