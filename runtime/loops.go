package runtime

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// Reader and writer loops added and removed while serving.
//
// Each I/O stage keeps its loops in a table by id (what stages.Conn.Reader
// and Conn.Writer name) and publishes the ones that take work as a
// snapshot (serving) that the hand-offs read without a lock. Adding a loop
// builds it, starts it, waits for its stage-init (modules may set up per
// loop state, an RDMA completion queue), and only then publishes it: a
// loop whose init failed never held a connection. Removing one takes it
// out of the snapshot first, so no new work reaches it, and then:
//
//   - a reader gives its connections to the others (reader.Loop.Retire:
//     fds open, requests out finish first; see reader/handover.go) and
//     returns when it holds none;
//   - a writer owns no connection between responses, so it keeps those it
//     was handed until they are written, and connections move between
//     writers freely between responses (one added takes its share of
//     those open at their next response, unless a module pinned them to
//     their loop: Conn.PinWriter): every response is bound to its
//     writer when the reader hands its connection out (bindWriter), or,
//     for one a reader loop serves and writes itself, only if it leaves
//     the rest to a writer loop (serveInline), and unbound when it is
//     recycled, and a retired writer is stopped when
//     the last one bound to it is (wloop.release), by whichever side sees
//     the count reach zero, with the store-then-load pair that the loops'
//     sleep protocol uses, so no response is kicked to a stopped loop.
//
// A loop that has returned leaves its id free for the next one added. The
// loop's goroutine and its poller and waker fds are released by its Run,
// as for loops that stop at shutdown.

// maxLoops bounds a stage's loop count (Config.Validate's 1024).
const maxLoops = 1024

// loopTable is an I/O stage's loops by id and the snapshot of those
// serving. Changes are made under Server.loopsMu.
type loopTable[L any] struct {
	byID    []atomic.Pointer[L]
	top     atomic.Int32 // ids below it have been used
	serving atomic.Pointer[[]*L]
}

func (t *loopTable[L]) init() {
	t.byID = make([]atomic.Pointer[L], maxLoops)
	t.serving.Store(&[]*L{})
}

// at is the loop with id i, nil if there is none (any more).
func (t *loopTable[L]) at(i int) *L { return t.byID[i].Load() }

// live is the snapshot of the loops serving; never modified.
func (t *loopTable[L]) live() []*L { return *t.serving.Load() }

// put makes l loop id.
func (t *loopTable[L]) put(id int, l *L) {
	t.byID[id].Store(l)
	if int32(id) >= t.top.Load() {
		t.top.Store(int32(id) + 1) // under Server.loopsMu, or in New
	}
}

// each calls fn for every loop in the table: serving, starting or
// retiring. It allocates nothing.
func (t *loopTable[L]) each(fn func(*L)) {
	for i := range t.byID[:t.top.Load()] {
		if l := t.byID[i].Load(); l != nil {
			fn(l)
		}
	}
}

// freeID is the lowest id no loop holds, or -1.
func (t *loopTable[L]) freeID() int {
	for i := range t.byID {
		if t.byID[i].Load() == nil {
			return i
		}
	}
	return -1
}

// publish replaces the serving snapshot.
func (t *loopTable[L]) publish(ls []*L) { t.serving.Store(&ls) }

// without is ls without l, as a new slice.
func without[L any](ls []*L, l *L) []*L {
	out := make([]*L, 0, len(ls))
	for _, x := range ls {
		if x != l {
			out = append(out, x)
		}
	}
	return out
}

// wloop is a writer loop and the count its removal waits for.
type wloop struct {
	*writer.Loop
	out     atomic.Int64 // responses bound to the loop and not yet recycled
	retired atomic.Bool  // takes no new responses
	stopped atomic.Bool  // Stop has been called
}

// release unbinds a response; the last one of a retired loop stops it.
func (w *wloop) release() {
	if w.out.Add(-1) == 0 && w.retired.Load() {
		w.stop()
	}
}

// retire stops the loop now if nothing is bound to it, else when the
// last response is released.
func (w *wloop) retire() {
	w.retired.Store(true)
	if w.out.Load() == 0 {
		w.stop()
	}
}

func (w *wloop) stop() {
	if w.stopped.CompareAndSwap(false, true) {
		w.Stop()
	}
}

// bindWriter binds the response the connection is about to get to a
// serving writer loop: the one it has, unless that one is retiring or
// gone. The reader calls it (through dispatch and fail) while it owns the
// connection, so Conn.Writer changes only between responses. A response
// that follows others of its connection still on their way (a pipelined
// protocol's: stages.Request.Follows) stays with their writer, retiring
// or not: one socket is written by one loop at a time. (If that loop has
// stopped, their responses have all been written.)
func (s *Server) bindWriter(c *stages.Conn, follows bool) {
	if follows {
		// Others were in flight as the reader last knew, but their
		// answers may all be written since: if the loop has stopped (or
		// gone), none of the connection's responses is left on it, and
		// the connection may move like any other.
		if w := s.writers.at(c.Writer); w != nil {
			w.out.Add(1)
			if !w.stopped.Load() {
				return
			}
			w.release()
		}
	}
	for {
		// The connection's place among the loops serving now, so that
		// loops added while serving take their share of the connections
		// already open (a writer owns no connection between responses,
		// so moving one costs nothing), unless a module pinned it.
		ws := s.writers.live()
		if !c.WriterPinned() {
			c.Writer = ws[c.ID%uint64(len(ws))].ID()
		}
		if w := s.writers.at(c.Writer); w != nil {
			w.out.Add(1)
			if !w.retired.Load() {
				return
			}
			w.release()
		}
		c.Writer = ws[c.ID%uint64(len(ws))].ID() // its loop is going: pinned or not, it moves
	}
}

// releaseWriter unbinds a connection's response from its writer: it has
// been recycled, or will never be written (a queued request a stopping
// pool did not run).
func (s *Server) releaseWriter(c *stages.Conn) { s.writers.at(c.Writer).release() }

// handover picks the reader loop a retiring or rebalancing loop gives a
// connection to: the serving loop, other than from, with the fewest,
// among those not giving connections away themselves if there are any
// (reader.Loop.Giving).
func (s *Server) handover(from *reader.Loop) *reader.Loop {
	var best, giving *reader.Loop
	for _, r := range s.readers.live() {
		switch {
		case r == from:
		case r.Giving():
			if giving == nil || r.Open() < giving.Open() {
				giving = r
			}
		case best == nil || r.Open() < best.Open():
			best = r
		}
	}
	if best == nil {
		return giving
	}
	return best
}

// setLoops adds or removes loops of an I/O stage until it has n serving,
// and logs each change with its cause. It returns the count it reached.
func (s *Server) setLoops(st Stage, n int, cause string, attrs ...any) (int, error) {
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	cur := s.loopCount(st)
	from := cur
	if n == cur {
		return cur, nil
	}
	if s.group == nil || s.state.Load() != stateServing || s.run.Err() != nil {
		return cur, fmt.Errorf("%w: %s loops %d → %d", ErrNotServing, st, cur, n)
	}
	var err error
	for cur < n && err == nil {
		if st == StageReader {
			err = s.addReader()
		} else {
			err = s.addWriter()
		}
		if err == nil {
			cur++
		}
	}
	for cur > n && cur > 1 {
		if st == StageReader {
			s.removeReader()
		} else {
			s.removeWriter()
		}
		cur--
	}
	args := append([]any{"stage", st, "from", from, "to", cur, "cause", cause}, attrs...)
	if err != nil {
		s.cfg.Logger.Error("quartet: stage resized short", append(args, "err", err)...)
	} else {
		s.cfg.Logger.Info("quartet: stage resized", args...)
	}
	return cur, err
}

// loopCount is how many loops of st serve. s.loopsMu held, or for a
// glance.
func (s *Server) loopCount(st Stage) int {
	if st == StageReader {
		return len(s.readers.live())
	}
	return len(s.writers.live())
}

// initWait is the stage-init outcome of a loop added while serving, for
// the one who added it.
type initWait struct {
	done   chan error
	failed atomic.Bool
}

func newInitWait() *initWait { return &initWait{done: make(chan error, 1)} }

// report passes the outcome on and returns it.
func (w *initWait) report(err error) error {
	if err != nil {
		w.failed.Store(true)
	}
	w.done <- err
	return err
}

// newReader builds reader loop id. added: built while serving, its init
// reported on the channel rather than to the server's start.
func (s *Server) newReader(id int, added *initWait) (*reader.Loop, error) {
	cfg := s.cfg
	s.fusionFor(id)
	var flush func()
	if f := s.fused[id].Load(); f != nil {
		flush = f.direct.Flush
	}
	return reader.New(id, reader.Config{
		MaxHeadBytes:  cfg.MaxHeaderBytes,
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
		Flush:         flush,
		Inline:        s.servesInline,
		Protocols:     s.protocols,
		Reject:        s.reject,
		Closed:        s.closed,
		Handover:      s.handover,
		Nudge:         s.nudge,
		Classify:      func(r *stages.Request) uint8 { return uint8(s.classes.classify(r)) },
		PreConnection: s.mods.preConnection(),
		Init: func() error {
			err := s.mods.stageInit(StageInfo{Stage: StageReader, Index: id})
			if added != nil {
				return added.report(err)
			}
			return s.initDone(err)
		},
		Exit: func() { s.mods.stageExit(StageInfo{Stage: StageReader, Index: id}) },
	}, s.counters.reader.Shard(id))
}

// newWriter builds writer loop id (added: as for newReader).
func (s *Server) newWriter(id int, added *initWait) (*wloop, error) {
	cfg := s.cfg
	w, err := writer.New(id, writer.Config{
		QueueCapacity:  cfg.QueueCapacity,
		WriteTimeout:   cfg.WriteTimeout,
		MinRate:        cfg.MinResponseRate,
		MinRateGrace:   cfg.MinResponseRateGrace,
		LowWater:       lowWater(cfg.HighWater),
		NoBatchedSends: cfg.NoBatchedSends,
		Log:            s.writeLog,
		Trouble:        s.fileTrouble,
		Nudge:          s.nudge,
		Init: func(src writer.Sources) error {
			err := s.mods.stageInit(StageInfo{Stage: StageWriter, Index: id, Sources: src})
			if added != nil {
				return added.report(err)
			}
			return s.initDone(err)
		},
		Exit: func(src writer.Sources) {
			s.mods.stageExit(StageInfo{Stage: StageWriter, Index: id, Sources: src})
		},
		Serialize: s.serialize,
	}, s.counters.writer.Shard(id))
	if err != nil {
		return nil, err
	}
	return &wloop{Loop: w}, nil
}

// addReader starts a reader loop, publishes it once its init is done, and
// asks the others to give it their share of connections. s.loopsMu held.
func (s *Server) addReader() error {
	id := s.readers.freeID()
	if id < 0 {
		return fmt.Errorf("quartet: reader: %d loops at most", maxLoops)
	}
	inited := newInitWait()
	r, err := s.newReader(id, inited)
	if err != nil {
		return err
	}
	r.SetDrainBudget(s.tuner.budget(StageReader))
	s.readers.put(id, r)
	s.group.Go(s.runReader(r, inited))
	if err := <-inited.done; err != nil {
		return fmt.Errorf("quartet: reader %d: init: %w", id, err)
	}
	old := s.readers.live()
	s.readers.publish(append(append([]*reader.Loop(nil), old...), r))
	// Connections stay with their loop for their life; a loop added under
	// keep-alive load would get only new ones. The others give it their
	// share, each what it holds above the new mean.
	total := 0
	for _, o := range old {
		total += o.Open()
	}
	mean := total / (len(old) + 1)
	for _, o := range old {
		o.Rebalance(o.Open() - mean)
	}
	return nil
}

// runReader is the goroutine of reader loop r (inited: added while
// serving, else nil).
func (s *Server) runReader(r *reader.Loop, inited *initWait) func() error {
	run := s.run
	return func() error {
		release := s.batchIO(r)
		err := r.Run(run)
		release()
		// Retired with nothing left (a loop stopped at shutdown may
		// still be named by connections on their way back), or never
		// started: the id is free.
		if (r.Retiring() && r.Open() == 0) || (inited != nil && inited.failed.Load()) {
			s.retireLoop(readerCounts(r), func() bool {
				return s.readers.byID[r.ID()].CompareAndSwap(r, nil)
			})
			return nil // an added loop's init failure is the adder's to report
		}
		return err
	}
}

// runWriter is the goroutine of writer loop w (inited as for runReader).
func (s *Server) runWriter(w *wloop, inited *initWait) func() error {
	return func() error {
		err := w.Run(context.Background()) // writers outlive run (see Serve)
		if (w.retired.Load() && w.out.Load() == 0) || (inited != nil && inited.failed.Load()) {
			s.retireLoop(writerCounts(w), func() bool {
				return s.writers.byID[w.ID()].CompareAndSwap(w, nil)
			})
			return nil
		}
		return err
	}
}

// removeReader retires the serving reader loop with the fewest
// connections. s.loopsMu held; at least two serve.
func (s *Server) removeReader() {
	live := s.readers.live()
	r := live[0]
	for _, o := range live[1:] {
		if o.Open() < r.Open() {
			r = o
		}
	}
	s.readers.publish(without(live, r))
	r.Retire()
}

// addWriter starts a writer loop and publishes it once its init is done:
// connections accepted from then on may pick it. s.loopsMu held.
func (s *Server) addWriter() error {
	id := s.writers.freeID()
	if id < 0 {
		return fmt.Errorf("quartet: writer: %d loops at most", maxLoops)
	}
	inited := newInitWait()
	w, err := s.newWriter(id, inited)
	if err != nil {
		return err
	}
	w.SetDrainBudget(s.tuner.budget(StageWriter))
	s.writers.put(id, w)
	s.group.Go(s.runWriter(w, inited))
	if err := <-inited.done; err != nil {
		return fmt.Errorf("quartet: writer %d: init: %w", id, err)
	}
	s.writers.publish(append(append([]*wloop(nil), s.writers.live()...), w))
	return nil
}

// removeWriter retires the serving writer loop with the fewest responses
// bound to it. s.loopsMu held; at least two serve.
func (s *Server) removeWriter() {
	live := s.writers.live()
	w := live[0]
	for _, o := range live[1:] {
		if o.out.Load() < w.out.Load() {
			w = o
		}
	}
	s.writers.publish(without(live, w))
	w.retire()
}

// setGroup gives the loop changes the group that Serve waits for (nil:
// Serve has not started or has returned, and loop counts cannot change).
func (s *Server) setGroup(g *errgroup.Group) {
	s.loopsMu.Lock()
	s.group = g
	s.loopsMu.Unlock()
}
