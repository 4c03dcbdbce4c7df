package control

import (
	"math"
	"time"
)

// Defaults for admission control.
const (
	// DefaultQueueWaitTarget is how long a request may expect to wait for
	// a processor place before it is refused with 503; see doc.go.
	DefaultQueueWaitTarget = 500 * time.Millisecond
	// MaxRetryAfter caps the Retry-After given to refused requests.
	MaxRetryAfter = 60 * time.Second
)

// ClassSample is one request class's measurements for a period.
type ClassSample struct {
	Queued    int           // waiting now
	Held      int           // popped and not finished now: holding a place (or parked on their client)
	Completed uint64        // finished this period
	Late      uint64        // of those, how many waited longer than the wait target's stages.LateShare
	RunSum    time.Duration // their total time holding a place
	// Backlogged: requests of the class waited at the start of the
	// period and at its end, so it could have used every place it had.
	Backlogged bool
	Elapsed    time.Duration // the period's length
}

// Limit is what admission control enforces for one class until the next
// period.
type Limit struct {
	Queue      int64         // admit while fewer than this many wait; -1: no limit; 0: none (the writers are behind, or no place comes free within the target)
	RetryAfter int64         // seconds, for the Retry-After of refused requests
	Places     float64       // places the class can count on (its fair share, or what the others leave)
	Service    time.Duration // its mean time holding a place (smoothed)
	Capacity   float64       // requests per second it can be served at: Places × Use / Service
	Use        float64       // the part of its places it kept busy while backlogged (1 until seen otherwise)
	Gain       float64       // the part of the estimated queue it is held to, from its late requests (1 until seen late)
}

// Admission turns per-class measurements into per-class queue limits: a
// class admits a request while fewer than Target × μ of its requests wait,
// μ being the rate at which its queue drains. By Little's law (W = L/μ)
// that is the queue beyond which a new request would wait longer than the
// target. The check in the request path is then a comparison of two
// integers, and the estimating is done here, once per period.
//
// μ for class c is its share of places over its service time, times the
// part of its places it was seen to keep busy while it had a backlog
// (Little's law again: a class that kept 3 of its 4 places busy on
// average drained at 3 / service, whatever its places might do). With
// handlers that compute, the places share the CPU with the loops and the
// 503s, and the pool's places overstate the drain: 4 places of 100 µs
// handlers on one core promised 9,300/s and drained 6,900/s, so requests
// admitted for 500 ms waited 650. Workers take
// from the class whose requests hold the fewest places (stages.ClassQueue),
// so a class that wants places gets at least an equal share of them among
// the classes with work, and more when the others leave them:
//
//	places_c = max(P / A, P − Σ_{d≠c} held_d)
//
// with A the classes with requests queued or running (c counted). It keeps
// a little state (smoothed service times); it starts no goroutine and is
// not safe for concurrent use.
type Admission struct {
	target  time.Duration
	service []ewma // per class
	// use is per class the part of its places that a backlogged class
	// kept busy (1 until measured): below 1 when the places wait for
	// CPU or for the loops around them rather than for requests.
	use []float64
	// gain is per class the part of its estimated queue limit it is
	// held to: cut when too many of its requests were late, raised back
	// toward 1 while none are (see adjustGain).
	gain []float64
	// quiet is per class how long it has held places without any of its
	// requests finishing (0 once one does, or while it holds none).
	quiet []time.Duration
}

// NewAdmission returns admission control with the given wait target; a
// target of 0 or less turns it off (every Limit is -1).
//
// Before the first period, and for a class no service time is known for,
// the limit is the unknown given to Limits. Without one, a server's first
// burst (2000 connections at once on a pool of 4 places serving 50 ms
// handlers) would be admitted whole and wait 25 s.
func NewAdmission(target time.Duration) *Admission {
	return &Admission{target: target}
}

// Target is the queue-wait target.
func (a *Admission) Target() time.Duration { return a.target }

// Limits computes every class's limit for the coming period from this
// period's samples, for a pool of places places, into out (grown as
// needed) and returns it. A class whose service time is not known yet may
// queue unknown requests (the runtime's guess: as many as the pool's most
// places could start within the target if each took one period, the time
// after which this knows better). Another class's service time is no
// guide: the classes are kept apart because theirs differ.
//
// size is the places the pool had during the period (what a backlogged
// class's use is measured against), places those it may have in the
// next (the limit's).
//
// downstream is how long a response now waits after its handler, in the
// writers' queues: a request admitted now waits that long too, on top of
// its queue wait, so the queue may hold only what the rest of the target
// drains, and one request once the writers alone are behind by the
// target: a request that finds its class's queue empty waits behind no
// other, and a few large transfers that keep the writers busy with
// nothing queued are not overload (a limit of 0 refused every request of
// a lightly loaded server while one writer loop moved 16 MiB by RDMA).
// The writers fall behind when handlers that compute take the CPU from
// the loops: with 8,000 requests in flight, 11,000 responses once waited
// seconds to be written behind a processor queue that looked short.
func (a *Admission) Limits(classes []ClassSample, size, places int, unknown int64, downstream time.Duration, out []Limit) []Limit {
	out = out[:0]
	for len(a.service) < len(classes) {
		a.service = append(a.service, ewma{decay: 0.5})
		a.use = append(a.use, 1)
		a.gain = append(a.gain, 1)
		a.quiet = append(a.quiet, 0)
	}
	var held, active int
	for i, c := range classes {
		a.service[i].add(c.RunSum, c.Completed)
		held += c.Held
		if c.Queued > 0 || c.Held > 0 {
			active++
		}
	}
	share := func(p float64, c ClassSample) float64 {
		n := active
		if c.Queued == 0 && c.Held == 0 {
			n++ // a request of this class would make it active
		}
		return max(p/float64(max(n, 1)), p-float64(held-c.Held), 1)
	}
	// Every place the pool may have is held by a backlog, and none has
	// come free for the whole target: a request that waits now would wait
	// longer than that, whatever its class's share says (the share is
	// what a class gets as places free). 2,048 places taken at once by
	// 30 s handlers freed none for 30 s, and the requests of other routes,
	// admitted on their share, waited all that time unanswered. Counted
	// per class, since a class's smoothed service time is no guide then:
	// a route not measured yet shares the other routes' class and their
	// service time of microseconds.
	left := a.target - downstream
	// With the writers behind by the whole target (left <= 0) every
	// limit is 1 already, and "none free for the target" would hold of
	// classes that finish constantly.
	stuck := a.target > 0 && left > 0 && held >= max(places, 1)
	backlogged := false
	for i, c := range classes {
		switch {
		case c.Completed > 0 || c.Held == 0:
			a.quiet[i] = 0
		case c.Backlogged: // its places taken the whole period (a burst's first sample may follow an idle one)
			a.quiet[i] += c.Elapsed
		}
		backlogged = backlogged || c.Backlogged
		if c.Held > 0 && a.quiet[i] < left {
			stuck = false
		}
	}
	stuck = stuck && backlogged
	p := float64(max(places, 1))
	for i, c := range classes {
		a.measureUse(i, c, share(float64(max(size, 1)), c))
		a.adjustGain(i, c)
		l := Limit{Queue: -1, Service: a.service[i].mean(), Use: a.use[i], Gain: a.gain[i]}
		l.Places = share(p, c)
		if l.Service > 0 {
			l.Capacity = l.Places * a.use[i] / l.Service.Seconds()
		}
		if a.target > 0 && l.Capacity == 0 {
			l.Queue, l.RetryAfter = unknown, 1
		}
		if a.target > 0 && l.Capacity > 0 {
			l.Queue = max(1, int64(left.Seconds()*l.Capacity*a.gain[i]))
			if left <= 0 {
				l.Queue = 1
			}
			drain := time.Duration(float64(c.Queued)/l.Capacity*float64(time.Second)) + downstream
			l.RetryAfter = int64(math.Ceil(min(max(drain, a.target), MaxRetryAfter).Seconds()))
		}
		if stuck {
			l.Queue = 0 // refuse: even the first to wait would wait past the target
		}
		out = append(out, l)
	}
	return out
}

// measureUse updates class i's use of its places: in a backlogged period
// the places it held on average (its run time over the period, Little's
// law) against the share it had, halfway toward the new reading; in a
// period without a backlog there is nothing to learn (idle places were
// not wanted), and the use drifts back toward 1 so that a class is not
// held for long to a slowdown that has passed.
func (a *Admission) measureUse(i int, c ClassSample, had float64) {
	if !c.Backlogged || c.Elapsed <= 0 || c.Completed == 0 {
		a.use[i] += (1 - a.use[i]) * useRecovery
		return
	}
	busy := c.RunSum.Seconds() / c.Elapsed.Seconds()
	u := min(max(busy/had, minUse), 1)
	a.use[i] = (a.use[i] + u) / 2
}

// adjustGain is the feedback that holds class i's waits to the target
// whatever the estimates got wrong, as SEDA's overload controller holds
// a stage's 90th-percentile response time to its target: the estimated
// drain rate is a period old, and the loops, the refusals and the
// neighbours take CPU from the handlers in ways no estimate sees (on one
// core under twice its capacity, admitted requests waited 500 ms at the
// median and 850 at the 99th percentile against a 500 ms target). When
// more than lateLimit of a period's requests were late (waited longer
// than stages.LateShare of the target), the queue limit is cut by
// gainCut; after a period with none late it grows back by gainStep, to
// at most the estimate. A smaller queue costs no throughput: the places
// stay as busy while any request waits; it only turns some waits into
// refusals, which is what the target asks for.
func (a *Admission) adjustGain(i int, c ClassSample) {
	if c.Completed < minLateSamples {
		return // too few to tell a tail from one unlucky request
	}
	switch late := float64(c.Late) / float64(c.Completed); {
	case late > lateLimit:
		a.gain[i] = max(minGain, a.gain[i]*gainCut)
	case c.Late == 0:
		a.gain[i] = min(1, a.gain[i]+gainStep)
	}
}

const (
	// lateLimit is the share of late requests a class may have in a
	// period: the target is for the 99th percentile.
	lateLimit = 0.01
	// gainCut multiplies the gain of a class with too many late
	// requests; gainStep is added back after a period with none. From
	// the smallest gain back to 1 takes 20 periods (2 s); a cut takes
	// effect within one.
	gainCut  = 0.75
	gainStep = 0.05
	minGain  = 0.05
	// minLateSamples is how many requests a period needs before their
	// lateness changes the gain.
	minLateSamples = 20
)

const (
	// minUse bounds how little of its places a class is taken to use:
	// a reading below it is a period too short to tell.
	minUse = 0.01
	// useRecovery is how far a period without a backlog moves the use
	// back toward 1.
	useRecovery = 0.2
)
