package runtime

import (
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/stages"
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
	Time        time.Time
	Accepted    uint64 // connections accepted since start
	Open        int    // connections open now
	Busy        int    // processors running a handler now
	Listener    ListenerStats
	Reader      StageStats
	Processor   StageStats
	Writer      StageStats
	ReaderLoops []LoopStats // per reader loop: connections held and queue depth
	WriterLoops []LoopStats
}

// ListenerStats is the first stage.
type ListenerStats struct {
	Accepted uint64
	Paused   uint64 // times accepting stopped at MaxConns
	Errors   uint64
}

// LoopStats describes one event loop.
type LoopStats struct {
	Conns      int
	QueueDepth int
}

// Stages returns the three queued stages in pipeline order.
func (st Stats) Stages() []StageStats { return []StageStats{st.Reader, st.Processor, st.Writer} }

// Stats returns a snapshot of every stage. Throughput is measured from the
// previous call, so a monitor calling it periodically gets rates per period.
func (s *Server) Stats() Stats {
	now := time.Now()
	st := Stats{Time: now, Accepted: s.counters.accepted.Load(), Open: s.openConns(), Busy: s.pool.Busy()}
	st.Listener = ListenerStats{
		Accepted: s.ln.Accepted.Load(),
		Paused:   s.ln.Paused.Load(),
		Errors:   s.ln.Errors.Load(),
	}
	var rdepth, rcap, wdepth, wcap int
	for _, r := range s.readers {
		rdepth += r.QueueDepth()
		rcap += r.QueueCap()
		st.ReaderLoops = append(st.ReaderLoops, LoopStats{Conns: r.Open(), QueueDepth: r.QueueDepth()})
	}
	for _, w := range s.writers {
		wdepth += w.QueueDepth()
		wcap += w.QueueCap()
		st.WriterLoops = append(st.WriterLoops, LoopStats{QueueDepth: w.QueueDepth()})
	}
	st.Reader = StageStats{StageSnapshot: s.counters.reader.Snapshot("reader", rdepth, rcap), Loops: len(s.readers)}
	st.Processor = StageStats{StageSnapshot: s.counters.processor.Snapshot("processor", s.requests.Len(), s.requests.Cap()), Loops: s.cfg.Processors}
	st.Writer = StageStats{StageSnapshot: s.counters.writer.Snapshot("writer", wdepth, wcap), Loops: len(s.writers)}

	s.statsMu.Lock()
	prev := s.last
	s.last = st
	s.statsMu.Unlock()
	if !prev.Time.IsZero() {
		dt := now.Sub(prev.Time)
		st.Reader.Throughput = stages.Rate(prev.Reader.StageSnapshot, st.Reader.StageSnapshot, dt)
		st.Processor.Throughput = stages.Rate(prev.Processor.StageSnapshot, st.Processor.StageSnapshot, dt)
		st.Writer.Throughput = stages.Rate(prev.Writer.StageSnapshot, st.Writer.StageSnapshot, dt)
	}
	return st
}
