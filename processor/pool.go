package processor

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/protocol/http1"
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
	in        *stages.ClassQueue
	wake      *stages.WorkerWaker
	h         Handler
	responses func() *stages.Response
	counters  *stages.StageCounters
	routes    []route // how each protocol's requests are served, by stages.ProtocolID

	bufferLimit int64 // body held back before commit: min(maxBuffered, HighWater)

	chunks sync.Pool // *chunk; per Pool, so servers do not share memory or contention
	// chunkGets counts the chunks taken from chunks, for the tests: once
	// a writer reuses its response's chunks (Release) a small response
	// takes none, so the shared line is written rarely.
	chunkGets atomic.Uint64
	date      http1.DateCache

	spawn func() // starts one more goroutine, holding a place; set by Run

	mu     sync.Mutex // guards book's lists, and the fields below
	book   placeBook
	serves bool // Run has started the goroutines for its places and is not stopping: resizing takes effect now
	inited int  // places whose WorkerInit has run: 0..inited-1

	draining atomic.Bool
	started  atomic.Bool
	running  atomic.Int64 // handlers running with a place

	panics panicSites // which handler panics are logged
}

// New returns a pool that serves requests from in with h. wake must be a
// WorkerWaker made for as many workers as the pool may have places, and
// the pool's alone: the readers call Pool.Wake (not wake.Wake) after
// pushing to in. responses
// returns an idle *stages.Response already wired to its writer (kick) and
// to its recycling (whose function must call Pool.Release). counters may
// be nil.
func New(cfg Config, in *stages.ClassQueue, wake *stages.WorkerWaker, h Handler, responses func() *stages.Response, counters *stages.StageCounters) *Pool {
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
	p.routes = routes(p.cfg.Protocols)
	p.bufferLimit = min(maxBuffered, p.cfg.HighWater)
	p.chunks.New = func() any { return new(chunk) }
	p.book = placeBook{places: p.cfg.Workers, maxParked: p.cfg.MaxParked}
	p.book.setWant(p.cfg.Workers)
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
	var wg sync.WaitGroup
	// spawn starts the goroutines that hold the places, those that stand
	// in for parked handlers, and the replacement of one lost to
	// runtime.Goexit; the WaitGroup cannot reach zero meanwhile, as the
	// goroutine that asks for one has not returned. Resizing spawns only
	// while serves is set, which Run clears (under the lock) as ctx ends.
	done := ctx.Done()
	p.spawn = func() { wg.Go(func() { p.work(p.newWorker(), done) }) }
	p.mu.Lock()
	// Every place is held by one of the goroutines started below (a
	// previous Run left them all free as its goroutines exited).
	places := p.book.places
	p.book.free.Store(0)
	p.mu.Unlock()
	var initErr error
	spawned := 0
	for i := range places {
		if initErr = p.initPlace(i); initErr != nil {
			break
		}
		p.spawn()
		spawned++
	}
	p.mu.Lock()
	if initErr != nil {
		// The places left without a goroutine are free, and nothing new
		// is started: the caller stops the pool.
		p.book.free.Store(int32(places - spawned))
	} else if ctx.Err() == nil {
		p.serves = true
		p.resizeLocked(p.book.want) // a SetPlaces while the places were starting
	}
	p.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.serves = false
		p.mu.Unlock()
	})
	wg.Wait()
	stop()
	p.mu.Lock()
	p.serves = false
	p.mu.Unlock()
	return initErr
}

// initPlace runs WorkerInit for place i the first time the pool has that
// many places.
func (p *Pool) initPlace(i int) error {
	p.mu.Lock()
	fresh := i >= p.inited
	p.mu.Unlock()
	if !fresh || p.cfg.WorkerInit == nil {
		p.mu.Lock()
		p.inited = max(p.inited, i+1)
		p.mu.Unlock()
		return nil
	}
	// Apache's child_init, per worker: a module's per-worker state is
	// ready before the place takes its first request.
	if err := p.cfg.WorkerInit(i); err != nil {
		return fmt.Errorf("quartet: processor worker %d init: %w", i, err)
	}
	p.mu.Lock()
	p.inited = max(p.inited, i+1)
	p.mu.Unlock()
	return nil
}

// SetPlaces sets the number of places: handlers that may run at once. It
// takes effect at once while the pool runs (before Run, Run starts this
// many): new places go to parked handlers waiting for one, then to queued
// requests; retired places are free ones first, then places whose holder
// finishes its current request and exits. It returns the number of places
// the pool now aims at, which is fewer than n if a new place's WorkerInit
// failed (the error says why). n below 1 counts as 1.
func (p *Pool) SetPlaces(n int) (int, error) {
	n = max(n, 1)
	var err error
	for i := p.initedCount(); i < n; i++ {
		if err = p.initPlace(i); err != nil {
			n = i
			break
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.serves {
		p.book.setWant(n)
		if !p.started.Load() {
			p.book.places = n // Run starts them
		}
		return n, err
	}
	p.resizeLocked(n)
	return n, err
}

func (p *Pool) initedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inited
}

// resizeLocked carries out a resize while the pool serves. p.mu held.
func (p *Pool) resizeLocked(n int) {
	if n < 1 {
		return
	}
	resumed, dismissed := p.book.resize(n)
	for _, wk := range resumed {
		wk.place <- true
	}
	for _, wk := range dismissed {
		wk.place <- false
	}
	// Free places go to queued work now; the holders of excess places
	// that are idle must wake up to retire.
	for p.in.Len() > 0 {
		h := p.book.attach()
		if h.none() {
			break
		}
		p.hand(h)
	}
	for range p.book.excess.Load() {
		p.wake.Wake()
	}
}

// Places returns the number of places the pool aims at (SetPlaces), and
// the number it has now: more while holders of retired places finish
// their requests.
func (p *Pool) Places() (want, have int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.book.want, p.book.places
}

// RetireSpares makes the spare goroutines (waiting to be handed a place;
// see Places) that have waited longer than idle exit, and returns how many
// it retired. The runtime calls it periodically.
func (p *Pool) RetireSpares(idle time.Duration) int {
	p.mu.Lock()
	gone := p.book.idleSpares(time.Now().Add(-idle))
	p.mu.Unlock()
	for _, wk := range gone {
		wk.place <- false
	}
	return len(gone)
}

// Goroutines returns the number of the pool's goroutines now: holding a
// place, parked on their client, or spare.
func (p *Pool) Goroutines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.book.places - int(p.book.free.Load()) + int(p.book.parked.Load()) + len(p.book.spares)
}

// Drain starts a graceful shutdown: every response from now on closes its
// connection, so clients stop sending requests on it. It is safe to call
// from any goroutine, more than once.
func (p *Pool) Drain() { p.draining.Store(true) }

// Release returns r's chunks to the pool, but for up to sparesPerResponse
// of them, which stay in r.Chunks for the worker that takes r from the
// runtime's pool next (ResponseWriter.response). The runtime calls it from
// the response's recycle function, when both the worker and the writer
// are done with r.
//
// Why they ride with the record: a response through the stages took two
// chunks from this pool's sync.Pool and gave them back, and its record
// came from and went back to the runtime's, six Gets and Puts in all and
// some 590 of the 12,000 instructions of a /hello served by a worker
// (callgrind, quartet serve --no-inline). The record's round trip now
// carries its chunks, so that a response takes two. A worker cannot keep
// chunks between requests as an inline server does (a thousand workers
// would hold 32 MiB), and the chunks come back on a writer's goroutine
// with the record; the pool of records holds them as the pool of chunks
// did, and lets them go at a collection as it does.
func (p *Pool) Release(r *stages.Response) {
	kept := 0
	for _, b := range r.Chunks {
		if kept < sparesPerResponse && cap(b) == chunkSize {
			r.Chunks[kept] = b[:0]
			kept++
			continue
		}
		p.putChunk(b)
	}
	clear(r.Chunks[kept:])
	r.Chunks = r.Chunks[:kept]
}

// sparesPerResponse is how many chunks a recycled record keeps: what a
// small response uses, its body and its header block.
const sparesPerResponse = 2

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

// Unused returns how many of the places the pool aims at run no handler
// now: requests pushed now start at once, without a wait, up to that
// many. Any goroutine; two atomic loads (admission control reads it only
// for a request its limit would refuse).
func (p *Pool) Unused() int64 {
	return max(0, int64(p.book.wanted.Load())-p.running.Load())
}

// Parked returns the number of handlers waiting on their client without a
// place (including those whose wait is over and that wait for a place).
func (p *Pool) Parked() int { return int(p.book.parked.Load()) }

// ParkRefused returns how many times a handler had to wait on its client
// holding its place, because MaxParked handlers were parked already.
func (p *Pool) ParkRefused() uint64 { return p.book.refused.Load() }

func (p *Pool) getChunk() []byte {
	p.chunkGets.Add(1)
	return p.chunks.Get().(*chunk)[:0]
}

func (p *Pool) putChunk(b []byte) {
	if cap(b) != chunkSize {
		return // not one of ours
	}
	p.chunks.Put((*chunk)(b[:chunkSize]))
}

// yieldCPUAfter is how long a worker runs requests back to back before it
// gives its CPU to whatever else is runnable (see serve). A quarter of a
// millisecond lets a loop waiting behind a few workers run within about a
// millisecond, the time in which a refusal should be answered; yielding
// costs some 0.2 µs when nothing waits, so even handlers of a few
// microseconds pay under 0.1% for it.
const yieldCPUAfter = 250 * time.Microsecond

// work is one goroutine holding a place: give it to a waiting resumer, or
// pop and serve, or sleep while the ring is empty.
func (p *Pool) work(wk *worker, done <-chan struct{}) {
	for {
		if p.book.excess.Load() > 0 && p.retire() {
			return
		}
		if p.book.waiting.Load() > 0 {
			if !p.yield(wk, done) {
				return
			}
			continue
		}
		if ran := wk.lastEnd.Sub(wk.runningSince); ran >= yieldCPUAfter {
			// Go preempts a goroutine only after 10 ms on a CPU; workers
			// that always find another request would hold the Ps for that
			// long while a loop sits in the run queue behind them, and
			// every client waits with it, the ones that admission control
			// would refuse at once included. Giving the CPU up now and
			// then bounds that wait; when nothing else is runnable it
			// costs a trip through the scheduler. A loop parked in the
			// network poller is in no run queue, and the scheduler looks
			// there only when it runs dry or every 10 ms, so the nudge
			// first readies the loops that have events queued, next to
			// run on this P (stages.LoopNudge). Before the pop, so that
			// no request waits with the worker.
			if p.cfg.Nudge != nil {
				p.cfg.Nudge.Nudge(wk.lastEnd, ran)
			}
			runtime.Gosched()
			wk.runningSince = time.Now()
			wk.lastEnd = wk.runningSince
		}
		if p.cfg.Nudge != nil {
			// A loop that a nudge found with events queued and that has
			// not run yet is in a run queue behind workers (sysmon's
			// look at the network readied it there, or a second loop
			// readied took the first's place next to run): no request
			// starts ahead of it, whether this worker comes back from
			// its yield or from waiting for work.
			p.cfg.Nudge.AwaitLoops()
		}
		if req, ok := p.in.Pop(); ok {
			p.serve(wk, req)
			continue
		}
		if p.wake.Park(wk.ready, done) {
			wk.runningSince = time.Now()
			wk.lastEnd = wk.runningSince
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
	now := time.Now()
	var waited time.Duration
	if !req.Dispatched.IsZero() {
		waited = now.Sub(req.Dispatched)
	}
	if c := req.Conn; c != nil && c.Gone() {
		p.in.Finished(req, waited, 0, now) // before the drop hands req back
		p.drop(req, now)
		return
	}
	switch p.routeOf(req) {
	case routeServe:
		p.serveFramed(req, now, waited)
		return
	case routeNone:
		p.in.Finished(req, waited, 0, now)
		p.drop(req, now)
		return
	}
	p.running.Add(1)
	wk.parkedFor = 0
	p.handle(&wk.w, req, now, waited)
}

// handle runs req's handler with w and hands the response over: on a
// worker, which holds a place (w.wk set), or inline on a reader loop.
// It returns the response, which may be recycled already unless its kicks
// were held (inline).
func (p *Pool) handle(w *ResponseWriter, req *stages.Request, now time.Time, waited time.Duration) (resp *stages.Response) {
	wk := w.wk
	c := req.Conn
	if c != nil {
		c.SetPhase(stages.PhaseRunning)
	}
	resp = w.response()
	resp.Begin(c, req, now)
	if w.inline {
		resp.HoldKicks() // the caller writes it whole, or hands it over, after
	}
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
				"method", string(req.Method), "target", string(req.Target), "inline", wk == nil)
			p.recover(w, false)
		} else {
			w.answerBodyError()
		}
		took := time.Since(now)
		if w.record != nil {
			// Before the response can reach its end: whoever sees the
			// response's last byte sees its service time counted too.
			w.record.Service.Record(took)
		}
		if wk != nil {
			// And before the request can be reused (resp.Done below),
			// while its Class is still this one. An inline request never
			// entered the class queue, so it is not finished there.
			end := now.Add(took) // once: a Time.Add is some 70 instructions
			p.in.Finished(req, waited, took-wk.parkedFor, end)
			wk.lastEnd = end
		}
		w.finish()
		w.end()
		if wk != nil {
			p.running.Add(-1)
		}
		if c != nil {
			c.SetPhase(stages.PhaseWriting) // before Done: c may go back to its reader from there
		}
		resp.Done() // resp may be recycled from here on: no touching it
		if goexit && wk != nil {
			p.spawn() // an inline Goexit ends the reader loop's goroutine: see Inliner
		}
	}()
	p.call(w, req)
	goexit = false
	return resp
}

// drop lets go of a request whose client hung up before it started: no
// handler runs, nothing is answered, and the connection goes back to its
// reader to be closed.
func (p *Pool) drop(req *stages.Request, now time.Time) {
	resp := p.responses()
	resp.Begin(req.Conn, req, now)
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
		if p.counters != nil {
			p.counters.Failed.Add(1)
		}
		if log, n := p.panics.allow(panicSite(), time.Now()); log {
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
				"panics_here", n, // at this line of code, since its last report
				"stack", string(debug.Stack()))
		}
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

// InlineServer serves requests on the goroutine that calls Serve, a reader
// loop's (Apache's event MPM runs a request on the thread that read it
// when nothing in it will wait). One per loop: it holds the loop's
// ResponseWriter, reused for every request, so it allocates nothing per
// request.
type InlineServer struct {
	p      *Pool
	w      ResponseWriter
	served atomic.Uint64 // written by its loop alone: no line shared across cores
}

// NewInline returns an InlineServer for loop id, which counts its service
// times in shard id of the pool's counters.
func (p *Pool) NewInline(id int) *InlineServer {
	s := &InlineServer{p: p}
	s.w.p = p
	s.w.inline = true
	if p.counters != nil {
		s.w.record = p.counters.Shard(id)
	}
	return s
}

// Serve runs req's handler now, on the calling goroutine, and returns its
// response, complete, with the writer's reference and its kicks held
// (stages.Response.HoldKicks): nothing has reached the writer yet. The
// caller writes it itself (writer.Direct) or hands it over with
// ResumeKicks. nil: the client had gone, and the request was dropped. The
// caller has checked, with
// ServesInline, that the handler declared req never blocks, and that
// req's body (if any) was read before dispatch. The request counts in the
// processor stage's counters; it holds no place and never enters the class
// queue (it never waits for one), so admission control does not see it.
// It is counted in Served, not in the stage counters' Enqueued and
// Dequeued (shared lines written by every loop); Stats adds the two.
func (s *InlineServer) Serve(req *stages.Request) *stages.Response {
	p := s.p
	s.served.Add(1)
	now := dispatched(req)
	if c := req.Conn; c != nil && c.Gone() {
		p.drop(req, now)
		return nil
	}
	return p.handle(&s.w, req, now, 0)
}

// Keep takes back a response Serve returned, once its loop has written
// it and every stage has let go of it (the runtime's recycle, on the
// loop's goroutine): its chunks become the writer's spares, and the
// record is kept for the next request, instead of a round trip of each
// through a sync.Pool. It reports false, and takes nothing, when it keeps
// a record already; the caller then recycles r as any other. Loop
// goroutine only.
func (s *InlineServer) Keep(r *stages.Response) bool {
	if s.w.kept != nil {
		return false
	}
	for _, b := range r.Chunks {
		s.w.putChunk(b)
	}
	clear(r.Chunks)
	r.Chunks = r.Chunks[:0]
	s.w.kept = r
	return true
}

// dispatched is when the reader handed req on (its loop's clock, advanced
// to the request: reader.Loop.clock): for a request served inline, that
// is when its service starts, and taking it saves a clock read (two:
// time.Now reads the wall clock too) per request. A request dispatched by
// no reader loop (a test's) has none, and gets the time now.
func dispatched(req *stages.Request) time.Time {
	if req.Dispatched.IsZero() {
		return time.Now()
	}
	return req.Dispatched
}

// ServeFramed is Serve for a request of a protocol that frames its own
// replies and declared this one never blocks (stages.InlineProtocol): the
// protocol's Serve runs now, on the calling goroutine, and the response
// comes back complete with its kicks held, as Serve's does. nil: the
// client had gone, and the request was dropped.
func (s *InlineServer) ServeFramed(req *stages.Request) *stages.Response {
	p := s.p
	s.served.Add(1)
	now := dispatched(req)
	c := req.Conn
	if c.Gone() {
		p.drop(req, now)
		return nil
	}
	c.SetPhase(stages.PhaseRunning)
	resp := p.responses()
	resp.Begin(c, req, now)
	resp.HoldKicks() // the caller writes it whole, or hands it over, after
	p.cfg.Protocols[c.Protocol].Serve(resp, req)
	if s.w.record != nil {
		s.w.record.Service.Record(time.Since(now))
	}
	return resp
}

// Inliner is implemented by a Handler that can promise, per request, that
// serving it will not block: Inline(r) true means ServeQuartet(w, r) does
// no I/O that waits (disk, network, pipes), takes no lock that is held
// long, does not sleep, and does not call runtime.Goexit. Such a request
// is served on the reader's event loop, without the hand-off to a
// processor and back (the runtime decides; see runtime.Config).
//
// What the promise buys and costs: the loop runs the handler between its
// other connections' reads, so a handler that breaks the promise stalls
// every connection of that loop, where a processor would stall only
// itself. An inline handler's writes never wait for the client (the
// high-water mark does not apply: its whole response is queued at once),
// so answer inline only responses of bounded size, or files (SendFile
// bytes are not held in memory); WaitSent returns ErrWouldBlock.
//
// Inline is called on the reader's loop for every request, before
// ServeQuartet: it must itself be quick and must not block. A wrapper
// handler (middleware, a mux) that implements it must answer for itself
// and for the handler it passes the request to; a wrapper that does not
// implement it makes every request go through the processors, which is
// always safe.
type Inliner interface {
	Handler
	Inline(r *stages.Request) bool
}

// ServesInline reports whether h declares that serving r never blocks.
func ServesInline(h Handler, r *stages.Request) bool {
	in, ok := h.(Inliner)
	return ok && in.Inline(r)
}

// Served is the number of requests Serve has taken. Any goroutine.
func (s *InlineServer) Served() uint64 { return s.served.Load() }
