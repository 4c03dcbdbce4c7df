package bench

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// IntervalSample is what a run measured in one interval of
// Config.Interval: the responses that arrived in it, their latencies, and
// the failures that happened in it.
type IntervalSample struct {
	// Index counts intervals from Config.IntervalBase; Start is when this
	// one began.
	Index  int64         `json:"index"`
	Start  time.Time     `json:"start"`
	Length time.Duration `json:"length_ns"`
	Counts
	RequestsPerSec float64 `json:"requests_per_sec"`
	// Latency is nil when no response arrived in the interval.
	Latency *Percentiles `json:"latency,omitempty"`

	hist *hdrhistogram.Histogram // the sample's own, for merge
}

// merge adds o, the same interval seen by another run (two phases share
// the second at their boundary), to s.
func (s *IntervalSample) merge(o IntervalSample) {
	s.Counts.add(o.Counts)
	s.RequestsPerSec = float64(s.Requests) / s.Length.Seconds()
	switch {
	case o.hist == nil:
	case s.hist == nil:
		s.hist = o.hist
	default:
		s.hist.Merge(o.hist)
	}
	if s.hist != nil && s.hist.TotalCount() > 0 {
		p := percentiles(s.hist)
		s.Latency = &p
	}
}

// intervalPart is one loop's share of an interval, handed to the run's
// collector when the loop crosses the interval's end.
type intervalPart struct {
	loop   int
	idx    int64
	counts Counts
	hist   *hdrhistogram.Histogram
	// next is the first interval the loop may still report; every
	// interval before it is complete as far as this loop is concerned.
	next int64
}

// intervalHistDigits is the precision of per-interval latencies: 1% is
// plenty for a time series, and keeps each histogram ~20 KiB rather than
// ~250 KiB (hdrhistogram with 3 digits over 1 µs..1 min).
const intervalHistDigits = 2

// intervals is the sampling shared by a run's loops and its collector.
type intervals struct {
	length int64 // ns
	origin int64 // ns from Config.IntervalBase to the run's base
	base   time.Time
	out    chan intervalPart
	hists  sync.Pool

	// Collector side, on Run's goroutine only.
	pending    map[int64]*intervalAgg
	watermarks []int64 // per loop: intervals below are complete
	emit       func(IntervalSample)
}

type intervalAgg struct {
	counts Counts
	hist   *hdrhistogram.Histogram
}

func newIntervals(cfg Config, base time.Time, loops int) *intervals {
	iv := &intervals{length: int64(cfg.Interval), base: cfg.IntervalBase, emit: cfg.OnInterval,
		out: make(chan intervalPart, 8*loops), pending: map[int64]*intervalAgg{}, watermarks: make([]int64, loops)}
	if iv.base.IsZero() {
		iv.base = base
	}
	iv.origin = int64(base.Sub(iv.base))
	for i := range iv.watermarks {
		iv.watermarks[i] = math.MinInt64 // nothing known yet
	}
	iv.hists.New = func() any { return hdrhistogram.New(1, int64(histMax/time.Microsecond), intervalHistDigits) }
	return iv
}

// index is the interval holding ns since the run's base.
func (iv *intervals) index(ns int64) int64 {
	return floorDiv(ns+iv.origin, iv.length)
}

// end is when interval idx ends, in ns since the run's base.
func (iv *intervals) end(idx int64) int64 { return (idx+1)*iv.length - iv.origin }

func (iv *intervals) hist() *hdrhistogram.Histogram { return iv.hists.Get().(*hdrhistogram.Histogram) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// collect merges a loop's part and emits every interval that all loops
// have passed, in order.
func (iv *intervals) collect(p intervalPart) {
	if p.hist != nil {
		a := iv.pending[p.idx]
		if a == nil {
			a = &intervalAgg{hist: iv.hist()}
			iv.pending[p.idx] = a
		}
		a.counts.add(p.counts)
		a.hist.Merge(p.hist)
		p.hist.Reset()
		iv.hists.Put(p.hist)
	}
	iv.watermarks[p.loop] = p.next
	done := int64(math.MaxInt64)
	for _, w := range iv.watermarks {
		done = min(done, w)
	}
	iv.flush(done)
}

// flush emits the pending intervals below idx.
func (iv *intervals) flush(below int64) {
	var ready []int64
	for idx := range iv.pending {
		if idx < below {
			ready = append(ready, idx)
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i] < ready[j] })
	for _, idx := range ready {
		a := iv.pending[idx]
		delete(iv.pending, idx)
		s := IntervalSample{Index: idx, Start: iv.base.Add(time.Duration(idx * iv.length)), Length: time.Duration(iv.length), Counts: a.counts}
		s.RequestsPerSec = float64(a.counts.Requests) / s.Length.Seconds()
		if a.hist.TotalCount() > 0 {
			p := percentiles(a.hist)
			s.Latency = &p
		}
		// The sample keeps its histogram (one allocation per interval,
		// not per request), so that samples of one interval from two
		// runs can be merged.
		s.hist = a.hist
		if iv.emit != nil {
			iv.emit(s)
		}
	}
}
