package stages

import (
	"encoding/binary"
	"os"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// Why the hand-off wakes loops this way
//
// Pane's open question: a reader or writer loop blocked in poll must be
// interrupted when another stage hands it work, and a pipe byte costs two
// syscalls per hand-off (the producer's write, the loop's read). He proposed
// a hybrid: an atomic flag that says "I am blocked in poll", so a producer
// only interrupts a loop that is actually asleep and otherwise just queues.
//
// LoopWaker is that hybrid, with an eventfd in place of the pipe (one fd, an
// 8-byte counter, so any number of writes drain with one read) and without
// signals. The loop announces sleep, re-checks its rings, and only then
// blocks; a producer pushes, then writes the eventfd only if it is the first
// to see the loop asleep. While the loop is running a hand-off costs one
// atomic load and no syscall; a sleeping loop costs one write and one read
// per wake-up however many producers raced to wake it.
//
// What it buys was measured by BenchmarkHandoff (handoff_bench_test.go): one
// producer goroutine hands items through a Ring to one loop that blocks in
// epoll_wait, in four regimes, from a loop that always has a backlog (busy:
// ~2µs of work per item here) to one that is asleep at every hand-off
// (pingpong: a round trip per item; the producer parks until the item is
// done, and the loop wakes it through a WorkerWaker). cpu is user+system time of the whole process per
// item; syscalls counts write, read and epoll_wait on both sides. Medians of
// six runs of
//
//	go test -run='^$' -bench='Ring|Handoff' -benchtime=1s -count=6 ./stages/
//
// on a 2-core AMD EPYC VM that other jobs kept at a load average of 14-18
// (2026-11-21), so wall times scatter 2-3x between runs; cpu and syscalls
// are steady (a second run of six matched them within a third, its wall
// times up to 2x apart), and ratios are what to read:
//
//	regime    mechanism          ns/op   cpu/op  syscalls/op
//	busy      pipe every time    6.8µs    2.8µs  1.01
//	          eventfd every time 4.2µs    2.7µs  1.01
//	          LoopWaker          3.8µs    2.4µs  0.0007
//	          chan               4.3µs    2.3µs  0
//	stream    pipe every time    2.2µs    1.5µs  1.25
//	          eventfd every time 3.9µs    1.2µs  1.23
//	          LoopWaker          146ns     36ns  0.0045
//	          LoopWaker + spin    65ns     28ns  0.0022
//	          chan                48ns     44ns  0
//	burst64   eventfd every time 1.9µs    1.4µs  1.29
//	          LoopWaker          3.3µs    486ns  0.10
//	          LoopWaker + spin   130ns     50ns  0.005
//	          chan                48ns     48ns  0
//	pingpong  pipe every time     85µs   15.4µs  3.00
//	          eventfd every time  83µs   13.6µs  3.00
//	          LoopWaker          102µs   15.0µs  3.00
//	          LoopWaker + spin   1.5µs    461ns  0.04
//	          chan               329ns    324ns  0
//
// What that says:
//
//   - While the loop has work, the flag does what Pane hoped: hand-offs
//     stop costing syscalls (1-1.3 per item down to 0.0007-0.005), and
//     with a loop that keeps up with its producer the hand-off itself goes
//     from ~1.2µs to ~36ns of CPU (33x). When the loop has real work per
//     item (busy), the saved write is ~10% of the CPU.
//   - A loop that is asleep at every hand-off pays write + read +
//     epoll_wait whatever the scheme (3.00 syscalls/op for all three), and
//     those are not the cost: waking a thread blocked in the kernel is
//     (4-17µs per item in quieter runs of an earlier version that had the
//     producer spin instead of park, tens of µs here, where every round
//     trip wakes two threads). The flag neither helps nor hurts there: six
//     interleaved A/B runs (-benchtime=20000x) of eventfd against
//     LoopWaker gave medians of 111 vs 95µs and 15.0 vs 15.7µs of CPU,
//     inside the scatter. A pipe costs 15-25% more CPU than an eventfd and
//     a second fd; one eventfd read drains any number of writes.
//   - Bursts sit in between: one wake-up per burst instead of one write per
//     item (13x fewer syscalls, 3x less CPU); the wall time is the thread
//     wake-up latency spread over the burst, which the load made noisy.
//   - What helps a mostly idle loop is not to sleep at once. Re-checking its
//     rings for ~6-8µs (100 yields) before Sleep cut ping-pong latency
//     50-70x and CPU per hand-off 30x, because sleeping and waking cost CPU
//     too; the price is up to that spin of CPU each time a loop runs dry,
//     which is how the Go scheduler's spinning threads trade. It needs no
//     change here: a loop may spin (polling its sockets with a zero
//     timeout) before it calls Sleep.
//   - A channel is fastest when both sides are goroutines, because the
//     runtime passes the processor to the receiver without waking a thread,
//     but a loop cannot block on a channel and in epoll_wait at once. So
//     event loops get Ring + LoopWaker. The processor pool, which is all
//     goroutines, gets Ring + WorkerWaker so that every hand-off shares one
//     queue, one back-pressure signal and one depth gauge. Against a
//     channel (BenchmarkWorkerHandoff, 4 workers, both runs) it is 2x
//     faster streaming (58-65 vs 112-124ns) and 1.3-2.5x slower in
//     ping-pong (528-889 vs 355-406ns), where its token costs a second
//     channel operation.
//
// The server's loops do not block in epoll_wait, though: they park in Go's
// network poller (poll.New says why), and a parked loop can be woken with
// no syscall at all, by expiring the deadline of its wait (wakeBy), which
// readies it on the producer's P. The same benchmark with a real Loop
// (2026-12-05, two runs each, same machine, quieter):
//
//	regime    Loop                     ns/op   cpu/op  eventfd syscalls/op
//	burst64   blocking, eventfd        606-678  608-645  0.05
//	          parked, eventfd          312-366  337-407  0.04
//	          parked, deadline         121      134-136  0
//	pingpong  blocking, eventfd        42.5µs   21.5µs   3.00 (with the wait)
//	          parked, eventfd          15.1µs   16.4µs   2.00
//	          parked, deadline          5.4µs    6.1µs   0
//
// So a sleeping loop is woken without a syscall per hand-off: the answer
// to Pane's open question, here, is the deadline, 2.8x faster than the
// eventfd per wake-up in wall time and in CPU. In the server, GET /hello
// through all three hand-offs (quartet serve --no-inline) at 10
// connections went from 3.23 to 2.88 syscalls per request on one core
// and from 4.64 to 3.43 on two, and from 13.7 to 12.5 µs (19.6 to 14.7)
// of server CPU per request (quartet bench compare --conns 10). The
// eventfd stays for a loop that blocks its thread (the load generator's),
// and for the server's while its workers are CPU-bound (LoopNudge's
// CPUBound): a loop readied at once then ran at every yield of theirs, in
// turns of a few items, and the scheduler's look at the network (or a
// nudge, once a millisecond) runs it with them all.
//
// Signals, Pane's other idea, would interrupt a loop in the middle of a
// read or writev with EINTR; nothing here needs them.

// Waker states. The loop owns the move to sleeping and back to running;
// producers only move sleeping to woken, and only one of them wins.
const (
	wakerRunning  uint32 = iota // the loop will check its rings before blocking
	wakerSleeping               // the loop is in (or about to enter) epoll_wait
	wakerWoken                  // one producer has written, or is writing, the eventfd
	wakerExpired                // one producer has expired the loop's wait instead (wakeBy)
	wakerClosed                 // Close was called; Wake is a no-op
)

// LoopWaker wakes one event loop (a reader or writer loop) that sleeps in
// epoll_wait, writing its eventfd only when the loop is, or is about to be,
// asleep: zero syscalls per hand-off while the loop is running.
//
// The loop (the consumer, one goroutine) follows this protocol every turn;
// Loop.Run is its implementation for every event loop in Quartet:
//
//	for {
//		drain rings; handle ready fds          // running: Wake costs no syscall
//		if !w.Sleep() { return }               // announce sleeping
//		if any ring non-empty || other work {  // the re-check: mandatory
//			w.Awake()
//			continue
//		}
//		events, _ := poller.Wait(events, timeout)
//		w.Awake()                              // running again; drains the eventfd if it was written
//		...                                    // the eventfd's event needs no handling
//	}
//
// Producers push to the loop's ring(s) first and call Wake after.
//
// Why no wake-up is lost (Dekker's pattern, the "store buffering" litmus
// test): the producer stores (the ring's enqueue position and the slot's
// seq, in Push) then loads (the waker state, in Wake); the loop stores (the
// state, in Sleep) then loads (the ring: Len or Pop, in the re-check). Go's
// sync/atomic operations are sequentially consistent, so in the single
// total order of these operations one side's store comes first and the
// other side's load sees it: either the producer sees "sleeping" and writes
// the eventfd, or the loop's re-check finds the item and does not block.
// Both missing each other would need each load to precede the other side's
// store, which is a cycle. (If the re-check uses Len, it can see a slot a
// producer has claimed but not yet filled; Pop then finds nothing and the
// loop goes round again, without a syscall, until the item is there.)
//
// Polling with a zero timeout instead of skipping epoll_wait after a
// re-check that found work is equally correct; what is not is any check
// made before Sleep standing in for the re-check (a shutdown flag, a
// "below the connection limit" condition): whatever a producer signals by
// calling Wake must be looked at again after Sleep.
//
// A producer that wins sleeping->woken may be descheduled before its write;
// the loop, woken by something else, may read the eventfd before the write
// lands. The loop therefore keeps count of writes it is owed (one per woken
// state it observes) and keeps reading on later Awake calls until they have
// all arrived, so a late write never leaves the fd readable forever (which
// would spin a level-triggered loop) nor is it confused with a new wake-up.
type LoopWaker struct {
	_ cpu.CacheLinePad
	// state is read by every producer's Wake and written by the loop twice
	// per sleep; it gets its own line so that the counter doesn't bounce it.
	state atomic.Uint32
	_     cpu.CacheLinePad
	// syscalls counts eventfd writes. Wake calls are not counted: every
	// producer would write one line on every hand-off, the cross-core
	// traffic the plain load in Wake exists to avoid.
	syscalls atomic.Uint64
	_        cpu.CacheLinePad

	fd int
	// expire, if set, is how Wake wakes the loop instead of writing the
	// eventfd: the loop parks in Go's network poller, and expiring its
	// wait's deadline readies it without a syscall (see wakeBy); unless
	// lazy reports true, when the eventfd lets the loop wait for the
	// scheduler's next look at the network.
	expire func()
	lazy   func() bool
	// owed is the number of eventfd writes producers have committed to
	// (by winning sleeping->woken) that the loop has not yet read. Loop only.
	owed  uint64
	reads uint64  // eventfd reads, for the hand-off benchmarks. Loop only.
	buf   [8]byte // read buffer, kept here so Awake does not allocate
}

// NewLoopWaker returns a waker with a fresh eventfd(EFD_NONBLOCK|EFD_CLOEXEC).
// Non-blocking, so that the loop's drain never blocks and a producer's write
// never blocks (the counter cannot realistically reach 2^64-1).
func NewLoopWaker() (*LoopWaker, error) {
	fd, err := newEventfd()
	if err != nil {
		return nil, err
	}
	return &LoopWaker{fd: fd}, nil
}

// Fd returns the eventfd. The loop adds it to its poller for reading
// (level- or edge-triggered); readable means woken. The event needs no
// handling of its own: Awake drains the fd.
func (w *LoopWaker) Fd() int { return w.fd }

// Wake makes sure the loop will look at its rings: it writes the eventfd if
// the loop is asleep and no other producer has done so yet, and does nothing
// else. Call it after pushing, from any goroutine.
func (w *LoopWaker) Wake() {
	// The plain load keeps the common case (loop running, or already woken)
	// to one read of a shared line; only a sleeping loop pays for the CAS.
	if w.state.Load() != wakerSleeping {
		return
	}
	if w.expire != nil && (w.lazy == nil || !w.lazy()) {
		if w.state.CompareAndSwap(wakerSleeping, wakerExpired) {
			w.expire()
		}
		return
	}
	if !w.state.CompareAndSwap(wakerSleeping, wakerWoken) {
		return
	}
	w.syscalls.Add(1)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1) // eventfd counters are host-endian
	for {
		_, err := poll.Write(w.fd, one[:])
		if err != unix.EINTR {
			// EAGAIN would mean the counter is saturated, which is awake
			// enough. Any other error means the fd was closed under us,
			// which Close's precondition rules out.
			return
		}
	}
}

// Sleep announces that the loop is about to block in epoll_wait. The caller
// must then re-check everything that could give it work (its rings, its
// shutdown flag) and, if there is any, call Awake instead of blocking. Sleep
// returns false when the waker has been closed: the loop must not block on
// a closed fd. Loop goroutine only.
func (w *LoopWaker) Sleep() bool {
	// The CAS is the store half of the Dekker pair (sequentially consistent
	// like every sync/atomic operation). It must not overwrite "closed":
	// a producer could then win sleeping->woken and write a closed fd.
	for {
		switch w.state.Load() {
		case wakerClosed:
			return false
		case wakerSleeping, wakerWoken, wakerExpired:
			return true // already announced (Sleep called twice)
		}
		if w.state.CompareAndSwap(wakerRunning, wakerSleeping) {
			return true
		}
	}
}

// wakeBy makes Wake call expire instead of writing the eventfd. The
// loop must then set its wait's deadline before it calls Sleep
// (poll.Poller.Drive does), so that the deadline a producer expires is not
// replaced after it: the Dekker pair above orders the producer's expire
// after Sleep, and Sleep after the deadline. Call it before the loop
// runs.
//
// Why: the eventfd costs a write on the producer's side and a read on
// the loop's, and the wake-up passes through the kernel's poller and Go's;
// expiring the deadline of a loop parked in Go's network poller readies
// it on the producer's P at the cost of a timer update.
//
// lazy, if set, is asked at each such wake-up whether the loop should be
// left to the scheduler's next look at the network instead (the eventfd),
// because the producers are CPU-bound: a loop readied at once then runs
// at every yield of theirs, in turns of a few items, where the scheduler
// (and LoopNudge, once a millisecond) would run it with them all.
// Measured on one core at 12,000 connections (/compute?n=100, closed
// loop), waking at once cost 4-10% of the throughput.
func (w *LoopWaker) wakeBy(expire func(), lazy func() bool) {
	w.expire, w.lazy = expire, lazy
}

// asleep reports whether the loop has announced sleep and not yet woken
// (a producer's Wake may have written the eventfd meanwhile). Any
// goroutine.
func (w *LoopWaker) asleep() bool {
	s := w.state.Load()
	return s == wakerSleeping || s == wakerWoken || s == wakerExpired
}

// Awake marks the loop running again: after epoll_wait returns, or instead
// of it when the re-check found work. If a producer wrote the eventfd (or
// committed to), Awake reads it, one syscall; otherwise it costs one atomic
// swap. Loop goroutine only.
func (w *LoopWaker) Awake() {
	if !w.state.CompareAndSwap(wakerSleeping, wakerRunning) {
		// Either a producer moved us to woken (it owes us a write) or the
		// waker was closed (leave that state alone).
		if w.state.CompareAndSwap(wakerWoken, wakerRunning) {
			w.owed++
		} else {
			w.state.CompareAndSwap(wakerExpired, wakerRunning)
		}
	}
	w.drain()
}

// drain reads the eventfd until every write the loop is owed has arrived or
// the read finds the counter empty (EAGAIN: a write is still on its way; a
// later Awake picks it up, and if the loop blocks first, the write wakes
// it). Loop goroutine only.
func (w *LoopWaker) drain() {
	for w.owed > 0 {
		w.reads++
		n, err := poll.Read(w.fd, w.buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 8 {
			return
		}
		got := binary.NativeEndian.Uint64(w.buf[:])
		if got >= w.owed {
			w.owed = 0
		} else {
			w.owed -= got
		}
	}
}

// Close closes the eventfd; it is idempotent. Call it from the loop
// goroutine (typically as Run returns), or once the loop has stopped.
//
// Wake calls that start after Close are no-ops. A producer that won the
// move to woken before Close may not have written yet, though, and if the
// fd were closed under it, its write could land in whatever file next got
// the same number. So Close first waits, yielding, for every write the loop
// is owed (such a producer is between a CAS and a write and does not block)
// and only then closes.
func (w *LoopWaker) Close() error {
	switch w.state.Swap(wakerClosed) {
	case wakerClosed:
		return nil
	case wakerWoken:
		w.owed++
	}
	for {
		w.drain()
		if w.owed == 0 {
			break
		}
		runtime.Gosched()
	}
	if err := unix.Close(w.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// Syscalls returns how many Wake calls wrote the eventfd: per hand-off,
// the syscall cost of waking the loop.
func (w *LoopWaker) Syscalls() uint64 { return w.syscalls.Load() }

// WorkerWaker parks and wakes the goroutines of a bounded worker pool (the
// processors) that consume one Ring. Wake costs one atomic load when no
// worker is parked (every processor busy: the common case under load), and
// one non-blocking channel send otherwise.
//
// The protocol is the same Dekker pair as LoopWaker's: a worker counts
// itself idle (an atomic add: store), then re-checks the ring (load); a
// producer pushes (store), then reads the idle count (load). Sequential
// consistency means that either the worker's re-check sees the item, or the
// producer sees the idle worker and sends a token that some parked worker
// will receive.
//
// Wake sends a token only while there are more idle workers than tokens in
// flight (sent, not yet taken): with a stream of pushes to a pool of idle
// workers, one token per push would pile up and wake every worker for
// nothing. Skipping is safe: a token in flight is taken by a worker that
// then pops until the ring is empty, and it decrements pending after the
// producer's load saw it, so in the total order of atomics the pop comes
// after the push. A token can still outlive its purpose (its worker found
// the item in its re-check); a later Park then returns early, which costs a
// spurious pop but never a lost item.
type WorkerWaker struct {
	_       cpu.CacheLinePad
	idle    atomic.Int64 // workers inside Park
	pending atomic.Int64 // tokens sent and not yet taken
	_       cpu.CacheLinePad
	tokens  chan struct{}
}

// NewWorkerWaker returns a waker for a pool of the given number of workers
// (at least 1).
func NewWorkerWaker(workers int) *WorkerWaker {
	if workers < 1 {
		workers = 1
	}
	return &WorkerWaker{tokens: make(chan struct{}, workers)}
}

// Wake wakes one parked worker, if any. Call it after pushing to the ring.
func (w *WorkerWaker) Wake() {
	if w.idle.Load() <= w.pending.Load() {
		return // every idle worker already has a token coming, or none is idle
	}
	w.pending.Add(1)
	select {
	case w.tokens <- struct{}{}:
	default:
		// Full: a token per worker is already queued.
		w.pending.Add(-1)
	}
}

// Park blocks the calling worker until there may be work. ready reports
// whether there is work (typically: the ring is non-empty); Park calls it
// after announcing the worker idle and returns at once if it is true, so a
// worker must not go to Park without having found the ring empty first and
// must pop again after Park returns true (and may find nothing: wake-ups can
// be spurious). Park returns false once done is closed.
func (w *WorkerWaker) Park(ready func() bool, done <-chan struct{}) bool {
	w.idle.Add(1)
	defer w.idle.Add(-1)
	if ready() {
		return true
	}
	select {
	case <-w.tokens:
		w.pending.Add(-1)
		return true
	case <-done:
		return false
	}
}
