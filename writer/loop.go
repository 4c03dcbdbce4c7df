package writer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// Defaults for Config's zero values.
const (
	// DefaultWriteTimeout: a client that takes nothing for this long is
	// cut off.
	DefaultWriteTimeout = 30 * time.Second

	// DefaultMinRate is the slowest a client may take a response, in
	// bytes per second, averaged over each DefaultMinRateGrace during which
	// the writer is blocked on it: 240 B/s, the floor Kestrel
	// (MinResponseDataRate) and http.sys (minBytesPerSecond) apply. It
	// cuts off a client that stalls a response by reading a few bytes now
	// and then, which the write timeout (no progress at all) never does,
	// and is far below any real reader: the 500 clients reading 1 KiB/s
	// of the slow-client trial that net/http serves are served here too.
	DefaultMinRate = 240
	// DefaultMinRateGrace is the window over which the minimum rate is
	// measured, and so the grace a blocked client gets before the first
	// measurement: 10 s, twice Kestrel's 5 s, so that a connection whose
	// retransmission timer backed off after a loss burst recovers before
	// it is judged.
	DefaultMinRateGrace = 10 * time.Second
)

// ErrTooSlow is the abort reason (Response.WriteErr) of a response whose
// client took less than Config.MinRate over a grace window.
var ErrTooSlow = errors.New("quartet: client reads slower than the minimum response rate")

// ErrFileEnded is the abort reason of a response whose file region the
// file no longer holds: the file was cut short after the response was
// framed (changed in place, by cp or truncate, while a cache kept it
// open). The response cannot be completed as framed; its connection
// closes. Config.Trouble hears of it.
var ErrFileEnded = errors.New("quartet: a file ended before its response did")

// Config sets a writer loop's limits and hooks.
type Config struct {
	// QueueCapacity bounds the hand-off queue from the processors. A full
	// queue does not block producers (see Kick): it is a tuning knob.
	QueueCapacity int
	// LowWater wakes a producer blocked on the high-water mark once its
	// response's unsent bytes fall to it.
	LowWater int64
	// WriteTimeout aborts a response whose client takes nothing for this
	// long. 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MinRate aborts a response whose client, while the writer is blocked
	// on it, takes fewer than MinRate bytes per second over a window of
	// MinRateGrace. 0 means DefaultMinRate; negative disables the check.
	MinRate int64
	// MinRateGrace is the window of the MinRate check. 0 means
	// DefaultMinRateGrace.
	MinRateGrace time.Duration
	// Log runs in the loop after the last byte of each response (or its
	// abort), with BytesSent exactly what reached the socket (less what a
	// reset dropped from its queue).
	Log func(*stages.Response)
	// Trouble, if set, runs in the loop for a response cut short by the
	// server's trouble rather than its client's (ErrFileEnded), before
	// Log: the operator's business, where a client's hang-up is not.
	Trouble func(r *stages.Response, err error)
	// Nudge, if set, is the stages.LoopNudge the loop joins, so that
	// CPU-bound workers hand it the CPU when responses or sockets wait.
	Nudge *stages.LoopNudge
	// Init runs once on the loop's goroutine when Run starts, with the
	// loop as its completion sources; an error stops the loop.
	Init func(Sources) error
	// Exit runs once on the loop's goroutine when Run returns after a
	// successful Init, before the poller is closed: the place to remove
	// completion sources and release what Init set up.
	Exit func(Sources)
	// Serialize marks, by stages.ProtocolID, the protocols whose
	// connections may have several responses on their way at once
	// (stages.Pipelined): the loop writes one of a connection's at a
	// time and queues the others behind it, so they never interleave
	// on the wire and never share the socket's EPOLLOUT registration.
	Serialize [256]bool
	// NoBatchedSends writes each response the loop starts with its own
	// system call, rather than the turn's small whole ones with one
	// io_uring_enter (batch.go).
	NoBatchedSends bool
}

// Sources is what a module sees of a writer loop: where it registers the
// fds whose readiness completes its responses (RDMA completion channels,
// rdma_cm event channels). Callbacks run in the loop, between writes.
type Sources interface {
	AddSource(fd int, fn func()) (SourceID, error)
	RemoveSource(SourceID) error
}

var _ Sources = (*Loop)(nil)

// Per-turn budgets, so one connection cannot starve the loop.
const (
	// iovMax bounds one writev; the kernel's UIO_MAXIOV is 1024, but a
	// response rarely has more than a handful of heap buckets in flight.
	iovMax = 64
	// maxWriteBytesPerTurn bounds what one connection may write before the
	// loop serves the others (gnet's per-connection write budget plays the
	// same role in edge-triggered mode).
	maxWriteBytesPerTurn = 1 << 20
	// maxSendfileChunk bounds one sendfile call for the same reason.
	maxSendfileChunk = 1 << 20
	// corkFileMin is the smallest file region sent corked (TCP_CORK from
	// its first byte to its last, nginx's tcp_nopush). Without the cork,
	// a socket with TCP_NODELAY sends whatever the client's window has
	// just opened for as its ACKs come in: a 1 MiB file went out in 27
	// segments, against nginx's 20 and the 16 that loopback's 64 KiB
	// segments need, each one more trip through TCP's transmit and
	// receive path. The cork pays even where one sendfile sends the whole
	// region (nine times in ten for a 1 MiB file at c=100): corking only
	// the rest of a region whose first call was cut short took the two
	// setsockopt calls a request (2.1 of 5.3) away, and cost 9% more
	// server CPU a request (pinned, wrk -t1 -c100, December 2026: 151
	// against 136 µs over six alternating rounds; measured again over 16,
	// a median of 1.09×, 13 rounds of 16 above 1.0). Corked, the kernel
	// transmits the file's segments in one pass at the uncork; uncorked,
	// each as it fills, interleaved with the copying (and on loopback
	// with the client's receive processing, which runs on the sender's
	// CPU). Which part of that costs the 9% is not pinned down; the
	// figures say the cork is worth more than its two calls. Below it a
	// file is sent by one sendfile as a rule,
	// its head already held back by MSG_MORE (writev), and the two
	// setsockopt calls would cost more than they save.
	corkFileMin = 64 << 10
	// timeoutScanInterval is how often stalled responses are checked
	// against the write timeout; finer would cost wake-ups for nothing.
	timeoutScanInterval = 250 * time.Millisecond
	// probeInterval is how often a response blocked on its client has
	// its socket's send queue measured (SIOCOUTQ), to see what the
	// client took without a write: a full send buffer signals writable
	// only once a third of it has drained, which at 1 KiB/s can take
	// longer than the write timeout although the client reads steadily.
	// One ioctl per second per blocked client.
	probeInterval = time.Second
)

// Registrations: a response record's socket, while its one-shot
// EPOLLOUT is armed, as poll.KindConn; a completion source as
// poll.KindSource; each with its slot and generation.

// record is the loop's state for one response it has started but not
// finished: buckets taken from the response and not yet written.
type record struct {
	resp     *stages.Response
	gen      uint32
	buckets  []stages.Bucket
	off      int64 // bytes of buckets[0] already written
	eos      bool  // EOS taken from the response
	corked   bool  // sendFile set TCP_CORK for the file region at the head
	waiting  bool  // EPOLLOUT armed
	held     bool  // stopped at an unreleased Hold
	queued   bool  // in the loop's send batch (sendBatch), which settles it
	diverted bool  // passed a diverted Hold: buckets taken before EOS are dropped
	since    time.Time
	progress time.Time // when the client last took bytes: a write, or a probe that saw the send queue shrink

	// While blocked on the client (waiting), what it has taken: bytes
	// written minus the socket's send queue, as of the last probe.
	probed time.Time
	taken  int64
	// The open minimum-rate window (zero when none): its start and what
	// the client had taken then.
	window      time.Time
	windowTaken int64
}

// source is a completion source: an fd and the callback run when it is
// readable.
type source struct {
	fd  int
	gen uint32
	fn  func()
}

// Loop is one writer event loop: the response records, completion sources
// and queue of a writer, turned by a stages.Loop (see turn).
type Loop struct {
	id     int
	cfg    Config
	core   *stages.Loop
	poller *poll.Poller
	in     *stages.Ring[*stages.Response]

	overflowMu sync.Mutex
	overflow   []*stages.Response
	overflowN  atomic.Int32

	records  []record
	free     []int32
	active   int
	gen      uint32 // last generation given to a record: loop-wide, so a trimmed and regrown slot never repeats one
	resident residentMemo

	srcMu   sync.Mutex
	sources atomic.Pointer[[]source]
	srcGen  uint32

	iov     [iovMax]unix.Iovec
	scratch []stages.Bucket // TakeOut target for a response not yet started
	ready   []int32         // records with budget left over, served next turn
	// ring and sends: the turn's small whole responses, queued to be
	// sent with one system call (sendBatch), while Run runs.
	ring  *poll.Ring
	sends []queuedSend

	// lines holds, for each connection of a Serialize protocol with a
	// response being written, the response whose turn it is and those
	// waiting behind it; turns are responses whose turn has just come,
	// started in the next turn (not from within finish, whose callers
	// hold record pointers an alloc could move).
	lines     map[*stages.Conn]*line
	spareLine []*line
	turns     []*stages.Response

	counters *stages.StageCounters
	// writeBudget is what one connection may write per turn
	// (maxWriteBytesPerTurn; tests make it small).
	writeBudget int64
	lastCheck   time.Time
	lastTrim    time.Time

	probeEvery time.Duration // see probeInterval

	sentBatched, batches atomic.Uint64 // see BatchCounts

	timedOut atomic.Uint64 // responses aborted by the write timeout
	tooSlow  atomic.Uint64 // responses aborted below the minimum rate
}

// New makes a writer loop. counters may be shared with a Stats reader.
func New(id int, cfg Config, counters *stages.StageCounters) (*Loop, error) {
	if cfg.QueueCapacity <= 0 {
		cfg.QueueCapacity = 1024
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MinRate == 0 {
		cfg.MinRate = DefaultMinRate
	}
	if cfg.MinRateGrace <= 0 {
		cfg.MinRateGrace = DefaultMinRateGrace
	}
	// Probe often enough that a reading client shows progress (two
	// probes) well within either limit.
	probeEvery := min(probeInterval, cfg.WriteTimeout/4, cfg.MinRateGrace/4)
	l := &Loop{id: id, cfg: cfg, probeEvery: probeEvery,
		in: stages.NewRing[*stages.Response](cfg.QueueCapacity), counters: counters,
		writeBudget: maxWriteBytesPerTurn}
	core, err := stages.NewLoop(stages.LoopHooks{
		Drain: l.drainQueue, Turn: l.turn, Pending: l.pending, Event: l.event,
	}, stages.LoopOptions{Nudge: cfg.Nudge})
	if err != nil {
		return nil, err
	}
	l.core, l.poller = core, core.Poller()
	empty := []source{}
	l.sources.Store(&empty)
	return l, nil
}

// Kick queues r for this loop and wakes it. Any goroutine may call it, the
// loop itself included; kicks of a response already queued coalesce. A full
// queue spills into a locked overflow list rather than blocking, so a
// completion callback running in the loop can never deadlock on its own
// queue; the list is bounded by the number of live responses, because each
// is queued at most once.
func (l *Loop) Kick(r *stages.Response) {
	if !r.MarkQueued() {
		return
	}
	if l.counters != nil {
		l.counters.Enqueued.Add(1)
	}
	if !l.in.Push(r) {
		l.overflowMu.Lock()
		l.overflow = append(l.overflow, r)
		l.overflowN.Add(1)
		l.overflowMu.Unlock()
	}
	l.core.Wake()
}

// QueueDepth is the number of responses waiting for the loop.
func (l *Loop) QueueDepth() int { return l.in.Len() + int(l.overflowN.Load()) }

// QueueCap is the hand-off queue's capacity.
func (l *Loop) QueueCap() int { return l.in.Cap() }

// TimedOut is the number of responses the write timeout has aborted, and
// TooSlow the number aborted below the minimum rate. Any goroutine.
func (l *Loop) TimedOut() uint64 { return l.timedOut.Load() }
func (l *Loop) TooSlow() uint64  { return l.tooSlow.Load() }

// SourceID names a registered completion source.
type SourceID struct {
	idx int
	gen uint32
}

// AddSource registers fd as a completion source: fn runs in the loop each
// time fd is readable (level-triggered: fn must consume what made it
// readable, as an RDMA completion channel's get-event does). fd must be
// non-blocking and stays owned by the caller, who must RemoveSource before
// closing it. Any goroutine may call it.
func (l *Loop) AddSource(fd int, fn func()) (SourceID, error) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	old := *l.sources.Load()
	idx := -1
	for i := range old {
		if old[i].fn == nil {
			idx = i
			break
		}
	}
	next := append([]source(nil), old...)
	if idx < 0 {
		idx = len(next)
		next = append(next, source{})
	}
	l.srcGen++
	next[idx] = source{fd: fd, gen: l.srcGen, fn: fn}
	tok := poll.MakeToken(poll.KindSource, l.srcGen, idx)
	if err := l.poller.Add(fd, poll.Readable, tok); err != nil {
		return SourceID{}, fmt.Errorf("writer %d: add completion source fd %d: %w", l.id, fd, err)
	}
	l.sources.Store(&next)
	return SourceID{idx: idx, gen: l.srcGen}, nil
}

// RemoveSource unregisters a completion source. After it returns the
// callback is not started again (one already running in the loop may
// finish).
func (l *Loop) RemoveSource(id SourceID) error {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	old := *l.sources.Load()
	if id.idx >= len(old) || old[id.idx].gen != id.gen || old[id.idx].fn == nil {
		return errors.New("quartet: writer: unknown completion source")
	}
	fd := old[id.idx].fd
	next := append([]source(nil), old...)
	next[id.idx] = source{}
	l.sources.Store(&next)
	return l.poller.Delete(fd)
}

// Stop asks Run to return once every started response has finished. Any
// goroutine, any number of times, also after Run has returned.
func (l *Loop) Stop() { l.core.Stop() }

// Run is the loop. It returns after Stop (or ctx's end) once no response is
// in flight, and releases the poller and waker.
func (l *Loop) Run(ctx context.Context) error {
	defer l.core.Close()
	if l.cfg.Init != nil {
		if err := l.cfg.Init(l); err != nil {
			return fmt.Errorf("writer %d: init: %w", l.id, err)
		}
	}
	if l.cfg.Exit != nil {
		// Deferred after the poller's own release, so it runs first: a
		// module can still remove its completion sources.
		defer l.cfg.Exit(l)
	}
	if !l.cfg.NoBatchedSends {
		if ring, err := poll.NewRing(BatchEntries); err == nil {
			l.ring, l.sends = ring, make([]queuedSend, 0, ring.Cap())
			defer func() {
				l.sendBatch() // a poller failure can stop the loop with sends queued
				ring.Close()
				l.ring = nil
			}()
		} // else each response is written at once (the runtime's reader loops log why)
	}
	if err := l.core.Run(ctx); err != nil {
		return fmt.Errorf("writer %d: %w", l.id, err)
	}
	return nil
}

// turn is the writer's work between waits, after the queue is drained:
// records with budget left from the last turn, the write timeouts, the
// stop decision; and how long to wait.
func (l *Loop) turn(now time.Time, stopping bool) (time.Duration, bool) {
	l.serveTurns()
	l.serveReady()
	l.sendBatch()
	if l.active > 0 && now.Sub(l.lastCheck) >= timeoutScanInterval {
		l.expire(now)
		l.lastCheck = now
	}
	l.trim(now)
	if stopping && l.active == 0 && l.QueueDepth() == 0 && len(l.turns) == 0 {
		return 0, true
	}
	timeout := time.Duration(-1)
	if l.active > 0 {
		timeout = timeoutScanInterval
	} else if len(l.records) > minTrimRecords {
		timeout = trimInterval // come back to give the burst's records back
	}
	if stopping {
		timeout = 10 * time.Millisecond
	}
	if len(l.ready) > 0 || len(l.turns) > 0 {
		timeout = 0
	}
	return timeout, false
}

// pending is the re-check after the loop announced sleep: a Kick since
// drainQueue looked found the loop running and wrote no eventfd.
func (l *Loop) pending() bool { return l.QueueDepth() > 0 }

// event dispatches a readiness event by its token's kind.
func (l *Loop) event(ev poll.Event) {
	switch ev.Token.Kind() {
	case poll.KindSource:
		l.runSource(ev.Token)
	case poll.KindConn:
		l.writable(ev.Token)
	}
}

// drainQueue services up to budget kicked responses and returns how many
// it took. The overflow list (a full ring spilled into it, which is rare)
// is taken whole once the ring is empty.
func (l *Loop) drainQueue(budget int) int {
	l.sendBatch() // what the last turn's events queued
	defer l.sendBatch()
	n := 0
	for ; n < budget; n++ {
		r, ok := l.in.Pop()
		if !ok {
			break
		}
		l.service(r)
	}
	if n < budget && l.overflowN.Load() > 0 {
		l.overflowMu.Lock()
		spill := l.overflow
		l.overflow = nil
		l.overflowN.Store(0)
		l.overflowMu.Unlock()
		for _, r := range spill {
			l.service(r)
		}
		n += len(spill)
	}
	return n
}

func (l *Loop) runSource(tok poll.Token) {
	idx := tok.Slot()
	srcs := *l.sources.Load()
	if idx >= len(srcs) || srcs[idx].fn == nil || !tok.Matches(srcs[idx].gen) {
		return // removed since the event was collected
	}
	srcs[idx].fn()
}

// service takes what the producer appended to r, kicked through the
// queue, and writes it.
func (l *Loop) service(r *stages.Response) {
	if l.counters != nil {
		l.counters.Dequeued.Add(1)
	}
	l.take(r)
}

// take takes what the producer appended to r and writes it.
func (l *Loop) take(r *stages.Response) {
	switch r.Record() {
	case stages.InLine:
		return // its turn comes when the one ahead of it ends (passTurn)
	case stages.EndedKickQueued:
		// The kick that trailed r's end: nothing to write, r can go.
		r.SetRecord(stages.NoRecord)
		r.Finish()
		return
	}
	if r.Record() == stages.NoRecord {
		serial := l.cfg.Serialize[r.Conn.Protocol]
		if serial && !l.myTurn(r) {
			return
		}
		bs, eos := r.TakeOut(l.scratch[:0])
		if len(bs) == 0 {
			// A kick that trailed an abort or a finish: Append kicks after
			// it has unlocked, so the writer may already have taken (and
			// sent) the EOS it appended. eos is still reported then, but
			// there is nothing to start: a record without buckets would
			// never finish.
			l.scratch = bs
			if serial {
				l.passTurn(r.Conn)
			}
			return
		}
		if r.Aborted() {
			clear(bs)
			l.scratch = bs[:0]
			if serial {
				l.passTurn(r.Conn)
			}
			return // already logged and handed back; the producer's leftovers are dropped
		}
		slot := l.alloc()
		rec := &l.records[slot]
		// Swap bucket slices with the record so neither is reallocated.
		l.scratch = rec.buckets[:0]
		rec.resp, rec.buckets, rec.eos, rec.off = r, bs, eos, 0
		now := l.core.Now() // the turn's clock: one read per turn, not three per response
		rec.since, rec.progress = now, now
		r.SetRecord(stages.WriterRecord(slot))
		l.flush(slot)
		return
	}
	slot := int32(r.Record())
	rec := &l.records[slot]
	if rec.resp != r {
		return
	}
	var eos bool
	from := len(rec.buckets)
	rec.buckets, eos = r.TakeOut(rec.buckets)
	rec.eos = rec.eos || eos
	if rec.diverted {
		l.dropDiverted(rec, from)
	}
	if rec.waiting {
		return // EPOLLOUT will resume it
	}
	l.flush(slot)
}

func (l *Loop) alloc() int32 {
	l.active++
	l.gen++
	if n := len(l.free); n > 0 {
		s := l.free[n-1]
		l.free = l.free[:n-1]
		l.records[s].gen = l.gen
		return s
	}
	l.records = append(l.records, record{gen: l.gen})
	return int32(len(l.records) - 1)
}

func (l *Loop) release(slot int32) {
	rec := &l.records[slot]
	clear(rec.buckets)
	*rec = record{buckets: rec.buckets[:0]}
	l.free = append(l.free, slot)
	l.active--
}

// trimInterval is how often the loop considers giving back the memory of
// a record table that a burst of slow clients grew.
const trimInterval = 5 * time.Second

// trim shrinks the record table to just past its highest record in use,
// once at most a quarter of it is in use, so that a burst of slow clients
// does not keep its peak of records (and their bucket arrays) for the
// loop's lifetime. The free list is rebuilt so the lowest slots are
// handed out first and the table stays dense. Records in use never move:
// their slots are in epoll tokens and in their responses.
func (l *Loop) trim(now time.Time) {
	if now.Sub(l.lastTrim) < trimInterval {
		return
	}
	l.lastTrim = now
	if len(l.records) <= minTrimRecords || l.active > len(l.records)/4 {
		return
	}
	top := len(l.records)
	for top > 0 && l.records[top-1].resp == nil {
		top--
	}
	keep := max(top, minTrimRecords)
	clear(l.records[keep:])
	l.records = append([]record(nil), l.records[:keep]...)
	l.free = l.free[:0]
	for i := keep - 1; i >= 0; i-- {
		if l.records[i].resp == nil {
			l.free = append(l.free, int32(i))
		}
	}
	l.free = append([]int32(nil), l.free...)
	if cap(l.ready) > 4*minTrimRecords {
		l.ready = append([]int32(nil), l.ready...)
	}
}

// minTrimRecords is the table size below which trimming is not worth it.
const minTrimRecords = 64

func (l *Loop) writable(tok poll.Token) {
	slot := tok.Slot()
	if slot >= len(l.records) {
		return
	}
	rec := &l.records[slot]
	if !tok.Matches(rec.gen) || rec.resp == nil || !rec.waiting {
		return // stale: that response finished since the event was collected
	}
	rec.waiting = false
	l.flush(int32(slot))
}

func (l *Loop) serveReady() {
	if len(l.ready) == 0 {
		return
	}
	ready := l.ready
	l.ready = l.ready[len(ready):]
	for _, slot := range ready {
		if int(slot) < len(l.records) && l.records[slot].resp != nil && !l.records[slot].waiting {
			l.flush(slot)
		}
	}
	if len(l.ready) == 0 {
		l.ready = ready[:0]
	}
}

// flush writes as much of the record's buckets as the socket takes, up to
// the per-turn budget.
func (l *Loop) flush(slot int32) {
	rec := &l.records[slot]
	if rec.queued || l.queueSend(slot) {
		return // sendBatch settles it
	}
	r := rec.resp
	fd := r.Conn.FD
	budget := l.writeBudget
	for len(rec.buckets) > 0 {
		if budget <= 0 && dataAhead(rec.buckets) {
			// Only bytes wait for the next turn: a Hold or the end is
			// dealt with now.
			l.ready = append(l.ready, slot)
			return
		}
		b := &rec.buckets[0]
		var n int64
		var err error
		switch b.Kind {
		case stages.BucketHeap:
			n, err = writeHeap(fd, rec, &l.iov)
		case stages.BucketFile:
			n, err = sendFile(fd, rec, &l.resident)
		case stages.BucketFlush:
			rec.pop()
			continue
		case stages.BucketHold:
			if !b.Hold.Released() {
				rec.held = true
				return // Release kicks the response back to this loop
			}
			rec.held = false
			if alt, ok := b.Hold.Diverted(); ok {
				l.divert(rec, alt)
				continue
			}
			rec.pop()
			continue
		case stages.BucketEOS:
			rec.pop()
			l.finish(slot, nil)
			return
		}
		if n > 0 {
			budget -= n
			rec.progress = l.core.Now()
			r.Sent(n, l.cfg.LowWater)
		}
		if err == unix.EAGAIN {
			l.awaitWritable(slot)
			return
		}
		if err != nil {
			l.finish(slot, err)
			return
		}
	}
}

// divert replaces the diverted hold at the head of rec, and everything
// queued after it up to EOS, with the hold's alternative. What the
// producer has not appended yet (the processor appends EOS after its
// filters return, and a completion can come first) is dropped as it is
// taken, by dropDiverted, until EOS arrives.
// awaitWritable arms EPOLLOUT for the record's socket, which took no more.
func (l *Loop) awaitWritable(slot int32) {
	rec := &l.records[slot]
	rec.waiting = true
	l.baseline(rec)
	tok := poll.MakeToken(poll.KindConn, rec.gen, int(slot))
	if err := l.poller.Arm(rec.resp.Conn.FD, poll.Writable|poll.OneShot, tok); err != nil {
		l.finish(slot, err)
	}
}

func (l *Loop) divert(rec *record, alt []stages.Bucket) {
	rec.pop() // the hold itself
	var dropped, added int64
	eos := false
	for i := range rec.buckets {
		if rec.buckets[i].Kind == stages.BucketEOS {
			eos = true // nothing follows EOS
			break
		}
		dropped += rec.buckets[i].Size()
	}
	for i := range alt {
		added += alt[i].Size()
	}
	clear(rec.buckets)
	rec.buckets = append(rec.buckets[:0], alt...)
	if eos {
		rec.buckets = append(rec.buckets, stages.Bucket{Kind: stages.BucketEOS})
	} else {
		rec.diverted = true
	}
	rec.resp.Replaced(dropped, added, l.cfg.LowWater)
}

// dropDiverted drops the buckets rec took from index from on, up to EOS,
// after a diverted hold.
func (l *Loop) dropDiverted(rec *record, from int) {
	var dropped int64
	keep := from
	for i := from; i < len(rec.buckets); i++ {
		if rec.buckets[i].Kind == stages.BucketEOS {
			rec.buckets[keep] = rec.buckets[i]
			keep++
			rec.diverted = false
			break
		}
		dropped += rec.buckets[i].Size()
	}
	clear(rec.buckets[keep:])
	rec.buckets = rec.buckets[:keep]
	if dropped > 0 {
		rec.resp.Replaced(dropped, 0, l.cfg.LowWater)
	}
}

// pop drops the first bucket. It shifts rather than reslices so the slice
// keeps its capacity for the next response (a response has a handful of
// buckets in flight, so the copy is short).
func (rec *record) pop() {
	n := copy(rec.buckets, rec.buckets[1:])
	rec.buckets[n] = stages.Bucket{}
	rec.buckets = rec.buckets[:n]
	rec.off = 0
}

// writeHeap writes the run of heap buckets at the head with one writev and
// advances past what was written. iov is the caller's scratch.
func writeHeap(fd int, rec *record, iov *[iovMax]unix.Iovec) (int64, error) {
	vs, more := heapIovecs(rec, iov[:0])
	if len(vs) == 0 {
		// Only empty heap buckets: drop them.
		for len(rec.buckets) > 0 && rec.buckets[0].Kind == stages.BucketHeap && len(rec.buckets[0].Data) == int(rec.off) {
			rec.pop()
		}
		return 0, nil
	}
	n, err := writev(fd, vs, more)
	rec.advance(n)
	return int64(max(n, 0)), syscallError("writev", err)
}

// heapIovecs appends to vs (up to its capacity) the unwritten bytes of the
// run of heap buckets at rec's head, and reports whether a file region
// follows the run (see writev).
func heapIovecs(rec *record, vs []unix.Iovec) (_ []unix.Iovec, more bool) {
	for i := range rec.buckets {
		b := &rec.buckets[i]
		if b.Kind != stages.BucketHeap || len(vs) == cap(vs) {
			more = b.Kind == stages.BucketFile && b.Len > 0
			break
		}
		data := b.Data
		if i == 0 {
			data = data[rec.off:]
		}
		if len(data) == 0 {
			continue
		}
		v := unix.Iovec{Base: &data[0]}
		v.SetLen(len(data))
		vs = append(vs, v)
	}
	return vs, more
}

// advance moves rec past n bytes written from its heap buckets, and past
// the empty ones right after.
func (rec *record) advance(n int) {
	if n <= 0 {
		return
	}
	left := int64(n)
	for left > 0 {
		b := &rec.buckets[0]
		rest := int64(len(b.Data)) - rec.off
		if left < rest {
			rec.off += left
			break
		}
		left -= rest
		rec.pop()
	}
	for len(rec.buckets) > 0 && rec.buckets[0].Kind == stages.BucketHeap && len(rec.buckets[0].Data) == 0 {
		rec.pop()
	}
}

// sendFile sends what is left of the file region at the head of rec's
// buckets, or its next maxSendfileChunk, raw when memo finds it in the
// page cache (sendfile).
func sendFile(fd int, rec *record, memo *residentMemo) (int64, error) {
	b := &rec.buckets[0]
	left := b.Len - rec.off
	if left <= 0 {
		rec.pop()
		return 0, nil
	}
	if rec.off == 0 && left >= corkFileMin && !rec.corked {
		rec.corked = cork(fd, true)
	}
	off := b.Off + rec.off
	chunk := int(min(left, maxSendfileChunk))
	raw := chunk >= rawSendfileMin && memo.cached(b.File, off, chunk)
	n, err := sendfile(fd, int(b.File.Fd()), &off, chunk, raw)
	if err == unix.EINTR {
		err = nil
	}
	if n > 0 {
		rec.off += int64(n)
		if rec.off == b.Len {
			rec.uncork(fd)
			rec.pop()
		}
	} else if n == 0 && err == nil {
		// The file is shorter than the region: the response cannot be
		// completed as framed.
		return 0, fmt.Errorf("%w: %s, %d bytes short of the response's", ErrFileEnded, b.File.Name(), left)
	}
	return int64(max(n, 0)), syscallError("sendfile", err)
}

// uncork lets go of the cork sendFile put on fd, which pushes out what it
// held back: at the end of the file region, or before the record is
// handed to another (Direct to a writer loop), which knows nothing of it.
func (rec *record) uncork(fd int) {
	if rec.corked {
		cork(fd, false)
		rec.corked = false
	}
}

// syscallError names the call that failed, leaving EAGAIN bare for the
// flush loop to compare.
func syscallError(call string, err error) error {
	if err == nil || err == unix.EAGAIN {
		return err
	}
	if _, ok := err.(unix.Errno); !ok {
		return err // already says what failed
	}
	return os.NewSyscallError(call, err)
}

// finish ends the record: logs and lets the response go, recording what
// should happen to the connection; the response's recycle function hands it
// back to its reader once the producer has let go too. err is why the
// response ended early, nil after EOS.
func (l *Loop) finish(slot int32, err error) {
	rec := &l.records[slot]
	r := rec.resp
	l.conclude(r, err, rec.since)
	r.SetRecord(stages.NoRecord)
	l.release(slot)
	if c := r.Conn; l.cfg.Serialize[c.Protocol] {
		l.passTurn(c) // before r may be recycled, which clears r.Conn
	}
	// Late kicks: Append kicks after unlocking, so a kick can trail the
	// EOS this loop has just sent. Marking r queued makes any later kick
	// coalesce into nothing (Begin clears the mark for r's next use). If
	// a kick has claimed the mark already, its queue entry is on its way,
	// and r must not be recycled (and begun again by its next producer)
	// before the loop has popped it: Finish waits for that entry.
	if !r.MarkQueued() {
		r.SetRecord(stages.EndedKickQueued)
		return
	}
	r.Finish() // r may be recycled, and c handed back, from here on
}

// conclude decides what becomes of r's connection now that its writing has
// ended (err: why early, nil after EOS), counts and logs it. since is when
// its writing began. The caller lets go of r after.
func (l *Loop) conclude(r *stages.Response, err error, since time.Time) {
	c := r.Conn
	fate := stages.FateKeepAlive
	switch {
	case err == stages.ErrWriteTimeout || err == ErrTooSlow:
		// We gave up on a client that stopped taking data: whatever is
		// still queued in the kernel would only go on feeding it, so the
		// reader resets the connection, which drops that queue. The log
		// counts what the client got: the bytes written, less the queue
		// (its window is closed, so nothing of it is in flight).
		r.Abort(err)
		fate = stages.FateReset
		if q, e := c.SendQueue(); e == nil {
			r.BytesSent -= int64(min(int64(q), r.BytesSent))
		}
	case err != nil:
		r.Abort(err)
		fate = stages.FateClose
		if l.cfg.Trouble != nil && errors.Is(err, ErrFileEnded) {
			l.cfg.Trouble(r, err)
		}
	case !r.KeepAlive:
		fate = stages.FateLinger
		// FIN after the last byte; the reader drains whatever the client
		// still sends so that our close does not turn into a reset that
		// could destroy the response in the client's receive buffer.
		if e := unix.Shutdown(c.FD, unix.SHUT_WR); e != nil {
			fate = stages.FateClose
		}
	}
	if l.counters != nil {
		l.counters.Service.Record(time.Since(since))
	}
	if l.cfg.Log != nil {
		l.cfg.Log(r)
	}
	r.SetFate(fate)
}

// expire cuts off the clients that block their responses: those that took
// nothing for WriteTimeout, and those that took less than MinRate over a
// MinRateGrace window. Only time the writer spends blocked on the client
// (EPOLLOUT armed) counts: a response held back by a Hold, or waiting for
// its producer, is not the client's fault.
func (l *Loop) expire(now time.Time) {
	for i := range l.records {
		rec := &l.records[i]
		if rec.resp == nil || rec.held {
			continue
		}
		if !rec.waiting {
			if len(rec.buckets) == 0 {
				rec.window = time.Time{} // caught up with its producer: the client keeps pace
			}
			continue
		}
		if now.Sub(rec.progress) >= l.probeEvery && now.Sub(rec.probed) >= l.probeEvery {
			l.probe(rec, now)
		}
		if now.Sub(rec.progress) > l.cfg.WriteTimeout {
			l.timedOut.Add(1)
			l.finish(int32(i), stages.ErrWriteTimeout)
			continue
		}
		if l.cfg.MinRate > 0 && l.belowMinRate(rec) {
			l.tooSlow.Add(1)
			l.finish(int32(i), ErrTooSlow)
		}
	}
}

// baseline records, as a response blocks on its client, what the client
// has taken so far, so that the first probe can already see progress (a
// write timeout of a second must not wait two probes for it). One ioctl
// per full socket buffer.
func (l *Loop) baseline(rec *record) {
	if q, err := rec.resp.Conn.SendQueue(); err == nil {
		rec.probed, rec.taken = time.Now(), rec.resp.BytesSent-int64(q)
	}
}

// probe measures what the client of a blocked response has taken: bytes
// written minus what the socket still queues (SIOCOUTQ: unsent plus not
// yet acknowledged). It counts as progress when that grew.
func (l *Loop) probe(rec *record, now time.Time) {
	q, err := rec.resp.Conn.SendQueue()
	if err != nil {
		return // the next write will say what is wrong with the socket
	}
	taken := rec.resp.BytesSent - int64(q)
	if !rec.probed.IsZero() && taken > rec.taken {
		rec.progress = now
		rec.resp.Progressed() // its producer, waiting for the client to drain, waits on
	}
	// Without a baseline (the ioctl failed as the response blocked) the
	// first probe only sets one.
	rec.probed, rec.taken = now, taken
}

// belowMinRate applies the minimum rate to a blocked response, on its probes: a
// window opens at the first probe and closes MinRateGrace later, when the
// client must have taken MinRate bytes per second of it; then the next
// window opens. Windows rather than an average since the first byte,
// because the first burst into the kernel's buffers would otherwise give
// a client that then stops reading hours of credit.
func (l *Loop) belowMinRate(rec *record) bool {
	if rec.probed.IsZero() {
		return false
	}
	if rec.window.IsZero() {
		rec.window, rec.windowTaken = rec.probed, rec.taken
		return false
	}
	d := rec.probed.Sub(rec.window)
	if d < l.cfg.MinRateGrace {
		return false
	}
	if float64(rec.taken-rec.windowTaken) < float64(l.cfg.MinRate)*d.Seconds() {
		return true
	}
	rec.window, rec.windowTaken = rec.probed, rec.taken
	return false
}
