package processor

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// Handler answers requests through the native API. ServeQuartet runs on a
// processor worker and may block; it must not keep w, r, or anything they
// returned after it returns (see Header and stages.Request for lifetimes).
type Handler interface {
	ServeQuartet(w *ResponseWriter, r *stages.Request)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w *ResponseWriter, r *stages.Request)

// ServeQuartet calls f(w, r).
func (f HandlerFunc) ServeQuartet(w *ResponseWriter, r *stages.Request) { f(w, r) }

// chunk is one pooled body buffer. The pool holds *chunk, not []byte:
// putting a slice in a sync.Pool allocates its header on every Put.
type chunk [chunkSize]byte

// Pool is the processor stage: Workers goroutines that pop requests from
// the reader->processor ring, run the handler, and stream each response to
// its writer through a *stages.Response.
type Pool struct {
	cfg       Config
	in        *stages.Ring[*stages.Request]
	wake      *stages.WorkerWaker
	h         Handler
	responses func() *stages.Response
	counters  *stages.StageCounters

	bufferLimit int64 // body held back before commit: min(maxBuffered, HighWater)

	chunks sync.Pool // *chunk; per Pool, so servers do not share memory or contention
	date   dateCache

	respawn func() // starts one more worker; set by Run

	draining atomic.Bool
	running  atomic.Bool
	busy     atomic.Int64
}

// New returns a pool that serves requests from in with h. wake must be the
// WorkerWaker the readers call after pushing to in, made for cfg.Workers
// workers. responses returns an idle *stages.Response already wired to its
// writer (kick) and to its recycling (whose function must call
// Pool.Release). counters may be nil.
func New(cfg Config, in *stages.Ring[*stages.Request], wake *stages.WorkerWaker, h Handler, responses func() *stages.Response, counters *stages.StageCounters) *Pool {
	if in == nil || wake == nil || h == nil || responses == nil {
		panic("quartet: processor.New needs a ring, a waker, a handler and a response source")
	}
	p := &Pool{
		cfg:       cfg.withDefaults(),
		in:        in,
		wake:      wake,
		h:         h,
		responses: responses,
		counters:  counters,
	}
	p.bufferLimit = min(maxBuffered, p.cfg.HighWater)
	p.chunks.New = func() any { return new(chunk) }
	return p
}

// Config returns the pool's configuration with defaults applied.
func (p *Pool) Config() Config { return p.cfg }

// LowWater is the unsent-byte level at which a handler blocked on back-
// pressure may go on; the writer passes it to Response.Sent.
func (p *Pool) LowWater() int64 { return p.cfg.LowWater }

// Run runs the workers until ctx is done. Workers then finish the request
// they are running, serve whatever is still queued in the ring, and stop;
// Run returns when all have stopped. For a graceful shutdown stop the
// readers first (nothing new is pushed), call Drain, then cancel ctx. Run
// returns nil, or ErrPoolRunning if the pool is already running.
func (p *Pool) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return ErrPoolRunning
	}
	defer p.running.Store(false)
	var wg sync.WaitGroup
	// respawn is also how a worker lost to runtime.Goexit is replaced; the
	// WaitGroup cannot reach zero meanwhile, as the lost worker has not yet
	// returned when it calls it.
	p.respawn = func() { wg.Go(func() { p.work(ctx.Done()) }) }
	var initErr error
	var initOnce sync.Once
	for i := range p.cfg.Workers {
		if p.cfg.WorkerInit != nil {
			// Apache's child_init, per worker: a module's per-worker state
			// is ready before the worker takes its first request.
			if err := p.cfg.WorkerInit(i); err != nil {
				initOnce.Do(func() { initErr = fmt.Errorf("quartet: processor worker %d init: %w", i, err) })
				break
			}
		}
		p.respawn()
	}
	wg.Wait()
	return initErr
}

// Drain starts a graceful shutdown: every response from now on closes its
// connection, so clients stop sending requests on it. It is safe to call
// from any goroutine, more than once.
func (p *Pool) Drain() { p.draining.Store(true) }

// Release returns r's chunks to the pool. The runtime calls it from the
// response's recycle function, when both the worker and the writer are done
// with r.
func (p *Pool) Release(r *stages.Response) {
	for _, b := range r.Chunks {
		p.putChunk(b)
	}
	clear(r.Chunks)
	r.Chunks = r.Chunks[:0]
}

// Busy returns the number of workers running a handler now.
func (p *Pool) Busy() int { return int(p.busy.Load()) }

func (p *Pool) getChunk() []byte { return p.chunks.Get().(*chunk)[:0] }

func (p *Pool) putChunk(b []byte) {
	if cap(b) != chunkSize {
		return // not one of ours
	}
	p.chunks.Put((*chunk)(b[:chunkSize]))
}

// work is one worker: pop, serve, and park when the ring is empty.
func (p *Pool) work(done <-chan struct{}) {
	w := &ResponseWriter{p: p}
	// Made once per worker: a closure built per Park would allocate.
	ready := func() bool { return p.in.Len() > 0 }
	for {
		req, ok := p.in.Pop()
		if ok {
			p.serve(w, req)
			continue
		}
		if p.wake.Park(ready, done) {
			continue
		}
		// Shutting down: serve what the readers queued before they
		// stopped, so that no accepted request goes unanswered.
		for {
			req, ok := p.in.Pop()
			if !ok {
				return
			}
			p.serve(w, req)
		}
	}
}

// serve runs one request through the handler and hands the response over.
func (p *Pool) serve(w *ResponseWriter, req *stages.Request) {
	if p.counters != nil {
		p.counters.Dequeued.Add(1)
	}
	p.busy.Add(1)
	now := time.Now()
	resp := p.responses()
	resp.Begin(req.Conn, req, now)
	w.begin(resp, req, now)

	body := req.Body
	if req.HasBody() {
		// The wrapper sends 100 Continue when the client waits for it, and
		// notices a body that fails (the connection must then close).
		req.Body = &w.rbody
	}
	// The hand-over runs deferred so that it also runs when the handler
	// calls runtime.Goexit (t.FailNow in a test handler, say), which
	// recover cannot stop: the response still ends, and a fresh worker
	// replaces this goroutine.
	goexit := true
	defer func() {
		req.Body = body
		if goexit {
			p.cfg.Logger.Error("quartet: handler called runtime.Goexit; replacing its worker",
				"method", string(req.Method), "target", string(req.Target))
			p.recover(w, false)
		}
		w.finish()
		w.end()
		resp.Done() // resp may be recycled from here on: no touching it
		p.busy.Add(-1)
		if p.counters != nil {
			p.counters.Service.Record(time.Since(now))
		}
		if goexit {
			p.respawn()
		}
	}()
	p.call(w, req)
	goexit = false
}

// call runs the handler, turning a panic into a 500 (or a cut-short
// response) so that the worker lives on.
func (p *Pool) call(w *ResponseWriter, req *stages.Request) {
	defer func() {
		if v := recover(); v != nil {
			p.panicked(w, req, v)
		}
	}()
	p.h.ServeQuartet(w, req)
}

func (p *Pool) panicked(w *ResponseWriter, req *stages.Request, v any) {
	// net/http's convention: ErrAbortHandler aborts quietly.
	abort := v == http.ErrAbortHandler
	if !abort {
		var remote string
		if req.Conn != nil {
			remote = req.Conn.Remote.String()
		}
		p.cfg.Logger.Error("quartet: handler panic",
			"panic", v,
			"method", string(req.Method),
			"target", string(req.Target),
			"remote", remote,
			"headers_sent", w.committed,
			"stack", string(debug.Stack()))
	}
	p.recover(w, abort)
}

// recover answers for a failed handler: a 500, or a cut-short response.
func (p *Pool) recover(w *ResponseWriter, abort bool) {
	// A second panic here (a broken writer state) must not kill the
	// worker either: fall back to cutting the response short.
	defer func() {
		if recover() != nil {
			w.broken = true
			w.fail(errHandlerPanicked)
		}
	}()
	w.recoverPanic(abort)
}
