package stages

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func classReq(class int, id uint64) *Request { return &Request{Class: uint8(class), Seq: id} }

// Pop serves the non-empty class whose requests hold the fewest places:
// a fast class gets the next place even when a slow class has queued far
// more and holds most of them.
func TestClassQueuePopFewestHeld(t *testing.T) {
	for _, tc := range []struct {
		name   string
		queued []int // per class
		held   []int // popped and not finished, per class
		want   int   // class of the next pop; -1: none
	}{
		{"one class", []int{3}, []int{5}, 0},
		{"the class holding fewer places goes first", []int{100, 1}, []int{4, 0}, 1},
		{"ties go to the lower class", []int{1, 1}, []int{2, 2}, 0},
		{"an empty class is skipped however few it holds", []int{5, 0, 2}, []int{3, 0, 4}, 0},
		{"all empty", []int{0, 0}, []int{1, 0}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewClassQueue(64, nil)
			for range len(tc.queued) - 1 {
				q.AddClass()
			}
			id := uint64(0)
			for c, h := range tc.held {
				for range h {
					id++
					q.Push(classReq(c, id))
				}
			}
			// Pop the held ones (class by class: pop takes from wherever,
			// so pop until each has its count out).
			out := make([]int, len(tc.held))
			for sum(out) < sum(tc.held) {
				r, ok := q.Pop()
				if !ok {
					t.Fatal("queue empty before the held requests were out")
				}
				out[r.Class]++
			}
			for c, n := range tc.queued {
				for range n {
					id++
					q.Push(classReq(c, id))
				}
			}
			r, ok := q.Pop()
			switch {
			case tc.want < 0 && ok:
				t.Errorf("popped class %d from empty classes", r.Class)
			case tc.want >= 0 && !ok:
				t.Errorf("nothing popped, want class %d", tc.want)
			case ok && int(r.Class) != tc.want:
				t.Errorf("popped class %d, want %d", r.Class, tc.want)
			}
		})
	}
}

func sum(s []int) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}

// A producer that finds its class full is told when a pop makes room, and
// only then: the room function runs once per full ring, not per pop.
func TestClassQueueRoom(t *testing.T) {
	var rooms atomic.Int64
	q := NewClassQueue(2, func() { rooms.Add(1) })
	c1, _ := q.AddClass()
	for i := range 2 {
		if !q.Push(classReq(0, uint64(i))) {
			t.Fatalf("push %d failed on an empty ring of 2", i)
		}
	}
	if !q.Push(classReq(c1, 9)) {
		t.Fatal("class 1 refused a push because class 0 is full")
	}
	if q.Push(classReq(0, 3)) {
		t.Fatal("a third push into a ring of 2 succeeded")
	}
	q.Pop() // class 0 holds none: ties go to class 0
	if n := rooms.Load(); n != 1 {
		t.Fatalf("room called %d times after the pop that made room, want 1", n)
	}
	q.Pop()
	q.Pop()
	if n := rooms.Load(); n != 1 {
		t.Errorf("room called %d times in all; nobody waited after the first", n)
	}
	if !q.Push(classReq(0, 3)) {
		t.Error("push after room failed")
	}
}

// Admit refuses a request once its class has Limit waiting, counts it,
// and hands out the class's Retry-After; a negative limit admits all.
func TestClassQueueAdmit(t *testing.T) {
	q := NewClassQueue(16, nil)
	if ok, _ := q.Admit(0, time.Now()); !ok {
		t.Fatal("no limit set, and refused")
	}
	q.SetLimit(0, 2, 7)
	for i := range 2 {
		if ok, _ := q.Admit(0, time.Now()); !ok {
			t.Fatalf("refused with %d waiting, limit 2", i)
		}
		q.Push(classReq(0, uint64(i)))
	}
	ok, ra := q.Admit(0, time.Now())
	if ok || ra != 7 {
		t.Fatalf("Admit with 2 waiting, limit 2: %v, retry %d; want refused, 7", ok, ra)
	}
	c := q.Counts(0)
	if c.Shed != 1 || c.Queued != 2 || c.Limit != 2 || c.Retry != 7 {
		t.Errorf("counts %+v", c)
	}
	q.SetLimit(0, -1, 0)
	if ok, _ := q.Admit(0, time.Now()); !ok {
		t.Error("refused with the limit lifted")
	}
}

// Requests that unused processor places will start at once do not count
// against the limit on those that wait; with a limit of 0 (the writers are
// behind) or a full ring they are refused all the same.
func TestClassQueueAdmitCountsUnusedPlaces(t *testing.T) {
	for _, tc := range []struct {
		name          string
		limit, unused int64
		admitted      int
	}{
		{"no place unused", 2, 0, 2},
		{"five unused", 2, 5, 7},
		{"limit 0", 0, 5, 0},
		{"more unused than the ring holds", 2, 100, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewClassQueue(16, nil)
			q.SetUnused(func() int64 { return tc.unused })
			q.SetLimit(0, tc.limit, 1)
			admitted := 0
			for i := range 20 {
				if ok, _ := q.Admit(0, time.Now()); !ok {
					break
				}
				admitted++
				q.Push(classReq(0, uint64(i)))
			}
			if admitted != tc.admitted {
				t.Errorf("admitted %d, want %d", admitted, tc.admitted)
			}
		})
	}
}

// With admission on, a full ring refuses whatever the limit says, even a
// ring seen emptying: the request would otherwise wait in its reader, and
// its connection's later ones in the socket, where no limit counts them.
// With admission off (limit -1), a full ring is the reader's to wait on.
func TestClassQueueAdmitFull(t *testing.T) {
	const capacity = 4
	for _, tc := range []struct {
		name    string
		limit   int64
		queued  int
		emptied bool // seen empty a moment ago
		want    bool
	}{
		{"a limit above the ring, one place left", 100, capacity - 1, false, true},
		{"a limit above the ring, full", 100, capacity, false, false},
		{"a limit above the ring, full, seen emptying", 100, capacity, true, false},
		{"under the limit's own bound, seen emptying", 2, 3, true, true},
		{"admission off, full", -1, capacity, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewClassQueue(capacity, nil)
			if q.Cap() != capacity {
				t.Fatalf("a ring of %d for capacity %d: the table assumes it exact", q.Cap(), capacity)
			}
			q.SetWaitTarget(time.Second)
			now := time.Now()
			if tc.emptied {
				q.Push(classReq(0, 0))
				r, _ := q.Pop()
				q.Finished(r, 0, time.Millisecond, now)
			}
			for i := range tc.queued {
				if !q.Push(classReq(0, uint64(i+1))) {
					t.Fatalf("push %d of %d failed", i, tc.queued)
				}
			}
			q.SetLimit(0, tc.limit, 3)
			ok, ra := q.Admit(0, now)
			if ok != tc.want {
				t.Errorf("admitted %v with %d of %d queued, limit %d; want %v", ok, tc.queued, capacity, tc.limit, tc.want)
			}
			if !ok && ra != 3 {
				t.Errorf("Retry-After %d, want 3", ra)
			}
		})
	}
}

// Finished counts each popped request once, with its wait and run time;
// Held is what was popped and not finished.
func TestClassQueueCounts(t *testing.T) {
	q := NewClassQueue(16, nil)
	c1, _ := q.AddClass()
	for i := range 3 {
		q.Push(classReq(c1, uint64(i)))
	}
	a, _ := q.Pop()
	b, _ := q.Pop()
	q.Finished(a, time.Millisecond, 10*time.Millisecond, time.Now())
	got := q.Counts(c1)
	want := ClassCounts{Queued: 1, Held: 1, Pushed: 3, Taken: 2, Done: 1, WaitSum: time.Millisecond, RunSum: 10 * time.Millisecond, Limit: -1}
	if got != want {
		t.Errorf("counts %+v, want %+v", got, want)
	}
	q.Finished(b, 0, 0, time.Now())
	if got := q.Counts(c1); got.Held != 0 || got.Done != 2 {
		t.Errorf("after the second finish: %+v", got)
	}
	if q.Len() != 1 || q.Queued(c1) != 1 || q.Queued(0) != 0 {
		t.Errorf("Len %d, Queued(1) %d, Queued(0) %d", q.Len(), q.Queued(c1), q.Queued(0))
	}
}

// Classes open up to MaxClasses, and no further.
func TestClassQueueAddClass(t *testing.T) {
	q := NewClassQueue(4, nil)
	for want := 1; want < MaxClasses; want++ {
		c, ok := q.AddClass()
		if !ok || c != want {
			t.Fatalf("AddClass = %d, %v; want %d, true", c, ok, want)
		}
	}
	if _, ok := q.AddClass(); ok {
		t.Errorf("opened more than %d classes", MaxClasses)
	}
	if q.Classes() != MaxClasses {
		t.Errorf("Classes() = %d", q.Classes())
	}
}

// Many producers and consumers across classes: every request comes out
// exactly once, and every class's counts balance.
func TestClassQueueConcurrent(t *testing.T) {
	const perProducer = 20000
	q := NewClassQueue(128, nil)
	q.AddClass()
	q.AddClass()
	var wg sync.WaitGroup
	var popped atomic.Int64
	seen := make([]atomic.Int32, 4*perProducer)
	for p := range 4 {
		wg.Go(func() {
			for i := range perProducer {
				r := classReq(i%3, uint64(p*perProducer+i))
				for !q.Push(r) {
				}
			}
		})
	}
	for range 3 {
		wg.Go(func() {
			for popped.Load() < 4*perProducer {
				r, ok := q.Pop()
				if !ok {
					continue
				}
				seen[r.Seq].Add(1)
				q.Finished(r, 0, 0, time.Now())
				popped.Add(1)
			}
		})
	}
	wg.Wait()
	for i := range seen {
		if n := seen[i].Load(); n != 1 {
			t.Fatalf("request %d popped %d times", i, n)
		}
	}
	for c := range 3 {
		if got := q.Counts(c); got.Held != 0 || got.Queued != 0 || got.Done != got.Pushed {
			t.Errorf("class %d: %+v", c, got)
		}
	}
}

// A class opens with the start limit, until the controller sets its own.
func TestClassQueueStartLimit(t *testing.T) {
	q := NewClassQueue(16, nil)
	q.StartLimit(4, 2)
	if l, _ := q.Limit(0); l != -1 {
		t.Errorf("class 0's limit changed to %d by StartLimit", l)
	}
	c, _ := q.AddClass()
	if l, ra := q.Limit(c); l != 4 || ra != 2 {
		t.Errorf("a new class opens with limit %d, Retry-After %d; want 4, 2", l, ra)
	}
}

// Beyond its limit a class is admitted while its queue is seen emptying
// (its requests leave fast: a burst of them is not refused), not while it
// stands, not without a wait target, and never at a limit of 0: the
// controller sets 0 when the writers alone are behind by the target, and
// a processor queue that drains fast does not drain them.
func TestClassQueueAdmitWhileEmptying(t *testing.T) {
	for _, tc := range []struct {
		name    string
		target  time.Duration
		limit   int64
		emptied bool          // the queue was seen empty as a request finished, at base
		at      time.Duration // Admit's time after base
		waiting int           // requests queued when it comes
		want    bool
	}{
		{"never seen empty", time.Second, 1, false, 0, 1, false},
		{"emptied within half the target", time.Second, 1, true, 100 * time.Millisecond, 1, true},
		{"emptied, but twice the limit waits", time.Second, 1, true, 0, 2, false},
		{"emptied longer ago than half the target", time.Second, 1, true, 600 * time.Millisecond, 1, false},
		{"no wait target", 0, 1, true, 100 * time.Millisecond, 1, false},
		{"limit 0: the writers are behind", time.Second, 0, true, 100 * time.Millisecond, 1, false},
		{"limit 0, emptied a moment ago", time.Second, 0, true, 0, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := NewClassQueue(16, nil)
			q.SetWaitTarget(tc.target)
			base := time.Now()
			if tc.emptied {
				q.Push(classReq(0, 1))
				r, _ := q.Pop()
				q.Finished(r, 0, time.Millisecond, base) // the queue is empty as it finishes
			}
			for i := range tc.waiting { // at or beyond either limit
				q.Push(classReq(0, uint64(2+i)))
			}
			q.SetLimit(0, tc.limit, 1)
			ok, ra := q.Admit(0, base.Add(tc.at))
			if ok != tc.want {
				t.Errorf("admitted %v, want %v", ok, tc.want)
			}
			if !ok && ra != 1 {
				t.Errorf("refused with Retry-After %d, want 1", ra)
			}
			if got, want := q.Counts(0).Shed, uint64(map[bool]int{true: 0, false: 1}[tc.want]); got != want {
				t.Errorf("%d counted as shed, want %d", got, want)
			}
		})
	}
}
