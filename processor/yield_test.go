package processor

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// BenchmarkLoopBehindBusyWorkers is what an event loop back from
// epoll_wait waits for a CPU while workers on the same one always find
// another request of ~100 µs: each op is one 1 ms blocking syscall, and
// the metrics are how much longer than 1 ms it took, at the median and
// the 99th percentile. Go preempts a goroutine after 10 ms, so without
// the workers' yielding (yieldCPUAfter) a loop waits that long, and every
// refusal it should answer at once waits with it.
func BenchmarkLoopBehindBusyWorkers(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const inFlight = 256
	in := stages.NewClassQueue(2*inFlight, nil)
	reqs := make([]*stages.Request, 4*inFlight)
	for i := range reqs {
		reqs[i] = newRequest("GET", "/compute", 1, "", "Host", "localhost")
		reqs[i].Body = eofBody{}
	}
	next := 0
	refill := func() {
		in.Push(reqs[next%len(reqs)])
		next++
	}
	// The writer hands each finished response's request back to the
	// queue, so the workers never run dry; its channels are deep enough
	// that a worker does not block on them (the real writer's kick does
	// not block at all).
	bw := &benchWriter{kicks: make(chan *stages.Response, inFlight), done: make(chan struct{}, inFlight)}
	compute := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		for start := time.Now(); time.Since(start) < 100*time.Microsecond; {
		}
		w.Write([]byte("done"))
	})
	pool := newBenchPool(in, bw, 2, inFlight+8, compute)
	stop := make(chan struct{})
	go bw.run(stop)
	refilling := make(chan struct{})
	go func() {
		for {
			select {
			case <-bw.done:
				refill()
				pool.Wake()
			case <-refilling:
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { pool.Run(ctx); close(ran) }()
	defer func() {
		close(refilling) // the workers serve what is queued as they stop: no more
		cancel()
		for {
			select {
			case <-ran:
				close(stop)
				return
			case <-bw.done:
			}
		}
	}()
	for range inFlight {
		refill()
	}
	pool.Wake()

	const nap = time.Millisecond
	var late []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		unix.Poll(nil, int(nap/time.Millisecond))
		late = append(late, time.Since(start)-nap)
	}
	slices.Sort(late)
	b.ReportMetric(float64(late[len(late)/2].Microseconds()), "late-p50-µs")
	b.ReportMetric(float64(late[len(late)*99/100].Microseconds()), "late-p99-µs")
}
