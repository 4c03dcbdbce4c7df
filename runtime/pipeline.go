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
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
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
// Config.QueueWaitTarget: it goes straight to the writer as a 503. The
// control loop (tuning.go) sizes the processor pool and sets admission's
// limits every period.
type Server struct {
	cfg Config

	ln       *listener.Listener
	readers  []*reader.Loop
	requests *stages.ClassQueue // reader → processor, a ring per request class
	classes  *routeClasses
	wake     *stages.WorkerWaker
	pool     *processor.Pool
	writers  []*writer.Loop

	sizing    sizing // the processor pool's size, bounds and mode
	tuner     tuner  // the control loop
	shedCache shedCache

	responses sync.Pool // *stages.Response, wired to kick and recycle
	ids       atomic.Uint64
	nextRdr   atomic.Uint32

	counters   counters
	inits      sync.WaitGroup // stage-inits still to run before accepting
	initFailed atomic.Bool
	served     chan struct{} // closed when Serve returns
	stop       context.CancelFunc
	state      atomic.Int32
	statsMu    sync.Mutex
	last       Stats
}

// New builds every stage and binds the listening socket (so Addr is valid
// before Serve), but starts nothing.
func New(cfg Config) (*Server, error) {
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
	s := &Server{cfg: cfg, served: make(chan struct{})}
	s.inits.Add(cfg.Writers + cfg.Readers + 1) // every loop, and the processor pool as one
	s.responses.New = func() any { return stages.NewResponse(s.kick, s.recycle) }

	// Stage 4: writers. They write, log, and let go of responses.
	for i := 0; i < cfg.Writers; i++ {
		w, err := writer.New(i, writer.Config{
			QueueCapacity: cfg.QueueCapacity,
			WriteTimeout:  cfg.WriteTimeout,
			MinRate:       cfg.MinResponseRate,
			MinRateGrace:  cfg.MinResponseRateGrace,
			LowWater:      lowWater(cfg.HighWater),
			Log:           mods.logger(cfg.Log),
			Init: func(src writer.Sources) error {
				return s.initDone(mods.stageInit(StageInfo{Stage: StageWriter, Index: i, Sources: src}))
			},
			Exit: func(src writer.Sources) {
				mods.stageExit(StageInfo{Stage: StageWriter, Index: i, Sources: src})
			},
		}, &s.counters.writer)
		if err != nil {
			return nil, s.abandon(err)
		}
		s.writers = append(s.writers, w)
	}

	// Stage 3: the processor pool, fed by the class queues that all
	// readers share; a pop that makes room in a class a reader found full
	// tells the readers.
	s.requests = stages.NewClassQueue(cfg.QueueCapacity, func() {
		for _, r := range s.readers {
			r.Unblock()
		}
	})
	s.classes = newRouteClasses(s.requests, cfg.Logger)
	s.sizing = sizing{size: cfg.Processors, min: cfg.ProcessorsMin, max: cfg.ProcessorsMax, auto: cfg.ProcessorsMin < cfg.ProcessorsMax}
	s.tuner = tuner{pool: control.NewPool(control.PoolConfig{}), adm: control.NewAdmission(cfg.QueueWaitTarget), period: control.DefaultPeriod}
	s.wake = stages.NewWorkerWaker(cfg.ProcessorsMax)
	initial := cfg.Processors
	s.pool = processor.New(processor.Config{
		Workers:      cfg.Processors,
		HighWater:    cfg.HighWater,
		LowWater:     lowWater(cfg.HighWater),
		WriteTimeout: cfg.WriteTimeout,
		MaxParked:    cfg.MaxParked,
		ServerName:   cfg.ServerName,
		Logger:       cfg.Logger,
		WorkerInit: func(i int) error {
			err := mods.stageInit(StageInfo{Stage: StageProcessor, Index: i})
			if i < initial && (err != nil || i == initial-1) {
				s.initDone(err) // the pool counts once, when its last first worker is ready or one failed
			}
			return err
		},
	}, s.requests, s.wake, s.classes.wrap(cfg.Handler), s.response, &s.counters.processor)
	s.cfg.Logger.Info("quartet: stage sized", "stage", StageProcessor, "size", cfg.Processors,
		"min", cfg.ProcessorsMin, "max", cfg.ProcessorsMax, "auto", s.sizing.auto, "cause", "config")

	// Stage 2: readers. They parse and dispatch, and close what they own.
	for i := 0; i < cfg.Readers; i++ {
		r, err := reader.New(i, reader.Config{
			Limits: reader.Limits{
				MaxRequestLine: cfg.MaxRequestLine,
				MaxHeaderBytes: cfg.MaxHeaderBytes,
				MaxHeaders:     cfg.MaxHeaders,
			},
			HeaderTimeout: cfg.HeaderTimeout,
			IdleTimeout:   cfg.IdleTimeout,
			LingerTimeout: cfg.LingerTimeout,
			BodyTimeout:   cfg.BodyTimeout,
			MaxBodyBytes:  cfg.MaxBodyBytes,
			PrereadBody:   cfg.PrereadBody,
			QueueCapacity: cfg.QueueCapacity,

			MinBodyRate:      cfg.MinBodyRate,
			MinBodyRateGrace: cfg.MinBodyRateGrace,

			Dispatch:      s.dispatch,
			Fail:          s.fail,
			Closed:        s.closed,
			PreConnection: mods.preConnection(),
			Init: func() error {
				return s.initDone(mods.stageInit(StageInfo{Stage: StageReader, Index: i}))
			},
			Exit: func() { mods.stageExit(StageInfo{Stage: StageReader, Index: i}) },
		}, &s.counters.reader)
		if err != nil {
			return nil, s.abandon(err)
		}
		s.readers = append(s.readers, r)
	}

	// Stage 1: the listener, which hands each connection to a reader.
	ln, err := listener.New(listener.Config{
		Addr:      cfg.Addr,
		Listeners: cfg.Listeners,
		ReusePort: cfg.ReusePort,
		MaxConns:  cfg.MaxConns,
		Assign:    s.assign,
	}, &s.ids)
	if err != nil {
		return nil, s.abandon(err)
	}
	s.ln = ln
	return s, nil
}

// The hand-offs, in pipeline order.

// assign: listener → reader. Round-robin; every loop is alike.
func (s *Server) assign(c *stages.Conn) {
	i := int(s.nextRdr.Add(1)) % len(s.readers)
	c.Reader, c.Writer = i, int(c.ID%uint64(len(s.writers)))
	s.counters.accepted.Add(1)
	s.readers[i].Adopt(c)
}

// dispatch: reader → processors, through admission control. A request
// that would wait longer than the target is answered with a 503 (shed.go)
// and counts as dispatched: its connection comes back from the writer.
// False when its class's ring is full; the reader holds the request and
// dispatches it again after Unblock (back-pressure, not loss).
func (s *Server) dispatch(r *stages.Request) bool {
	c := s.classes.classify(r)
	r.Class = uint8(c)
	if ok, retryAfter := s.requests.Admit(c); !ok {
		s.shed(r, retryAfter)
		return true
	}
	r.Dispatched = time.Now()
	if !s.requests.Push(r) {
		s.counters.processor.Rejected.Add(1)
		return false
	}
	s.counters.processor.Enqueued.Add(1)
	s.pool.Wake()
	return true
}

// response: a processor takes a response record to fill.
func (s *Server) response() *stages.Response { return s.responses.Get().(*stages.Response) }

// kick: processor → writer. The connection picked its writer at accept.
func (s *Server) kick(r *stages.Response) { s.writers[r.Conn.Writer].Kick(r) }

// recycle: writer and processor have both let go of r; the connection goes
// back to its reader, which reuses the request and closes if it must.
func (s *Server) recycle(r *stages.Response) {
	c, fate := r.Conn, r.Fate()
	r.RunCleanups()
	s.pool.Release(r)
	r.Conn, r.Req = nil, nil
	s.responses.Put(r)
	s.readers[c.Reader].Return(c, fate)
}

// initDone records one stage-init's outcome and passes its error on.
func (s *Server) initDone(err error) error {
	if err != nil {
		s.initFailed.Store(true)
	}
	s.inits.Done()
	return err
}

// closed: a reader closed a connection's fd.
func (s *Server) closed(*stages.Conn) { s.ln.Released() }

// Serve runs all stages until Shutdown, or until ctx is cancelled (then
// connections are closed without waiting for their requests). It returns
// nil after a Shutdown.
func (s *Server) Serve(ctx context.Context) error {
	if !s.state.CompareAndSwap(stateNew, stateServing) {
		return errors.New("quartet: Serve called twice")
	}
	defer close(s.served)
	ctx, s.stop = context.WithCancel(ctx)
	defer s.stop()
	var g errgroup.Group
	// Writers outlive ctx: a handler still running when ctx ends will hand
	// its response to them, and only after the last one may they stop.
	for _, w := range s.writers {
		g.Go(func() error { return w.Run(context.Background()) })
	}
	g.Go(func() error {
		err := s.pool.Run(ctx)
		// Requests still queued when the pool stopped will not run: give
		// their connections back to be closed, or their readers would wait
		// for them forever.
		for {
			r, ok := s.requests.Pop()
			if !ok {
				break
			}
			s.readers[r.Conn.Reader].Return(r.Conn, stages.FateClose)
		}
		for _, w := range s.writers {
			w.Stop() // returns once its responses in flight are finished
		}
		return err
	})
	for _, r := range s.readers {
		g.Go(func() error { return r.Run(ctx) })
	}
	ready := make(chan struct{})
	go func() { s.inits.Wait(); close(ready) }()
	g.Go(func() error {
		select {
		case <-ready:
			s.tune(ctx) // until ctx is done
		case <-ctx.Done():
		}
		return nil
	})
	// Accept only once every loop and worker has run its modules'
	// stage-init: a request served earlier could find a module not yet
	// ready in its loop (an RDMA completion queue, say).
	g.Go(func() error {
		select {
		case <-ready:
		case <-ctx.Done():
		}
		if s.initFailed.Load() {
			s.stop() // the failing stage reports the error; stop the others
		}
		return s.ln.Run(ctx) // returns at once, sockets closed, if ctx is done
	})
	err := g.Wait()
	if s.state.Load() == stateShutdown && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets every request already read finish and its
// response reach the client, closes idle connections, and then stops the
// stages. If ctx ends first, the remaining connections are closed and
// ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.state.Swap(stateShutdown) != stateServing {
		s.ln.Close()
		s.closeUnstarted()
		return nil
	}
	s.ln.Close()
	s.pool.Drain()
	for _, r := range s.readers {
		r.Drain()
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for s.openConns() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-tick.C:
		}
	}
	for _, r := range s.readers {
		r.Stop()
	}
	for _, w := range s.writers {
		w.Stop()
	}
	s.stop()
	select {
	case <-s.served:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

func (s *Server) openConns() int {
	n := 0
	for _, r := range s.readers {
		n += r.Open()
	}
	return n
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

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
func (s *Server) abandon(err error) error {
	s.closeUnstarted()
	return fmt.Errorf("quartet: building the server: %w", err)
}

// closeUnstarted releases loops that never ran: their Run would have.
func (s *Server) closeUnstarted() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range s.readers {
		_ = r.Run(ctx)
	}
	for _, w := range s.writers {
		w.Stop()
		_ = w.Run(ctx)
	}
	if s.ln != nil {
		_ = s.ln.Run(ctx)
	}
}
