//go:build linux

package stages

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/internal/poll"
)

// lostWakeupTimeout is how long a hand-off may take before the tests call it
// lost. Generous: -race and a 2-core machine make single hand-offs slow.
const lostWakeupTimeout = 5 * time.Second

// epollLoop is a minimal event loop in the shape Loop.Run takes: a
// poller watching only the waker's eventfd, blocking its thread as the
// waker's measurements did, draining one ring, following LoopWaker's
// Sleep/re-check/Awake protocol. (loop_test.go tests Loop itself.)
type epollLoop struct {
	t        testing.TB
	poller   *poll.Poller
	w        *LoopWaker
	ring     *Ring[int]
	stop     atomic.Bool
	timeout  time.Duration // epoll_wait timeout; negative blocks
	handle   func(int)
	stranded atomic.Int64 // Wait timeouts that left items in the ring: lost wake-ups
	sleeps   atomic.Int64 // epoll_wait calls
}

func newEpollLoop(t testing.TB, capacity int, handle func(int)) *epollLoop {
	t.Helper()
	w, err := NewLoopWaker()
	if err != nil {
		t.Fatal(err)
	}
	p, err := poll.NewBlocking()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(w.Fd(), poll.Readable, wakerToken); err != nil {
		t.Fatal(err)
	}
	return &epollLoop{t: t, poller: p, w: w, ring: NewRing[int](capacity), timeout: -1, handle: handle}
}

func (l *epollLoop) close() {
	l.poller.Close()
	l.w.Close()
}

// run is the consumer loop. It returns when stop is set (and Wake called).
func (l *epollLoop) run() {
	events := make([]poll.Event, 0, 8)
	for {
		for {
			v, ok := l.ring.Pop()
			if !ok {
				break
			}
			l.handle(v)
		}
		if !l.w.Sleep() {
			return
		}
		// The re-check: Sleep's store is visible to producers before these loads.
		if l.ring.Len() > 0 || l.stop.Load() {
			l.w.Awake()
			if l.stop.Load() {
				return
			}
			continue
		}
		l.sleeps.Add(1)
		var err error
		start := time.Now()
		events, err = l.poller.Wait(events, l.timeout)
		if err != nil {
			l.t.Errorf("Wait: %v", err)
			return
		}
		// A Wait cut short by a signal (EINTR) also returns no events,
		// possibly with a producer's item pushed and its eventfd write on
		// the way: only a Wait that ran to its timeout is a lost wake-up.
		if len(events) == 0 && l.timeout > 0 && time.Since(start) >= l.timeout && l.ring.Len() > 0 {
			l.stranded.Add(1)
		}
		l.w.Awake()
	}
}

// waitFor spins (yielding) until cond holds or the lost-wake-up timeout passes.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(lostWakeupTimeout)
	for i := 0; !cond(); i++ {
		if i%64 == 0 && time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
	}
	return true
}

func TestLoopWakerNoLostWakeup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		producers int
		rounds    int
		burst     int // items pushed per round before waiting for them all
	}{
		// One item at a time: the loop is asleep at nearly every hand-off.
		{"ping-pong/1-producer", 1, 5000, 1},
		{"ping-pong/4-producers", 4, 1500, 1},
		// Bursts: the loop is mostly running; wake-ups race with Sleep.
		{"bursts/4-producers", 4, 300, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := tc.producers * tc.rounds * tc.burst
			processed := make([]atomic.Bool, total)
			l := newEpollLoop(t, 256, func(v int) {
				if processed[v].Swap(true) {
					t.Errorf("item %d delivered twice", v)
				}
			})
			// The watchdog timeout turns a lost wake-up into a counted
			// failure rather than a hung test.
			l.timeout = lostWakeupTimeout
			loopDone := make(chan struct{})
			go func() { defer close(loopDone); l.run() }()
			var wakes atomic.Uint64
			wake := func() { wakes.Add(1); l.w.Wake() }

			var wg sync.WaitGroup
			for p := 0; p < tc.producers; p++ {
				wg.Add(1)
				go func(p int) {
					defer wg.Done()
					next := p * tc.rounds * tc.burst
					for r := 0; r < tc.rounds; r++ {
						first := next
						for i := 0; i < tc.burst; i++ {
							// Full: the loop must drain it; Wake again in case
							// it is asleep with a full ring (a lost wake-up).
							if !waitFor(func() bool { wake(); return l.ring.Push(next) }) {
								t.Errorf("producer %d: ring full for %v: lost wake-up", p, lostWakeupTimeout)
								return
							}
							wake()
							next++
						}
						last := next - 1
						if !waitFor(func() bool { return processed[last].Load() }) {
							t.Errorf("producer %d: items %d..%d not consumed after %v: lost wake-up", p, first, last, lostWakeupTimeout)
							return
						}
					}
				}(p)
			}
			wg.Wait()
			l.stop.Store(true)
			wake()
			<-loopDone
			for v := range processed {
				if !processed[v].Load() {
					t.Fatalf("item %d never delivered", v)
				}
			}
			if n := l.stranded.Load(); n > 0 {
				t.Fatalf("%d epoll_wait timeouts with items queued: lost wake-ups", n)
			}
			syscalls := l.w.Syscalls()
			if calls := wakes.Load(); syscalls > calls || calls < uint64(total) {
				t.Fatalf("%d Wake calls wrote the eventfd %d times for %d items", calls, syscalls, total)
			}
			// Every write the loop was owed must have been read: a stale
			// readable eventfd would spin a level-triggered loop.
			if !waitFor(func() bool { l.w.Awake(); return l.w.owed == 0 }) {
				t.Fatalf("loop still owed %d eventfd writes", l.w.owed)
			}
			if evs, _ := l.poller.Wait(nil, 0); len(evs) != 0 {
				t.Fatal("eventfd still readable after the loop drained it")
			}
			t.Logf("%d items, %d epoll_waits, %d eventfd writes", total, l.sleeps.Load(), syscalls)
			l.close()
		})
	}
}

func TestLoopWakerNoSyscallWhileRunning(t *testing.T) {
	w, err := NewLoopWaker()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 100; i++ {
		w.Wake()
	}
	if sys := w.Syscalls(); sys != 0 {
		t.Fatalf("running loop: %d syscalls for 100 wakes, want 0", sys)
	}
	// Asleep: only the first of many producers writes.
	if !w.Sleep() {
		t.Fatal("Sleep on an open waker returned false")
	}
	for i := 0; i < 100; i++ {
		w.Wake()
	}
	if sys := w.Syscalls(); sys != 1 {
		t.Fatalf("sleeping loop: %d syscalls for 100 wakes, want 1", sys)
	}
	w.Awake()
	if w.owed != 0 {
		t.Fatalf("Awake left %d writes owed", w.owed)
	}
	var buf [8]byte
	if _, err := unix.Read(w.Fd(), buf[:]); err != unix.EAGAIN {
		t.Fatalf("eventfd not drained by Awake: read err %v", err)
	}
}

func TestLoopWakerCloseReleasesFD(t *testing.T) {
	// Warm up whatever the runtime opens lazily, so the counts compare only
	// the waker's fd.
	if w, err := NewLoopWaker(); err == nil {
		w.Close()
	}
	before := fdtest.Count(t)
	w, err := NewLoopWaker()
	if err != nil {
		t.Fatal(err)
	}
	if got := fdtest.Count(t); got != before+1 {
		t.Fatalf("open fds after NewLoopWaker: %d, want %d", got, before+1)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fdtest.Count(t); got != before {
		t.Fatalf("open fds after Close: %d, want %d", got, before)
	}
	// After Close, Wake must not write (the fd number may be reused) and
	// Sleep must tell the loop not to block.
	w.Wake()
	if sys := w.Syscalls(); sys != 0 {
		t.Fatal("Wake after Close wrote the eventfd")
	}
	if w.Sleep() {
		t.Fatal("Sleep after Close returned true")
	}
	w.Wake()
	if sys := w.Syscalls(); sys != 0 {
		t.Fatal("Wake after Close and Sleep wrote the eventfd")
	}
	w.Awake()
}

func TestLoopWakerCloseWaitsForCommittedWrite(t *testing.T) {
	// A producer that has won sleeping->woken but not yet written must not
	// find the fd closed under it: its write could land in a recycled fd.
	w, err := NewLoopWaker()
	if err != nil {
		t.Fatal(err)
	}
	if !w.Sleep() {
		t.Fatal("Sleep returned false")
	}
	if !w.state.CompareAndSwap(wakerSleeping, wakerWoken) {
		t.Fatal("could not play the producer's CAS")
	}
	var written atomic.Bool
	go func() {
		time.Sleep(20 * time.Millisecond) // the producer is descheduled
		var one [8]byte
		one[0] = 1 // little-endian 1 is enough for the test's hosts
		written.Store(true)
		if _, err := unix.Write(w.Fd(), one[:]); err != nil {
			t.Errorf("late write: %v", err)
		}
	}()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !written.Load() {
		t.Fatal("Close returned before the committed write")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLoopWakerCloseRacingWakes(t *testing.T) {
	// Producers keep waking while the loop sleeps and closes; every fd
	// must be released and no write may fail.
	before := fdtest.Count(t)
	for i := 0; i < 200; i++ {
		w, err := NewLoopWaker()
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for p := 0; p < 2; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
						w.Wake()
						runtime.Gosched()
					}
				}
			}()
		}
		for j := 0; j < 5; j++ {
			w.Sleep()
			runtime.Gosched()
			w.Awake()
		}
		w.Sleep()
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
	}
	if got := fdtest.Count(t); got != before {
		t.Fatalf("open fds: %d, want %d", got, before)
	}
}

// workerPool is the processor pool's shape: workers pop one ring and Park
// when it is empty.
func runWorkerPool(workers int, r *Ring[int], ww *WorkerWaker, done <-chan struct{}, handle func(int)) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				for {
					v, ok := r.Pop()
					if !ok {
						break
					}
					handle(v)
				}
				if !ww.Park(func() bool { return r.Len() > 0 }, done) {
					return
				}
			}
		}()
	}
	return &wg
}

func TestWorkerWakerNoLostWakeup(t *testing.T) {
	for _, tc := range []struct {
		name               string
		workers, producers int
		rounds, burst      int
	}{
		{"1-worker/ping-pong", 1, 1, 20000, 1},
		{"4-workers/ping-pong", 4, 1, 20000, 1},
		{"4-workers/2-producers", 4, 2, 1500, 1},
		{"2-workers/bursts", 2, 3, 200, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := tc.producers * tc.rounds * tc.burst
			processed := make([]atomic.Bool, total)
			r := NewRing[int](64)
			ww := NewWorkerWaker(tc.workers)
			done := make(chan struct{})
			wg := runWorkerPool(tc.workers, r, ww, done, func(v int) {
				if processed[v].Swap(true) {
					t.Errorf("item %d delivered twice", v)
				}
			})
			var pwg sync.WaitGroup
			for p := 0; p < tc.producers; p++ {
				pwg.Add(1)
				go func(p int) {
					defer pwg.Done()
					next := p * tc.rounds * tc.burst
					for round := 0; round < tc.rounds; round++ {
						for i := 0; i < tc.burst; i++ {
							if !waitFor(func() bool { ww.Wake(); return r.Push(next) }) {
								t.Errorf("producer %d: ring full for %v: lost wake-up", p, lostWakeupTimeout)
								return
							}
							ww.Wake()
							next++
						}
						last := next - 1
						// Only Wake can get the last item picked up once
						// every worker is parked.
						if !waitFor(func() bool { return processed[last].Load() }) {
							t.Errorf("producer %d: item %d not consumed after %v: lost wake-up", p, last, lostWakeupTimeout)
							return
						}
					}
				}(p)
			}
			pwg.Wait()
			close(done)
			wg.Wait()
			for v := range processed {
				if !processed[v].Load() {
					t.Fatalf("item %d never delivered", v)
				}
			}
		})
	}
}

func TestWorkerWakerPark(t *testing.T) {
	t.Run("returns false when done closes", func(t *testing.T) {
		ww := NewWorkerWaker(2)
		done := make(chan struct{})
		res := make(chan bool)
		go func() { res <- ww.Park(func() bool { return false }, done) }()
		waitFor(func() bool { return ww.idle.Load() == 1 })
		close(done)
		select {
		case ok := <-res:
			if ok {
				t.Fatal("Park returned true after done closed")
			}
		case <-time.After(lostWakeupTimeout):
			t.Fatal("Park did not return after done closed")
		}
		if n := ww.idle.Load(); n != 0 {
			t.Fatalf("idle count %d after Park returned", n)
		}
	})
	t.Run("returns at once when ready", func(t *testing.T) {
		ww := NewWorkerWaker(1)
		if !ww.Park(func() bool { return true }, nil) {
			t.Fatal("Park with ready work returned false")
		}
	})
	t.Run("Wake wakes a parked worker", func(t *testing.T) {
		ww := NewWorkerWaker(1)
		res := make(chan bool)
		go func() { res <- ww.Park(func() bool { return false }, nil) }()
		waitFor(func() bool { return ww.idle.Load() == 1 })
		ww.Wake()
		select {
		case ok := <-res:
			if !ok {
				t.Fatal("woken Park returned false")
			}
		case <-time.After(lostWakeupTimeout):
			t.Fatal("Wake did not wake the parked worker")
		}
	})
	t.Run("Wake with every worker busy is free", func(t *testing.T) {
		ww := NewWorkerWaker(4)
		for i := 0; i < 10; i++ {
			ww.Wake()
		}
		if n := len(ww.tokens); n != 0 {
			t.Fatalf("%d tokens queued with no parked worker", n)
		}
	})
}

// With wakeBy, a sleeping loop is woken by expiring its wait (no
// syscall), once however many producers race, unless lazy says the
// producers are CPU-bound: then by the eventfd, which Awake drains. Close
// after either owes nothing.
func TestLoopWakerWakeBy(t *testing.T) {
	for _, tt := range []struct {
		name         string
		lazy         bool
		wantExpires  int32
		wantSyscalls uint64
	}{
		{"at once", false, 1, 0},
		{"left to the scheduler", true, 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewLoopWaker()
			if err != nil {
				t.Fatal(err)
			}
			var expires atomic.Int32
			w.wakeBy(func() { expires.Add(1) }, func() bool { return tt.lazy })
			for round := range 2 {
				if !w.Sleep() {
					t.Fatal("Sleep on an open waker returned false")
				}
				if !w.asleep() {
					t.Fatal("not asleep after Sleep")
				}
				for range 10 {
					w.Wake()
				}
				if got := expires.Load(); got != tt.wantExpires*int32(round+1) {
					t.Fatalf("round %d: %d expiries, want %d", round, got, tt.wantExpires*int32(round+1))
				}
				if got := w.Syscalls(); got != tt.wantSyscalls*uint64(round+1) {
					t.Fatalf("round %d: %d eventfd writes, want %d", round, got, tt.wantSyscalls*uint64(round+1))
				}
				w.Awake()
				if w.asleep() || w.owed != 0 {
					t.Fatalf("round %d: after Awake asleep %v, %d writes owed", round, w.asleep(), w.owed)
				}
			}
			w.Sleep()
			w.Wake()
			if err := w.Close(); err != nil { // must not wait for a write nobody owes
				t.Fatal(err)
			}
		})
	}
}
