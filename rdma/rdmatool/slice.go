package rdmatool

import (
	"runtime"
	"time"
)

// A busy-polling goroutine spends nearly all its time in cgo calls
// (ibv_poll_cq, and on siw ibv_post_send, whose doorbell syscall sends a
// whole 64 KiB Write before it returns). Once it has kept one scheduler
// time slice for 10 ms, the runtime's sysmon thread takes its P at every
// tick that finds it inside such a call, and each take resets sysmon's
// sleep to 20 µs: sysmon then wakes thousands of times a second, and on a
// machine whose CPUs the pollers fill, each wake preempts one of them. In
// the guest (siw0, 1,000 x 64 KiB Writes, pinned) the client's sysmon
// thread switched 470-1,215 times per run against about 200 when the
// whole loop ran inside one C call, and the polling thread was preempted
// 780-1,010 times against 110-240; giving up the slice every few
// milliseconds kept both under 400, and the median Write bandwidth of
// the rounds of one boot went from 225 to 277 MiB/s (and 219 to 297 in
// another; perftest 365 and 256). So the poller yields before sysmon's
// 10 ms are up.
//
// A yield of a goroutine locked to its thread costs a hand-off of the P
// to another thread and back, so it is done once per slice, not more.
const (
	sliceLen = 5 * time.Millisecond
	// sliceCheck is how much work (an empty poll counts 1, a post
	// slicePost) passes between looks at the clock, which on an HPET
	// clocksource costs about 1 µs a read. 256 is a few hundred µs of
	// polling, or eight posts: on siw a 64 KiB Write's post takes about
	// 200 µs.
	sliceCheck = 256
	slicePost  = sliceCheck / 8
)

// sliceKeeper makes a busy-polling goroutine yield once every sliceLen.
type sliceKeeper struct {
	now    func() time.Time // time.Now; a fake in tests
	yield  func()           // runtime.Gosched; a counter in tests
	start  time.Time        // when the current slice began
	work   int              // weighted work since the last clock read
	yields int
}

func newSliceKeeper() *sliceKeeper {
	return &sliceKeeper{now: time.Now, yield: runtime.Gosched, start: time.Now()}
}

// did records work of weight w and yields if the slice is over.
func (k *sliceKeeper) did(w int) {
	if k.work += w; k.work < sliceCheck {
		return
	}
	k.work = 0
	if t := k.now(); t.Sub(k.start) >= sliceLen {
		k.yield()
		k.yields++
		k.start = k.now()
	}
}
