package runtime

import (
	"sync/atomic"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// fusion is what a reader loop needs to serve a request on itself (stage
// fusion: dispatch, servesInline): the handler's caller and the writer of
// what it answered. Only the loop holding the id uses it; a loop added
// later under the same id (loops.go) takes it over, so its counts, which
// Stats sums, only grow.
type fusion struct {
	inline *processor.InlineServer
	direct writer.Direct
	// serving is the connection whose request the loop is serving and
	// writing (serveInline), while it does. Its response, if ended there
	// (or dropped: the client had gone), is recycled on the loop, within
	// that window: unbound from any writer loop, as it was never bound,
	// and handed back with the loop's ReturnOwn instead of through its
	// queue. Written by the loop; read by whoever recycles a response of
	// the loop's connections, which for any other connection is some
	// other goroutine, and for this one after the window.
	serving atomic.Pointer[stages.Conn]
	// returned counts the connections handed back with ReturnOwn: Stats
	// adds them to the reader stage's queue counts, as if queued.
	returned atomic.Uint64
}

// fusionFor makes reader loop id's fusion if it has none yet. Called
// before the loop starts (New, or addReader under loopsMu), so the loop
// sees it; Stats reads it through the atomic pointer.
func (s *Server) fusionFor(id int) {
	if !s.fusing || s.fused[id].Load() != nil {
		return
	}
	s.fused[id].Store(&fusion{inline: s.pool.NewInline(id)})
}

// serveInline serves r on its reader loop, whose fusion f is, and writes
// its response from there. The connection is bound to a writer loop
// (bindWriter) only if the socket does not take the whole response: one
// ended here never concerns a writer loop, so it pays for no binding, an
// atomic add and subtract on a line every loop writes. Apache's event MPM
// runs a request on the thread that read it, and writes its response
// there, leaving only what the socket does not take to write completion;
// here only when nothing in it will wait, so the loop's other connections
// wait for no more than its handler's compute and one writev.
func (s *Server) serveInline(f *fusion, r *stages.Request) {
	c := r.Conn
	serve := f.inline.Serve
	if !s.runsHandler[c.Protocol] {
		serve = f.inline.ServeFramed
	}
	f.serving.Store(c)
	resp := serve(r)
	rest := false
	if resp != nil {
		// Queued, if small and whole, for the loop's next Flush: one
		// system call for the turn's replies (batchIO).
		rest = f.direct.WriteBatched(s.directLoop(c), resp)
	}
	f.serving.Store(nil)
	if rest {
		s.bindWriter(c, false) // inline, r follows none of its connection's
		resp.ResumeKicks()
	}
}

// batchIO gives reader loop r, for its run, a ring to read a turn's
// connections with (reader/gather.go), unless Config.NoBatchedReads, and
// its direct writer one to send the turn's inline replies with
// (writer/batch.go), unless Config.NoBatchedSends. Where the kernel
// refuses io_uring, each read and each reply is its own system call, as
// before, and the server says so once. The returned func releases the
// send ring (the loop closes its own); call it when the loop's Run has
// returned (its turns flush everything they queue before that).
func (s *Server) batchIO(r *reader.Loop) (release func()) {
	if !s.cfg.NoBatchedReads {
		if ring, err := s.newRing(reader.RingEntries); err == nil {
			r.BatchReads(ring)
		}
	}
	f := s.fused[r.ID()].Load()
	if f == nil || s.cfg.NoBatchedSends {
		return func() {}
	}
	ring, err := s.newRing(writer.BatchEntries)
	if err != nil {
		return func() {}
	}
	f.direct.EnableBatch(ring, writer.BatchHooks{
		Serving: f.serving.Swap,
		Left: func(r *stages.Response) {
			s.bindWriter(r.Conn, false) // served inline: it follows none of its connection's
			r.ResumeKicks()
		},
	})
	return func() { f.direct.Close() }
}

// newRing opens an io_uring for batched reads or sends, and logs once
// if the kernel refuses it.
func (s *Server) newRing(entries int) (*poll.Ring, error) {
	ring, err := poll.NewRing(entries)
	if err != nil {
		s.noRing.Do(func() {
			s.cfg.Logger.Info("quartet: io_uring refused; each read and each response is its own system call", "err", err)
		})
	}
	return ring, err
}

// directLoop is the writer loop whose settings, counters and logger a
// response written by a reader loop uses: the one its connection was
// last bound to, unless that has gone. Only read: nothing is bound.
func (s *Server) directLoop(c *stages.Conn) *writer.Loop {
	if w := s.writers.at(c.Writer); w != nil {
		return w.Loop
	}
	ws := s.writers.live()
	return ws[c.ID%uint64(len(ws))].Loop
}

// servedInline returns the fusion of c's reader loop if c's response,
// being recycled, is one the loop is serving inline right now
// (fusion.serving): the caller is that loop's goroutine, and the response
// was never bound to a writer. Otherwise nil.
func (s *Server) servedInline(c *stages.Conn) *fusion {
	if !s.fusing {
		return nil
	}
	if f := s.fused[c.Reader].Load(); f != nil && f.serving.Load() == c {
		return f
	}
	return nil
}

// fusedCounts sums the requests served inline, the responses written
// directly and the connections handed back without the queue by every
// reader loop that has had an id.
func (s *Server) fusedCounts() (inline, direct, returned uint64) {
	for i := range s.fused {
		if f := s.fused[i].Load(); f != nil {
			inline += f.inline.Served()
			direct += f.direct.Ended()
			returned += f.returned.Load()
		}
	}
	return inline, direct, returned
}

// loopCounts are what I/O loops count for Stats as sums that never go
// back (they are Prometheus counters), so a loop that leaves its table
// hands them on (retireLoop): what they did in batches (responses sent
// whole and the submissions that sent them, reads and the submissions
// that made them) and what they did about slow clients.
type loopCounts struct {
	sent, sendBatches, reads, readBatches    uint64
	slowHeaders, slowBodies, resets, hangUps uint64 // reader loops'
	tooSlow, timedOut                        uint64 // writer loops'
}

func (c *loopCounts) add(o loopCounts) {
	c.sent, c.sendBatches = c.sent+o.sent, c.sendBatches+o.sendBatches
	c.reads, c.readBatches = c.reads+o.reads, c.readBatches+o.readBatches
	c.slowHeaders, c.slowBodies = c.slowHeaders+o.slowHeaders, c.slowBodies+o.slowBodies
	c.resets, c.hangUps = c.resets+o.resets, c.hangUps+o.hangUps
	c.tooSlow, c.timedOut = c.tooSlow+o.tooSlow, c.timedOut+o.timedOut
}

// readerCounts is what reader loop r has counted.
func readerCounts(r *reader.Loop) loopCounts {
	n, b := r.ReadCounts()
	return loopCounts{reads: n, readBatches: b, slowHeaders: r.SlowHeaders(), slowBodies: r.SlowBodies(),
		resets: r.Resets(), hangUps: r.HangUps()}
}

// writerCounts is what writer loop w has counted.
func writerCounts(w *wloop) loopCounts {
	n, b := w.BatchCounts()
	return loopCounts{sent: n, sendBatches: b, tooSlow: w.TooSlow(), timedOut: w.TimedOut()}
}

// loopSums sums what every reader loop's direct writer, every writer loop
// and every reader loop counted, with what the loops that have left the
// tables did (retireLoop).
func (s *Server) loopSums() loopCounts {
	s.retireMu.Lock()
	defer s.retireMu.Unlock()
	c := s.retired
	for i := range s.fused {
		if f := s.fused[i].Load(); f != nil {
			n, b := f.direct.BatchCounts()
			c.add(loopCounts{sent: n, sendBatches: b})
		}
	}
	s.writers.each(func(w *wloop) { c.add(writerCounts(w)) })
	s.readers.each(func(r *reader.Loop) { c.add(readerCounts(r)) })
	return c
}

// retireLoop takes a loop that has returned out of its table (remove
// reports whether it did) and keeps its counts, in one step as loopSums
// sees it, so that they are counted once.
func (s *Server) retireLoop(did loopCounts, remove func() bool) {
	s.retireMu.Lock()
	defer s.retireMu.Unlock()
	if remove() {
		s.retired.add(did)
	}
}
