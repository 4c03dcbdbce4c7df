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
	RunSum    time.Duration // their total time holding a place
}

// Limit is what admission control enforces for one class until the next
// period.
type Limit struct {
	Queue      int64         // admit while fewer than this many wait; -1: no limit
	RetryAfter int64         // seconds, for the Retry-After of refused requests
	Places     float64       // places the class can count on (its fair share, or what the others leave)
	Service    time.Duration // its mean time holding a place (smoothed)
	Capacity   float64       // requests per second it can be served at: Places / Service
}

// Admission turns per-class measurements into per-class queue limits: a
// class admits a request while fewer than Target × μ of its requests wait,
// μ being the rate at which its queue drains. By Little's law (W = L/μ)
// that is the queue beyond which a new request would wait longer than the
// target. The check in the request path is then a comparison of two
// integers, and the estimating is done here, once per period.
//
// μ for class c is its share of places over its service time. Workers take
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
func (a *Admission) Limits(classes []ClassSample, places int, unknown int64, out []Limit) []Limit {
	out = out[:0]
	for len(a.service) < len(classes) {
		a.service = append(a.service, ewma{decay: 0.5})
	}
	var held, active int
	for i, c := range classes {
		a.service[i].add(c.RunSum, c.Completed)
		held += c.Held
		if c.Queued > 0 || c.Held > 0 {
			active++
		}
	}
	p := float64(max(places, 1))
	for i, c := range classes {
		l := Limit{Queue: -1, Service: a.service[i].mean()}
		n := active
		if c.Queued == 0 && c.Held == 0 {
			n++ // a request of this class would make it active
		}
		l.Places = max(p/float64(max(n, 1)), p-float64(held-c.Held), 1)
		if l.Service > 0 {
			l.Capacity = l.Places / l.Service.Seconds()
		}
		if a.target > 0 && l.Capacity == 0 {
			l.Queue, l.RetryAfter = unknown, 1
		}
		if a.target > 0 && l.Capacity > 0 {
			l.Queue = max(1, int64(a.target.Seconds()*l.Capacity))
			drain := time.Duration(float64(c.Queued) / l.Capacity * float64(time.Second))
			l.RetryAfter = int64(math.Ceil(min(max(drain, a.target), MaxRetryAfter).Seconds()))
		}
		out = append(out, l)
	}
	return out
}
