//go:build linux

package stages

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/internal/poll"
)

// queueLoop is a stage in its smallest form: a ring that producers push to
// and a Loop that drains it.
type queueLoop struct {
	*Loop
	ring    *Ring[int]
	handle  func(int)
	turn    func(now time.Time, stopping bool) (time.Duration, bool)
	drained atomic.Int64
	// maxTaken is the most Drain took in one call.
	maxTaken int
}

func newQueueLoop(t *testing.T, capacity int, pending bool, o LoopOptions) *queueLoop {
	t.Helper()
	q := &queueLoop{ring: NewRing[int](capacity), handle: func(int) {}}
	q.turn = func(_ time.Time, stopping bool) (time.Duration, bool) {
		return -1, stopping && q.ring.Len() == 0
	}
	h := LoopHooks{
		Drain: func(budget int) int {
			n := 0
			for n < budget {
				v, ok := q.ring.Pop()
				if !ok {
					break
				}
				q.handle(v)
				n++
			}
			q.maxTaken = max(q.maxTaken, n)
			q.drained.Add(int64(n))
			return n
		},
		Turn: func(now time.Time, stopping bool) (time.Duration, bool) { return q.turn(now, stopping) },
	}
	if pending {
		h.Pending = func() bool { return q.ring.Len() > 0 }
	}
	l, err := NewLoop(h, o)
	if err != nil {
		t.Fatal(err)
	}
	q.Loop = l
	t.Cleanup(func() { l.Close() })
	return q
}

// run starts Run and returns a channel that gets its result.
func (q *queueLoop) run(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(lostWakeupTimeout):
		t.Fatalf("Run did not return within %v", lostWakeupTimeout)
		return nil
	}
}

// Producers hand items to a Loop that sleeps between them; none may be
// stranded in the queue while the loop sleeps.
func TestLoopNoLostHandoff(t *testing.T) {
	for _, tc := range []struct {
		name      string
		producers int
		items     int // per producer
		burst     int // items pushed before waiting for them
		budget    int
	}{
		{"ping-pong/1-producer", 1, 3000, 1, 0},
		{"ping-pong/4-producers", 4, 800, 1, 0},
		{"bursts/4-producers", 4, 6400, 64, 0},
		{"bursts/budget-5", 4, 6400, 64, 5},
	} {
		// Parked, a producer wakes the loop by expiring its wait's
		// deadline; blocking, by writing the eventfd.
		for _, mode := range []string{"parked", "blocking"} {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				total := tc.producers * tc.items
				processed := make([]atomic.Bool, total)
				q := newQueueLoop(t, 256, true, LoopOptions{Blocking: mode == "blocking"})
				q.SetDrainBudget(tc.budget)
				q.handle = func(v int) {
					if processed[v].Swap(true) {
						t.Errorf("item %d delivered twice", v)
					}
				}
				done := q.run(context.Background())
				var wg sync.WaitGroup
				for p := range tc.producers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						next := p * tc.items
						for next < (p+1)*tc.items {
							first := next
							for range tc.burst {
								if !waitFor(func() bool { q.Wake(); return q.ring.Push(next) }) {
									t.Errorf("producer %d: ring full for %v: lost wake-up", p, lostWakeupTimeout)
									return
								}
								q.Wake()
								next++
							}
							if !waitFor(func() bool { return processed[next-1].Load() }) {
								t.Errorf("producer %d: items %d..%d not consumed after %v: lost wake-up", p, first, next-1, lostWakeupTimeout)
								return
							}
						}
					}()
				}
				wg.Wait()
				q.Stop()
				if err := wait(t, done); err != nil {
					t.Fatalf("Run: %v", err)
				}
				if n := q.drained.Load(); n != int64(total) {
					t.Fatalf("drained %d items, want %d", n, total)
				}
				if tc.budget > 0 && q.maxTaken > tc.budget {
					t.Fatalf("Drain took %d items in one turn, budget %d", q.maxTaken, tc.budget)
				}
			})
		}
	}
}

// The re-check rules, each played deterministically from inside Turn: a
// hand-off or a Stop that comes after Turn looked, while the loop is still
// running (so Wake writes no eventfd), must still be seen before the loop
// blocks.
func TestLoopRecheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		// late runs inside the first Turn, after it has decided to wait
		// without limit.
		late    func(q *queueLoop)
		pending bool
		budget  int
		// prefill is pushed before Run.
		prefill int
	}{
		{"push after Turn, seen by Pending", func(q *queueLoop) { q.ring.Push(1); q.Wake() }, true, 0, 0},
		{"Stop after Turn", func(q *queueLoop) { q.Stop() }, false, 0, 0},
		// No Pending hook: a Drain that used its whole budget must poll
		// again rather than sleep on the rest of the queue.
		{"queue longer than the budget", func(*queueLoop) {}, false, 3, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueueLoop(t, 16, tc.pending, LoopOptions{})
			q.SetDrainBudget(tc.budget)
			for i := range tc.prefill {
				q.ring.Push(i)
			}
			turns := 0
			q.turn = func(_ time.Time, stopping bool) (time.Duration, bool) {
				turns++
				if turns == 1 {
					tc.late(q)
				}
				if stopping || q.drained.Load() == int64(max(tc.prefill, 1)) {
					return 0, true
				}
				return -1, false
			}
			done := q.run(context.Background())
			if err := wait(t, done); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if sys := q.waker.Syscalls(); sys != 0 {
				t.Errorf("Wake wrote the eventfd %d times; the loop never slept, so want 0", sys)
			}
		})
	}
}

// Events reach Event with their tokens; the waker's never do.
func TestLoopDispatchesByToken(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	want := poll.MakeToken(poll.KindConn, 7, 3)
	var got []poll.Event
	var l *Loop
	l, err = NewLoop(LoopHooks{
		Turn: func(_ time.Time, stopping bool) (time.Duration, bool) {
			return -1, stopping || len(got) > 0
		},
		Event: func(ev poll.Event) {
			got = append(got, ev)
		},
	}, LoopOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Poller().Add(fds[0], poll.Readable|poll.EdgeTriggered, want); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	// A wake-up first: its event must not reach the stage.
	l.Wake()
	if _, err := unix.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != 1 || got[0].Token != want || !got[0].Readable() {
		t.Fatalf("events %v, want one readable event with token %#x", got, uint64(want))
	}
}

// Busy counts the turns' work and not the time parked in Wait.
func TestLoopBusy(t *testing.T) {
	const (
		burn  = 30 * time.Millisecond
		idle  = 40 * time.Millisecond
		turns = 3
	)
	for _, o := range []LoopOptions{{}, {Solo: true, Blocking: true}} {
		n := 0
		var burned time.Duration
		l, err := NewLoop(LoopHooks{
			Turn: func(now time.Time, _ bool) (time.Duration, bool) {
				if n++; n > turns {
					return 0, true
				}
				for start := time.Now(); time.Since(start) < burn; {
				}
				burned += burn
				return idle, false
			},
		}, o)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		wall := time.Since(start)
		l.Close()
		busy := l.Busy()
		if busy < burned || busy > wall-turns*idle {
			t.Errorf("%+v: busy %v over %v of wall time; want at least the %v burned and at most the wall time less %d waits of %v",
				o, busy, wall, burned, turns, idle)
		}
	}
}

// Stop works before Run, during it, and after it; Close releases the fds
// once however often it is called; a Solo loop has no waker to release.
func TestLoopStopAndClose(t *testing.T) {
	before := fdtest.Count(t)
	q := newQueueLoop(t, 4, true, LoopOptions{})
	if got := fdtest.Count(t); got != before+2 {
		t.Fatalf("NewLoop opened %d fds, want 2 (poller, waker)", got-before)
	}
	q.Stop()
	if err := wait(t, q.run(context.Background())); err != nil {
		t.Fatalf("Run after Stop: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	q.Stop() // after Close: no write into a closed eventfd
	if got := fdtest.Count(t); got != before {
		t.Fatalf("%d fds left open after Close", got-before)
	}

	// ctx's end stops a sleeping loop.
	q = newQueueLoop(t, 4, true, LoopOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := q.run(ctx)
	time.Sleep(10 * time.Millisecond) // let it sleep; if not yet, the same
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	q.Close()

	l, err := NewLoop(LoopHooks{Turn: func(time.Time, bool) (time.Duration, bool) { return 0, true }}, LoopOptions{Solo: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Stop() // no waker: just the flag
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fdtest.Count(t); got != before {
		t.Fatalf("%d fds left open after closing a solo loop", got-before)
	}
}

func TestNewLoopNeedsTurn(t *testing.T) {
	if _, err := NewLoop(LoopHooks{}, LoopOptions{}); err == nil {
		t.Fatal("NewLoop without Turn succeeded")
	}
}

// A poller that fails under a running loop ends Run with its error.
func TestLoopPollerClosed(t *testing.T) {
	var l *Loop
	l, err := NewLoop(LoopHooks{Turn: func(time.Time, bool) (time.Duration, bool) {
		l.poller.Close()
		return 0, false
	}}, LoopOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Run(context.Background()); !errors.Is(err, poll.ErrClosed) {
		t.Fatalf("Run: %v, want poll.ErrClosed", err)
	}
}

// A loop that is stopping but not yet done (a reader waiting for its last
// connections to come back from the writers) sleeps between turns like any
// other: the re-check asks whether Stop is new, not whether it was called.
func TestLoopStoppingSleeps(t *testing.T) {
	q := newQueueLoop(t, 4, true, LoopOptions{})
	var turns atomic.Int64
	var release atomic.Bool
	q.turn = func(_ time.Time, stopping bool) (time.Duration, bool) {
		turns.Add(1)
		return -1, stopping && release.Load()
	}
	done := q.run(context.Background())
	q.Stop()
	// However slow the machine, a loop spinning with a zero timeout would
	// take far more than a handful of turns in this time.
	time.Sleep(50 * time.Millisecond)
	if n := turns.Load(); n > 4 {
		t.Errorf("%d turns while stopping with nothing to do, want a few", n)
	}
	release.Store(true)
	q.Notify()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Counts has the turns, the hand-offs Drain took, and the turns it took
// its whole budget in: what the batching controller is fed.
func TestLoopCounts(t *testing.T) {
	queue := []int{7, 7, 2, 0} // items waiting at each turn's drain
	turn := 0
	l, err := NewLoop(LoopHooks{
		Drain: func(budget int) int { return min(budget, queue[turn]) },
		Turn: func(time.Time, bool) (time.Duration, bool) {
			turn++
			return 0, turn == len(queue)
		},
	}, LoopOptions{Solo: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.SetDrainBudget(4)
	if err := l.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := LoopCounts{Turns: 4, Taken: 4 + 4 + 2, Full: 2}
	if got := l.Counts(); got.Turns != want.Turns || got.Taken != want.Taken || got.Full != want.Full || got.Busy <= 0 {
		t.Errorf("counts %+v, want %+v and some busy time", got, want)
	}
}

// Now is the turn's clock: Turn sees the time it was passed, and the
// events of a Wait that slept see a clock read after the sleep, not the
// one from before it (which would date every event after an idle spell
// by the length of the spell).
func TestLoopNowIsTheTurnsClock(t *testing.T) {
	for _, o := range []LoopOptions{{}, {Blocking: true}} {
		efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(efd)
		var l *Loop
		var turnNow, eventNow time.Time
		var turnMismatch bool
		got := make(chan struct{})
		l, err = NewLoop(LoopHooks{
			Turn: func(now time.Time, stopping bool) (time.Duration, bool) {
				turnMismatch = turnMismatch || !l.Now().Equal(now)
				turnNow = now
				if stopping || !eventNow.IsZero() {
					return 0, true
				}
				return time.Second, false
			},
			Event: func(poll.Event) {
				eventNow = l.Now()
				var b [8]byte
				unix.Read(efd, b[:])
				close(got)
			},
		}, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Poller().Add(efd, poll.Readable, poll.MakeToken(poll.KindConn, 0, 1)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- l.Run(context.Background()) }()
		time.Sleep(100 * time.Millisecond) // the loop is asleep in Wait
		signalled := time.Now()
		unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		<-got
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		l.Close()
		if turnMismatch {
			t.Errorf("%+v: Now differed from the time Turn was given", o)
		}
		if eventNow.Before(signalled) {
			t.Errorf("%+v: the event after a sleep saw Now %v before it was signalled", o, signalled.Sub(eventNow))
		}
		if turnNow.Before(eventNow) {
			t.Errorf("%+v: the next turn's clock went backwards", o)
		}
	}
}
