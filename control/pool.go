package control

import (
	"math"
	"time"
)

// Defaults for PoolConfig's zero fields; doc.go says why each is what it is.
const (
	DefaultPeriod      = 100 * time.Millisecond
	DefaultRetireAfter = 2 * time.Second
	DefaultHeadroom    = 2.0
	DefaultProbeAfter  = 2 * time.Second
	// maxProbeAfter bounds the back-off of probes that keep finding the
	// same ceiling.
	maxProbeAfter = 32 * time.Second
	// DefaultGrowthFactor bounds how much the pool may grow in one period.
	DefaultGrowthFactor = 4
	// minSamples is how many finished requests an estimate needs before
	// a saturation check trusts it.
	minSamples = 20
	// maxCheckPeriods bounds how long a saturation check may gather
	// samples after a growth step before it gives up, inconclusive.
	maxCheckPeriods = 5
	// ceilingSettle is how many periods the smoothed service time needs
	// (it halves the weight of the past each period) before it says what
	// the service time at a new ceiling is.
	ceilingSettle = 4
)

// PoolConfig tunes a Pool controller. The zero value takes the defaults.
type PoolConfig struct {
	Period       time.Duration // how often Decide is called
	RetireAfter  time.Duration // places unused this long retire
	Headroom     float64       // β in R + β√R: spare places for bursts, in standard deviations
	ProbeAfter   time.Duration // a saturation ceiling is tried again after this, doubled each time a probe finds it again
	GrowthFactor int           // the pool at most multiplies by this per period
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.Period <= 0 {
		c.Period = DefaultPeriod
	}
	if c.RetireAfter <= 0 {
		c.RetireAfter = DefaultRetireAfter
	}
	if c.Headroom <= 0 {
		c.Headroom = DefaultHeadroom
	}
	if c.ProbeAfter <= 0 {
		c.ProbeAfter = DefaultProbeAfter
	}
	if c.GrowthFactor < 2 {
		c.GrowthFactor = DefaultGrowthFactor
	}
	return c
}

// PoolSample is one period's measurements of the processor pool: counts
// since the previous sample, and gauges now.
type PoolSample struct {
	Elapsed   time.Duration // since the previous sample
	Admitted  uint64        // requests that joined the pool's queue
	Shed      uint64        // requests refused by admission control
	Completed uint64        // requests that let go of their place (handler returned, or dropped)
	WaitSum   time.Duration // total time the Completed waited in the queue
	RunSum    time.Duration // total time they held a place (time parked on their client excluded)
	Queued    int           // requests waiting now
	Busy      int           // handlers running with a place now
	Size      int           // places now
	// CPUFull: the process used (nearly) all of its CPUs over the
	// period, CPUs of them (GOMAXPROCS). Zero CPUs: not known.
	CPUFull bool
	CPUs    int
}

// Estimates are what the controller derived from a sample.
type Estimates struct {
	ArrivalRate float64       // λ: requests per second joining the queue
	Offered     float64       // requests per second offered, shed ones included
	Throughput  float64       // requests per second that finished
	QueueWait   time.Duration // mean time a finished request waited for a place
	Service     time.Duration // mean time a request held a place (smoothed)
	Busy        float64       // mean places in use over the period: Throughput × Service (Little)
	Demand      float64       // R: places in use, plus waiting, that the arrivals keep busy: λ(W + S), at least what is queued and running now; λS alone (or the Busy of a draining backlog, if more) when the places were not what requests waited for
	// PlacesBound: the places were what queued requests waited for (every
	// place busy at the sample, or the places held on average within the
	// headroom of the size), so the wait counts as demand for places.
	PlacesBound bool
	Target      int // R + β√R: the places that serve R with a small chance of waiting at all
}

// Cause says why a Decision changed the size.
type Cause string

// The causes a controller gives.
const (
	CauseNone      Cause = ""
	CauseDemand    Cause = "demand"    // Little's law wants more places than the pool has
	CauseStalled   Cause = "stalled"   // every place busy, requests queued, none finished: blocked handlers
	CauseSaturated Cause = "saturated" // the last growth did not add throughput: the CPUs, not the places, are the limit
	CauseIdle      Cause = "idle"      // places unused for RetireAfter
	CauseBounds    Cause = "bounds"    // the size was outside new bounds
)

// Decision is what a Pool controller decided for one sample.
type Decision struct {
	Size    int   // places the pool should have
	Cause   Cause // why Size differs from the sample's, CauseNone if it does not
	Ceiling int   // a growth limit found by a saturation check (0: none)
	// HeldForCPU: the pool did not grow because its handlers may be what
	// fills the CPUs (PoolSample.CPUFull): it will not have more places
	// while that lasts, and admission should not count on them.
	HeldForCPU bool
	Estimates
}

// Pool is the processor pool's controller: fed one PoolSample per period,
// it decides how many places the pool should have (see doc.go). It keeps
// a little state between samples and starts no goroutine; it is not safe
// for concurrent use.
type Pool struct {
	cfg PoolConfig

	service ewma // time holding a place, per request
	present int  // requests queued or running at the previous sample

	targets []int // the last RetireAfter/Period targets, newest last
	// check is the saturation check of the last growth step: the pool
	// grew from from places, when it ran busy places and finished
	// throughput requests per second; since then it has gathered samples.
	check struct {
		pending    bool
		from       int
		busy       float64
		throughput float64
		service    time.Duration
		periods    int
		completed  uint64
		runSum     time.Duration
		elapsed    time.Duration
	}
	ceiling        int           // growth limit from a failed check; 0: none
	ceilingAge     int           // periods since the ceiling was set
	ceilingService time.Duration // the service time settled at the ceiling
	// probeAfter is how long the next ceiling holds: ProbeAfter, doubled
	// (up to maxProbeAfter) each time a probe, a growth past a ceiling
	// that had aged out (probing), found one again.
	probeAfter time.Duration
	probing    bool
	found      int // the ceiling the last probe started from
}

// NewPool returns a pool controller.
func NewPool(cfg PoolConfig) *Pool {
	cfg = cfg.withDefaults()
	return &Pool{cfg: cfg, service: ewma{decay: 0.5}, probeAfter: cfg.ProbeAfter}
}

// Config returns the controller's configuration, defaults applied.
func (c *Pool) Config() PoolConfig { return c.cfg }

// Decide takes one sample and returns the size the pool should have,
// within [lo, hi].
func (c *Pool) Decide(s PoolSample, lo, hi int) Decision {
	lo = max(lo, 1)
	hi = max(hi, lo)
	e := c.estimate(s)
	d := Decision{Size: s.Size, Estimates: e}
	switch {
	case s.Size < lo || s.Size > hi:
		d.Size, d.Cause = min(max(s.Size, lo), hi), CauseBounds
	case c.checkGrowth(s, &d):
		// A growth step that did not pay was undone.
	case c.grow(s, &d, hi):
	case c.retire(s, &d, lo):
	}
	c.remember(e.Target)
	if c.ceiling > 0 {
		c.ceilingAge++
		// Try again after ProbeAfter, or sooner when the service time at
		// the ceiling has halved or doubled: the workload has changed, and
		// the ceiling was the old one's. The reference is the service time
		// once settled at the ceiling: in the first periods the smoothed
		// one still carries the step that was undone.
		if c.ceilingAge == ceilingSettle {
			c.ceilingService = d.Service
		}
		cs, s := c.ceilingService, d.Service
		changed := c.ceilingAge > ceilingSettle && (s > 2*cs || 2*s < cs)
		switch {
		case changed:
			c.ceiling, c.probing, c.probeAfter = 0, false, c.cfg.ProbeAfter
		case time.Duration(c.ceilingAge)*c.cfg.Period >= c.probeAfter:
			c.ceiling, c.probing, c.found = 0, true, c.ceiling
		}
	}
	d.Ceiling = c.ceiling
	return d
}

func (c *Pool) estimate(s PoolSample) Estimates {
	var e Estimates
	dt := s.Elapsed.Seconds()
	if dt <= 0 {
		dt = c.cfg.Period.Seconds()
	}
	e.ArrivalRate = float64(s.Admitted) / dt
	e.Offered = float64(s.Admitted+s.Shed) / dt
	e.Throughput = float64(s.Completed) / dt
	c.service.add(s.RunSum, s.Completed)
	e.Service = c.service.mean()
	if s.Completed > 0 {
		e.QueueWait = s.WaitSum / time.Duration(s.Completed)
	}
	e.Busy = e.Throughput * e.Service.Seconds()
	// Little's law: the arrivals keep λ(W+S) requests in the pool on
	// average, waiting or running. Requests queued and running now count
	// too, if they were as many at the previous sample: in an overload the
	// ones that finished waited less than those behind them; a backlog of
	// one instant (handlers that compute, descheduled for a moment) is
	// not demand.
	//
	// But a queue's wait is demand for places only if places are what it
	// waited for. When the places held on average (time held over the
	// period, Little again) stayed short of the size by more than the
	// headroom, and some were free at the sample, requests waited with
	// places free: for the CPUs, which had not run the workers that would
	// take them (handlers that compute, on CPUs shared with the loops and
	// the load). More places do nothing for that wait, so the arrivals
	// then ask for λS places, what they keep running. Counting the wait
	// grew a pool of 2 to 2048 places in 1.5 s under a CPU-bound overload
	// with 4 to 17 of them busy; and the saturation check below never saw
	// the growth, since it judges only steps taken with every place busy.
	present := s.Queued + s.Busy
	held := 0.0
	if s.Elapsed > 0 {
		held = s.RunSum.Seconds() / s.Elapsed.Seconds()
	}
	e.PlacesBound = s.Busy >= s.Size || held+c.cfg.Headroom*math.Sqrt(held) >= float64(s.Size)
	// The arrivals λ are those admitted: while admission control refuses
	// every new request, a backlog admitted earlier still drains, and the
	// places draining it (μS, what they hold) are not idle. Counting the
	// arrivals alone made a 20x overload of 1 ms handlers on one core look
	// idle: the pool retired to 1 place, the next period's lone busy place
	// looked like a bound on places, admission planned for the pool's
	// growth to its maximum and let 2,000 requests in at once, and they
	// waited 2-3 s; every two seconds, over again.
	if e.PlacesBound {
		e.Demand = max(e.ArrivalRate*(e.QueueWait+e.Service).Seconds(), float64(min(present, c.present)))
	} else {
		e.Demand = max(e.ArrivalRate*e.Service.Seconds(), e.Busy)
	}
	c.present = present
	if e.Demand > 0 {
		e.Target = int(math.Ceil(e.Demand + c.cfg.Headroom*math.Sqrt(e.Demand)))
	}
	return e
}

// grow raises the size towards the target when Little's law asks for more
// places, or doubles it when every place is stuck on a request that has
// not finished while others wait (the law has no service time to go by).
func (c *Pool) grow(s PoolSample, d *Decision, hi int) bool {
	if c.check.pending {
		return false // one step at a time: the last one is being judged
	}
	limit := min(hi, s.Size*c.cfg.GrowthFactor)
	if c.ceiling > 0 {
		limit = min(limit, c.ceiling)
	}
	if s.CPUFull && s.CPUs > 0 && s.Busy >= s.CPUs && s.Completed < minSamples {
		// The process's CPUs are full, and as many handlers run as there
		// are CPUs: they may be what fills them, and then more places
		// only share the CPUs. Too few requests finish to tell (the
		// saturation check needs minSamples): 300 handlers of a second
		// of CPU each looked stalled, doubled the pool to 256 places
		// that all ran at once, and kept the loops from the CPUs for
		// two minutes.
		d.HeldForCPU = true
		return false
	}
	want := d.Target
	cause := CauseDemand
	if s.Completed == 0 && s.Queued > 0 && s.Busy >= s.Size {
		want, cause = 2*s.Size, CauseStalled
	}
	want = min(want, limit)
	if want <= s.Size || (want < s.Size+step(s.Size) && want < limit) {
		return false // within the headroom's noise: not worth a change (and a log line)
	}
	d.Size, d.Cause = want, cause
	// The step's "before", from this period alone (not the smoothed
	// estimates, which may still carry an earlier workload): the places
	// in use on average are the time they were held over the period
	// (Little), the throughput what finished.
	ck := &c.check
	ck.pending = s.Completed >= minSamples && s.Busy >= s.Size && s.Elapsed > 0
	if ck.pending {
		ck.from = s.Size
		ck.busy = s.RunSum.Seconds() / s.Elapsed.Seconds()
		ck.throughput = float64(s.Completed) / s.Elapsed.Seconds()
		ck.service = s.RunSum / time.Duration(s.Completed)
		ck.periods, ck.completed, ck.runSum, ck.elapsed = 0, 0, 0, 0
	}
	return true
}

// checkGrowth judges the last growth step once it has enough samples: if
// the places in use grew and the throughput did not grow with them (less
// than half of it, on a log scale), the new places only queue for the
// CPUs. The step is undone, down to the places that the new throughput
// needs at the old service time (Little again), and that becomes the
// ceiling until ProbeAfter. This is the Vegas idea (service time inflating
// with concurrency means a queue has formed where we cannot see it)
// measured on our own step rather than against a minimum RTT that must be
// re-measured by cutting concurrency, as Envoy's gradient controller does.
func (c *Pool) checkGrowth(s PoolSample, d *Decision) bool {
	if !c.check.pending {
		return false
	}
	ck := &c.check
	ck.periods++
	ck.completed += s.Completed
	ck.runSum += s.RunSum
	ck.elapsed += s.Elapsed
	if ck.completed < minSamples {
		if ck.periods >= maxCheckPeriods {
			ck.pending = false
		}
		return false
	}
	ck.pending = false
	if ck.elapsed <= 0 {
		return false
	}
	throughput := float64(ck.completed) / ck.elapsed.Seconds()
	busy := ck.runSum.Seconds() / ck.elapsed.Seconds()
	if ck.busy <= 0 || ck.throughput <= 0 || busy < 1.25*ck.busy {
		return false // the new places were hardly used: nothing learnt
	}
	if math.Log(throughput/ck.throughput) >= 0.5*math.Log(busy/ck.busy) {
		c.probing, c.probeAfter = false, c.cfg.ProbeAfter
		return false // it paid
	}
	need := throughput * ck.service.Seconds()
	size := int(math.Ceil(need + c.cfg.Headroom*math.Sqrt(need)))
	size = min(max(size, ck.from), s.Size)
	// A ceiling found by a probe is the one found before: the CPUs are
	// still the limit, the pool goes back to it (an estimate from the
	// probe's own step starts from a service time that the CPUs' queue at
	// the old ceiling inflated, and would let each probe raise it), and
	// the next probe waits twice as long. A first ceiling is tried again
	// soon: it may have been judged while something else had the CPUs for
	// a moment (the load of a phase that just ended); held at 41 places
	// for the ten seconds of the old fixed wait, a pool served a
	// /sleep?ms=1 phase at 0.85 of the best static size.
	if c.probing {
		size = min(size, max(c.found, 1))
		c.probeAfter = min(2*c.probeAfter, maxProbeAfter)
	} else {
		c.probeAfter = c.cfg.ProbeAfter
	}
	c.probing = false
	c.ceiling, c.ceilingAge = size, 0
	if size < s.Size {
		d.Size, d.Cause = size, CauseSaturated
	}
	return true
}

// retire lowers the size to the largest target of the last RetireAfter,
// once every one of them was below the size.
func (c *Pool) retire(s PoolSample, d *Decision, lo int) bool {
	n := c.window()
	if len(c.targets) < n-1 {
		return false // not a whole window of evidence yet
	}
	most := d.Target
	for _, t := range c.targets[len(c.targets)-(n-1):] {
		most = max(most, t)
	}
	// Never below the places in use: handlers that have run for periods
	// without finishing give no service time, so no target, and a pool of
	// 128 busy places went to 2 and back to 120 every two seconds while
	// they computed. (A place retired under a running handler is only
	// retired once it returns; the requests queued meanwhile wait.)
	want := max(lo, most, min(s.Busy, s.Size))
	if want >= s.Size || (want > s.Size-step(s.Size) && want > lo) {
		return false
	}
	d.Size, d.Cause = want, CauseIdle
	return true
}

// step is the smallest change worth making to a pool of size places, an
// eighth: the targets of consecutive periods wander by about that much
// (the √R headroom is of that order for pools of tens to thousands), and
// following them would start and stop goroutines, and log, for nothing.
func step(size int) int { return max(1, (size+7)/8) } // rounded up: a change of 1 in 10 is less than an eighth

func (c *Pool) window() int {
	return max(1, int(c.cfg.RetireAfter/c.cfg.Period))
}

func (c *Pool) remember(target int) {
	n := c.window()
	if len(c.targets) == n {
		copy(c.targets, c.targets[1:])
		c.targets = c.targets[:n-1]
	}
	c.targets = append(c.targets, target)
}

// ewma is a mean over samples that weighs each period's samples by their
// number and multiplies the weight of older periods by decay each period
// that has samples: a period with many samples moves it at once, one with
// few barely, and periods without samples leave it as it was.
type ewma struct {
	decay  float64
	sum    float64 // seconds
	weight float64
}

func (a *ewma) add(total time.Duration, n uint64) {
	if n == 0 {
		return
	}
	a.sum = a.sum*a.decay + total.Seconds()
	a.weight = a.weight*a.decay + float64(n)
}

func (a *ewma) mean() time.Duration {
	if a.weight < 1e-9 {
		return 0
	}
	return time.Duration(a.sum / a.weight * float64(time.Second))
}
