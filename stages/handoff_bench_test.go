//go:build linux

package stages

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// The hand-off benchmarks answer Pane's question (see waker.go): what does
// it cost to hand an item to an event loop that may be blocked in
// epoll_wait? The results and the command that produced them are in
// waker.go's doc comment.

// BenchmarkRing measures the queue alone, against a buffered channel of the
// same capacity.
func BenchmarkRing(b *testing.B) {
	b.Run("push-pop", func(b *testing.B) {
		b.ReportAllocs()
		r := NewRing[*int](1024)
		x := new(int)
		for b.Loop() {
			r.Push(x)
			r.Pop()
		}
	})
	b.Run("chan-push-pop", func(b *testing.B) {
		b.ReportAllocs()
		ch := make(chan *int, 1024)
		x := new(int)
		for b.Loop() {
			ch <- x
			<-ch
		}
	})
	// Producers and consumers on separate goroutines; with GOMAXPROCS=2
	// they contend for the cores as well as for the ring.
	for _, pc := range [][2]int{{1, 1}, {2, 2}, {4, 4}} {
		p, c := pc[0], pc[1]
		b.Run(fmt.Sprintf("mpmc/%dp%dc", p, c), func(b *testing.B) {
			b.ReportAllocs()
			r := NewRing[*int](1024)
			benchMPMC(b, p, c,
				func(x *int) {
					for !r.Push(x) {
						runtime.Gosched()
					}
				},
				func() bool { _, ok := r.Pop(); return ok })
		})
		b.Run(fmt.Sprintf("chan-mpmc/%dp%dc", p, c), func(b *testing.B) {
			b.ReportAllocs()
			ch := make(chan *int, 1024)
			benchMPMC(b, p, c,
				func(x *int) { ch <- x },
				func() bool {
					select {
					case <-ch:
						return true
					default:
						return false
					}
				})
		})
	}
}

// benchMPMC moves b.N items from p producers to c consumers.
func benchMPMC(b *testing.B, p, c int, push func(*int), pop func() bool) {
	x := new(int)
	var consumed atomic.Int64
	n := int64(b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := 0; i < p; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := i; j < b.N; j += p {
				push(x)
			}
		}(i)
	}
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for consumed.Load() < n {
				if pop() {
					consumed.Add(1)
				} else {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
}

// handoffRegime is how the producer feeds the consumer loop.
type handoffRegime struct {
	name string
	// burst items are handed off back to back, then the producer waits
	// until the consumer has processed them all, so that the consumer
	// runs out of work and goes to sleep. 0: no waiting, a continuous
	// stream.
	burst int
	// work is how many rounds of handoffWork the consumer does per item.
	work int
}

var handoffRegimes = []handoffRegime{
	// Consumer busy: it spends about half a microsecond on each item (the
	// order of the epoll_ctl or writev a real loop does per connection),
	// so it is the bottleneck and always has a backlog.
	{"busy", 0, 1000},
	// A continuous stream to a consumer with nothing to do per item: it
	// keeps catching up with the producer, the worst case for the flag.
	{"stream", 0, 0},
	// Consumer asleep at the start of each burst, busy during it.
	{"burst64", 64, 0},
	// Consumer asleep at every hand-off: a round trip per item.
	{"pingpong", 1, 0},
}

// handoffWork stands for the consumer's per-item work: n rounds of a
// xorshift step the compiler cannot drop (the result feeds the item sum).
func handoffWork(v, n int) int {
	x := uint64(v) | 1
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return int(x & 1)
}

// handoffCounts are the syscalls one run made, by side.
type handoffCounts struct {
	writes uint64 // producer: pipe or eventfd writes
	reads  uint64 // consumer: pipe or eventfd reads
	waits  uint64 // consumer: epoll_wait calls
}

func (c handoffCounts) report(b *testing.B) {
	b.ReportMetric(float64(c.writes+c.reads+c.waits)/float64(b.N), "syscalls/op")
	b.ReportMetric(float64(c.waits)/float64(b.N), "sleeps/op")
}

// BenchmarkHandoff hands b.N items from one producer goroutine to one
// consumer event loop through a Ring, with five ways of waking the loop:
//
//	pipe:      write a byte to a pipe per hand-off; the loop reads it
//	           (Pane's baseline, two syscalls per hand-off)
//	eventfd:   the same with an eventfd (one read drains many writes)
//	loopwaker: LoopWaker: write the eventfd only when the loop sleeps
//	loopwaker-spin: the same, but the loop polls its ring for a while
//	           (handoffSpin yields) before it goes to sleep
//	loop-blocking: a real Loop (Ring + LoopWaker), blocking its
//	           thread in epoll_wait and woken by the eventfd
//	loop-parked-eventfd: a real Loop parked in Go's network poller
//	           and woken by the eventfd (the server's loops until
//	           LoopWaker.wakeBy); syscalls/op as for loop-parked
//	loop-parked: a real Loop as the server's are: parked in Go's
//	           network poller and woken by expiring its wait's deadline
//	           (LoopWaker.wakeBy), no syscall on the producer's side;
//	           its syscalls/op counts only the eventfd's (none), not
//	           the polls Go's poller makes
//	chan:      a Go channel instead of ring + epoll; the consumer
//	           blocks in the runtime scheduler, not in epoll_wait, so
//	           it could not watch sockets too (and the runtime's
//	           futex calls are not counted)
//
// syscalls/op counts write, read and epoll_wait calls made by both sides
// for the hand-off; sleeps/op is epoll_wait calls per item; cpu-ns/op is
// the process's user+system CPU time per item, both sides together.
//
// The producer never spins: when the ring is full, or at the end of a
// burst, it parks on a WorkerWaker that the consumer pokes as it makes
// progress, so the CPU figures are the hand-off's and the consumer's work,
// not a waiting loop's (and a 2-core machine is not shared with one).
func BenchmarkHandoff(b *testing.B) {
	for _, mech := range []struct {
		name string
		run  func(b *testing.B, f *feeder) handoffCounts
	}{
		{"pipe", benchEveryTime(true)},
		{"eventfd", benchEveryTime(false)},
		{"loopwaker", benchLoopWaker(0)},
		{"loopwaker-spin", benchLoopWaker(handoffSpin)},
		{"chan", benchChan},
		{"loop-blocking", benchLoop(true, false)},
		{"loop-parked-eventfd", benchLoop(false, true)},
		{"loop-parked", benchLoop(false, false)},
	} {
		for _, reg := range handoffRegimes {
			b.Run(mech.name+"/"+reg.name, func(b *testing.B) {
				b.ReportAllocs()
				f := newFeeder(b, reg)
				cpu0 := cpuTime(b)
				c := mech.run(b, f)
				cpu := cpuTime(b) - cpu0
				c.report(b)
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

const handoffRingCap = 1024

// feeder drives the producer side of a hand-off benchmark and counts the
// consumer's progress. The producer parks on pw, never spins.
type feeder struct {
	b         *testing.B
	reg       handoffRegime
	processed atomic.Int64
	target    atomic.Int64 // what the producer is waiting for processed to reach
	pw        *WorkerWaker // the producer, parked
	caughtUp  func() bool
	sum       int // consumer only: keeps the work live
}

func newFeeder(b *testing.B, reg handoffRegime) *feeder {
	f := &feeder{b: b, reg: reg, pw: NewWorkerWaker(1)}
	f.caughtUp = func() bool { return f.processed.Load() >= f.target.Load() }
	return f
}

// consume is the consumer's per-item step. It reports true after the
// last item.
func (f *feeder) consume(v int) bool {
	f.sum += handoffWork(v, f.reg.work)
	n := f.processed.Add(1)
	f.pw.Wake() // one atomic load unless the producer is parked
	return n == int64(f.b.N)
}

// waitFor parks the producer until processed reaches n.
func (f *feeder) waitFor(n int64) {
	f.target.Store(n)
	for !f.caughtUp() {
		f.pw.Park(f.caughtUp, nil)
	}
}

// produce hands b.N items to send in the regime's pattern and returns
// once the consumer has processed them all. send returns once the item is
// queued (see push).
func (f *feeder) produce(send func(v int)) {
	b := f.b
	for i := 0; i < b.N; {
		k := b.N - i
		if f.reg.burst > 0 && f.reg.burst < k {
			k = f.reg.burst
		}
		for j := 0; j < k; j++ {
			send(i + j)
		}
		i += k
		if f.reg.burst > 0 {
			f.waitFor(int64(i))
		}
	}
	f.waitFor(int64(b.N))
}

// push pushes v to r, parking the producer while r is full. wake wakes
// the consumer (it must be running to make room).
//
// The wait is for progress past the count read before the failed Push:
// a count read after it could already include every item that was in the
// ring, and then the producer would wait for an item it has not pushed.
func (f *feeder) push(r *Ring[int], v int, wake func()) {
	for {
		before := f.processed.Load()
		if r.Push(v) {
			return
		}
		wake()
		f.waitFor(before + 1)
	}
}

// handoffPoller creates a poller watching fd for reading whose Wait blocks
// the loop's thread in epoll_wait, the regime the measurements describe.
func handoffPoller(b *testing.B, fd int) *poll.Poller {
	p, err := poll.NewBlocking()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Add(fd, poll.Readable, wakerToken); err != nil {
		b.Fatal(err)
	}
	return p
}

// benchEveryTime is Pane's scheme: signal the fd on every hand-off; the
// loop blocks in epoll_wait, and when the fd is readable it drains it and
// then the queue.
func benchEveryTime(pipe bool) func(b *testing.B, f *feeder) handoffCounts {
	return func(b *testing.B, f *feeder) handoffCounts {
		var rfd, wfd int
		if pipe {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
				b.Fatal(err)
			}
			rfd, wfd = p[0], p[1]
			defer unix.Close(p[0])
			defer unix.Close(p[1])
		} else {
			fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				b.Fatal(err)
			}
			rfd, wfd = fd, fd
			defer unix.Close(fd)
		}
		p := handoffPoller(b, rfd)
		defer p.Close()
		r := NewRing[int](handoffRingCap)
		var c handoffCounts
		sig := []byte{1, 0, 0, 0, 0, 0, 0, 0} // a pipe byte, or eventfd's 1 (little-endian)
		if pipe {
			sig = sig[:1]
		}
		signal := func() {
			c.writes++
			unix.Write(wfd, sig)
		}
		b.ResetTimer()
		go func() {
			events := make([]poll.Event, 0, 8)
			var buf [4096]byte
			for {
				for {
					v, ok := r.Pop()
					if !ok {
						break
					}
					if f.consume(v) {
						return
					}
				}
				c.waits++
				var err error
				if events, err = p.Wait(events, -1); err != nil {
					b.Error(err)
					return
				}
				c.reads++
				unix.Read(rfd, buf[:])
			}
		}()
		f.produce(func(v int) {
			f.push(r, v, func() {})
			signal()
		})
		return c
	}
}

// handoffSpin is how many times the loopwaker-spin consumer yields and
// re-checks its ring before it sleeps: a yield with nothing else runnable
// measured 60-80ns here, so about 6-8µs, the order of one thread wake-up
// on this machine.
const handoffSpin = 100

// benchLoopWaker is the loop protocol of LoopWaker's doc comment, with an
// optional spin before sleeping.
func benchLoopWaker(spin int) func(b *testing.B, f *feeder) handoffCounts {
	return func(b *testing.B, f *feeder) handoffCounts {
		w, err := NewLoopWaker()
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		p := handoffPoller(b, w.Fd())
		defer p.Close()
		r := NewRing[int](handoffRingCap)
		var c handoffCounts
		b.ResetTimer()
		go func() {
			events := make([]poll.Event, 0, 8)
			for {
				for {
					v, ok := r.Pop()
					if !ok {
						break
					}
					if f.consume(v) {
						return
					}
				}
				if spin > 0 && spinFor(spin, r) {
					continue
				}
				w.Sleep()
				if r.Len() > 0 {
					w.Awake()
					continue
				}
				c.waits++
				var err error
				if events, err = p.Wait(events, -1); err != nil {
					b.Error(err)
					return
				}
				w.Awake()
			}
		}()
		f.produce(func(v int) {
			f.push(r, v, w.Wake)
			w.Wake()
		})
		c.writes = w.Syscalls()
		c.reads = w.reads
		return c
	}
}

// benchLoop hands the items to a real Loop, blocking or parked, woken
// by its eventfd or (parked only) by expiring its wait.
func benchLoop(blocking, eventfd bool) func(b *testing.B, f *feeder) handoffCounts {
	return func(b *testing.B, f *feeder) handoffCounts {
		r := NewRing[int](handoffRingCap)
		var l *Loop
		var done atomic.Bool
		l, err := NewLoop(LoopHooks{
			Drain: func(budget int) int {
				n := 0
				for ; n < budget; n++ {
					v, ok := r.Pop()
					if !ok {
						break
					}
					if f.consume(v) {
						done.Store(true)
					}
				}
				return n
			},
			Turn:    func(time.Time, bool) (time.Duration, bool) { return -1, done.Load() },
			Pending: func() bool { return r.Len() > 0 },
		}, LoopOptions{Blocking: blocking})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		if eventfd {
			l.waker.wakeBy(nil, nil)
		}
		b.ResetTimer()
		ran := make(chan error, 1)
		go func() { ran <- l.Run(context.Background()) }()
		f.produce(func(v int) {
			f.push(r, v, l.Wake)
			l.Wake()
		})
		if err := <-ran; err != nil {
			b.Fatal(err)
		}
		var c handoffCounts
		c.writes = l.waker.Syscalls()
		c.reads = l.waker.reads
		if blocking {
			c.waits = uint64(l.Counts().Turns) // a turn per wait, near enough
		}
		return c
	}
}

// spinFor yields up to n times, reporting true as soon as r has an item.
func spinFor(n int, r *Ring[int]) bool {
	for i := 0; i < n; i++ {
		if r.Len() > 0 {
			return true
		}
		runtime.Gosched()
	}
	return false
}

// benchChan replaces ring and fd with a buffered channel of the same
// capacity. A full channel blocks the producer in the runtime.
func benchChan(b *testing.B, f *feeder) handoffCounts {
	ch := make(chan int, handoffRingCap)
	b.ResetTimer()
	go func() {
		for v := range ch {
			if f.consume(v) {
				return
			}
		}
	}()
	f.produce(func(v int) { ch <- v })
	close(ch)
	return handoffCounts{}
}

// BenchmarkWorkerHandoff hands b.N items from one producer to a pool of
// workers (the reader -> processor hand-off): Ring + WorkerWaker against a
// channel the workers all receive from. In the stream regime the workers
// mostly find work without parking; in pingpong every item must wake a
// parked worker.
func BenchmarkWorkerHandoff(b *testing.B) {
	const workers = 4
	for _, reg := range []handoffRegime{{"stream", 0, 0}, {"pingpong", 1, 0}} {
		b.Run("workerwaker/"+reg.name, func(b *testing.B) {
			b.ReportAllocs()
			f := newFeeder(b, reg)
			r := NewRing[int](handoffRingCap)
			ww := NewWorkerWaker(workers)
			done := make(chan struct{})
			var mu sync.Mutex // consume's sum is single-consumer state
			b.ResetTimer()
			wg := runWorkerPool(workers, r, ww, done, func(v int) {
				mu.Lock()
				f.consume(v)
				mu.Unlock()
			})
			f.produce(func(v int) {
				f.push(r, v, ww.Wake)
				ww.Wake()
			})
			close(done)
			wg.Wait()
		})
		b.Run("chan/"+reg.name, func(b *testing.B) {
			b.ReportAllocs()
			f := newFeeder(b, reg)
			ch := make(chan int, handoffRingCap)
			var mu sync.Mutex
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := 0; i < workers; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for v := range ch {
						mu.Lock()
						f.consume(v)
						mu.Unlock()
					}
				}()
			}
			f.produce(func(v int) { ch <- v })
			close(ch)
			wg.Wait()
		})
	}
}

// cpuTime returns the process's user+system CPU time in nanoseconds.
func cpuTime(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
