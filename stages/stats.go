package stages

import (
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
// producer's and the consumer's cores twice.
type StageCounters struct {
	_        cpu.CacheLinePad
	Enqueued atomic.Uint64 // items pushed to the stage's queue
	Rejected atomic.Uint64 // pushes refused because the queue was full (back-pressure)
	_        cpu.CacheLinePad
	Dequeued atomic.Uint64 // items the stage took from its queue
	Dropped  atomic.Uint64 // of those, items dropped unserved (their client had gone)
	_        cpu.CacheLinePad
	Service  Histogram // time the stage spent on each item
}

// StageSnapshot is what Server.Stats reports for one stage.
type StageSnapshot struct {
	Name       string
	QueueDepth int // approximate, from Ring.Len
	QueueCap   int

	Enqueued, Dequeued, Rejected uint64
	Dropped                      uint64 // dequeued and not served: the client had gone

	// Service-time percentiles and maximum, and how many items they cover.
	P50, P90, P99, P999, Max time.Duration
	Count                    uint64
}

// Snapshot reads the counters. depth and capacity come from the stage's
// ring (Len, Cap), which the counters do not know about. It allocates (the
// histogram copy), so call it from a stats endpoint, not per request.
func (c *StageCounters) Snapshot(name string, depth, capacity int) StageSnapshot {
	// Dequeued before Enqueued: both only grow, so reading the consumer's
	// side first keeps Enqueued >= Dequeued in the snapshot.
	deq := c.Dequeued.Load()
	h := c.Service.Snapshot()
	return StageSnapshot{
		Name:       name,
		QueueDepth: depth,
		QueueCap:   capacity,
		Dequeued:   deq,
		Enqueued:   c.Enqueued.Load(),
		Rejected:   c.Rejected.Load(),
		Dropped:    c.Dropped.Load(),
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
