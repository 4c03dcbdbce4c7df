package processor

import (
	"fmt"
	"testing"
)

// bookSim drives a placeBook the way the pool does, with goroutines as
// names: it knows which hold a place, which are parked (waiting on their
// client, or resumers), and which are spares, and checks the invariants
// after every step.
type bookSim struct {
	t       *testing.T
	b       *placeBook
	workers map[string]*worker
	holds   map[*worker]bool // holds a place
	parked  map[*worker]bool // parked, resumer or not
	gone    int              // goroutines that exited
	spawned int              // goroutines started: n1, n2, ...
	queued  bool             // requests waiting in the ring
}

func newBookSim(t *testing.T, places, maxParked, maxSpares int) *bookSim {
	s := &bookSim{t: t, b: &placeBook{places: places, maxParked: maxParked, maxSpares: maxSpares},
		workers: map[string]*worker{}, holds: map[*worker]bool{}, parked: map[*worker]bool{}}
	for i := 0; i < places; i++ {
		s.holds[s.w(fmt.Sprint("w", i))] = true // Run starts one goroutine per place
	}
	return s
}

func (s *bookSim) w(name string) *worker {
	if s.workers[name] == nil {
		s.workers[name] = &worker{}
	}
	return s.workers[name]
}

func (s *bookSim) name(wk *worker) string {
	for n, w := range s.workers {
		if w == wk {
			return n
		}
	}
	return "?"
}

// apply carries out a handoff as Pool.hand would, and describes it: the
// receiver now holds a place (a resumer stops being parked: giveBack
// counted that already); a spawned goroutine is named n1, n2, ...
func (s *bookSim) apply(h handoff) string {
	switch {
	case h.to != nil:
		delete(s.parked, h.to)
		s.holds[h.to] = true
		return "to " + s.name(h.to)
	case h.spawn:
		s.spawned++
		name := fmt.Sprint("n", s.spawned)
		s.holds[s.w(name)] = true
		return "spawn " + name
	}
	return "free"
}

// step runs one operation; want is the expected outcome, as a short string.
func (s *bookSim) step(op, who, want string) {
	s.t.Helper()
	b := s.b
	var wk *worker
	if who != "" {
		wk = s.w(who)
	}
	got := ""
	switch op {
	case "park": // who's handler is about to wait on its client
		if !s.holds[wk] {
			s.t.Fatalf("%s parks without a place", who)
		}
		ok, h := b.park()
		if !ok {
			got = "refused"
			break
		}
		delete(s.holds, wk)
		s.parked[wk] = true
		if h.none() && s.queued {
			h = b.attach() // Park's re-check of the ring
		}
		got = s.apply(h)
	case "unpark": // who's wait is over
		if b.unpark(wk) {
			delete(s.parked, wk)
			s.holds[wk] = true
			got = "running"
		} else {
			got = "waits"
		}
	case "yield": // who is between requests and sees resumers waiting
		to, spare := b.yield(wk)
		if to == nil {
			got = "nothing"
			break
		}
		delete(s.holds, wk)
		s.apply(handoff{to: to})
		if spare {
			got = s.name(to) + ", spare"
		} else {
			got = s.name(to) + ", exit"
			s.gone++
		}
	case "push": // a request arrives; Wake attaches a free place
		s.queued = true
		got = s.apply(b.attach())
	case "pop": // the queue empties
		s.queued = false
		got = "ok"
	case "leave": // who exits (shutdown)
		delete(s.holds, wk)
		s.gone++
		got = s.apply(b.leave())
	default:
		s.t.Fatalf("unknown op %q", op)
	}
	if got != want {
		s.t.Fatalf("%s %s: got %q, want %q", op, who, got, want)
	}
	goroutines := len(s.workers) - s.gone
	if msg := b.check(len(s.holds), goroutines); msg != "" {
		s.t.Fatalf("after %s %s: %s (held %d, free %d, parked %d, resumers %d, spares %d, goroutines %d)",
			op, who, msg, len(s.holds), b.free.Load(), b.parked.Load(), len(b.resumers), len(b.spares), goroutines)
	}
}

// The accounting, step by step: places move from parking handlers to
// resumers first, to new work second, and stay free otherwise; resumers
// take free places at once and wait only when none is free; the bounds
// hold throughout.
func TestPlaceBook(t *testing.T) {
	type step struct{ op, who, want string }
	for _, tc := range []struct {
		name                         string
		places, maxParked, maxSpares int
		steps                        []step
	}{
		{"a lone handler parks and unparks without waking anyone", 2, 8, 2, []step{
			{"park", "w0", "free"},
			{"unpark", "w0", "running"},
			{"park", "w0", "free"},
			{"park", "w1", "free"},
			{"unpark", "w1", "running"},
			{"unpark", "w0", "running"},
		}},
		{"queued work gets a parked handler's place", 2, 8, 2, []step{
			{"push", "", "free"}, // no free place: an idle goroutine takes it
			{"park", "w0", "spawn n1"},
			{"park", "w1", "spawn n2"},
			{"pop", "", "ok"},
			{"park", "n1", "free"},
		}},
		{"a request pushed while a place is free gets it", 1, 8, 1, []step{
			{"park", "w0", "free"},
			{"push", "", "spawn n1"},
			{"pop", "", "ok"},
			// w0's wait ends while n1 holds the only place.
			{"unpark", "w0", "waits"},
			{"yield", "n1", "w0, spare"},
			// A place given back goes to the spare when work is queued.
			{"push", "", "free"},
			{"park", "w0", "to n1"},
		}},
		{"resumers go first, in order", 1, 8, 4, []step{
			{"park", "w0", "free"},
			{"push", "", "spawn n1"},
			{"pop", "", "ok"}, // n1 took the request
			{"park", "n1", "free"},
			{"unpark", "w0", "running"},
			{"unpark", "n1", "waits"},
			{"park", "w0", "to n1"}, // before any free place or new work
			{"unpark", "w0", "waits"},
			{"yield", "n1", "w0, spare"},
		}},
		{"parked handlers are bounded", 2, 1, 2, []step{
			{"park", "w0", "free"},
			{"park", "w1", "refused"}, // waits on its client holding its place
			{"unpark", "w0", "running"},
			{"park", "w1", "free"},
		}},
		{"spares are bounded; the rest exit", 1, 8, 1, []step{
			{"park", "w0", "free"},
			{"push", "", "spawn n1"},
			{"pop", "", "ok"},
			{"park", "n1", "free"},
			{"push", "", "spawn n2"},
			{"pop", "", "ok"},
			{"unpark", "w0", "waits"},
			{"unpark", "n1", "waits"},
			{"yield", "n2", "w0, spare"},
			{"park", "w0", "to n1"},
			{"unpark", "w0", "waits"},
			{"yield", "n1", "w0, exit"}, // n2 is the one spare already
		}},
		{"leaving at shutdown hands the place to a resumer", 2, 8, 2, []step{
			{"park", "w0", "free"},
			{"push", "", "spawn n1"},
			{"pop", "", "ok"},
			{"unpark", "w0", "waits"},
			{"leave", "w1", "to w0"},
			{"leave", "n1", "free"},
			{"leave", "w0", "free"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newBookSim(t, tc.places, tc.maxParked, tc.maxSpares)
			for _, st := range tc.steps {
				s.step(st.op, st.who, st.want)
			}
		})
	}
}
