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

// Pool is the processor stage: goroutines that pop requests from the
// reader->processor ring, run the handler, and stream each response to its
// writer through a *stages.Response. At most Workers of them run a handler
// at once; handlers waiting on their client hold no place (see Places).
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

	spawn func() // starts one more goroutine, holding a place; set by Run

	mu   sync.Mutex // guards book's lists
	book placeBook

	draining atomic.Bool
	started  atomic.Bool
	running  atomic.Int64 // handlers running with a place
}

// New returns a pool that serves requests from in with h. wake must be a
// WorkerWaker made for cfg.Workers workers, and the pool's alone: the
// readers call Pool.Wake (not wake.Wake) after pushing to in. responses
// returns an idle *stages.Response already wired to its writer (kick) and
// to its recycling (whose function must call Pool.Release). counters may
// be nil.
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
	p.book = placeBook{places: p.cfg.Workers, maxParked: p.cfg.MaxParked, maxSpares: p.cfg.Workers}
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
	if !p.started.CompareAndSwap(false, true) {
		return ErrPoolRunning
	}
	defer p.started.Store(false)
	// Every place is held by one of the goroutines started below (a
	// previous Run left them all free as its goroutines exited).
	p.book.free.Store(0)
	var wg sync.WaitGroup
	// spawn starts the goroutines that hold the places, those that stand
	// in for parked handlers, and the replacement of one lost to
	// runtime.Goexit; the WaitGroup cannot reach zero meanwhile, as the
	// goroutine that asks for one has not returned.
	done := ctx.Done()
	p.spawn = func() { wg.Go(func() { p.work(p.newWorker(), done) }) }
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
		p.spawn()
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

// Wake tells the pool that a request was pushed to its ring: an idle
// goroutine takes it, or one is given a place that a parked handler left
// free. The readers' dispatch calls it after every push.
func (p *Pool) Wake() {
	p.wake.Wake()
	// Dekker with Park, which frees the place and then looks at the ring:
	// the push is before this load.
	if p.book.free.Load() > 0 {
		var h handoff
		p.mu.Lock()
		if p.in.Len() > 0 {
			h = p.book.attach()
		}
		p.mu.Unlock()
		p.hand(h)
	}
}

// Busy returns the number of handlers running with a place now.
func (p *Pool) Busy() int { return int(p.running.Load()) }

// Parked returns the number of handlers waiting on their client without a
// place (including those whose wait is over and that wait for a place).
func (p *Pool) Parked() int { return int(p.book.parked.Load()) }

// ParkRefused returns how many times a handler had to wait on its client
// holding its place, because MaxParked handlers were parked already.
func (p *Pool) ParkRefused() uint64 { return p.book.refused.Load() }

func (p *Pool) getChunk() []byte { return p.chunks.Get().(*chunk)[:0] }

func (p *Pool) putChunk(b []byte) {
	if cap(b) != chunkSize {
		return // not one of ours
	}
	p.chunks.Put((*chunk)(b[:chunkSize]))
}

// work is one goroutine holding a place: give it to a waiting resumer, or
// pop and serve, or sleep while the ring is empty.
func (p *Pool) work(wk *worker, done <-chan struct{}) {
	for {
		if p.book.waiting.Load() > 0 {
			if !p.yield(wk, done) {
				return
			}
			continue
		}
		if req, ok := p.in.Pop(); ok {
			p.serve(wk, req)
			continue
		}
		if p.wake.Park(wk.ready, done) {
			continue
		}
		// Shutting down: serve what the readers queued before they
		// stopped, so that no accepted request goes unanswered.
		for {
			req, ok := p.in.Pop()
			if !ok {
				p.leave()
				return
			}
			p.serve(wk, req)
		}
	}
}

// serve runs one request through the handler and hands the response over.
func (p *Pool) serve(wk *worker, req *stages.Request) {
	if p.counters != nil {
		p.counters.Dequeued.Add(1)
	}
	c := req.Conn
	if c != nil && c.Gone() {
		p.drop(req)
		return
	}
	if c != nil {
		c.SetPhase(stages.PhaseRunning)
	}
	p.running.Add(1)
	w := &wk.w
	now := time.Now()
	resp := p.responses()
	resp.Begin(c, req, now)
	w.begin(resp, req, now)

	body := req.Body
	if req.HasBody() {
		// The wrapper sends 100 Continue when the client waits for it, and
		// notices a body that fails (the connection must then close).
		req.Body = &w.rbody
	}
	// The hand-over runs deferred so that it also runs when the handler
	// calls runtime.Goexit (t.FailNow in a test handler, say), which
	// recover cannot stop: the response still ends, and a fresh goroutine
	// takes this one's place.
	goexit := true
	defer func() {
		req.Body = body
		if goexit {
			p.cfg.Logger.Error("quartet: handler called runtime.Goexit; replacing its worker",
				"method", string(req.Method), "target", string(req.Target))
			p.recover(w, false)
		} else {
			w.answerBodyError()
		}
		if p.counters != nil {
			// Before the response can reach its end: whoever sees the
			// response's last byte sees its service time counted too.
			p.counters.Service.Record(time.Since(now))
		}
		w.finish()
		w.end()
		p.running.Add(-1)
		if c != nil {
			c.SetPhase(stages.PhaseWriting) // before Done: c may go back to its reader from there
		}
		resp.Done() // resp may be recycled from here on: no touching it
		if goexit {
			p.spawn()
		}
	}()
	p.call(w, req)
	goexit = false
}

// drop lets go of a request whose client hung up before it started: no
// handler runs, nothing is answered, and the connection goes back to its
// reader to be closed.
func (p *Pool) drop(req *stages.Request) {
	resp := p.responses()
	resp.Begin(req.Conn, req, time.Now())
	resp.Drop(stages.FateClose)
	if p.counters != nil {
		p.counters.Dropped.Add(1)
	}
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
