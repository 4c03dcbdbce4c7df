package stages

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// StageCounters are one stage's counters. Producers bump Enqueued (or
// Rejected when Push reports full), the stage bumps Dequeued as it takes
// work and records each item's service time in Service. Every record is an
// atomic add; nothing here allocates or locks. The zero value is ready.
//
// Enqueued and Dequeued are written by different stages, so each sits on its
// own cache line: otherwise every hand-off would bounce one line between the
// producer's and the consumer's cores twice. For the same reason a stage's
// loops each count in a shard of their own (Shard), which every read here
// sums: loops on different cores that shared one set of counters would
// trade its cache lines on every request.
type StageCounters struct {
	_        cpu.CacheLinePad
	Enqueued atomic.Uint64 // items pushed to the stage's queue
	Rejected atomic.Uint64 // pushes refused because the queue was full (back-pressure)
	_        cpu.CacheLinePad
	Dequeued atomic.Uint64 // items the stage took from its queue
	Dropped  atomic.Uint64 // of those, items dropped unserved (their client had gone)
	Failed   atomic.Uint64 // of those, items whose service failed (a handler that panicked)
	_        cpu.CacheLinePad
	Service  Histogram // time the stage spent on each item

	shardsMu sync.Mutex                       // for Shard's additions
	shards   atomic.Pointer[[]*StageCounters] // by loop id; read by the sums
}

// Shard is the counters of the stage's loop (or other writer) i, which it
// writes alone, summed into every read of c. It is made the first time it
// is asked for and kept for c's life, so a loop removed and another added
// under its id go on counting where it left off, and the sums never go
// back.
func (c *StageCounters) Shard(i int) *StageCounters {
	if sh := c.shards.Load(); sh != nil && i < len(*sh) && (*sh)[i] != nil {
		return (*sh)[i]
	}
	c.shardsMu.Lock()
	defer c.shardsMu.Unlock()
	var cur []*StageCounters
	if sh := c.shards.Load(); sh != nil {
		cur = *sh
	}
	if i < len(cur) && cur[i] != nil {
		return cur[i]
	}
	next := make([]*StageCounters, max(len(cur), i+1))
	copy(next, cur)
	next[i] = &StageCounters{}
	c.shards.Store(&next)
	return next[i]
}

// each calls f for c and every shard.
func (c *StageCounters) each(f func(*StageCounters)) {
	f(c)
	if sh := c.shards.Load(); sh != nil {
		for _, s := range *sh {
			if s != nil {
				f(s)
			}
		}
	}
}

// sum adds up one counter over c and its shards.
func (c *StageCounters) sum(field func(*StageCounters) *atomic.Uint64) uint64 {
	var n uint64
	c.each(func(s *StageCounters) { n += field(s).Load() })
	return n
}

// ServiceSnapshot is the service-time histogram of c and its shards as one.
func (c *StageCounters) ServiceSnapshot() HistogramSnapshot {
	var h HistogramSnapshot
	c.each(func(s *StageCounters) { s.Service.addTo(&h) })
	return h
}

// ServiceCount is how many service times c and its shards recorded.
func (c *StageCounters) ServiceCount() uint64 {
	var n uint64
	c.each(func(s *StageCounters) { n += s.Service.Count() })
	return n
}

// StageSnapshot is what Server.Stats reports for one stage.
type StageSnapshot struct {
	Name       string
	QueueDepth int // approximate, from Ring.Len
	QueueCap   int

	// Enqueued and Dequeued count the items handed to the stage and taken
	// up by it since the start (Enqueued - Dequeued is what waits, beside
	// QueueDepth). Rejected counts hand-offs the stage refused because
	// its queue was full (back-pressure: the sender answered or held the
	// item itself); the reader's also counts closes the kernel refused,
	// which would mean an ownership bug.
	Enqueued, Dequeued, Rejected uint64
	Dropped                      uint64 // dequeued and not served: the client had gone
	Failed                       uint64 // dequeued and failed: a handler that panicked

	// Service-time percentiles and maximum, and Count, how many items
	// they cover (those served since the start).
	P50, P90, P99, P999, Max time.Duration
	Count                    uint64
}

// Snapshot reads the counters. depth and capacity come from the stage's
// ring (Len, Cap), which the counters do not know about. It allocates (the
// histogram copy), so call it from a stats endpoint, not per request.
func (c *StageCounters) Snapshot(name string, depth, capacity int) StageSnapshot {
	// Dequeued before Enqueued: both only grow, so reading the consumer's
	// side first keeps Enqueued >= Dequeued in the snapshot.
	deq := c.sum(func(s *StageCounters) *atomic.Uint64 { return &s.Dequeued })
	h := c.ServiceSnapshot()
	return StageSnapshot{
		Name:       name,
		QueueDepth: depth,
		QueueCap:   capacity,
		Dequeued:   deq,
		Enqueued:   c.sum(func(s *StageCounters) *atomic.Uint64 { return &s.Enqueued }),
		Rejected:   c.sum(func(s *StageCounters) *atomic.Uint64 { return &s.Rejected }),
		Dropped:    c.sum(func(s *StageCounters) *atomic.Uint64 { return &s.Dropped }),
		Failed:     c.sum(func(s *StageCounters) *atomic.Uint64 { return &s.Failed }),
		P50:        h.Quantile(0.50),
		P90:        h.Quantile(0.90),
		P99:        h.Quantile(0.99),
		P999:       h.Quantile(0.999),
		Max:        h.Max,
		Count:      h.Count,
	}
}

// Rate returns a stage's throughput in items per second between two
// snapshots taken dt apart, counted as items dequeued (taken in by the
// stage). It returns 0 for a non-positive dt or if the counters went
// backwards (snapshots of different servers, or given in the wrong order).
func Rate(prev, cur StageSnapshot, dt time.Duration) float64 {
	if dt <= 0 || cur.Dequeued < prev.Dequeued {
		return 0
	}
	return float64(cur.Dequeued-prev.Dequeued) / dt.Seconds()
}
