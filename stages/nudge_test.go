//go:build linux

package stages

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// A loop parked in Go's network poller with events queued is run by the
// nudger's next yield, though the nudger never stops being runnable (on
// one P the scheduler would poll the network only from sysmon, 10 ms on);
// a sleeping loop with nothing queued is left alone, a closed loop is no
// longer looked at, and the loops are looked at once per nudgeEvery.
func TestLoopNudge(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	tests := []struct {
		name       string
		write      bool // a byte for the loop before the nudge
		closed     bool // the loop closed (and so gone from the nudge) first
		since      time.Duration
		ran        time.Duration // the nudger's run of work before it
		wantNudged bool
	}{
		{name: "events queued", write: true, since: nudgeEvery, wantNudged: true},
		{name: "nothing queued", since: nudgeEvery},
		// Three 100 µs handlers back to back, then the yield.
		{name: "looked at too recently", write: true, since: nudgeEvery / 2, ran: 300 * time.Microsecond},
		// One handler of 1 ms of compute (0.88 ms on the CPU), then the
		// yield: every such yield looks, or a loop waits two handlers.
		{name: "looked at recently, but after a long handler", write: true, since: 880 * time.Microsecond, ran: 880 * time.Microsecond, wantNudged: true},
		// Handlers that block make long runs too, thousands a second:
		// looked at no more often than every longRun.
		{name: "after a long run, looked at too recently", write: true, since: 300 * time.Microsecond, ran: 1200 * time.Microsecond},
		{name: "loop closed", write: true, closed: true, since: nudgeEvery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewLoopNudge()
			nl := startNudgeLoop(t, n)
			heard := nl.retryNudge(tt.wantNudged, func(attempt int) bool {
				first := n.epoch.Add(time.Duration(attempt+1) * time.Hour)
				if n.Nudge(first, 0) {
					t.Fatal("a loop with nothing queued was nudged")
				}
				if tt.closed {
					nl.close()
				}
				if tt.write {
					nl.write()
				}
				return n.Nudge(first.Add(tt.since), tt.ran)
			})
			if !tt.wantNudged {
				return
			}
			// Readied next to run on this P: a yield or two runs its turn
			// (the expired wait, then the poll that takes the event). A
			// few more may go first (the scheduler takes the global queue
			// every 61st turn; GC workers, under -race often: CI once saw
			// three yields not do), but a loop left parked would wait
			// for sysmon's poll, 10 ms, and 100 yields take microseconds.
			yields := 0
			for ; yields < 100 && nl.heard.Load() == heard; yields++ {
				runtime.Gosched()
			}
			// A loop that has woken but not yet heard the byte did get its
			// turn: the OS took its thread in the poll that fetches the
			// event (on a loaded host), and the P went on to the nudger.
			// Only a loop still parked was left for sysmon.
			if nl.heard.Load() == heard && nl.l.waker.asleep() {
				t.Fatalf("the nudged loop was still parked after the nudger yielded %d times", yields)
			}
			nl.awaitHeard(heard + 1)
			if got := nl.heard.Load() - heard; got != 1 {
				t.Fatalf("the nudged loop heard %d events, want 1", got)
			}
			if n.Nudged() != 1 {
				t.Fatalf("Nudged = %d, want 1", n.Nudged())
			}
		})
	}
}

// A Nudge that finds a loop asleep with events queued counts it owed a
// turn, and a worker about to take a request waits in AwaitLoops until
// the loop has run instead of starting one ahead of it: one yield when
// the loop is next to run (its event handled by then), a park (one P)
// when the yield was not enough, nothing when nothing is owed; and a loop
// that closes while marked owed leaves nothing owed behind (or every
// later worker would wait in vain).
func TestLoopNudgeAwaitLoops(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	tests := []struct {
		name       string
		write      bool // a byte for the loop before the nudge
		closeOwed  bool // close the loop while it is marked owed
		lateWrite  bool // mark the loop owed, and write only while AwaitLoops yields
		wantYields uint64
		wantParks  uint64 // at least; never more than 1
	}{
		{name: "nothing owed: no yield"},
		{name: "owed: one yield runs the loop", write: true, wantYields: 1},
		{name: "closed while marked owed: nothing left owed", write: true, closeOwed: true},
		// Owed but in no run queue yet (its events come while the worker
		// yields), as a loop queued behind the worker would look to it:
		// one yield is not enough, and on one P the worker parks, off
		// every queue, until the loop has run.
		{name: "owed, not run after the yield: parks until its turn", lateWrite: true, wantYields: 1, wantParks: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewLoopNudge()
			nl := startNudgeLoop(t, n)
			l := nl.l
			// Read before the Nudge: its syscalls may hand the P on.
			waitedBefore := runQueueWait(t)
			heard := nl.retryNudge(tt.write, func(attempt int) bool {
				if tt.write {
					nl.write()
				}
				return n.Nudge(n.epoch.Add(time.Duration(attempt+1)*time.Hour), 0)
			})
			if tt.lateWrite {
				l.owedTurn.Store(true)
				n.owed.Add(1)
				go unix.Write(nl.peer, []byte("x")) // runs at AwaitLoops' yield
			}
			if tt.closeOwed {
				// A Nudge that looked at the loop just before it last woke
				// can mark it owed after its last word that it ran, and a
				// loop retired then never wakes again: as that Nudge would
				// leave it, once Run has returned.
				nl.halt()
				if l.owedTurn.CompareAndSwap(false, true) {
					n.owed.Add(1)
				}
				nl.close()
				if got := n.owed.Load(); got != 0 {
					t.Fatalf("%d loops owed after the owed loop closed, want 0", got)
				}
				return
			}
			// No yield first: as a worker ahead of the loop in the run
			// queue, AwaitLoops itself must give the loop its turn.
			n.AwaitLoops()
			delayed := runQueueWait(t) - waitedBefore
			// The loop's word that it ran comes as it wakes, before it
			// fetches its events: what AwaitLoops waits for is that word.
			if got := n.owed.Load(); got != 0 {
				t.Fatalf("%d loops owed when AwaitLoops returned, want 0", got)
			}
			// On a loaded host the OS may take the loop's thread in that
			// fetch, and the P go back to this worker first.
			want := map[bool]int32{true: 1, false: 0}[tt.write || tt.lateWrite]
			nl.awaitHeard(heard + want)
			if got := nl.heard.Load() - heard; got != want {
				t.Fatalf("the loop heard %d events after AwaitLoops returned, want %d", got, want)
			}
			if got := n.waits.Load(); got != tt.wantYields {
				t.Fatalf("AwaitLoops yielded %d times, want %d", got, tt.wantYields)
			}
			// One yield is all AwaitLoops needs when the loop is next to
			// run, but the scheduler may put a turn of the global queue
			// or a GC worker first, and then it parks: at most once.
			if got := n.parks.Load(); got > 1 || got < tt.wantParks {
				t.Fatalf("AwaitLoops parked %d times, want %d (at most 1)", got, tt.wantParks)
			}
			// Unless the OS kept the process's threads from a CPU for as
			// long as a park's bound: on a loaded host the backstop may
			// then rightly go first.
			if got := n.backstops.Load(); got != 0 {
				if delayed < awaitLoopFor {
					t.Fatalf("%d parks ended by the backstop, not by the loop's turn", got)
				}
				t.Logf("%d parks ended by the backstop; the process's threads waited %v for a CPU meanwhile", got, delayed)
			}
			// And the next worker back from a yield does not yield again.
			n.AwaitLoops()
			if got := n.waits.Load(); got != tt.wantYields {
				t.Fatalf("AwaitLoops yielded %d times in all after the loop ran, want %d", got, tt.wantYields)
			}
		})
	}
}

// nudgeLoop is a running Loop joined to a LoopNudge, reading one end of
// a socket pair: a write to peer is an event for it.
type nudgeLoop struct {
	l     *Loop
	peer  int
	heard atomic.Int32 // events the loop has handled
	t     *testing.T
	done  chan error
	stop  context.CancelFunc
	// halted and closed make halt and close idempotent (test goroutine).
	halted, closed bool
}

// halt stops the loop and waits until Run has returned.
func (nl *nudgeLoop) halt() {
	if !nl.halted {
		nl.halted = true
		nl.stop()
		wait(nl.t, nl.done)
	}
}

// close halts the loop and closes it.
func (nl *nudgeLoop) close() {
	nl.halt()
	if !nl.closed {
		nl.closed = true
		nl.l.Close()
	}
}

// retryNudge calls try, which writes for the loop and nudges it, until
// its Nudge reports want, and returns the events the loop had heard before
// the attempt that did. The test's goroutine can lose its P in the write
// (sysmon hands a P on when a syscall is slow, as a loaded CI host makes
// it), and the loop then runs on its own before the Nudge looks: nothing
// is left for it to find. Only a loop seen to have heard the byte excuses
// the miss, and only five times.
func (nl *nudgeLoop) retryNudge(want bool, try func(attempt int) bool) int32 {
	nl.t.Helper()
	heard := nl.heard.Load()
	for attempt := 0; ; attempt++ {
		got := try(attempt)
		if got == want {
			return heard
		}
		if !want || attempt == 4 || !nl.wokeOnItsOwn(heard) {
			nl.t.Fatalf("Nudge = %v, want %v (attempt %d)", got, want, attempt+1)
		}
		heard = nl.heard.Load()
	}
}

// write writes a byte for the loop: an event for it.
func (nl *nudgeLoop) write() {
	nl.t.Helper()
	if _, err := unix.Write(nl.peer, []byte("x")); err != nil {
		nl.t.Fatal(err)
	}
}

// wokeOnItsOwn reports whether the loop, having heard heard events, hears
// one more and sleeps again within a second: a loop that woke without a
// Nudge, whose byte a Nudge could no longer find queued.
func (nl *nudgeLoop) wokeOnItsOwn(heard int32) bool {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if nl.heard.Load() > heard && nl.l.waker.asleep() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// awaitHeard waits up to a second for the loop to have heard want events.
func (nl *nudgeLoop) awaitHeard(want int32) {
	for deadline := time.Now().Add(time.Second); nl.heard.Load() < want && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
}

// runQueueWait is how long the process's threads have waited, in all,
// runnable for a CPU (/proc/PID/task/TID/schedstat, second field); zero
// where the kernel does not keep it (no CONFIG_SCHED_INFO), which
// excuses no backstop.
func runQueueWait(t *testing.T) time.Duration {
	t.Helper()
	stats, _ := filepath.Glob("/proc/self/task/*/schedstat")
	var wait time.Duration
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // a thread gone meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			t.Fatalf("%s: %q", p, b)
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		wait += time.Duration(ns)
	}
	return wait
}

// startNudgeLoop starts a loop joined to n and waits until it sleeps; the
// test's cleanup closes it and the socket pair.
func startNudgeLoop(t *testing.T, n *LoopNudge) *nudgeLoop {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fds[0])
		unix.Close(fds[1])
	})
	nl := &nudgeLoop{peer: fds[1], t: t, done: make(chan error, 1)}
	nl.l, err = NewLoop(LoopHooks{
		Turn: func(_ time.Time, stopping bool) (time.Duration, bool) { return -1, stopping },
		Event: func(poll.Event) {
			var b [8]byte
			unix.Read(fds[0], b[:])
			nl.heard.Add(1)
		},
	}, LoopOptions{Nudge: n})
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.l.Poller().Add(fds[0], poll.Readable|poll.EdgeTriggered, poll.MakeToken(poll.KindConn, 1, 0)); err != nil {
		nl.l.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	nl.stop = cancel
	go func() { nl.done <- nl.l.Run(ctx) }()
	t.Cleanup(func() { nl.close() })
	for !nl.l.waker.asleep() {
		runtime.Gosched()
	}
	return nl
}
