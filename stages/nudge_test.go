//go:build linux

package stages

import (
	"context"
	"runtime"
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
			first := n.epoch.Add(time.Hour)
			if n.Nudge(first, 0) {
				t.Fatal("a loop with nothing queued was nudged")
			}
			if tt.closed {
				nl.close()
			}
			if tt.write {
				if _, err := unix.Write(nl.peer, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			if got := n.Nudge(first.Add(tt.since), tt.ran); got != tt.wantNudged {
				t.Fatalf("Nudge = %v, want %v", got, tt.wantNudged)
			}
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
			for ; yields < 100 && nl.heard.Load() == 0; yields++ {
				runtime.Gosched()
			}
			if nl.heard.Load() != 1 {
				t.Fatalf("the nudged loop heard %d events after the nudger yielded %d times, want 1", nl.heard.Load(), yields)
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
			if tt.write {
				if _, err := unix.Write(nl.peer, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			if got := n.Nudge(n.epoch.Add(time.Hour), 0); got != tt.write {
				t.Fatalf("Nudge = %v, want %v", got, tt.write)
			}
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
			if want := map[bool]int32{true: 1, false: 0}[tt.write || tt.lateWrite]; nl.heard.Load() != want {
				t.Fatalf("the loop heard %d events when AwaitLoops returned, want %d", nl.heard.Load(), want)
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
			if got := n.backstops.Load(); got != 0 {
				t.Fatalf("%d parks ended by the backstop, not by the loop's turn", got)
			}
			if got := n.owed.Load(); got != 0 {
				t.Fatalf("%d loops owed after the loop ran, want 0", got)
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
