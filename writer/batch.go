package writer

import (
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// Batching a reader loop's direct writes.
//
// A reader loop that serves a turn's requests inline writes each response
// as its handler returns: one write(2) per response. With a send ring
// (EnableBatch), a small complete response is queued instead (WriteBatched)
// and the loop sends everything it queued in one io_uring_enter (Flush)
// before it polls again, so a turn that answers k connections makes one
// system call instead of k. What the socket does not take whole is left
// for a writer loop exactly as Write leaves it, and an error ends the
// response as Write ends it: batching changes when the bytes go, not what
// happens to them.
//
// Only what Write would finish in one writev is batched: heap bytes and
// EOS, within the write budget, in up to batchIovMax pieces. Anything
// with a file, a Hold or a flush point is written at once, and so is a
// response of a connection that has one queued already (two sends on one
// socket in one submission could interleave if the first were cut short):
// the batch is flushed first, so the connection's bytes keep their order.
//
// A batch of one is written with writev instead: one sendmsg in a ring
// costs more than the call it replaces (the submission, the completion
// and the ring's bookkeeping around the same send), and a loop that meets
// its requests one at a time, as every lightly loaded server does, makes
// nothing but batches of one. Measured with the server pinned to one CPU
// and wrk -t1 -c1 on the other, keep-alive /hello, ten alternating 2 s
// rounds: 24.7 against 25.4 µs of server CPU a request, every round
// below. The reads hold back the same way (reader.gatherMin). So the
// sends are put on the ring at Flush, once the batch is known to hold two
// or more.

// batchIovMax bounds the pieces of a batched response: a /hello is one
// (head and body in one block), a response written in a few Writes is a
// few.
const batchIovMax = 4

// BatchEntries is the send ring's size a reader loop uses: a turn's
// events are at most 128, but a loop at that rate gains nothing more from
// a longer batch than from two, and WriteBatched looks through the batch
// for the connection of each response it queues.
const BatchEntries = 64

// batched is a response queued and not yet sent: its record (buckets
// taken, kicks held), the writer loop whose settings apply, and the
// iovecs the kernel reads during Flush (the first niov).
type batched struct {
	rec  record
	loop *Loop
	iov  [batchIovMax]unix.Iovec
	niov int
}

// BatchHooks is what Flush tells the runtime, which owns the connection
// hand-offs. Serving names the connection whose response is ending, and
// returns the one named before, which Flush names again after, so that
// ending it hands the connection back to the loop as the end of a
// response written inline does (a Flush may run inside another's
// serving). Left gets a response the socket did not take whole, to hand
// to its connection's writer loop (bind it, then ResumeKicks).
type BatchHooks struct {
	Serving func(c *stages.Conn) (prev *stages.Conn)
	Left    func(r *stages.Response)
}

// EnableBatch gives d a send ring, which d then owns (Close releases it).
func (d *Direct) EnableBatch(ring *poll.Ring, h BatchHooks) {
	d.ring, d.hooks = ring, h
	d.batch = make([]batched, 0, ring.Cap())
}

// Close releases the send ring, if any. Nothing may be queued.
func (d *Direct) Close() error {
	if d.ring == nil {
		return nil
	}
	err := d.ring.Close()
	d.ring, d.batch = nil, nil
	return err
}

// BatchCounts is how many responses Flush sent whole, and in how many
// submissions. Any goroutine.
func (d *Direct) BatchCounts() (sent, batches uint64) {
	return d.sentBatched.Load(), d.batches.Load()
}

// WriteBatched is Write, but a response Write would finish in one writev
// it queues for Flush instead (rest false): its kicks stay held and
// nothing else may touch it until Flush ends it or hands it on. The loop
// must Flush before it polls again.
func (d *Direct) WriteBatched(l *Loop, r *stages.Response) (rest bool) {
	if d.ring == nil {
		return d.Write(l, r)
	}
	if d.holds(r.Conn) || len(d.batch) == cap(d.batch) {
		d.Flush() // a queued response's bytes before this one's
	}
	d.batch = d.batch[:len(d.batch)+1]
	e := &d.batch[len(d.batch)-1]
	rec := &e.rec
	bs, eos := r.TakeOutHeld(rec.buckets[:0])
	rec.resp, rec.buckets, rec.eos, rec.off = r, bs, eos, 0
	vs, ok := batchable(rec, e.iov[:0], l.writeBudget)
	if !ok {
		// Write from what was taken, as Write would have. The records
		// swap bucket slices, so neither allocates again.
		d.batch = d.batch[:len(d.batch)-1]
		d.rec, *rec = *rec, record{buckets: d.rec.buckets[:0]}
		return d.write(l)
	}
	e.loop, e.niov = l, len(vs)
	return false
}

// holds reports whether a response of c is queued.
func (d *Direct) holds(c *stages.Conn) bool {
	for i := range d.batch {
		if d.batch[i].rec.resp.Conn == c {
			return true
		}
	}
	return false
}

// batchable reports whether rec is heap bytes and EOS only, no more than
// budget bytes in at most cap(vs) pieces, and returns the pieces.
func batchable(rec *record, vs []unix.Iovec, budget int64) ([]unix.Iovec, bool) {
	if !rec.eos {
		return nil, false
	}
	var n int64
	for i := range rec.buckets {
		switch b := &rec.buckets[i]; b.Kind {
		case stages.BucketHeap:
			if len(b.Data) == 0 {
				continue
			}
			if len(vs) == cap(vs) {
				return nil, false
			}
			v := unix.Iovec{Base: &b.Data[0]}
			v.SetLen(len(b.Data))
			vs = append(vs, v)
			n += int64(len(b.Data))
		case stages.BucketEOS:
			return vs, len(vs) > 0 && n <= budget
		default:
			return nil, false
		}
	}
	return nil, false
}

// Flush sends every queued response in one system call. A response the
// socket took whole ends as Write ends it; one it took part of, or none
// of (EAGAIN), is left for a writer loop as Write leaves it (BatchHooks);
// one whose send failed ends with the error. Loop goroutine only.
func (d *Direct) Flush() {
	if len(d.batch) == 0 {
		return
	}
	ringed, call := sendWay(len(d.batch))
	report := func(tag uint64, n int, err error) {
		e := &d.batch[tag]
		r := e.rec.resp
		if n > 0 {
			e.rec.advance(n)
			r.Sent(int64(n), e.loop.cfg.LowWater)
		}
		if d.settle(e, call, err) && ringed {
			d.sentBatched.Add(1)
		}
	}
	if ringed {
		d.batches.Add(1)
	}
	err := sendQueued(d.ring, len(d.batch), func(i int) (int, []unix.Iovec) {
		e := &d.batch[i]
		return e.rec.resp.Conn.FD, e.iov[:e.niov]
	}, report)
	d.batch = d.batch[:0]
	if err != nil {
		// The ring failed as a whole (not one send): whether the kernel
		// took the sends not reported is unknown. End them with the
		// error, which closes their connections, rather than send bytes
		// twice, and write directly from now on.
		for i := range d.batch[:cap(d.batch)] {
			if e := &d.batch[:cap(d.batch)][i]; e.rec.resp != nil {
				d.settle(e, call, err)
			}
		}
		d.Close()
	}
}

// sendWay is how sendQueued sends n responses: on the ring (a batch, in
// BatchCounts) or not, and the system call an error then names.
func sendWay(n int) (ringed bool, call string) {
	if n > 1 {
		return true, "sendmsg"
	}
	return false, "writev"
}

// sendQueued sends n queued responses, the i-th's bytes (at's iovecs)
// on at's socket, and reports each as Ring.Submit does: one by writev
// (the batch of one, above), two or more with one io_uring_enter on ring,
// whose failure as a whole it returns.
func sendQueued(ring *poll.Ring, n int, at func(i int) (fd int, iov []unix.Iovec), report func(tag uint64, n int, err error)) error {
	if n == 1 {
		fd, iov := at(0)
		sent, err := poll.Writev(fd, iov)
		report(0, sent, err)
		return nil
	}
	for i := range n {
		fd, iov := at(i)
		if !ring.Send(fd, iov, uint64(i)) {
			panic("quartet: send ring full with room in the batch") // Cap bounds both
		}
	}
	return ring.Submit(report)
}

// settle ends e's response, or leaves its rest for a writer loop, and
// forgets it; call names the system call that sent it. It reports
// whether the response went whole.
func (d *Direct) settle(e *batched, call string, err error) (whole bool) {
	r, l := e.rec.resp, e.loop
	// The records swap bucket slices (d.rec's is idle), so neither
	// allocates again; e keeps no pointer into the response.
	d.rec, e.rec = e.rec, record{buckets: d.rec.buckets[:0]}
	e.loop, e.iov, e.niov = nil, [batchIovMax]unix.Iovec{}, 0
	switch {
	case err == nil && len(d.rec.buckets) == 1: // only EOS left
		d.rec.pop()
		prev := d.hooks.Serving(r.Conn)
		d.end(l, nil)
		d.hooks.Serving(prev)
		return true
	case err == nil || err == unix.EAGAIN:
		d.leave()
		d.hooks.Left(r)
	default:
		prev := d.hooks.Serving(r.Conn)
		d.end(l, syscallError(call, err))
		d.hooks.Serving(prev)
	}
	return false
}

// The writer loop batches too: a response it starts whole (its producer
// done, heap bytes and EOS only, within the turn's budget) is queued, and
// the loop sends the turn's queued responses with one io_uring_enter
// (sendBatch) before it acts on more and before it polls again. What the
// socket does not take whole waits for EPOLLOUT as a write's rest does.
// A record in the batch is flagged (record.queued), so nothing else
// writes it meanwhile.

// BatchCounts is how many responses the loop sent whole in batches, and
// in how many submissions. Any goroutine.
func (l *Loop) BatchCounts() (sent, batches uint64) {
	return l.sentBatched.Load(), l.batches.Load()
}

// queuedSend is a record queued in the writer loop's batch: its slot and
// generation (records may move as the table grows; the slot stays), and
// the iovecs the kernel reads (the first niov).
type queuedSend struct {
	slot int32
	gen  uint32
	iov  [batchIovMax]unix.Iovec
	niov int
}

// queueSend queues the record at slot, untouched so far, if it is a whole
// response in few enough heap pieces and the batch has room; it reports
// whether it did.
func (l *Loop) queueSend(slot int32) bool {
	rec := &l.records[slot]
	if l.ring == nil || len(l.sends) == cap(l.sends) || rec.off != 0 || rec.corked {
		return false
	}
	l.sends = l.sends[:len(l.sends)+1]
	q := &l.sends[len(l.sends)-1]
	vs, ok := batchable(rec, q.iov[:0], l.writeBudget)
	if !ok {
		l.sends = l.sends[:len(l.sends)-1]
		return false
	}
	q.slot, q.gen, q.niov = slot, rec.gen, len(vs)
	rec.queued = true
	return true
}

// sendBatch sends the queued records in one system call and settles each:
// sent whole, it finishes; sent in part or not at all (EAGAIN), it waits
// for EPOLLOUT; failed, it finishes with the error.
func (l *Loop) sendBatch() {
	if len(l.sends) == 0 {
		return
	}
	ringed, call := sendWay(len(l.sends))
	report := func(tag uint64, n int, err error) {
		q := &l.sends[tag]
		slot := q.slot
		rec := &l.records[slot]
		if rec.gen != q.gen || !rec.queued {
			return // not reached: a queued record is settled only here
		}
		rec.queued = false
		q.iov, q.niov = [batchIovMax]unix.Iovec{}, 0
		r := rec.resp
		if n > 0 {
			rec.advance(n)
			rec.progress = l.core.Now()
			r.Sent(int64(n), l.cfg.LowWater)
		}
		switch {
		case err == nil && len(rec.buckets) == 1: // only EOS left
			rec.pop()
			l.finish(slot, nil)
			if ringed {
				l.sentBatched.Add(1)
			}
		case err == nil || err == unix.EAGAIN:
			l.awaitWritable(slot)
		default:
			l.finish(slot, syscallError(call, err))
		}
	}
	if ringed {
		l.batches.Add(1)
	}
	err := sendQueued(l.ring, len(l.sends), func(i int) (int, []unix.Iovec) {
		q := &l.sends[i]
		return l.records[q.slot].resp.Conn.FD, q.iov[:q.niov]
	}, report)
	sends := l.sends[:cap(l.sends)]
	l.sends = l.sends[:0]
	if err != nil {
		// The ring failed as a whole: end what it did not report, as for
		// Direct's, and write directly from now on.
		for i := range sends {
			if q := &sends[i]; int(q.slot) < len(l.records) && l.records[q.slot].gen == q.gen && l.records[q.slot].queued {
				l.records[q.slot].queued = false
				l.finish(q.slot, err)
			}
		}
		l.ring.Close()
		l.ring, l.sends = nil, nil
	}
}
