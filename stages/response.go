package stages

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// BucketKind says what a Bucket carries, after APR's bucket types: data
// buckets (heap bytes, file regions) are written; metadata buckets steer the
// writer and carry no bytes.
type BucketKind uint8

const (
	// BucketHeap carries Data, bytes in memory.
	BucketHeap BucketKind = iota
	// BucketFile carries File[Off:Off+Len], sent with sendfile(2) and never
	// read into memory.
	BucketFile
	// BucketFlush asks the writer to send what it has without waiting for
	// more (it always does; the bucket exists so filters can see it).
	BucketFlush
	// BucketHold stops the writer at this point of the response until Hold
	// is released (an RDMA completion, say); bytes before it are written,
	// bytes after it wait.
	BucketHold
	// BucketEOS ends the response. Nothing may follow it.
	BucketEOS
)

var bucketKindNames = [...]string{"heap", "file", "flush", "hold", "eos"}

func (k BucketKind) String() string {
	if int(k) < len(bucketKindNames) {
		return bucketKindNames[k]
	}
	return "bucket?"
}

// Bucket is one piece of a response on its way to the socket.
type Bucket struct {
	Kind BucketKind
	Data []byte   // BucketHeap: valid until the writer has written it
	File *os.File // BucketFile: kept open by whoever queued it until the response is recycled
	Off  int64
	Len  int64
	Hold *Hold // BucketHold
}

// Size is the number of bytes the bucket puts on the wire.
func (b *Bucket) Size() int64 {
	switch b.Kind {
	case BucketHeap:
		return int64(len(b.Data))
	case BucketFile:
		return b.Len
	}
	return 0
}

// Hold is a point in a response that the writer may not pass until Release
// (or Divert) is called. It is how a module defers the rest of a response
// (typically the HTTP header that reports an RDMA transfer) until an
// asynchronous completion, and still lets the writer finish the response in
// its own loop.
type Hold struct {
	state atomic.Int32
	alt   []Bucket // Divert's replacement; written before state becomes holdDiverted
	resp  *Response
}

// Hold states. holdClaimed is the short moment in which the Divert that won
// stores its alternative: the writer treats it as pending, and the Divert's
// kick, after holdDiverted is stored, brings the writer back.
const (
	holdPending int32 = iota
	holdClaimed
	holdReleased
	holdDiverted
)

// NewHold returns a hold for r; queue it with r.Append(Bucket{Kind: BucketHold, Hold: h}).
func NewHold(r *Response) *Hold { return &Hold{resp: r} }

// Release lets the writer continue past the hold. It may be called from any
// goroutine; only the first Release or Divert counts, later calls do nothing.
func (h *Hold) Release() {
	if h.state.CompareAndSwap(holdPending, holdReleased) {
		h.kick()
	}
}

// Divert releases the hold onto another continuation: the writer drops
// every bucket queued after the hold up to (not including) EOS, those it
// has taken already and those the producer appends later, and writes alt
// in their place. The producer's EOS still ends the response, with the
// status and keep-alive it published. It exists for the case where what
// was queued after the hold became wrong while the hold kept it back: an
// RDMA transfer failed after the header that announces it was built, and
// the body must go over TCP instead (processor's FilterChain.Alternative
// renders such a replacement, header block included).
//
// alt holds data buckets only (heap, file, flush); their bytes and files
// must stay valid until the response is recycled. Any goroutine may call
// Divert; only the first Release or Divert counts, and Divert reports
// whether it was that one.
func (h *Hold) Divert(alt []Bucket) bool {
	for i := range alt {
		if k := alt[i].Kind; k == BucketHold || k == BucketEOS {
			panic("quartet: Hold.Divert: the alternative may hold only heap, file and flush buckets, not " + k.String())
		}
	}
	if !h.state.CompareAndSwap(holdPending, holdClaimed) {
		return false
	}
	h.alt = alt
	h.state.Store(holdDiverted)
	h.kick()
	return true
}

func (h *Hold) kick() {
	if h.resp != nil && h.resp.kick != nil {
		h.resp.kick(h.resp)
	}
}

// Released reports whether the writer may pass the hold: Release or
// Divert has been called.
func (h *Hold) Released() bool { return h.state.Load() >= holdReleased }

// Diverted returns the alternative of a diverted hold; ok is false unless
// Divert won.
func (h *Hold) Diverted() (alt []Bucket, ok bool) {
	if h.state.Load() != holdDiverted {
		return nil, false
	}
	return h.alt, true
}

// ErrAborted is returned by Response.Append and friends once the writer has
// given up on the connection (the peer reset it, or a write timed out): the
// handler should stop producing.
var ErrAborted = errors.New("quartet: response aborted: connection lost")

// Response carries one response from the processor that produces it to the
// writer that sends it. The producer appends buckets; each append of data
// kicks the writer, which takes everything appended so far. Memory stays
// bounded by a high-water mark: a producer that gets ahead of a slow client
// by more than it waits in WaitDrained (back-pressure from socket to handler).
//
// Lifetime: the response has two owners, its producer and its writer; it is
// recycled when both have let go (Done by the producer after EOS, Finish by
// the writer after the last byte or an abort).
type Response struct {
	Conn *Conn
	Req  *Request

	// Set by the producer before the EOS bucket; read by the writer after it.
	Status    int
	KeepAlive bool // hand the connection back to its reader after the last byte
	Started   time.Time
	// HeaderBytes is how many bytes of the response precede its body: the
	// final header block and any interim (1xx) responses. Like Status, it
	// is set before the header's bytes are appended, so a logger may read
	// it even for a response aborted before EOS.
	HeaderBytes int64
	// FramingBytes is how many bytes of the body's transfer coding (chunk
	// sizes and CRLFs) the response holds; set with the EOS bucket. The
	// body bytes that reached the client are BytesSent - HeaderBytes -
	// FramingBytes for a finished response.
	FramingBytes int64

	mu      sync.Mutex
	out     []Bucket // appended by the producer, taken by the writer
	eos     bool
	aborted atomic.Bool

	queued  atomic.Bool   // sitting in its writer's queue: kicks coalesce
	unsent  atomic.Int64  // bytes appended and not yet written
	taking  atomic.Uint64 // bumped when the client took bytes the writer could not see it take (Progressed)
	drained chan struct{}
	// waiting: the producer is in WaitDrained. The writer sends on drained
	// only then, so the common response, which nobody waits on, costs no
	// channel operation (a lock) on either side. The producer stores it
	// before loading unsent and the writer stores unsent before loading it:
	// Dekker's pair, as in LoopWaker, so a wake-up cannot be missed.
	waiting atomic.Bool
	timer   *time.Timer // WaitDrained's, producer only
	refs    atomic.Int32

	kick    func(*Response) // set by the writer: queue r and wake the loop
	recycle func(*Response) // set by the runtime: return r and its memory to pools

	// Chunks lists memory the producer lent to heap buckets; the recycle
	// function returns it to its pool once the writer is done with it.
	Chunks [][]byte
	// Cleanups run when the response is recycled, after its last byte is
	// written: APR's pool cleanups. A file sent with sendfile, say, is
	// released here rather than when its handler returns.
	Cleanups []Cleanup

	// Writer-owned: the logger reads them.
	BytesSent int64 // exactly what reached the socket, for the logger; less what was still queued when the writer gave up on the client (the reset drops it)
	WriteErr  error // why the writer stopped early, nil if it did not

	record WriterRecord // the writer loop's record for this response; see Record
	// fate tells the recycle function what to do with the connection.
	// The connection goes back to its reader only when both owners have
	// let go: a handler still running after an abort may be reading its
	// request, which lives in the reader's memory.
	fate Fate
}

// WriterRecord is where a response stands in its writer loop: the index of
// the loop's record for it, or one of the two states below. Only the
// response's writer loop reads or sets it (Record, SetRecord); Begin
// resets it to NoRecord.
type WriterRecord int32

const (
	// NoRecord: the writer has not started the response, or has ended it
	// and let go.
	NoRecord WriterRecord = -1
	// EndedKickQueued: the writer has ended the response, but a kick that
	// trailed its end is still in the loop's queue. The loop lets go of
	// the response when it pops that kick, so that the response is not
	// recycled (and begun again by its next producer) while the queue
	// still holds it.
	EndedKickQueued WriterRecord = -2
	// InLine: the response waits behind another of its connection's,
	// which its writer loop is writing (a Pipelined protocol's replies
	// go one at a time); the loop starts it when that one ends.
	InLine WriterRecord = -3
)

// Record is the writer loop's record for r. Writer goroutine only.
func (r *Response) Record() WriterRecord { return r.record }

// SetRecord sets the writer loop's record for r. Writer goroutine only.
func (r *Response) SetRecord(w WriterRecord) { r.record = w }

// SetFate records what becomes of the connection once r is recycled. The
// writer sets it when it ends the response; nobody touches it after the
// writer's Finish.
func (r *Response) SetFate(f Fate) { r.fate = f }

// Fate is what SetFate recorded: the recycle function reads it, after both
// owners have let go, to hand the connection back to its reader.
func (r *Response) Fate() Fate { return r.fate }

// Cleanup is something a response holds until it is recycled.
type Cleanup interface{ Cleanup() }

// RunCleanups runs and forgets r's cleanups, last registered first. The
// recycle function calls it.
func (r *Response) RunCleanups() {
	for i := len(r.Cleanups) - 1; i >= 0; i-- {
		r.Cleanups[i].Cleanup()
		r.Cleanups[i] = nil
	}
	r.Cleanups = r.Cleanups[:0]
}

// NewResponse returns an empty response. Pools call it; kick and recycle
// connect it to its writer and its pool.
func NewResponse(kick, recycle func(*Response)) *Response {
	return &Response{drained: make(chan struct{}, 1), kick: kick, recycle: recycle, record: NoRecord}
}

// Begin readies a recycled response for a new request.
func (r *Response) Begin(c *Conn, req *Request, now time.Time) {
	r.Conn, r.Req, r.Started = c, req, now
	r.Status, r.KeepAlive = 0, false
	r.HeaderBytes, r.FramingBytes = 0, 0
	r.eos = false
	r.out = r.out[:0]
	r.aborted.Store(false)
	r.queued.Store(false)
	r.unsent.Store(0)
	// A token left in drained by an earlier use is harmless: WaitDrained
	// re-checks unsent after every wake-up.
	r.refs.Store(2)
	r.BytesSent, r.WriteErr = 0, nil
	r.record = NoRecord
	r.fate = FateKeepAlive
}

// Append queues buckets and kicks the writer. Heap bucket data must stay
// untouched until written: the producer hands it over.
func (r *Response) Append(bs ...Bucket) error {
	if r.aborted.Load() {
		return ErrAborted
	}
	var n int64
	eos := false
	r.mu.Lock()
	for i := range bs {
		n += bs[i].Size()
		if bs[i].Kind == BucketEOS {
			eos = true
		}
	}
	r.out = append(r.out, bs...)
	if eos {
		r.eos = true
	}
	r.mu.Unlock()
	r.unsent.Add(n)
	if r.kick != nil {
		r.kick(r)
	}
	return nil
}

// Unsent is the number of bytes appended and not yet on the wire.
func (r *Response) Unsent() int64 { return r.unsent.Load() }

// WaitDrained blocks the producer until the writer has brought Unsent to
// at most low, or the response is aborted, or timeout passes without the
// client taking any byte (then it reports ErrAborted's sibling, a timeout
// error, so a stuck client cannot hold its handler forever). A client that
// takes bytes slowly keeps it waiting: progress is the writer writing, or
// reporting Progressed. If it has to wait, pk (which may be nil) is told
// before and after: the handler is waiting on its client.
func (r *Response) WaitDrained(low int64, timeout time.Duration, pk Parker) error {
	if r.aborted.Load() {
		return ErrAborted
	}
	if r.unsent.Load() <= low {
		return nil
	}
	if pk != nil {
		pk.Park()
		defer pk.Unpark()
	}
	r.waiting.Store(true) // before the loop's loads of unsent: see waiting
	defer r.waiting.Store(false)
	deadline := time.Now().Add(timeout)
	unsent, taking := r.unsent.Load(), r.taking.Load()
	for r.unsent.Load() > low {
		if r.aborted.Load() {
			return ErrAborted
		}
		d := time.Until(deadline)
		if d <= 0 {
			u, k := r.unsent.Load(), r.taking.Load()
			if u >= unsent && k == taking {
				return ErrWriteTimeout
			}
			unsent, taking = u, k
			deadline = time.Now().Add(timeout)
			continue
		}
		if r.timer == nil {
			r.timer = time.NewTimer(d) // once per pooled response, not per wait
		} else {
			r.timer.Reset(d)
		}
		select {
		case <-r.drained:
		case <-r.timer.C:
		}
		r.timer.Stop()
	}
	if r.aborted.Load() {
		return ErrAborted
	}
	return nil
}

// ErrWriteTimeout is returned by WaitDrained when the client did not take
// the response's bytes within the write timeout.
var ErrWriteTimeout = errors.New("quartet: write timeout: client is not reading")

// Aborted reports whether the writer gave up on this response.
func (r *Response) Aborted() bool { return r.aborted.Load() }

// Done is the producer letting go after it appended EOS (or gave up).
func (r *Response) Done() { r.release() }

// Drop lets go of a response for both owners at once, with fate f: the
// producer never appended anything to it, so no writer ever held it (the
// processor drops a request whose client had gone before it started). It
// may be recycled from here on.
func (r *Response) Drop(f Fate) {
	r.fate = f
	if r.refs.Add(-2) == 0 && r.recycle != nil {
		r.recycle(r)
	}
}

// The writer's side.

// TakeOut moves everything appended since the last call to dst and reports
// whether EOS has been appended. Writer goroutine only.
func (r *Response) TakeOut(dst []Bucket) ([]Bucket, bool) {
	r.queued.Store(false)
	return r.TakeOutHeld(dst)
}

// TakeOutHeld is TakeOut for a writer that holds r's kicks (HoldKicks)
// and keeps them held: a kick (a Hold's release, from any goroutine)
// coalesces into nothing until the writer ends r or hands it to its
// writer loop with ResumeKicks, so that no kick reaches a writer loop
// before r is bound to one. Writer goroutine only.
func (r *Response) TakeOutHeld(dst []Bucket) ([]Bucket, bool) {
	r.mu.Lock()
	dst = append(dst, r.out...)
	clear(r.out)
	r.out = r.out[:0]
	eos := r.eos
	r.mu.Unlock()
	return dst, eos
}

// HoldKicks stops Append (and a Hold's release) from kicking the writer
// until TakeOut or ResumeKicks: for a producer that will write the
// response itself once it is complete, and hand it to its writer only if
// the socket does not take it all (processor.InlineServer, then
// writer.Direct, which takes with TakeOutHeld and leaves the hand-over to
// ResumeKicks). It marks r queued, so kicks coalesce into nothing.
// Producer only, right after Begin.
func (r *Response) HoldKicks() { r.queued.Store(true) }

// ResumeKicks ends HoldKicks and kicks the writer for everything appended
// meanwhile.
func (r *Response) ResumeKicks() {
	r.queued.Store(false)
	if r.kick != nil {
		r.kick(r)
	}
}

// Requeue puts back, ahead of anything appended since, buckets taken with
// TakeOut that were not written (with eos if TakeOut reported it): a
// writer that started a response hands the rest to another. The caller
// then kicks. Only the goroutine that took them.
func (r *Response) Requeue(bs []Bucket, eos bool) {
	r.mu.Lock()
	n := len(bs)
	r.out = append(r.out, bs...) // grow by n, then shift the newer ones behind
	copy(r.out[n:], r.out[:len(r.out)-n])
	copy(r.out, bs)
	r.eos = r.eos || eos
	r.mu.Unlock()
}

// MarkQueued reports whether the caller is the one that must queue r for its
// writer: kicks that arrive while r is already queued coalesce into one.
func (r *Response) MarkQueued() bool { return r.queued.CompareAndSwap(false, true) }

// Queued reports whether a kick now would coalesce into nothing: r is in
// its writer's queue, or its kicks are held (HoldKicks). A kick function
// may look before it picks a writer (whose connection may have none bound
// while kicks are held); MarkQueued still decides.
func (r *Response) Queued() bool { return r.queued.Load() }

// Sent records n bytes written to the socket and wakes a producer waiting in
// WaitDrained. Writer goroutine only.
func (r *Response) Sent(n int64, low int64) {
	r.BytesSent += n
	if r.unsent.Add(-n) <= low && r.waiting.Load() {
		select {
		case r.drained <- struct{}{}:
		default:
		}
	}
}

// Progressed records that the client took bytes although the writer wrote
// none (it saw the socket's send queue shrink): a producer waiting in
// WaitDrained is not timed out meanwhile. Writer goroutine only.
func (r *Response) Progressed() { r.taking.Add(1) }

// Replaced records that the writer dropped dropped appended bytes unsent
// and took added bytes that were never appended (a diverted hold's
// alternative) in their place, so that Unsent stays what the writer still
// has to write. BytesSent is not touched: it counts only what Sent reports,
// the bytes that reached the socket. Writer goroutine only.
func (r *Response) Replaced(dropped, added, low int64) {
	if r.unsent.Add(added-dropped) <= low && dropped > 0 && r.waiting.Load() {
		select {
		case r.drained <- struct{}{}:
		default:
		}
	}
}

// Abort records why the writer gave up and fails the producer's next
// Append or WaitDrained. Writer goroutine only.
func (r *Response) Abort(err error) {
	r.WriteErr = err
	r.aborted.Store(true)
	select {
	case r.drained <- struct{}{}:
	default:
	}
}

// Finish is the writer letting go, after the last byte or an abort.
func (r *Response) Finish() { r.release() }

func (r *Response) release() {
	if r.refs.Add(-1) == 0 && r.recycle != nil {
		r.recycle(r)
	}
}
