package stages

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram buckets are log-linear, as in Gil Tene's HdrHistogram: each
// power-of-two range of nanoseconds is cut into histSub equal buckets, so a
// bucket is never wider than 1/histSub of its lower bound. With histSub =
// 128 a recorded value is known to within 0.8% (0.4% from the bucket's
// midpoint), which is HdrHistogram's "2 significant digits". Values under
// 2*histSub ns get one bucket per nanosecond.
//
// The range tops out at 2^36 ns (68.7 s): service times above a minute mean
// something is broken, and Max still records them exactly.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits // sub-buckets per power of two
	histTopBits = 36               // values are clamped below 1<<histTopBits ns
	// histBuckets: the linear buckets 0..2*histSub-1, then histSub per
	// power of two from 2^(histSubBits+1) up to 2^histTopBits.
	histBuckets = (histTopBits - histSubBits + 1) * histSub
	histMaxNs   = 1<<histTopBits - 1
)

// Histogram records durations without locks or allocation: Record is a few
// atomic adds, safe from any number of goroutines. The zero value is ready
// to use. It is about 30 KiB, so embed it in long-lived values (a stage's
// StageCounters) rather than creating one per request.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; wraps after 584 years of service time
	max    atomic.Int64
}

// histIndex maps a value in nanoseconds to its bucket.
func histIndex(ns uint64) int {
	if ns < histSub {
		return int(ns)
	}
	if ns > histMaxNs {
		ns = histMaxNs
	}
	// Keep the top histSubBits+1 bits: v>>e is in [histSub, 2*histSub).
	e := bits.Len64(ns) - (histSubBits + 1)
	return e<<histSubBits + int(ns>>e)
}

// histBounds returns the lowest value of bucket i and its width.
func histBounds(i int) (lower, width uint64) {
	if i < 2*histSub {
		return uint64(i), 1
	}
	e := i>>histSubBits - 1
	m := uint64(i - e<<histSubBits) // in [histSub, 2*histSub)
	return m << e, 1 << e
}

// Record adds one observation. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[histIndex(uint64(d))].Add(1)
	h.sum.Add(uint64(d))
	// Max changes rarely once a histogram has warmed up, so the CAS loop is
	// almost always a single load.
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// Count is the number of observations, read without copying the
// buckets (a controller reads it every period).
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Snapshot copies the histogram. Records that race with it may be seen by
// some of the counters and not others; Count is the sum of the copied
// buckets, so quantiles are always consistent with Count.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	h.addTo(&s)
	return s
}

// addTo adds the histogram's counts into s (a merge: Count and Sum add up,
// Max is the larger), for counters kept apart per loop and read as one.
func (h *Histogram) addTo(s *HistogramSnapshot) {
	if s.counts == nil {
		s.counts = make([]uint64, histBuckets)
	}
	for i := range h.counts {
		c := h.counts[i].Load()
		s.counts[i] += c
		s.Count += c
	}
	s.Sum += time.Duration(h.sum.Load())
	s.Max = max(s.Max, time.Duration(h.max.Load()))
}

// HistogramSnapshot is a point-in-time copy of a Histogram.
type HistogramSnapshot struct {
	Count uint64
	Sum   time.Duration
	Max   time.Duration

	counts []uint64
}

// Mean returns Sum/Count, or 0 when empty.
func (s HistogramSnapshot) Mean() time.Duration {
	if s.Count == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Count)
}

// Quantile returns the value below or at which a fraction q of the
// observations fall (q in [0, 1]; 0.99 is p99), as the midpoint of the
// bucket that holds it, never above Max. It returns 0 when empty.
func (s HistogramSnapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	if q >= 1 || math.IsNaN(q) {
		return s.Max
	}
	// The rank-th smallest observation, 1-based (nearest-rank definition).
	rank := uint64(math.Ceil(q * float64(s.Count)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			lower, width := histBounds(i)
			v := time.Duration(lower + width/2)
			if v > s.Max && s.Max > 0 {
				v = s.Max
			}
			return v
		}
	}
	return s.Max
}

// HistogramBucket is one non-empty histogram bucket, for export: Count
// observations fell in [Lower, Upper). (Bucket is the response body's.)
type HistogramBucket struct {
	Lower, Upper time.Duration
	Count        uint64
}

// Buckets returns the non-empty buckets in increasing order. The last
// bucket also holds every value clamped at the top of the range.
func (s HistogramSnapshot) Buckets() []HistogramBucket {
	var out []HistogramBucket
	for i, c := range s.counts {
		if c == 0 {
			continue
		}
		lower, width := histBounds(i)
		out = append(out, HistogramBucket{Lower: time.Duration(lower), Upper: time.Duration(lower + width), Count: c})
	}
	return out
}
