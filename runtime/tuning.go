package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/stages"
)

// Sizing the stages while serving: the API (StageSize, ChangeStage), and
// the control loop that samples the stages every control period, feeds the
// controllers of package control, and applies what they decide.
//
// The period is control.DefaultPeriod, 100 ms: short enough that the pool
// reaches the size a new load needs within half a second (growth is at
// most ×4 a period) and that admission limits follow a change of service
// time before a queue of the old size has drained, long enough that a
// period of a few hundred requests a second holds tens of them, which is
// what a mean needs. Its own work is one pass over the open classes' and
// loops' counters, about 11 µs (BenchmarkControlSample).
//
// What a period costs beyond that is the wake-up: the runtime's timer
// wakes a thread out of the network poller, sysmon wakes with it and
// often preempts the control goroutine as if it had run for the whole
// period (a signal), and another thread is woken to spin. On this
// project's machines (a PVM guest, where a null system call takes a
// microsecond) that came to a few hundred µs a period: an idle server
// used 1.6-4.1 ms of CPU a second (two sessions' measurements), against
// 0.06 with the period stretched to 10 s and 0.2-0.4 as it stretches
// now, and peers that keep no timer (nginx, gnet, net/http) use none.
// So the period stretches while there is nothing to decide (quiet, in
// sample): doubled each quiet period up to maxQuietPeriod, and back to
// DefaultPeriod at the first period that is not quiet. A request for the
// processors ends a stretched period at once (kick), because that is
// where a burst needs the controller within a period: a pool at its floor
// facing blocking handlers. Loops lightly loaded that get busy are seen at
// the end of the stretched period, within maxQuietPeriod, which is the
// loop controller's own pace (a loop is added at most once a second).

// ErrNotServing is returned (wrapped, naming the stage) by ChangeStage
// for a change of a loop count while the server is not serving (before
// Serve, or once a shutdown has begun): loops are added and removed only
// with the stages running.
var ErrNotServing = errors.New("quartet: loop counts change only while the server serves")

// StageSize is a stage's size and the bounds its controller keeps it in.
type StageSize struct {
	Stage     Stage
	Size      int  // loops or places it aims at now
	Min, Max  int  // the controller's bounds
	Auto      bool // a controller sizes it within [Min, Max]
	Resizable bool // ChangeStage can change it while serving
}

// StageChange is a change to a stage's size or bounds. Zero fields and a
// nil Auto leave things as they are.
type StageChange struct {
	// Size sets the size now. It turns the controller off for the stage
	// (the size stays where it is put) unless Auto is given as true, in
	// which case the controller starts from it.
	Size int
	// Min and Max set the bounds; the size is brought inside them.
	Min, Max int
	// Auto turns the stage's controller on or off.
	Auto *bool
	// Cause says who asked, for the log ("admin 127.0.0.1:40112");
	// "" logs "api".
	Cause string
}

// sizing is the processor pool's size, bounds and mode; the pool carries
// the size out (processor.Pool.SetPlaces).
type sizing struct {
	mu       sync.Mutex
	size     int
	min, max int
	auto     bool
}

func (z *sizing) get() (size, lo, hi int, auto bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.size, z.min, z.max, z.auto
}

// stageSizing is st's size, bounds and mode, or nil for no such stage.
func (s *Server) stageSizing(st Stage) *sizing {
	switch st {
	case StageReader:
		return &s.rsizing
	case StageWriter:
		return &s.wsizing
	case StageProcessor:
		return &s.sizing
	}
	return nil
}

// StageSize returns a stage's size and bounds.
func (s *Server) StageSize(st Stage) (StageSize, error) {
	z := s.stageSizing(st)
	if z == nil {
		return StageSize{}, fmt.Errorf("quartet: no stage %q (stages: reader, processor, writer)", st)
	}
	size, lo, hi, auto := z.get()
	return StageSize{Stage: st, Size: size, Min: lo, Max: hi, Auto: auto, Resizable: true}, nil
}

// StageSizes returns every stage's size, in pipeline order.
func (s *Server) StageSizes() []StageSize {
	out := make([]StageSize, 0, 3)
	for _, st := range []Stage{StageReader, StageProcessor, StageWriter} {
		z, _ := s.StageSize(st)
		out = append(out, z)
	}
	return out
}

// ChangeStage changes a stage's size, bounds or mode while serving (or
// before), logs the change with its cause, and returns the stage's size
// as it now is. The processor pool takes a new size at once: new places
// go to queued requests, and retired places' handlers finish their
// request first. Reader and writer loops are added at once, each serving
// once its stage-init has run, and the others give a new reader loop its
// share of their connections; a loop removed gives its connections to the
// others (a reader: fds open, requests out finish first) or writes the
// responses it has (a writer), and then returns. Loop counts change only
// while the server serves (bounds and mode at any time).
func (s *Server) ChangeStage(st Stage, ch StageChange) (StageSize, error) {
	z := s.stageSizing(st)
	if z == nil {
		return StageSize{}, fmt.Errorf("quartet: no stage %q (stages: reader, processor, writer)", st)
	}
	if err := checkChange(st, ch); err != nil {
		cur, _ := s.StageSize(st)
		return cur, err
	}
	cause := ch.Cause
	if cause == "" {
		cause = "api"
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	lo, hi := z.min, z.max
	if ch.Min > 0 {
		lo = ch.Min
	}
	if ch.Max > 0 {
		hi = ch.Max
	}
	if lo > hi {
		cur := StageSize{Stage: st, Size: z.size, Min: z.min, Max: z.max, Auto: z.auto, Resizable: true}
		return cur, fmt.Errorf("quartet: %s bounds %d..%d: the minimum is above the maximum", st, lo, hi)
	}
	size := z.size
	if ch.Size > 0 {
		if ch.Size < lo || ch.Size > hi {
			cur := StageSize{Stage: st, Size: z.size, Min: z.min, Max: z.max, Auto: z.auto, Resizable: true}
			return cur, fmt.Errorf("quartet: %s size %d is outside the bounds %d..%d (set min and max with it to move them)", st, ch.Size, lo, hi)
		}
		size = ch.Size
	}
	size = min(max(size, lo), hi)
	auto := z.auto
	if ch.Auto != nil {
		auto = *ch.Auto
	} else if ch.Size > 0 {
		auto = false // a size set by hand stays where it is put
	}
	wasMin, wasMax, wasAuto := z.min, z.max, z.auto
	z.min, z.max, z.auto = lo, hi, auto
	var err error
	if st == StageProcessor {
		s.resizeLocked(size, cause)
	} else if size != z.size {
		err = s.resizeLoopsLocked(st, z, size, cause)
		if errors.Is(err, ErrNotServing) {
			// Nothing was changed, so nothing is: a refused call that
			// left the controller off pinned the stage for the server's
			// whole run.
			z.min, z.max, z.auto = wasMin, wasMax, wasAuto
			return StageSize{Stage: st, Size: z.size, Min: z.min, Max: z.max, Auto: z.auto, Resizable: true}, err
		}
	}
	if lo != wasMin || hi != wasMax || auto != wasAuto {
		s.cfg.Logger.Info("quartet: stage bounds changed", "stage", st, "min", lo, "max", hi, "auto", auto,
			"was_min", wasMin, "was_max", wasMax, "was_auto", wasAuto, "cause", cause)
	}
	return StageSize{Stage: st, Size: z.size, Min: lo, Max: hi, Auto: auto, Resizable: true}, err
}

func checkChange(st Stage, ch StageChange) error {
	most := maxProcessors
	if st != StageProcessor {
		most = maxLoops
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"size", ch.Size}, {"min", ch.Min}, {"max", ch.Max}} {
		if f.v < 0 || f.v > most {
			return fmt.Errorf("quartet: %s %s %d: must be 1..%d", st, f.name, f.v, most)
		}
	}
	return nil
}

// resizeLoopsLocked sets an I/O stage's loop count (z.mu held).
func (s *Server) resizeLoopsLocked(st Stage, z *sizing, n int, cause string, attrs ...any) error {
	got, err := s.setLoops(st, n, cause, attrs...)
	z.size = got
	return err
}

// SetStageSize pins a stage at size n (its controller off).
func (s *Server) SetStageSize(st Stage, n int) error {
	if n < 1 {
		return fmt.Errorf("quartet: %s size %d: must be at least 1", st, n)
	}
	_, err := s.ChangeStage(st, StageChange{Size: n})
	return err
}

// SetStageBounds sets the bounds a stage's controller keeps it in.
func (s *Server) SetStageBounds(st Stage, lo, hi int) error {
	if lo < 1 || hi < 1 {
		return fmt.Errorf("quartet: %s bounds %d..%d: both must be at least 1", st, lo, hi)
	}
	_, err := s.ChangeStage(st, StageChange{Min: lo, Max: hi})
	return err
}

// SetStageAuto turns a stage's controller on or off.
func (s *Server) SetStageAuto(st Stage, on bool) error {
	_, err := s.ChangeStage(st, StageChange{Auto: &on})
	return err
}

// resizeLocked sets the pool's size and logs it. s.sizing.mu held.
func (s *Server) resizeLocked(n int, cause string, attrs ...any) {
	z := &s.sizing
	if n == z.size {
		return
	}
	got, err := s.pool.SetPlaces(n)
	args := append([]any{"stage", StageProcessor, "from", z.size, "to", got, "cause", cause}, attrs...)
	if err != nil {
		args = append(args, "err", err)
		s.cfg.Logger.Error("quartet: stage resized short", args...)
	} else {
		s.cfg.Logger.Info("quartet: stage resized", args...)
	}
	z.size = got
}

// ControlStats is what the control loop saw and did in its last period.
type ControlStats struct {
	Time time.Time
	// Period is how long the period was: control.DefaultPeriod, or up to
	// a second while the server is quiet (see tuning.go).
	Period time.Duration
	// The pool controller's inputs and estimates (rates per second).
	control.Estimates
	Queued     int           // requests waiting for a place at the sample
	Running    int           // handlers running with a place at the sample
	Ceiling    int           // growth ceiling a saturation check found (0: none)
	Cause      control.Cause // why the last period changed the size ("" if it did not)
	WaitTarget time.Duration // admission control's queue-wait target (0: off)
	Classes    []ClassStats
	Loops      []LoopControl // the reader and writer stages'
}

// ClassStats is one request class (see Config.QueueWaitTarget).
type ClassStats struct {
	Name       string
	Queued     int           // waiting for a place
	Held       int           // holding a place (or parked on their client)
	Admitted   uint64        // admitted to the queue, ever
	Shed       uint64        // refused with 503, ever
	Limit      int64         // admitted while fewer than this wait (-1: no limit)
	RetryAfter int64         // seconds, for refused requests
	Service    time.Duration // mean time holding a place
	Use        float64       // the part of its places it kept busy while backlogged (control.Limit.Use)
	Late       uint64        // waited longer than half the wait target, ever (stages.LateShare)
	Gain       float64       // the part of its estimated limit it is held to (control.Limit.Gain)
}

// tuner is the control loop's state.
type tuner struct {
	pool   *control.Pool
	adm    *control.Admission
	period time.Duration // control.DefaultPeriod; tests stretch it to keep the loop out of their way

	mu      sync.Mutex // guards what follows: tick and Stats may overlap
	prevAt  time.Time
	prev    [stages.MaxClasses]stages.ClassCounts
	samples []control.ClassSample
	limits  []control.Limit
	last    ControlStats

	io         [2]*ioTuner // the reader and writer stages' (tuning_loops.go)
	prevCPU    time.Duration
	prevServed uint64 // requests the processor stage had served (inline ones included)
	prevPauses uint64 // the listeners' stops at MaxConns, ever
	// cpuBound: the last period with requests queued found places free
	// (control.Estimates.PlacesBound false), so what they waited for was
	// CPU, and more places would not drain them faster.
	cpuBound bool
	machine  machineCPU
	scratch  []ioLoop
	// overload and atLimit follow, for the log, admission control's
	// refusals and the listeners' pauses at MaxConns (episodes.go).
	overload, atLimit episode
	// slow follows the cut-offs of slow clients (episodes.go): slowSeen
	// is the loops' counts at the last period, slowBase where the
	// episode going on began.
	slow               episode
	slowSeen, slowBase loopCounts

	// cur is the period in force, period or longer (nextPeriod); control
	// goroutine only. stretched is cur > period, for kick, which ends a
	// stretched period early through kicked.
	cur       time.Duration
	stretched atomic.Bool
	kicked    chan struct{}
}

// maxQuietPeriod is as far as the period stretches while nothing happens:
// a tenth of the wake-ups, and a lightly loaded loop stage that gets busy
// is seen within a second.
const maxQuietPeriod = time.Second

// nextPeriod returns the length of the next period after one that was
// quiet or not (sample), and publishes whether it is stretched.
func (t *tuner) nextPeriod(quiet bool) time.Duration {
	if quiet {
		t.cur = min(2*max(t.cur, t.period), max(t.period, maxQuietPeriod))
	} else {
		t.cur = t.period
	}
	t.stretched.Store(t.cur > t.period)
	return t.cur
}

// kick ends a stretched period at once (see the top of this file); any
// goroutine. Unstretched, it is one atomic load.
func (t *tuner) kick() {
	if t.stretched.Load() && t.stretched.CompareAndSwap(true, false) {
		select {
		case t.kicked <- struct{}{}:
		default:
		}
	}
}

// tune runs the control loop until ctx is done.
func (s *Server) tune(ctx context.Context) {
	size, lo, hi, auto := s.sizing.get()
	s.cfg.Logger.Info("quartet: stage sized", "stage", StageProcessor, "size", size, "min", lo, "max", hi, "auto", auto,
		"queue_wait_target", max(s.cfg.QueueWaitTarget, 0), "cause", "config")
	for _, st := range []Stage{StageReader, StageWriter} {
		size, lo, hi, auto := s.stageSizing(st).get()
		s.cfg.Logger.Info("quartet: stage sized", "stage", st, "size", size, "min", lo, "max", hi, "auto", auto, "cause", "config")
	}
	s.startBudgets()
	t := &s.tuner
	timer := time.NewTimer(t.period)
	defer timer.Stop()
	defer t.closeMachine()
	s.sample(time.Now(), false)
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			s.endEpisodes()
			return
		case now = <-timer.C:
		case <-t.kicked:
			now = time.Now()
		}
		quiet := s.sample(now, true)
		s.returnMemory(now)
		timer.Reset(t.nextPeriod(quiet))
	}
}

// closeMachine lets the machine's CPU reading go (its /proc/stat).
func (t *tuner) closeMachine() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.machine.close()
}

// sample reads the stages' counters since the last sample; with decide,
// it also runs the controllers and applies their decisions, and reports
// whether the period was quiet: nothing for any controller to decide or
// judge, and nothing going on that the log follows. Quiet means no
// request for the processors (none admitted, refused, queued, running or
// parked on its client), a pool at its floor with no ceiling aging (the pool
// controller counts some of its time in periods), loop stages under half
// busy that changed nothing and judge no change, and no episode going on.
func (s *Server) sample(now time.Time, decide bool) (quiet bool) {
	t := &s.tuner
	t.mu.Lock()
	defer t.mu.Unlock()
	var ps control.PoolSample
	ps.Elapsed = now.Sub(t.prevAt)
	t.prevAt = now
	cpu := processCPU()
	cpuUsed := cpu - t.prevCPU
	t.prevCPU = cpu
	n := s.requests.Classes()
	held := 0 // requests holding a place, or parked on their client to take one back
	t.samples = t.samples[:0]
	for c := range n {
		cur, prev := s.requests.Counts(c), t.prev[c]
		t.prev[c] = cur
		cs := control.ClassSample{Queued: cur.Queued, Held: cur.Held,
			Completed: cur.Done - prev.Done, Late: cur.Late - prev.Late, RunSum: cur.RunSum - prev.RunSum,
			Backlogged: prev.Queued > 0 && cur.Queued > 0, Elapsed: ps.Elapsed}
		t.samples = append(t.samples, cs)
		ps.Admitted += cur.Pushed - prev.Pushed
		ps.Shed += cur.Shed - prev.Shed
		ps.Completed += cs.Completed
		ps.WaitSum += cur.WaitSum - prev.WaitSum
		ps.RunSum += cs.RunSum
		ps.Queued += cur.Queued
		held += cur.Held
	}
	// Read before the first decision too, so that the first period has a
	// machine reading (and /proc/stat is open from the loop's start).
	machineBusy, machineKnown := t.machine.busyFraction()
	if !decide {
		return false
	}
	s.noteOverload(now, ps.Shed, ps.Admitted)
	s.noteConnLimit(now)
	s.noteSlowClients(now, s.loopSums())
	ps.Busy = s.pool.Busy()
	ps.CPUs = goruntime.GOMAXPROCS(0)
	// The CPUs are full when the process used 90% of GOMAXPROCS (the
	// scheduler's own work and the sampling moments keep a full process a
	// little below all of it), or the machine's CPUs were 90% busy: a
	// load generator or a neighbour on the same cores makes the loops
	// wait for a CPU just as well (ls). For the pool the process must
	// have had half of them too: handlers that compute beside a load
	// generator stay under 90% and still fill the CPUs, handlers that
	// block use little.
	used := 0.0
	if ps.Elapsed > 0 {
		used = cpuUsed.Seconds() / (float64(ps.CPUs) * ps.Elapsed.Seconds())
	}
	machineFull := machineKnown && machineBusy >= 0.9
	ps.CPUFull = used >= 0.9 || machineFull && used >= 0.5
	ls := control.LoopSample{Elapsed: ps.Elapsed, CPUFull: used >= 0.9 || machineFull}
	// The loops first: admission needs to know how far behind the
	// writers are.
	served := s.counters.processor.ServiceCount()
	if ps.Elapsed > 0 {
		ls.Served = float64(served-t.prevServed) / ps.Elapsed.Seconds()
	}
	t.prevServed = served
	quiet = t.overload.since.IsZero() && t.atLimit.since.IsZero() && t.slow.since.IsZero()
	for i := range t.io {
		ls.Hold = t.io[1-i].loops.Trying()
		var ioQuiet bool
		t.scratch, ioQuiet = s.sampleLoops(t.io[i], ls, cpuUsed, t.scratch)
		quiet = quiet && ioQuiet
	}
	clear(t.scratch) // holds loops: let removed ones go

	z := &s.sizing
	z.mu.Lock()
	ps.Size = z.size
	lo, hi := z.size, z.size
	if z.auto {
		lo, hi = z.min, z.max
	}
	d := t.pool.Decide(ps, lo, hi)
	if z.auto && d.Size != z.size {
		s.resizeLocked(d.Size, "controller: "+string(d.Cause), estimateAttrs(d, ps)...)
	}
	if ps.Queued > 0 {
		// A backlog waits for CPU, and is judged by the places the pool
		// has, only while the CPUs are full: when places were free (a
		// burst's first sample, kick, finds its requests queued before
		// any worker took them; judged by the places the pool had, 82%
		// of a burst it would have grown to serve was refused), or when
		// the pool held its size for the CPUs (HeldForCPU; judged by the
		// places it could grow to, 100 requests of a second of CPU were
		// all admitted to wait behind 4 places, seconds past the target).
		t.cpuBound = ls.CPUFull && (!d.PlacesBound || d.HeldForCPU)
	}
	first, plan := t.admissionPlaces(z.size, z.max, z.auto, d.Ceiling)
	quiet = quiet && ps.Admitted == 0 && ps.Shed == 0 && ps.Queued == 0 && ps.Busy == 0 && held == 0 &&
		d.Cause == control.CauseNone && d.Ceiling == 0 && (!z.auto || z.size == z.min)
	z.mu.Unlock()

	unknown := unknownLimit(first, s.cfg.QueueWaitTarget, t.period)
	w := t.io[1]
	t.limits = t.adm.Limits(t.samples, ps.Size, plan, unknown, backlogWait(w.queued, w.last.HandoffsRate, t.period), t.limits)
	for c, l := range t.limits {
		s.requests.SetLimit(c, l.Queue, l.RetryAfter)
	}
	if s.cfg.QueueWaitTarget > 0 {
		s.requests.StartLimit(unknown, 1) // for classes opened before the next period
	}
	// Spare goroutines (they gave their place to a handler back from its
	// client) idle this long are not worth keeping.
	s.pool.RetireSpares(control.DefaultRetireAfter)

	t.last = ControlStats{Time: now, Period: ps.Elapsed, Estimates: d.Estimates, Queued: ps.Queued, Running: ps.Busy,
		Ceiling: d.Ceiling, Cause: d.Cause}
	return quiet
}

// admissionPlaces is the places admission judges queues by: for the
// classes measured (plan), and for a class not measured yet (unknown). Those the pool
// can have within the wait target: as many as it can grow to (at most
// ×GrowthFactor a period) when the controller is on, up to a saturation
// ceiling if it found one, so that a burst the pool grows to serve is not
// refused; the places it has when it is pinned, or when the last backlog
// waited for CPU rather than places. Judged by the places it could reach,
// 12,000 connections of 100 µs handlers on one core were let queue 9,765
// requests, 2.4 s of work, against a 500 ms target.
func (t *tuner) admissionPlaces(size, most int, auto bool, ceiling int) (unknown, plan int) {
	if !auto || t.cpuBound {
		return size, size
	}
	plan = t.reach(size, most)
	if ceiling > 0 {
		plan = max(size, min(plan, ceiling))
	}
	// A class not measured yet may bring a burst of handlers that block
	// (a thousand uploads that wait on their clients): it is judged by
	// the pool's most places, unless the last backlog showed that places
	// are not what this server's requests wait for.
	return most, plan
}

// unknownLimit is the queue limit of a class whose service time is not
// known yet: as many requests as places start within the wait target if
// each takes unknownService. A guess, made only until the
// class's first requests have finished (within a period of them, the
// controller knows better); Admit lets more in while the class's queue is
// seen emptying. Pinned at 4 places with a 500 ms target, a first burst
// of 2000 requests of 50 ms queues 200 of them (2.5 s), where without a
// limit it queued all 2000 (25 s); a burst of 32 fast ones is not refused.
func unknownLimit(places int, target, _ time.Duration) int64 {
	return int64(places) * max(1, int64(target/unknownService))
}

// unknownService is the service time unknownLimit guesses: a database
// round trip, or a few milliseconds of work; handlers that only compute
// take microseconds, those that call other services tens of
// milliseconds.
const unknownService = 10 * time.Millisecond

// reach is how many places a pool of size can grow to within the queue
// wait target, at most hi.
func (t *tuner) reach(size, hi int) int {
	cfg := t.pool.Config()
	n := size
	for d := cfg.Period; d <= t.adm.Target() && n < hi; d += cfg.Period {
		n *= cfg.GrowthFactor
	}
	return min(n, hi)
}

// estimateAttrs are a controller decision's inputs, for the log.
func estimateAttrs(d control.Decision, ps control.PoolSample) []any {
	return []any{
		slog.Float64("arrival_rate", round1(d.ArrivalRate)),
		slog.Float64("offered_rate", round1(d.Offered)),
		slog.Float64("throughput", round1(d.Throughput)),
		slog.Duration("queue_wait", d.QueueWait.Round(time.Microsecond)),
		slog.Duration("service_time", d.Service.Round(time.Microsecond)),
		slog.Int("busy", ps.Busy),
		slog.Int("queued", ps.Queued),
		slog.Float64("demand", round1(d.Demand)),
		slog.Bool("places_bound", d.PlacesBound),
		slog.Int("target", d.Target),
		slog.Int("ceiling", d.Ceiling),
	}
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

// controlStats returns the last period's ControlStats with the classes'
// counts as of now.
func (s *Server) controlStats() ControlStats {
	t := &s.tuner
	t.mu.Lock()
	cs := t.last
	cs.Loops = []LoopControl{t.io[0].last, t.io[1].last}
	limits := append([]control.Limit(nil), t.limits...)
	t.mu.Unlock()
	names := s.classes.names()
	cs.WaitTarget = max(s.cfg.QueueWaitTarget, 0)
	cs.Classes = nil
	for c := range s.requests.Classes() {
		k := s.requests.Counts(c)
		st := ClassStats{Queued: k.Queued, Held: k.Held, Admitted: k.Pushed, Shed: k.Shed, Limit: k.Limit, RetryAfter: k.Retry, Late: k.Late, Gain: 1}
		if c < len(names) {
			st.Name = names[c]
		} else {
			st.Name = fmt.Sprint("class", c) // opened a moment ago
		}
		if c < len(limits) {
			st.Service, st.Use, st.Gain = limits[c].Service, limits[c].Use, limits[c].Gain
		}
		cs.Classes = append(cs.Classes, st)
	}
	return cs
}

// backlogWait is how long queued hand-offs wait for a stage that takes
// rate of them a second (Little's law); a backlog the stage took none of
// in the last period waits at least that period.
func backlogWait(queued int64, rate float64, period time.Duration) time.Duration {
	switch {
	case queued <= 0:
		return 0
	case rate <= 0:
		return period
	}
	return time.Duration(float64(queued) / rate * float64(time.Second))
}
