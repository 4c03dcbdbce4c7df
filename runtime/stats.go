package runtime

import (
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/listener"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// counters are the server's per-stage statistics, one set per stage shared
// by all of the stage's loops or workers.
type counters struct {
	accepted  atomic.Uint64
	reader    stages.StageCounters // queue: hand-offs into reader loops; service: header parse time
	processor stages.StageCounters // queue: the requests ring; service: handler run time
	writer    stages.StageCounters // queue: kicks into writer loops; service: first byte queued to last byte written
}

// StageStats is one stage's snapshot with its throughput since the
// previous Stats call.
type StageStats struct {
	stages.StageSnapshot
	Throughput float64 // dequeued per second since the previous Stats call
	Loops      int     // event loops or workers in the stage
}

// Stats is a snapshot of the whole server.
type Stats struct {
	Time     time.Time
	Accepted uint64 // connections accepted since start
	Open     int    // connections open now
	Busy     int    // handlers running with a processor place now
	// Inline is the number of requests served on their reader loop
	// (their handler declared it never blocks; see Config.Handler). The
	// Processor stage's counts include them.
	Inline uint64
	// Direct is the number of those whose response the reader loop wrote
	// whole itself; the rest went to their writer loop to finish. The
	// Writer stage's counts include them.
	Direct uint64
	// Batched is the number of responses sent whole in a batch, by a
	// reader loop (of Direct) or a writer loop: a loop turn's in one
	// io_uring_enter (Config.NoBatchedSends), in SendBatches submissions.
	// Batched / SendBatches is the responses one system call sent.
	Batched, SendBatches uint64
	// BatchedReads is the number of reads a reader loop made for a turn's
	// connections together, in ReadBatches io_uring_enters
	// (Config.NoBatchedReads).
	BatchedReads, ReadBatches uint64
	// MemoryReturns is how many times the server returned the memory a
	// burst of connections left behind (Config.KeepFreedMemory).
	MemoryReturns uint64
	Listener      ListenerStats   // the accept loops: connections taken, pauses at MaxConns, failures
	Slow          SlowClientStats // clients slower than the server: parked handlers, cut-offs
	Reader        StageStats
	Processor     StageStats
	Writer        StageStats
	Conns         ConnStates
	ReaderLoops   []LoopStats // per reader loop: connections held and queue depth
	WriterLoops   []LoopStats

	Sizes   []StageSize  // each stage's size and bounds, in pipeline order
	Control ControlStats // the control loop's last period, and the request classes now
	// ProcessorGoroutines is the pool's goroutines now: holding a place,
	// parked on their client, or spare (waiting to be handed a place).
	ProcessorGoroutines int
	// LoopNudges is how many times a worker about to yield readied event
	// loops that Go's scheduler had left parked with events queued
	// (stages.LoopNudge): how often the workers kept the CPU from them.
	LoopNudges uint64
	// LoopAwaits is how many times a worker about to take a request
	// stepped aside for an event loop queued behind the workers with
	// events waiting (stages.LoopNudge.AwaitLoops).
	LoopAwaits uint64
}

// ListenerStats is the first stage: its listeners together (HTTP's and
// the messenger's).
type ListenerStats struct {
	Accepted uint64
	Paused   uint64 // times accepting stopped at MaxConns
	// Errors are accepts that failed (the fd table full, most likely);
	// the server logs them, and retries.
	Errors uint64
}

// SlowClientStats is what the server did about clients slower than the
// server: handlers parked while they waited on them, and clients cut off.
type SlowClientStats struct {
	Parked      int    // handlers waiting on their client without a processor place, now
	MaxParked   int    // the bound on Parked (Config.MaxParked)
	ParkRefused uint64 // waits that held a place because MaxParked were parked
	SlowHeaders uint64 // requests cut off at Config.HeaderTimeout, partly received (408)
	SlowBodies  uint64 // request bodies cut off below Config.MinBodyRate
	SlowReaders uint64 // responses cut off below Config.MinResponseRate
	TimedOut    uint64 // responses cut off by Config.WriteTimeout
	Resets      uint64 // connections closed with RST (timed out with data queued, or cut off)
	HangUps     uint64 // clients that hung up while their request was out

	// The limits in force, defaults applied (0: the check is off), so
	// that /metrics shows what a cut-off was measured against.
	PrereadBody          int           // bodies read whole before dispatch, bytes
	MinBodyRate          int64         // bytes/s, after MinBodyRateGrace
	MinBodyRateGrace     time.Duration //
	MinResponseRate      int64         // bytes/s, over MinResponseRateGrace windows
	MinResponseRateGrace time.Duration //
}

// LoopStats describes one event loop.
// LoopStats is one reader or writer event loop's load: the connections
// a reader loop holds now (0 for a writer loop, which holds connections
// only while it writes to them) and the hand-offs waiting in the loop's
// inbound queue.
type LoopStats struct {
	Conns      int
	QueueDepth int
}

// Stages returns the three queued stages in pipeline order.
func (st Stats) Stages() []StageStats { return []StageStats{st.Reader, st.Processor, st.Writer} }

// Stats returns a snapshot of every stage. Throughput is measured from the
// previous call, so a monitor calling it periodically gets rates per period.
func (s *Server) Stats() Stats {
	st := s.Snapshot()
	s.statsMu.Lock()
	prev := s.last
	s.last = st
	s.statsMu.Unlock()
	if !prev.Time.IsZero() {
		dt := st.Time.Sub(prev.Time)
		st.Reader.Throughput = stages.Rate(prev.Reader.StageSnapshot, st.Reader.StageSnapshot, dt)
		st.Processor.Throughput = stages.Rate(prev.Processor.StageSnapshot, st.Processor.StageSnapshot, dt)
		st.Writer.Throughput = stages.Rate(prev.Writer.StageSnapshot, st.Writer.StageSnapshot, dt)
	}
	return st
}

// Snapshot is Stats without throughput and without moving Stats' window:
// for exporters (Prometheus computes its own rates).
func (s *Server) Snapshot() Stats {
	now := time.Now()
	st := Stats{Time: now, Accepted: s.counters.accepted.Load(), Open: s.openConns(), Busy: s.pool.Busy()}
	for _, ln := range [...]*listener.Listener{s.ln, s.msgLn} {
		if ln != nil {
			st.Listener.Accepted += ln.Accepted.Load()
			st.Listener.Paused += ln.Paused.Load()
			st.Listener.Errors += ln.Errors.Load()
		}
	}
	var rdepth, rcap, wdepth, wcap int
	s.readers.each(func(r *reader.Loop) {
		rdepth += r.QueueDepth()
		rcap += r.QueueCap()
		st.ReaderLoops = append(st.ReaderLoops, LoopStats{Conns: r.Open(), QueueDepth: r.QueueDepth()})
	})
	s.writers.each(func(w *wloop) {
		wdepth += w.QueueDepth()
		wcap += w.QueueCap()
		st.WriterLoops = append(st.WriterLoops, LoopStats{QueueDepth: w.QueueDepth()})
	})
	st.Reader = StageStats{StageSnapshot: s.counters.reader.Snapshot("reader", rdepth, rcap), Loops: s.loopCount(StageReader)}
	st.Sizes = s.StageSizes()
	st.Processor = StageStats{StageSnapshot: s.counters.processor.Snapshot("processor", s.requests.Len(), s.requests.Cap()), Loops: st.Sizes[1].Size}
	var returned uint64
	st.Inline, st.Direct, returned = s.fusedCounts()
	io := s.loopSums()
	st.Batched, st.SendBatches, st.BatchedReads, st.ReadBatches = io.sent, io.sendBatches, io.reads, io.readBatches
	st.Reader.Enqueued += returned // handed back by the loop to itself, never queued
	st.Reader.Dequeued += returned
	st.MemoryReturns = s.memReturns.Load()
	st.Processor.Enqueued += st.Inline
	st.Processor.Dequeued += st.Inline
	st.Control = s.controlStats()
	st.ProcessorGoroutines = s.pool.Goroutines()
	st.LoopNudges = s.nudge.Nudged()
	st.LoopAwaits = s.nudge.Waits()
	st.Writer = StageStats{StageSnapshot: s.counters.writer.Snapshot("writer", wdepth, wcap), Loops: s.loopCount(StageWriter)}
	st.Writer.Enqueued += st.Direct // ended by their reader loop, never queued
	st.Writer.Dequeued += st.Direct
	st.Slow = SlowClientStats{
		Parked:      s.pool.Parked(),
		MaxParked:   max(s.cfg.MaxParked, 0),
		ParkRefused: s.pool.ParkRefused(),
		SlowHeaders: io.slowHeaders,
		SlowBodies:  io.slowBodies,
		SlowReaders: io.tooSlow,
		TimedOut:    io.timedOut,
		Resets:      io.resets,
		HangUps:     io.hangUps,
	}
	st.Slow.PrereadBody = orDefault(s.cfg.PrereadBody, reader.DefaultPrereadBody)
	st.Slow.MinBodyRate, st.Slow.MinBodyRateGrace = rateInForce(s.cfg.MinBodyRate, s.cfg.MinBodyRateGrace,
		reader.DefaultMinBodyRate, reader.DefaultMinBodyRateGrace)
	st.Slow.MinResponseRate, st.Slow.MinResponseRateGrace = rateInForce(s.cfg.MinResponseRate, s.cfg.MinResponseRateGrace,
		writer.DefaultMinRate, writer.DefaultMinRateGrace)
	s.readers.each(func(r *reader.Loop) {
		cs := r.Census()
		st.Conns.Idle += cs.Idle
		st.Conns.Reading += cs.Reading
		st.Conns.Queued += cs.Queued
		st.Conns.Processing += cs.Running
		st.Conns.Parked += cs.Parked
		st.Conns.Writing += cs.Writing
		st.Conns.Lingering += cs.Lingering
	})
	return st
}

// ConnStates counts connections by what they wait for, as of each reader
// loop's last census (at most a second old). A connection whose request
// is out of its reader's care is counted where the request stands.
type ConnStates struct {
	Idle       int // keep-alive, waiting for the next request
	Reading    int // a request is arriving (header, or a small body read before dispatch)
	Queued     int // a request waits for a processor place
	Processing int // its handler runs with a processor place
	Parked     int // its handler waits on the client (body bytes, or the client reading) without a place
	Writing    int // its handler has returned; the writer is still sending the response
	Lingering  int // response sent, waiting for the client to close
}

// promBounds are the service-time histogram's export buckets, in seconds:
// 1-2.5-5 steps from 1 µs to 10 s, fixed so dashboards get stable series.
var promBounds = func() []float64 {
	var b []float64
	for d := 1e-6; d < 20; d *= 10 {
		b = append(b, d, 2.5*d, 5*d)
	}
	return b[:len(b)-2] // ends at 10 s
}()

// ServiceHistogram returns a stage's service-time histogram folded into
// fixed cumulative buckets (upper bound in seconds → observations at or
// below it), with the count and the sum in seconds, as Prometheus wants.
func (s *Server) ServiceHistogram(stage Stage) (count uint64, sum float64, buckets map[float64]uint64) {
	var c *stages.StageCounters
	switch stage {
	case StageReader:
		c = &s.counters.reader
	case StageProcessor:
		c = &s.counters.processor
	case StageWriter:
		c = &s.counters.writer
	default:
		return 0, 0, nil
	}
	h := c.ServiceSnapshot()
	buckets = make(map[float64]uint64, len(promBounds))
	for _, b := range h.Buckets() {
		up := b.Upper.Seconds()
		for _, bound := range promBounds {
			if up <= bound {
				buckets[bound] += b.Count
			}
		}
	}
	for _, bound := range promBounds {
		buckets[bound] += 0 // every bound present, even when empty
	}
	return h.Count, h.Sum.Seconds(), buckets
}

// orDefault is how the reader reads a size setting: 0 or less means the
// default.
func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// rateInForce is how the reader and the writer read a minimum-rate pair:
// a rate of 0 means the default, a negative one switches the check off
// (reported as 0 with no grace), and a grace of 0 means the default.
func rateInForce(rate int64, grace time.Duration, defRate int64, defGrace time.Duration) (int64, time.Duration) {
	switch {
	case rate < 0:
		return 0, 0
	case rate == 0:
		rate = defRate
	}
	if grace <= 0 {
		grace = defGrace
	}
	return rate, grace
}
