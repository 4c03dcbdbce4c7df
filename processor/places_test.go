package processor

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
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
	now     time.Time        // one second per step
}

func newBookSim(t *testing.T, places, maxParked int) *bookSim {
	s := &bookSim{t: t, b: &placeBook{places: places, want: places, maxParked: maxParked},
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
	if who != "" && op != "resize" && op != "idle" { // their who is a number
		wk = s.w(who)
	}
	got := ""
	s.now = s.now.Add(time.Second)
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
		to, spare := b.yield(wk, s.now)
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
	case "resize": // who is the new number of places
		n, _ := strconv.Atoi(who)
		resumed, dismissed := b.resize(n)
		var out []string
		for _, r := range resumed {
			out = append(out, s.apply(handoff{to: r}))
		}
		for _, d := range dismissed {
			out = append(out, "exit "+s.name(d))
			s.gone++
		}
		for s.queued && b.free.Load() > 0 { // the pool attaches free places to queued work
			out = append(out, s.apply(b.attach()))
		}
		got = strings.Join(out, ", ")
		if got == "" {
			got = "ok"
		}
	case "retire": // who is between requests and sees excess
		if !s.holds[wk] {
			s.t.Fatalf("%s retires without a place", who)
		}
		if b.retire() {
			delete(s.holds, wk)
			s.gone++
			got = "exit"
		} else {
			got = "stays"
		}
	case "idle": // spares idle for more than who seconds exit
		n, _ := strconv.Atoi(who)
		var out []string
		for _, d := range b.idleSpares(s.now.Add(-time.Duration(n) * time.Second)) {
			out = append(out, "exit "+s.name(d))
			s.gone++
		}
		got = strings.Join(out, ", ")
		if got == "" {
			got = "none"
		}
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
		name              string
		places, maxParked int
		steps             []step
	}{
		{"a lone handler parks and unparks without waking anyone", 2, 8, []step{
			{"park", "w0", "free"},
			{"unpark", "w0", "running"},
			{"park", "w0", "free"},
			{"park", "w1", "free"},
			{"unpark", "w1", "running"},
			{"unpark", "w0", "running"},
		}},
		{"queued work gets a parked handler's place", 2, 8, []step{
			{"push", "", "free"}, // no free place: an idle goroutine takes it
			{"park", "w0", "spawn n1"},
			{"park", "w1", "spawn n2"},
			{"pop", "", "ok"},
			{"park", "n1", "free"},
		}},
		{"a request pushed while a place is free gets it", 1, 8, []step{
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
		{"resumers go first, in order", 1, 8, []step{
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
		{"parked handlers are bounded", 2, 1, []step{
			{"park", "w0", "free"},
			{"park", "w1", "refused"}, // waits on its client holding its place
			{"unpark", "w0", "running"},
			{"park", "w1", "free"},
		}},
		{"spares are bounded; the rest exit", 1, 8, []step{
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
		{"growing: a new place goes to a resumer first, then to queued work", 1, 8, []step{
			{"park", "w0", "free"},
			{"push", "", "spawn n1"},
			{"unpark", "w0", "waits"}, // n1 holds the only place
			{"resize", "3", "to w0, spawn n2"},
			{"pop", "", "ok"},
			{"resize", "4", "ok"}, // nothing queued: the new place stays free
			{"push", "", "spawn n3"},
		}},
		{"shrinking retires free places first, then holders between requests", 3, 8, []step{
			{"park", "w0", "free"},
			{"resize", "1", "ok"}, // w0's free place goes at once; one holder must retire
			{"retire", "w1", "exit"},
			{"retire", "w2", "stays"}, // the pool is down to one place
			{"unpark", "w0", "waits"},
			{"yield", "w2", "w0, spare"},
		}},
		{"a place given back while there is excess vanishes", 2, 8, []step{
			{"park", "w0", "free"},
			{"push", "", "spawn n1"},
			{"pop", "", "ok"},
			{"unpark", "w0", "waits"},
			{"resize", "1", "ok"},  // no free place: one of w1, n1 must go
			{"park", "w1", "free"}, // its place vanishes instead of going to w0
			{"retire", "n1", "stays"},
			{"yield", "n1", "w0, spare"},
		}},
		{"growing back cancels a retirement still pending", 2, 8, []step{
			{"resize", "1", "ok"},
			{"resize", "2", "ok"},
			{"retire", "w0", "stays"},
		}},
		{"shrinking below the spares dismisses the oldest", 2, 8, []step{
			{"park", "w0", "free"},
			{"park", "w1", "free"},
			{"push", "", "spawn n1"},
			{"push", "", "spawn n2"},
			{"pop", "", "ok"},
			{"unpark", "w0", "waits"},
			{"unpark", "w1", "waits"},
			{"yield", "n1", "w0, spare"},
			{"yield", "n2", "w1, spare"},
			{"resize", "1", "exit n1"}, // one spare at most now; w0 or w1 retires between requests
			{"retire", "w0", "exit"},
		}},
		{"spares idle too long exit, oldest first", 2, 8, []step{
			{"park", "w0", "free"},
			{"park", "w1", "free"},
			{"push", "", "spawn n1"},
			{"push", "", "spawn n2"},
			{"pop", "", "ok"},
			{"unpark", "w0", "waits"},
			{"unpark", "w1", "waits"},
			{"yield", "n1", "w0, spare"}, // a spare from now
			{"idle", "5", "none"},
			{"yield", "n2", "w1, spare"},
			{"idle", "2", "exit n1"},
			{"idle", "0", "exit n2"},
		}},
		{"leaving at shutdown hands the place to a resumer", 2, 8, []step{
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
			s := newBookSim(t, tc.places, tc.maxParked)
			for _, st := range tc.steps {
				s.step(st.op, st.who, st.want)
			}
		})
	}
}
