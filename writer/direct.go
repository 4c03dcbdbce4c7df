package writer

import (
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// Direct writes complete responses from the goroutine that produced them,
// a reader loop that served a request inline (processor.InlineServer), so
// that a response the socket takes at once never crosses to a writer loop
// and back. What the socket does not take (EAGAIN, a partial write, more
// than a turn's budget) and what must wait (a Hold) goes to the
// connection's writer loop with the offset reached, which finishes it:
// Apache's event MPM, whose worker writes and leaves only write completion
// to the listener thread.
//
// A response ended here ends as the writer loop would end it, with the
// same code (conclude): its connection's fate decided, counted in the
// loop's service time, logged, and let go. One Direct per goroutine; it
// allocates nothing per response.
type Direct struct {
	rec      record
	iov      [iovMax]unix.Iovec
	resident residentMemo
	// With a send ring (EnableBatch, batch.go): the responses queued for
	// the next Flush, and the runtime's hooks for their hand-offs.
	ring  *poll.Ring
	batch []batched
	hooks BatchHooks
	// ended counts responses ended here. Only its goroutine writes it, so
	// it shares no line with other cores; Stats adds it to the writer's
	// counts.
	ended atomic.Uint64
	// sentBatched and batches count what Flush sent whole (of ended) and
	// its submissions (BatchCounts).
	sentBatched, batches atomic.Uint64
}

// Ended is the number of responses Write ended without a writer loop. Any
// goroutine.
func (d *Direct) Ended() uint64 { return d.ended.Load() }

// Write writes r, complete (its producer has appended EOS and let go) and
// with its kicks held (stages.Response.HoldKicks), to its socket. l is a
// writer loop whose settings, counters and logger apply. Write reports
// whether it left anything for a writer loop: then r holds the rest, its
// kicks still held, and the caller hands it to the writer loop of r's
// connection with r.ResumeKicks, which finishes it. Otherwise r has ended
// and been let go. Either way, the caller must not touch r after (but
// for that ResumeKicks).
//
// The caller's hand-over, rather than Write's, lets the runtime bind r's
// connection to a writer loop only when one is needed: a response the
// socket takes whole never concerns one. Kicks stay held until then (a
// Hold released meanwhile kicks nobody), so none reaches a writer loop
// before the binding.
func (d *Direct) Write(l *Loop, r *stages.Response) (rest bool) {
	if d.holds(r.Conn) {
		d.Flush() // the connection's queued response goes first
	}
	rec := &d.rec
	bs, eos := r.TakeOutHeld(rec.buckets[:0])
	rec.resp, rec.buckets, rec.eos, rec.off = r, bs, eos, 0
	return d.write(l)
}

// write is Write once the buckets are taken into d.rec.
func (d *Direct) write(l *Loop) (rest bool) {
	rec := &d.rec
	r := rec.resp
	if !rec.eos || holds(rec.buckets) {
		d.leave() // a Hold waits for its release on the writer loop
		return true
	}
	fd := r.Conn.FD
	budget := l.writeBudget
	for len(rec.buckets) > 0 {
		var n int64
		var err error
		switch rec.buckets[0].Kind {
		case stages.BucketHeap:
			n, err = writeHeap(fd, rec, &d.iov)
		case stages.BucketFile:
			n, err = sendFile(fd, rec, &d.resident)
		case stages.BucketFlush:
			rec.pop()
			continue
		case stages.BucketEOS:
			rec.pop()
			d.end(l, nil)
			return false
		}
		if n > 0 {
			budget -= n
			r.Sent(n, l.cfg.LowWater)
		}
		// Out of budget with only the end left (a body of about the
		// budget's size, written whole), the response ends here: handing
		// it over would wake the writer loop only to conclude it.
		if err == unix.EAGAIN || (err == nil && budget <= 0 && dataAhead(rec.buckets)) {
			d.leave()
			return true
		}
		if err != nil {
			d.end(l, err)
			return false
		}
	}
	d.leave() // not reached: eos means the last bucket is EOS
	return true
}

// dataAhead reports whether bs has bytes still to write before its end:
// a heap or file bucket (the first may be partly written).
func dataAhead(bs []stages.Bucket) bool {
	for i := range bs {
		switch bs[i].Kind {
		case stages.BucketHeap, stages.BucketFile:
			return true
		case stages.BucketEOS:
			return false
		}
	}
	return false
}

// holds reports whether bs has a Hold, which only a writer loop can wait on.
func holds(bs []stages.Bucket) bool {
	for i := range bs {
		if bs[i].Kind == stages.BucketHold {
			return true
		}
	}
	return false
}

// end ends the response here, as the writer loop's finish does. No kick
// can be in a writer's queue for it: its kicks are still held (TakeOutHeld),
// so any later one coalesces into nothing.
func (d *Direct) end(l *Loop, err error) {
	r := d.rec.resp
	l.conclude(r, err, r.Started)
	d.reset()
	d.ended.Add(1)
	r.Finish() // r may be recycled, and its connection handed back, from here on
}

// leave puts the rest of the response back for a writer loop: the first
// bucket trimmed to what was not written, then everything after it.
func (d *Direct) leave() {
	rec := &d.rec
	r := rec.resp
	rec.uncork(r.Conn.FD)
	if len(rec.buckets) > 0 && rec.off > 0 {
		b := &rec.buckets[0]
		switch b.Kind {
		case stages.BucketHeap:
			b.Data = b.Data[rec.off:]
		case stages.BucketFile:
			b.Off += rec.off
			b.Len -= rec.off
		}
	}
	r.Requeue(rec.buckets, rec.eos)
	d.reset()
}

// reset forgets the response, keeping the bucket slice's capacity.
func (d *Direct) reset() {
	clear(d.rec.buckets)
	d.rec.buckets = d.rec.buckets[:0]
	d.rec.resp, d.rec.off, d.rec.eos, d.rec.corked = nil, 0, false, false
}
