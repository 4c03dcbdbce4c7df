package processor

import (
	"context"
	"io"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// eofBody is an empty request body that costs no allocation to assign.
type eofBody struct{}

func (eofBody) Read([]byte) (int, error) { return 0, io.EOF }

// benchWriter is the fake writer without the bookkeeping: it takes the
// buckets, reports them sent, and finishes at EOS, allocating nothing.
type benchWriter struct {
	kicks chan *stages.Response
	done  chan struct{}
	low   int64
}

func (bw *benchWriter) kick(r *stages.Response) {
	if r.MarkQueued() {
		bw.kicks <- r
	}
}

func (bw *benchWriter) run(stop <-chan struct{}) {
	var bufs []stages.Bucket
	for {
		var r *stages.Response
		select {
		case r = <-bw.kicks:
		case <-stop:
			return
		}
		var eos bool
		bufs, eos = r.TakeOut(bufs[:0])
		for i := range bufs {
			if n := bufs[i].Size(); n > 0 {
				r.Sent(n, bw.low)
			}
		}
		clear(bufs)
		if eos {
			r.Finish()
			bw.done <- struct{}{}
		}
	}
}

// BenchmarkHello is one native "Hello, World!" request through the worker
// path: ring pop, handler, header block, the hand-off to a writer, and the
// response's recycling. Steady state allocates nothing.
func BenchmarkHello(b *testing.B) { benchWorkerPath(b, HandlerFunc(hello)) }

// BenchmarkAdaptHello is the same request through Adapt and an unchanged
// net/http handler: the allocations are the *http.Request net/http would
// build too.
func BenchmarkAdaptHello(b *testing.B) { benchWorkerPath(b, Adapt(httpHello{})) }

// newBenchPool is a pool of workers places serving h from in, handing
// its responses to bw and recycling them, responses of them.
func newBenchPool(in *stages.ClassQueue, bw *benchWriter, workers, responses int, h Handler) *Pool {
	return newBenchPoolWith(Config{Workers: workers}, in, bw, responses, h)
}

func newBenchPoolWith(cfg Config, in *stages.ClassQueue, bw *benchWriter, responses int, h Handler) *Pool {
	free := make(chan *stages.Response, responses)
	var pool *Pool
	recycle := func(r *stages.Response) {
		r.RunCleanups()
		pool.Release(r)
		free <- r
	}
	for range cap(free) {
		free <- stages.NewResponse(bw.kick, recycle)
	}
	pool = New(cfg, in, stages.NewWorkerWaker(cfg.Workers), h, func() *stages.Response { return <-free }, &stages.StageCounters{})
	bw.low = pool.LowWater()
	return pool
}

func benchWorkerPath(b *testing.B, h Handler) {
	in := stages.NewClassQueue(16, nil)
	bw := &benchWriter{kicks: make(chan *stages.Response, 16), done: make(chan struct{}, 1)}
	pool := newBenchPool(in, bw, 1, 4, h)
	stop := make(chan struct{})
	go bw.run(stop)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { pool.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran; close(stop) }()

	req := newRequest("GET", "/hello", 1, "", "Host", "localhost", "User-Agent", "bench", "Accept", "*/*")
	req.Body = eofBody{}
	b.ReportAllocs()
	for b.Loop() {
		in.Push(req)
		pool.Wake()
		<-bw.done
	}
}

// BenchmarkServeInline is the processor's own cost per request, without
// the goroutine hand-offs: the worker's serve is called directly and the
// "writer" runs inside the kick, so what is measured is Begin, the handler,
// the header block, the bucket hand-over and the recycling.
func BenchmarkServeInline(b *testing.B) {
	var bufs []stages.Bucket
	var pool *Pool
	kick := func(r *stages.Response) {
		if !r.MarkQueued() {
			return
		}
		var eos bool
		bufs, eos = r.TakeOut(bufs[:0])
		for i := range bufs {
			if n := bufs[i].Size(); n > 0 {
				r.Sent(n, pool.LowWater())
			}
		}
		clear(bufs)
		if eos {
			r.Finish()
		}
	}
	resp := stages.NewResponse(kick, func(r *stages.Response) { pool.Release(r) })
	pool = New(Config{Workers: 1}, stages.NewClassQueue(2, nil), stages.NewWorkerWaker(1),
		HandlerFunc(hello), func() *stages.Response { return resp }, &stages.StageCounters{})
	wk := pool.newWorker()
	req := newRequest("GET", "/hello", 1, "", "Host", "localhost", "User-Agent", "bench", "Accept", "*/*")
	req.Body = eofBody{}
	b.ReportAllocs()
	for b.Loop() {
		pool.serve(wk, req)
	}
}
