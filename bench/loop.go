package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// Per-turn budgets and timer granularity of a loop.
const (
	// readBufSize is the one read buffer per loop, shared by its
	// connections because a read is parsed before the next one starts.
	readBufSize = 64 << 10
	// maxReadsPerEvent bounds the reads for one readable connection per
	// turn so that one connection streaming a large body cannot starve the
	// others (level-triggered epoll reports it again next turn).
	maxReadsPerEvent = 4
	// tick is the period of the housekeeping pass (timeouts, reconnects,
	// phase changes, progress counters).
	tick = 10 * time.Millisecond
	// retryDelay separates reconnect attempts after a failed connect so a
	// refusing server is not hammered in a tight loop.
	retryDelay = 100 * time.Millisecond
	// histMax is the largest latency recorded; longer ones are clamped.
	histMax = time.Minute
	// maxScanPerTick bounds the connections housekeep examines per tick.
	maxScanPerTick = 4096
	// minStall is the least time without any response or connect after
	// which a run is declared stalled (see loop.housekeep).
	minStall = 10 * time.Second
)

// ErrStalled is returned (wrapped) by Run when a loop saw no response and
// no successful connect for max(10 s, 3 × Config.Timeout) while it still had
// requests to send: the server stopped accepting or answering.
var ErrStalled = errors.New("bench: run stalled")

// loopCounters are the totals a loop publishes every tick for the progress
// line; the hot path updates plain fields and copies them here.
type loopCounters struct {
	completed atomic.Uint64
	errors    atomic.Uint64
	_         [48]byte // keep loops' counters on separate cache lines
}

// loop is one event loop (a stages.Loop, locked to one OS thread and
// blocking it in the kernel) that owns a fixed set of connections for the
// whole run. Nobody hands it work: it has no queue and no waker, and its
// turn is the housekeeping tick and the open-loop send schedule.
type loop struct {
	r        *run
	core     *stages.Loop
	poller   *poll.Poller
	conns    []*conn
	reqs     []wireRequest
	sched    []uint16
	buf      []byte
	iov      [2 * maxPipeline]unix.Iovec // a head and a body per request
	timers   connHeap
	nextTick int64 // ns since base: the next housekeeping pass
	// sa is this loop's own copy of the target address: x/sys serialises
	// a Sockaddr into a buffer inside it, so loops must not share one.
	sa unix.Sockaddr

	budget   int64 // measured requests this loop may still send; <0: unlimited
	inflight int   // requests in flight over all connections
	opened   int   // successful connects
	failed   int   // failed connects
	connErr  error // last connect error, reported if nothing ever connects
	// progressAt is when a response or a connect last succeeded; a run
	// whose server stops accepting would otherwise retry forever.
	progressAt int64
	failedAt   int64 // last failed connect
	scanPos    int   // next connection housekeep examines

	// Open loop: per-connection interval between intended send times.
	interval int64

	stats    Counts
	hist     *hdrhistogram.Histogram // corrected (from intended send time)
	raw      *hdrhistogram.Histogram // from actual send time
	shed     *hdrhistogram.Histogram // corrected, 503 responses only: a shedding server's refusals
	answered *hdrhistogram.Histogram // corrected, every other response
	// The same two from the actual send (open loop only): the server's
	// own answer time, without the wait for a free connection that the
	// corrected figures add when the client is behind its schedule.
	shedRaw, answeredRaw *hdrhistogram.Histogram
	firstRec             int64         // first measured send, ns
	lastRec              int64         // last measured response, ns
	cpuWarm              time.Duration // thread CPU when measurement began
	cpu                  time.Duration // thread CPU during measurement
	measured             bool          // crossed into the measurement phase
	warm                 failures      // failures counted during warm-up
	err                  error
	pub                  *loopCounters
	id                   int // index among the run's loops

	// Interval sampling (Config.Interval): the interval's counts are
	// stats minus ivBase; its latencies go to ivHist.
	ivIdx  int64
	ivEnd  int64 // ns since base
	ivBase Counts
	ivHist *hdrhistogram.Histogram
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(histMax/time.Microsecond), 3)
}

func newLoop(r *run, pub *loopCounters) (*loop, error) {
	l := &loop{
		r: r, reqs: r.reqs, sched: r.sched,
		buf:  make([]byte, readBufSize),
		hist: newHist(), raw: newHist(), shed: newHist(), answered: newHist(),
		shedRaw: newHist(), answeredRaw: newHist(),
		budget: -1, pub: pub, firstRec: -1,
		sa: sockaddr(r.dst.Addr(), r.dst.Port()),
	}
	// Blocking: the loop's thread does its own waiting, so its CPU time
	// (RUSAGE_THREAD) is the generator's whole cost, and open-loop send
	// times get nanosecond timeouts (epoll_pwait2).
	core, err := stages.NewLoop(stages.LoopHooks{Turn: l.turn, Event: l.dispatch},
		stages.LoopOptions{Solo: true, Blocking: true})
	if err != nil {
		return nil, err
	}
	l.core, l.poller = core, core.Poller()
	return l, nil
}

func (l *loop) now() int64 { return int64(time.Since(l.r.base)) }

// run is the loop body; it returns when the run is over for all of its
// connections, having closed every socket and the poller.
func (l *loop) run() {
	// Locked so that RUSAGE_THREAD measures exactly this loop's CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer l.core.Close()
	defer l.closeAll()
	l.cpuWarm = threadCPU()
	l.measured = l.r.warmEnd <= 0
	if iv := l.r.iv; iv != nil {
		l.ivIdx = iv.index(l.now())
		l.ivEnd, l.ivHist = iv.end(l.ivIdx), iv.hist()
		defer l.rotate(-1)
	}

	now := l.now()
	for _, c := range l.conns {
		l.connect(c, now)
	}
	l.nextTick = now
	if err := l.core.Run(context.Background()); err != nil {
		l.err = err
	}
	l.countUnfinished()
	l.publish()
	if l.measured {
		l.cpu = threadCPU() - l.cpuWarm
	}
}

// turn is the loop's work between waits: housekeeping once per tick, the
// open-loop requests that are due, and the wait until the next of either.
func (l *loop) turn(t time.Time, _ bool) (time.Duration, bool) {
	now := int64(t.Sub(l.r.base))
	if now >= l.nextTick {
		if l.housekeep(now) {
			return 0, true
		}
		l.nextTick = now + int64(tick)
	}
	if l.interval > 0 {
		l.fireDue(now)
	}
	wait := l.nextTick - now
	if l.interval > 0 && len(l.timers) > 0 {
		wait = min(wait, l.timers[0].due-now)
	}
	return time.Duration(max(wait, 0)), false
}

// dispatch hands an event to its connection, unless the connection it was
// registered for has been closed since.
func (l *loop) dispatch(ev poll.Event) {
	idx := ev.Token.Slot()
	if idx >= len(l.conns) {
		return
	}
	c := l.conns[idx]
	if !ev.Token.Matches(c.gen) || c.state == csIdle || c.state == csDone {
		return // stale event from a closed socket
	}
	l.event(c, ev)
}

// token is c's registration: its index and its current generation.
func (c *conn) token() poll.Token { return poll.MakeToken(poll.KindConn, c.gen, int(c.idx)) }

// housekeep runs every tick: phase changes, timeouts, reconnects, progress.
// It reports whether the loop is finished.
func (l *loop) housekeep(now int64) bool {
	r := l.r
	if l.ivHist != nil && now >= l.ivEnd {
		l.rotate(now)
	}
	if !l.measured && now >= r.warmEnd {
		l.measured = true
		l.cpuWarm = threadCPU()
		// Failures are counted by when they happen: those of the warm-up
		// are set apart here (to within a tick) rather than reported as
		// the measurement's.
		l.warm = failures{l.stats.Errors, l.stats.Reconnects, l.stats.Lost}
	}
	l.publish()
	if r.stop.Load() {
		return true
	}
	if l.opened == 0 && l.failed >= len(l.conns) && l.connErr != nil {
		l.err = l.connErr
		return true
	}
	stuck := l.inflight > 0 || l.failedAt > l.progressAt
	if stuck && r.timeout > 0 && now-l.progressAt > max(int64(minStall), 3*r.timeout) {
		l.err = fmt.Errorf("%w: no response or connect for %v (last connect error: %v)",
			ErrStalled, time.Duration(now-l.progressAt).Round(time.Second), l.connErr)
		return true
	}
	sending := l.sending(now)
	if !sending {
		if l.inflight == 0 {
			return true
		}
		if r.measureEnd > 0 && now > r.measureEnd+int64(drainGrace) {
			return true
		}
	}
	// Scan a bounded slice of the connections per tick, resuming where
	// the last tick stopped: with 100k connections a full scan every tick
	// would cost more than the requests. Timeouts and reconnects are then
	// noticed up to len(conns)/maxScanPerTick ticks late.
	n := min(len(l.conns), maxScanPerTick)
	for range n {
		c := l.conns[l.scanPos]
		if l.scanPos++; l.scanPos == len(l.conns) {
			l.scanPos = 0
		}
		switch c.state {
		case csIdle:
			if sending && now >= c.retryAt {
				l.connect(c, now)
			}
		case csConnecting:
			if r.timeout > 0 && now-c.retryAt > r.timeout {
				l.stats.Errors.Connect++
				l.failed++
				l.connErr, l.failedAt = unix.ETIMEDOUT, now
				l.drop(c, now)
			}
		case csOpen:
			if r.timeout > 0 && c.n > 0 && c.n > c.unsent && now-c.oldest().sent > r.timeout {
				l.stats.Errors.Timeout++
				l.drop(c, now)
			}
		}
	}
	return false
}

// countUnfinished counts, as the loop ends, the measured requests that
// got no answer and no error, which no other figure holds: those still in
// flight, and in open loop those the schedule called for before the end
// of the measurement that were never sent.
func (l *loop) countUnfinished() {
	r := l.r
	for _, c := range l.conns {
		for i := range c.n {
			if c.ring[(c.head+i)%len(c.ring)].measured {
				l.stats.Unanswered++
			}
		}
		if l.interval > 0 && r.measureEnd > 0 {
			l.stats.Unsent += l.slots(max(c.due, r.warmEnd), r.measureEnd)
		}
	}
}

// slots is how many open-loop send times of one connection, every
// l.interval from `from`, fall before `to`.
func (l *loop) slots(from, to int64) uint64 {
	if from >= to {
		return 0
	}
	return uint64((to - from + l.interval - 1) / l.interval)
}

// sending reports whether new requests may be started at time now.
func (l *loop) sending(now int64) bool {
	if l.r.measureEnd > 0 {
		return now < l.r.measureEnd
	}
	return now < l.r.warmEnd || l.budget != 0
}

func (l *loop) publish() {
	l.pub.completed.Store(l.stats.Requests)
	l.pub.errors.Store(l.stats.Errors.total())
}

// connect starts a non-blocking connect for c.
func (l *loop) connect(c *conn, now int64) {
	r := l.r
	fd, err := socket(r.family, true)
	if err != nil {
		l.connectFailed(c, now, err)
		return
	}
	// Requests are small and must leave at once, not wait for Nagle.
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if c.src.IsValid() {
		// Let connect pick the port per 4-tuple, so each source address
		// adds a whole ephemeral range towards the same server port.
		bindAddressNoPort(fd)
		if err := unix.Bind(fd, sockaddr(c.src, 0)); err != nil {
			unix.Close(fd)
			l.connectFailed(c, now, os.NewSyscallError("bind", err))
			return
		}
	}
	err = unix.Connect(fd, l.sa)
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		l.connectFailed(c, now, os.NewSyscallError("connect", err))
		return
	}
	c.fd, c.state, c.retryAt = fd, csConnecting, now
	if err := l.poller.Add(fd, poll.Readable|poll.Writable, c.token()); err != nil {
		unix.Close(fd)
		c.state = csIdle
		l.connectFailed(c, now, err)
	}
}

func (l *loop) connectFailed(c *conn, now int64, err error) {
	l.stats.Errors.Connect++
	l.failed++
	l.connErr, l.failedAt = err, now
	c.state, c.retryAt = csIdle, now+int64(retryDelay)
}

// event handles an event for an open or connecting connection.
func (l *loop) event(c *conn, ev poll.Event) {
	now := l.now()
	if c.state == csConnecting {
		if !ev.Writable() && !ev.Error() && !ev.Hangup() {
			return
		}
		soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && soerr != 0 {
			err = unix.Errno(soerr)
		}
		if err != nil {
			unix.Close(c.fd)
			c.gen++
			l.connectFailed(c, now, os.NewSyscallError("connect", err))
			return
		}
		c.state = csOpen
		l.opened++
		l.progressAt = now
		// Connected: stop watching EPOLLOUT, armed for the connect.
		c.wantOut = true
		l.rearm(c, false)
		if l.interval > 0 {
			if c.due < now-int64(l.r.timeout) && l.r.timeout > 0 {
				// After a reconnect, do not replay a backlog older than
				// the timeout; what the measurement scheduled of it is
				// counted unsent rather than forgotten.
				end := now
				if l.r.measureEnd > 0 {
					end = min(end, l.r.measureEnd)
				}
				l.stats.Unsent += l.slots(max(c.due, l.r.warmEnd), end)
				c.due = now
			}
			l.schedule(c, now)
		} else {
			l.fill(c, now)
		}
		return
	}
	if ev.Readable() || ev.Hangup() || ev.Error() {
		if !l.readable(c, now) {
			return
		}
	}
	if ev.Writable() && c.state == csOpen {
		l.flush(c, now)
	}
}

// readable reads and parses what the server sent; it reports whether the
// connection is still open.
func (l *loop) readable(c *conn, now int64) bool {
	for range maxReadsPerEvent {
		n, err := rawRead(c.fd, l.buf)
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			if c.n > 0 {
				l.stats.Errors.Reset++
			}
			l.drop(c, now)
			return false
		}
		if n == 0 {
			complete, status, size := c.sp.eof()
			if complete {
				c.answered = 0
				c.done(status, true, size)
				l.afterResponses(c, now)
			}
			orderly := c.n == 0
			if !orderly {
				l.stats.Errors.Reset++
			}
			l.drop(c, now)
			if orderly {
				l.reconnect(c, now)
			}
			return false
		}
		c.answered = 0
		if err := c.sp.feed(c, l.buf[:n]); err != nil || c.unsolicted {
			l.stats.Errors.Parse++
			l.drop(c, now)
			return false
		}
		if c.answered > 0 {
			now = l.now()
			if c.closing {
				l.afterResponses(c, now)
				l.drop(c, now)
				l.reconnect(c, now)
				return false
			}
			l.afterResponses(c, now)
		}
		if n < len(l.buf) {
			return true
		}
	}
	return true
}

// afterResponses sends what the freed pipeline slots allow.
func (l *loop) afterResponses(c *conn, now int64) {
	l.inflight -= c.answered
	c.answered = 0
	if c.closing || c.state != csOpen {
		return
	}
	if l.interval > 0 {
		if c.late {
			c.late = false
			l.schedule(c, now)
		}
		return
	}
	l.fill(c, now)
}

// record is called by conn.done for each retired request, with the size
// of its response. Only responses to requests sent after warm-up count, in
// every figure: requests, bytes, status classes.
func (l *loop) record(f *inflight, status int, size int64) {
	// A messenger reply that failed its check is counted when it
	// arrives, as the other failures are, so the warm-up's are set apart.
	switch status {
	case replyError:
		l.stats.Errors.Reply++
	case replyMismatch:
		l.stats.Errors.Mismatch++
	}
	if !f.measured {
		l.progressAt = l.now()
		return
	}
	now := l.now()
	if l.ivHist != nil && now >= l.ivEnd {
		l.rotate(now)
	}
	l.progressAt = now
	l.stats.Requests++
	l.stats.BytesRead += uint64(size)
	if status >= 100 && status < 600 {
		l.stats.Status[status/100]++
		if status == 503 {
			l.stats.Status503++
		}
	}
	l.lastRec = now
	us := min(max((now-f.intended)/1000, 1), int64(histMax/time.Microsecond))
	_ = l.hist.RecordValue(us)
	if status == 503 {
		_ = l.shed.RecordValue(us)
	} else {
		_ = l.answered.RecordValue(us)
	}
	if l.ivHist != nil {
		_ = l.ivHist.RecordValue(us)
	}
	if l.interval > 0 {
		us = min(max((now-f.sent)/1000, 1), int64(histMax/time.Microsecond))
		_ = l.raw.RecordValue(us)
		if status == 503 {
			_ = l.shedRaw.RecordValue(us)
		} else {
			_ = l.answeredRaw.RecordValue(us)
		}
	}
}

// rotate hands the current interval to the collector and starts the one
// holding now; now < 0 hands the last one when the loop ends. Failures are
// counted where they happen, so they land in the interval current at the
// next rotation: within a tick of when they happened.
func (l *loop) rotate(now int64) {
	iv := l.r.iv
	p := intervalPart{loop: l.id, idx: l.ivIdx, counts: l.stats.sub(l.ivBase), hist: l.ivHist, next: math.MaxInt64}
	l.ivBase = l.stats
	if now >= 0 {
		l.ivIdx = iv.index(now)
		l.ivEnd, l.ivHist = iv.end(l.ivIdx), iv.hist()
		p.next = l.ivIdx
	} else {
		l.ivHist = nil
	}
	iv.out <- p
}

// queue adds the next request of the mix to c's pipeline.
func (l *loop) queue(c *conn, now, intended int64) {
	measured := now >= l.r.warmEnd
	if measured {
		if l.firstRec < 0 {
			l.firstRec = now
		}
		if l.budget > 0 {
			l.budget--
		}
	}
	ri := l.sched[c.next]
	if c.next++; c.next == len(l.sched) {
		c.next = 0
	}
	c.push(inflight{intended: intended, sent: now, req: ri, measured: measured})
	c.sp.queued(c, (c.head+c.n-1)%len(c.ring))
	l.inflight++
}

// fill tops up a closed-loop connection's pipeline and writes.
func (l *loop) fill(c *conn, now int64) {
	for c.n < len(c.ring) && l.sending(now) {
		l.queue(c, now, now)
	}
	l.flush(c, now)
}

// schedule sends every open-loop request of c that is due and fits in the
// pipeline, then either parks c in the timer heap or marks it late.
func (l *loop) schedule(c *conn, now int64) {
	sent := false
	for c.due <= now && c.n < len(c.ring) && l.sending(now) {
		l.queue(c, now, c.due)
		c.due += l.interval
		sent = true
	}
	if sent {
		l.flush(c, now)
		if c.state != csOpen {
			return
		}
	}
	if !l.sending(now) {
		return
	}
	if c.due <= now {
		c.late = true // pipeline full; the next response resumes it
		return
	}
	if c.heapIdx < 0 {
		l.timers.push(c)
	}
}

// fireDue sends the open-loop requests whose time has come.
func (l *loop) fireDue(now int64) {
	for len(l.timers) > 0 && l.timers[0].due <= now {
		c := l.timers.pop()
		if c.state == csOpen {
			l.schedule(c, now)
		}
	}
}

// flush writes c's unsent requests with one write or writev, straight from
// the bytes the connection's speaker keeps (no copy).
func (l *loop) flush(c *conn, now int64) {
	for c.unsent > 0 {
		first := (c.head + c.n - c.unsent) % len(c.ring)
		// Gather the unsent bytes, skipping the wOff already written of
		// the first request; one slice goes out with write, more with
		// writev.
		iov := l.iov[:0]
		var one []byte
		skip := c.wOff
		for i := range c.unsent {
			head, body := c.sp.wire(c, (first+i)%len(c.ring))
			for _, part := range [2][]byte{head, body} {
				if skip >= len(part) {
					skip -= len(part)
					continue
				}
				part, skip = part[skip:], 0
				one = part
				v := unix.Iovec{Base: &part[0]}
				v.SetLen(len(part))
				iov = append(iov, v)
			}
		}
		var n int
		var err error
		if len(iov) == 1 {
			n, err = rawWrite(c.fd, one)
		} else {
			n, err = rawWritev(c.fd, iov)
		}
		if err == unix.EAGAIN {
			l.rearm(c, true)
			return
		}
		if err != nil {
			l.stats.Errors.Write++
			l.drop(c, now)
			return
		}
		// Advance over fully written requests; a measured request's bytes
		// count once it is all on the wire.
		for n > 0 {
			i := (c.head + c.n - c.unsent) % len(c.ring)
			head, body := c.sp.wire(c, i)
			size := len(head) + len(body)
			left := size - c.wOff
			if n < left {
				c.wOff += n
				break
			}
			n -= left
			c.wOff = 0
			c.unsent--
			if c.ring[i].measured {
				l.stats.BytesWritten += uint64(size)
			}
		}
	}
	if c.wantOut {
		l.rearm(c, false)
	}
}

// rearm switches writability events on or off for c (level-triggered).
func (l *loop) rearm(c *conn, out bool) {
	if c.wantOut == out {
		return
	}
	c.wantOut = out
	in := poll.Readable
	if out {
		in |= poll.Writable
	}
	_ = l.poller.Modify(c.fd, in, c.token())
}

// drop closes c after an error or a server close; its in-flight requests
// are lost. It reconnects at the next tick if the run is still sending.
func (l *loop) drop(c *conn, now int64) {
	if c.state == csOpen || c.state == csConnecting {
		unix.Close(c.fd)
		l.stats.Reconnects++
	}
	l.inflight -= c.n
	l.stats.Lost += uint64(c.n)
	c.gen++
	c.head, c.n, c.unsent, c.wOff = 0, 0, 0, 0
	c.wantOut, c.closing, c.unsolicted, c.late = false, false, false, false
	c.sp.reset()
	c.state, c.retryAt = csIdle, now
	if c.heapIdx >= 0 {
		l.timers.remove(c)
	}
}

// reconnect reopens c at once after the server closed it in order
// (Connection: close, or an idle keep-alive timeout): waiting for the next
// tick would cap such a server at one request per tick per connection.
// Errors wait for the tick instead, so a failing server is not hammered.
func (l *loop) reconnect(c *conn, now int64) {
	if l.sending(now) {
		l.connect(c, now)
	}
}

func (l *loop) closeAll() {
	for _, c := range l.conns {
		if c.state == csOpen || c.state == csConnecting {
			unix.Close(c.fd)
		}
		c.state = csDone
	}
}
