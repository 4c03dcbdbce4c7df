package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/listener"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
)

// Server is one Quartet server: a listener, R reader loops, a pool of P
// processors and W writer loops.
//
//	listener ──Adopt──▶ reader[i] ──Dispatch──▶ admission ──▶ class queues ──▶ processor pool
//	    ▲                  ▲    ▲                   │ 503                        │ Kick
//	    │                  │    └──── Unblock ──────┼─── (room again) ◀──────────┤
//	    └── Released ◀─ close ◀── Return (keep-alive/linger/close) ◀─ writer[j] ◀┘
//
// A connection is owned by one stage at a time; the arrows are the only
// ways it moves, each through a bounded queue. Admission control refuses,
// in the reader's dispatch, a request that would wait longer than
// Config.QueueWaitTarget: it is answered at once with a 503, which the
// reader loop writes itself where the socket takes it (shed.go). The
// control loop (tuning.go) sizes the processor pool and sets admission's
// limits every period, and sizes the reader and writer stages, whose loops
// are added and removed while serving (loops.go): a reader loop that goes
// hands its connections to the others.
type Server struct {
	cfg Config

	// nudge lets CPU-bound workers hand the CPU to the listener, reader
	// and writer loops, which Go's scheduler would leave parked in its
	// network poller (stages.LoopNudge).
	nudge *stages.LoopNudge

	ln    *listener.Listener
	msgLn *listener.Listener // Config.MsgAddr's; nil without one
	// protocols are the protocols the stages serve, by
	// stages.ProtocolID: HTTP/1.1 at stages.ProtocolHTTP1, and the
	// messenger at protocolMsg when it has a listener.
	protocols []stages.Protocol
	// runsHandler says, by stages.ProtocolID, which protocols' requests
	// the Handler serves (stages.HandlerProtocol): only those may be
	// served inline on their reader loop.
	runsHandler [256]bool
	// serialize says, by stages.ProtocolID, which protocols' connections
	// may have several requests in flight (stages.Pipelined), whose
	// responses the writer loops write one at a time.
	serialize [256]bool
	// inlineProtos are, by stages.ProtocolID, the protocols that frame
	// their own replies and serve some requests inline
	// (stages.InlineProtocol); fusing says some protocol may (the
	// reader loops then get a fusion).
	inlineProtos [256]stages.InlineProtocol
	fusing       bool
	readers      loopTable[reader.Loop] // by id; loops.go
	requests     *stages.ClassQueue     // reader → processor, a ring per request class
	classes      *routeClasses
	wake         *stages.WorkerWaker
	pool         *processor.Pool
	writers      loopTable[wloop]

	mods     *modules
	writeLog func(*stages.Response)
	// fileTrouble is the writers' Trouble (fileEnded), one for them all.
	fileTrouble func(*stages.Response, error)

	// Loop counts change under loopsMu, only while Serve's group runs
	// (loops.go).
	loopsMu sync.Mutex
	group   *errgroup.Group

	// Stage fusion: a request whose handler chain declares it never
	// blocks (inline reports it) is served on its reader loop, by that
	// loop's InlineServer; nil inline: none is.
	inline func(*stages.Request) bool
	fused  []atomic.Pointer[fusion] // by reader loop id (fusion.go)

	memReturn  memoryReturn  // the control loop's (memreturn.go)
	memReturns atomic.Uint64 // memory returned after a burst, for Stats

	sizing  sizing // the processor pool's size, bounds and mode
	rsizing sizing // the reader loops' count, bounds and mode
	wsizing sizing // the writer loops'
	tuner   tuner  // the control loop

	responses sync.Pool // *stages.Response, wired to kick and recycle
	ids       atomic.Uint64
	nextRdr   atomic.Uint32

	counters   counters
	inits      sync.WaitGroup // stage-inits still to run before accepting
	initFailed atomic.Bool
	served     chan struct{} // closed when Serve returns (or at once, if it never ran)
	state      atomic.Int32
	ready      atomic.Bool

	// Shutdown. run is the stages' context; stop cancels it, which closes
	// every connection: only when the grace is over.
	run         context.Context
	stop        context.CancelFunc
	shutOnce    sync.Once
	noRing      sync.Once     // the log line that io_uring was refused
	retireMu    sync.Mutex    // loopSums against retireLoop
	retired     loopCounts    // what loops that have left the tables counted
	force       chan struct{} // closed to end the grace early
	forceOnce   sync.Once
	drained     chan struct{} // closed when drain has stopped the stages
	shutdownErr error         // written by drain before drained is closed
	statsMu     sync.Mutex
	last        Stats
}

// New builds every stage and binds the listening socket (so Addr is valid
// before Serve), but starts nothing. It owns Config.Listener and
// MsgListener from the call: when it fails, it has closed them.
func New(cfg Config) (_ *Server, err error) {
	defer func() {
		if err != nil {
			// Closing twice is harmless: the listener package closes a
			// given listener once it holds a copy of its socket.
			for _, ln := range [...]net.Listener{cfg.Listener, cfg.MsgListener} {
				if ln != nil {
					ln.Close()
				}
			}
		}
	}()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	mods := &modules{list: cfg.Modules}
	if err := mods.postConfig(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Handler = mods.handler(cfg.Handler)
	s := &Server{cfg: cfg, served: make(chan struct{}), force: make(chan struct{}), drained: make(chan struct{}),
		mods: mods, writeLog: mods.logger(cfg.Log), nudge: stages.NewLoopNudge()}
	s.fileTrouble = s.fileEnded()
	s.readers.init()
	s.fused = make([]atomic.Pointer[fusion], maxLoops)
	s.writers.init()
	s.run, s.stop = context.WithCancel(context.Background())
	s.inits.Add(cfg.Writers + cfg.Readers + 1) // every loop, and the processor pool as one
	s.protocols = []stages.Protocol{stages.ProtocolHTTP1: http1.New(http1.Config{
		Limits:     http1.Limits{MaxRequestLine: cfg.MaxRequestLine, MaxHeaderBytes: cfg.MaxHeaderBytes, MaxHeaders: cfg.MaxHeaders},
		ServerName: cfg.ServerName,
	})}
	if cfg.MsgAddr != "" || cfg.MsgListener != nil {
		s.protocols = append(s.protocols, make([]stages.Protocol, int(protocolMsg)+1-len(s.protocols))...)
		s.protocols[protocolMsg] = msg.NewTransport(msg.TransportConfig{Dispatcher: cfg.MsgDispatcher,
			Limits: msg.Limits{MaxPayload: cfg.MsgMaxPayload}, RDMA: cfg.MsgRDMA,
			Window: cfg.MsgWindow, WindowBytes: cfg.MsgWindowBytes})
	}
	for id, p := range s.protocols {
		_, s.runsHandler[id] = p.(stages.HandlerProtocol)
		_, s.serialize[id] = p.(stages.Pipelined)
		if ip, ok := p.(stages.InlineProtocol); ok && !cfg.NoInline {
			s.inlineProtos[id] = ip
			s.fusing = true
		}
	}
	s.responses.New = func() any { return stages.NewResponse(s.kick, s.recycle) }

	// Stage 4: writers. They write, log, and let go of responses.
	ws := make([]*wloop, 0, cfg.Writers)
	for i := 0; i < cfg.Writers; i++ {
		w, err := s.newWriter(i, nil)
		if err != nil {
			return nil, s.abandon(err)
		}
		s.writers.put(i, w)
		ws = append(ws, w)
	}
	s.writers.publish(ws)

	// Stage 3: the processor pool, fed by the class queues that all
	// readers share; a pop that makes room in a class a reader found full
	// tells the readers.
	s.requests = stages.NewClassQueue(cfg.QueueCapacity, func() { s.readers.each((*reader.Loop).Unblock) })
	s.classes = newRouteClasses(s.requests, cfg.Logger)
	z := cfg.ProcessorSizing()
	s.sizing = sizing{size: z.Size, min: z.Min, max: z.Max, auto: z.Auto}
	rz, wz := cfg.LoopSizing(StageReader), cfg.LoopSizing(StageWriter)
	s.rsizing = sizing{size: rz.Size, min: rz.Min, max: rz.Max, auto: rz.Auto}
	s.wsizing = sizing{size: wz.Size, min: wz.Min, max: wz.Max, auto: wz.Auto}
	s.tuner = tuner{pool: control.NewPool(control.PoolConfig{}), adm: control.NewAdmission(cfg.QueueWaitTarget), period: control.DefaultPeriod,
		io: [2]*ioTuner{newIOTuner(StageReader), newIOTuner(StageWriter)}, kicked: make(chan struct{}, 1)}
	if cfg.QueueWaitTarget > 0 {
		// Until the controller knows a class's service time, its queue is
		// limited by unknownLimit.
		start := unknownLimit(z.Max, cfg.QueueWaitTarget, s.tuner.period)
		s.requests.StartLimit(start, 1)
		s.requests.SetLimit(0, start, 1)
		s.requests.SetWaitTarget(cfg.QueueWaitTarget)
	}
	s.wake = stages.NewWorkerWaker(cfg.ProcessorsMax)
	initial := cfg.Processors
	s.pool = processor.New(processor.Config{
		Workers:      cfg.Processors,
		HighWater:    cfg.HighWater,
		LowWater:     lowWater(cfg.HighWater),
		WriteTimeout: cfg.WriteTimeout,
		MaxParked:    cfg.MaxParked,
		ServerName:   cfg.ServerName,
		MaxBodyBytes: cfg.MaxBodyBytes,
		Logger:       cfg.Logger,
		Protocols:    s.protocols,
		Nudge:        s.nudge,
		WorkerInit: func(i int) error {
			err := mods.stageInit(StageInfo{Stage: StageProcessor, Index: i})
			if i < initial && (err != nil || i == initial-1) {
				s.initDone(err) // the pool counts once, when its last first worker is ready or one failed
			}
			return err
		},
	}, s.requests, s.wake, s.classes.wrap(cfg.Handler), s.response, &s.counters.processor)
	s.requests.SetUnused(s.pool.Unused)

	if !cfg.NoInline {
		s.inline = mods.inline(cfg.Handler)
		// A reader loop also writes the 503s it sheds (shed.go).
		s.fusing = s.fusing || s.inline != nil || cfg.QueueWaitTarget > 0
	}

	// Stage 2: readers. They parse and dispatch, and close what they own.
	rs := make([]*reader.Loop, 0, cfg.Readers)
	for i := 0; i < cfg.Readers; i++ {
		r, err := s.newReader(i, nil)
		if err != nil {
			return nil, s.abandon(err)
		}
		s.readers.put(i, r)
		rs = append(rs, r)
	}
	s.readers.publish(rs)

	// Stage 1: the listener, which hands each connection to a reader.
	ln, err := listener.New(listener.Config{
		Addr:      cfg.Addr,
		Listener:  cfg.Listener,
		Listeners: cfg.Listeners,
		ReusePort: cfg.ReusePort,
		MaxConns:  cfg.MaxConns,
		Assign:    s.assign,
		Nudge:     s.nudge,
		// Out of fds, say so: clients wait in the backlog meanwhile.
		OnAcceptError: s.acceptFailed("listener", &s.cfg.Addr),
	}, &s.ids)
	if err != nil {
		return nil, s.abandon(err)
	}
	s.ln = ln
	s.cfg.Addr = ln.Addr().String() // the port a ":0" or a given Listener got
	if len(s.protocols) > int(protocolMsg) {
		// The messenger's listener: the same hand-off to the same readers;
		// only the mark on its connections differs.
		mln, err := listener.New(listener.Config{
			Addr:          cfg.MsgAddr,
			Listener:      cfg.MsgListener,
			MaxConns:      cfg.MaxConns,
			Assign:        s.assign,
			Protocol:      protocolMsg,
			Nudge:         s.nudge,
			Name:          "messenger listener",
			OnAcceptError: s.acceptFailed("messenger listener", &s.cfg.MsgAddr),
		}, &s.ids)
		if err != nil {
			return nil, s.abandon(err)
		}
		s.msgLn = mln
		s.cfg.MsgAddr = mln.Addr().String()
	}
	return s, nil
}

// protocolMsg is the messenger's stages.ProtocolID: its connections come
// from the listener on Config.MsgAddr.
const protocolMsg stages.ProtocolID = 1

// The hand-offs, in pipeline order.

// assign: listener → reader. Round-robin over the loops serving; every
// loop is alike. A loop that retired after the snapshot was read refuses
// the connection, and the next one takes it.
func (s *Server) assign(c *stages.Conn) {
	s.counters.accepted.Add(1)
	ws := s.writers.live()
	c.Writer = ws[c.ID%uint64(len(ws))].ID()
	for {
		rs := s.readers.live()
		r := rs[int(s.nextRdr.Add(1))%len(rs)]
		c.Reader = r.ID()
		if r.Adopt(c) {
			return
		}
	}
}

// dispatch: reader → processors, through admission control. A request
// that would wait longer than the target is answered with a 503 (shed.go)
// and counts as dispatched: its connection comes back from the writer.
// False when its class's ring is full; the reader holds the request and
// dispatches it again after Unblock (back-pressure, not loss).
func (s *Server) dispatch(r *stages.Request) bool {
	c := s.classes.classify(r)
	r.Class = uint8(c)
	if s.servesInline(r) {
		s.serveInline(s.fused[r.Conn.Reader].Load(), r)
		return true
	}
	s.bindWriter(r.Conn, r.Follows)
	now := r.Dispatched // the reader's loop clock: no clock read per request here
	if now.IsZero() {
		now = time.Now()
		r.Dispatched = now
	}
	if ok, retryAfter := s.requests.Admit(c, now); !ok {
		s.shed(r, retryAfter, now)
		s.tuner.kick()
		return true
	}
	// Counted before the push: a worker may pop and start the request
	// before this goroutine runs again, and Stats must not show a request
	// running that was never enqueued (TestClientGone waited on exactly
	// that count and could close its client before the request was read).
	// On the reader loop's own shard: loops on other cores hand requests
	// over too.
	pc := s.counters.processor.Shard(int(r.Conn.Reader))
	pc.Enqueued.Add(1)
	if !s.requests.Push(r) {
		pc.Enqueued.Add(^uint64(0))
		s.releaseWriter(r.Conn)
		pc.Rejected.Add(1)
		return false
	}
	s.pool.Wake()
	// After the push, so that the period it ends counts the request: a
	// stretched period ends at once, the pool may have to grow.
	s.tuner.kick()
	return true
}

// servesInline reports whether r is to be served on its reader loop: its
// handler chain (and every module's InsertFilter) declares it never
// blocks, and its body, if any, was read before dispatch (a streamed body
// is read by the very loop, so a handler reading it inline would wait on
// itself).
//
// A request of a protocol that frames its own replies is served inline
// when the protocol says it never blocks (stages.InlineProtocol) and no
// other request of its connection is in flight (its reply is written by
// the reader loop, so no writer loop may be writing another).
func (s *Server) servesInline(r *stages.Request) bool {
	if r.Conn == nil {
		return false
	}
	if id := r.Conn.Protocol; !s.runsHandler[id] {
		ip := s.inlineProtos[id]
		return ip != nil && !r.Follows && ip.ServesInline(r)
	}
	if s.inline == nil {
		return false
	}
	if _, streamed := r.Body.(stages.ParkingReader); streamed {
		return false
	}
	return s.inline(r)
}

// response: a processor takes a response record to fill.
func (s *Server) response() *stages.Response { return s.responses.Get().(*stages.Response) }

// kick: processor → writer. The connection's writer was bound when the
// reader handed it out (or, for a response a reader loop wrote itself,
// when it handed over the rest: serveInline).
func (s *Server) kick(r *stages.Response) {
	if r.Queued() {
		// Coalesces: already queued, or its kicks are held, as an inline
		// response's are while its connection has no writer bound.
		return
	}
	s.writers.at(r.Conn.Writer).Kick(r)
}

// recycle: writer and processor have both let go of r; the connection goes
// back to its reader, which reuses the request and closes if it must (or,
// for a request in flight beside others of its connection, the request's
// record goes back, and the connection stays with its reader).
func (s *Server) recycle(r *stages.Response) {
	c, fate, ticket := r.Conn, r.Fate(), r.Req.Ticket
	f := s.servedInline(c)
	r.RunCleanups()
	// Kept only under ReturnOwn's condition below (f: the loop is serving
	// c inline right now; no ticket), which makes the caller the loop's
	// own goroutine. servesInline refuses a request that follows others
	// in flight, so no other response of c can be recycled in that window
	// today; the ticket test keeps Keep from resting on that argument
	// alone.
	if f != nil && ticket == 0 && f.inline.Keep(r) {
		r.Conn, r.Req = nil, nil // kept for the loop's next inline request
	} else {
		s.pool.Release(r)
		r.Conn, r.Req = nil, nil
		s.responses.Put(r)
	}
	if f == nil {
		s.releaseWriter(c)
	} else if ticket == 0 {
		f.returned.Add(1) // only this loop writes it
		s.readers.at(c.Reader).ReturnOwn(c, fate)
		return
	}
	s.handBack(c, ticket, fate)
}

// handBack gives a finished request back to its connection's reader.
func (s *Server) handBack(c *stages.Conn, ticket int32, f stages.Fate) {
	if ticket != 0 {
		s.readers.at(c.Reader).Answered(c, ticket, f)
		return
	}
	s.readers.at(c.Reader).Return(c, f)
}

// initDone records one stage-init's outcome and passes its error on.
func (s *Server) initDone(err error) error {
	if err != nil {
		s.initFailed.Store(true)
	}
	s.inits.Done()
	return err
}

// closed: a reader closed a connection's fd; the listener that accepted
// it may take one more.
func (s *Server) closed(c *stages.Conn) {
	if c.Protocol == protocolMsg && s.msgLn != nil {
		s.msgLn.Released()
		return
	}
	s.ln.Released()
}

// Serve runs the server until ctx ends or Shutdown or Close is called,
// and returns only once every stage has stopped and every connection is
// closed. When ctx ends, Serve shuts the server down gracefully, as
// Shutdown does: in-flight requests get up to Config.ShutdownTimeout to
// finish. So a main that returns Serve's result with a signal context
// drops no request on Ctrl-C:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	return srv.Serve(ctx)
//
// Serve returns nil after a shutdown (graceful or not), the error of a
// stage or module that failed, or ErrServerClosed when the server was
// shut down before Serve was called (or Serve is called twice).
func (s *Server) Serve(ctx context.Context) error {
	if !s.state.CompareAndSwap(stateNew, stateServing) {
		return ErrServerClosed
	}
	defer close(s.served)
	defer context.AfterFunc(ctx, func() { s.beginShutdown() })()
	run := s.run // cancelled only when the shutdown's grace is over
	g := new(errgroup.Group)
	s.setGroup(g) // loops added while serving join it
	// Writers outlive run: a handler still running when it ends will hand
	// its response to them, and only after the last one may they stop.
	for _, w := range s.writers.live() {
		g.Go(s.runWriter(w, nil))
	}
	g.Go(func() error {
		err := s.pool.Run(run)
		// Requests still queued when the pool stopped will not run: give
		// their connections back to be closed, or their readers would wait
		// for them forever.
		for {
			r, ok := s.requests.Pop()
			if !ok {
				break
			}
			s.releaseWriter(r.Conn)
			s.handBack(r.Conn, r.Ticket, stages.FateClose)
		}
		// A protocol's reply may come after its Serve returned:
		// the writers must still be there to send it.
		for _, p := range s.protocols {
			if p != nil {
				p.Wait()
			}
		}
		s.writers.each(func(w *wloop) { w.Stop() }) // each returns once its responses in flight are finished
		return err
	})
	for _, r := range s.readers.live() {
		g.Go(s.runReader(r, nil))
	}
	ready := make(chan struct{})
	go func() { s.inits.Wait(); close(ready) }()
	g.Go(func() error {
		select {
		case <-ready:
			s.tune(run) // until the stages stop
		case <-run.Done():
		}
		return nil
	})
	// Accept only once every loop and worker has run its modules'
	// stage-init: a request served earlier could find a module not yet
	// ready in its loop (an RDMA completion queue, say).
	g.Go(func() error {
		select {
		case <-ready:
		case <-run.Done():
		}
		if s.initFailed.Load() {
			s.stop() // the failing stage reports the error; stop the others
		} else if s.state.Load() == stateServing {
			s.ready.Store(true)
		}
		if s.msgLn != nil {
			g.Go(func() error { return s.msgLn.Run(run) })
		}
		return s.ln.Run(run) // returns at once, sockets closed, if closed already
	})
	err := g.Wait()
	s.setGroup(nil)
	s.ready.Store(false)
	if s.state.Load() == stateShutdown && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ErrServerClosed is returned by Serve when the server was shut down
// before it was called, or when it is called a second time.
var ErrServerClosed = errors.New("quartet: server closed")

// Shutdown stops the server gracefully, as Serve does when its context
// ends: it stops accepting, lets every request already read finish and its
// response reach the client, closes idle connections, and then stops the
// stages. It returns once all of that is done (and Serve, if running, has
// returned or is about to).
//
// The grace is Config.ShutdownTimeout, shortened by ctx's deadline if ctx
// has an earlier one; when it is over, the connections still open are
// shut down (the client sees them close; a handler still running is not
// interrupted, but its writes fail, and Shutdown waits for it to return;
// a messenger reply still to come is abandoned, see stages.Abandoner),
// and Shutdown returns an error wrapping context.DeadlineExceeded.
// Only a deadline shortens the grace: a ctx that is merely cancelled (the
// signal context that also stopped Serve, say) does not cut requests off,
// so passing one context to both Serve and Shutdown is safe. To cut
// requests off at once, call Close.
//
// Shutdown may be called more than once, and from several goroutines; each
// call waits for the same shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.state.CompareAndSwap(stateNew, stateShutdown) {
		s.closeNeverServed()
		return nil
	}
	s.beginShutdown()
	if d, ok := ctx.Deadline(); ok {
		t := time.AfterFunc(time.Until(d), s.forceStop)
		defer t.Stop()
	}
	<-s.drained
	<-s.served
	return s.shutdownErr
}

// Close stops the server at once: connections are shut down whatever they
// are doing, requests in flight are lost. After a Shutdown has begun, it
// cuts its grace short. It returns once the server has stopped, which
// includes the return of handlers still running.
func (s *Server) Close() error {
	if s.state.CompareAndSwap(stateNew, stateShutdown) {
		s.closeNeverServed()
		return nil
	}
	s.beginShutdown()
	s.forceStop()
	<-s.drained
	<-s.served
	return nil
}

// Ready reports whether the server is taking requests: every stage has
// initialised and no shutdown has begun. It is what a readiness probe
// asks.
func (s *Server) Ready() bool { return s.ready.Load() }

// beginShutdown starts the graceful shutdown once; later calls do nothing.
// The drain runs on its own goroutine, so that Serve's context ending can
// start it without anyone waiting.
func (s *Server) beginShutdown() {
	s.shutOnce.Do(func() {
		s.state.Store(stateShutdown)
		s.ready.Store(false)
		s.closeListeners()
		s.pool.Drain()
		s.loopsMu.Lock() // no loop is added after it: every loop drains
		s.readers.each((*reader.Loop).Drain)
		s.loopsMu.Unlock()
		go s.drain()
	})
}

// drain waits for the connections to finish or for the grace to end, then
// stops the stages. It owns the shutdown's outcome.
func (s *Server) drain() {
	began := time.Now()
	grace := time.NewTimer(s.cfg.ShutdownTimeout)
	defer grace.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	why := ""
wait:
	for s.openConns() > 0 {
		select {
		case <-grace.C:
			why = "grace over"
			break wait
		case <-s.force:
			why = "forced"
			break wait
		case <-tick.C:
		}
	}
	if n := s.openConns(); n > 0 {
		s.shutdownErr = fmt.Errorf("quartet: shutdown %s, closing %d connections: %w", why, n, context.DeadlineExceeded)
		// waited, not the configured grace: a Shutdown's deadline or a
		// Close may have cut it short.
		s.cfg.Logger.Warn("shutdown "+why+": closing connections", "open", n, "waited", time.Since(began).Round(time.Millisecond))
	}
	if why != "" {
		// Replies still to come will find their connections closed: the
		// writers need not stay for them (Serve waits for the protocols
		// before it stops the writers).
		for _, p := range s.protocols {
			if a, ok := p.(stages.Abandoner); ok {
				a.Abandon()
			}
		}
	}
	s.readers.each((*reader.Loop).Stop)
	// The writers are stopped by Serve once the pool has stopped: a
	// handler still running will hand its response to them.
	s.stop()
	close(s.drained)
}

// closeNeverServed releases a server whose Serve never ran, and marks it
// stopped for every later Shutdown and Close.
func (s *Server) closeNeverServed() {
	s.shutOnce.Do(func() {
		s.closeListeners()
		s.closeUnstarted()
		s.stop()
		close(s.drained)
		close(s.served)
	})
}

// forceStop ends the shutdown's grace now.
func (s *Server) forceStop() { s.forceOnce.Do(func() { close(s.force) }) }

func (s *Server) openConns() int {
	n := 0
	s.readers.each(func(r *reader.Loop) { n += r.Open() })
	return n
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// MsgAddr is the messenger's listening address (Config.MsgAddr), or nil
// when the server does not serve it.
func (s *Server) MsgAddr() net.Addr {
	if s.msgLn == nil {
		return nil
	}
	return s.msgLn.Addr()
}

// Config returns the configuration in force, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

const (
	stateNew int32 = iota
	stateServing
	stateShutdown
)

func lowWater(high int64) int64 {
	if high <= 0 {
		high = processor.DefaultHighWater
	}
	return high / 4
}

// abandon releases what New built before failing.
// The stages' errors name themselves ("quartet: listener: ..."), so err is
// passed on as it is.
func (s *Server) abandon(err error) error {
	s.closeUnstarted()
	s.stop()
	return err
}

// closeUnstarted releases loops that never ran: their Run would have.
func (s *Server) closeUnstarted() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.readers.each(func(r *reader.Loop) { _ = r.Run(ctx) })
	s.writers.each(func(w *wloop) {
		w.Stop()
		_ = w.Run(ctx)
	})
	if s.ln != nil {
		_ = s.ln.Run(ctx)
	}
	if s.msgLn != nil {
		_ = s.msgLn.Run(ctx)
	}
}

// closeListeners stops accepting on every listening address.
func (s *Server) closeListeners() {
	s.ln.Close()
	if s.msgLn != nil {
		s.msgLn.Close()
	}
}
