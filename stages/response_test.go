package stages

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// Only the first of Release and Divert counts, from any goroutine; the
// writer sees a diverted hold as released, with its alternative.
func TestHoldReleaseAndDivert(t *testing.T) {
	alt := []Bucket{{Kind: BucketHeap, Data: []byte("instead")}}
	for _, tc := range []struct {
		name       string
		first      func(h *Hold) bool
		wantDivert bool
	}{
		{"release first", func(h *Hold) bool { h.Release(); return true }, false},
		{"divert first", func(h *Hold) bool { return h.Divert(alt) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kicks := 0
			r := NewResponse(func(*Response) { kicks++ }, nil)
			h := NewHold(r)
			if h.Released() {
				t.Fatal("a new hold is released")
			}
			if _, ok := h.Diverted(); ok {
				t.Fatal("a new hold is diverted")
			}
			if !tc.first(h) || !h.Released() || kicks != 1 {
				t.Fatalf("after the first call: released %v, %d kicks", h.Released(), kicks)
			}
			// Later calls change nothing and kick nobody.
			h.Release()
			if h.Divert([]Bucket{{Kind: BucketHeap, Data: []byte("late")}}) || kicks != 1 {
				t.Fatalf("a later call counted (%d kicks)", kicks)
			}
			got, ok := h.Diverted()
			if ok != tc.wantDivert || (ok && string(got[0].Data) != "instead") {
				t.Fatalf("Diverted() = %v, %v", got, ok)
			}
		})
	}
}

// Racing Release and Divert: exactly one wins, and a diverted hold
// always shows its own alternative.
func TestHoldReleaseDivertRace(t *testing.T) {
	for i := 0; i < 200; i++ {
		h := NewHold(nil)
		alt := []Bucket{{Kind: BucketHeap, Data: []byte("alt")}}
		var wg sync.WaitGroup
		var diverted bool
		wg.Add(2)
		go func() { defer wg.Done(); h.Release() }()
		go func() { defer wg.Done(); diverted = h.Divert(alt) }()
		wg.Wait()
		got, ok := h.Diverted()
		if ok != diverted || (ok && len(got) != 1) || !h.Released() {
			t.Fatalf("Divert reported %v, Diverted() %v %v", diverted, got, ok)
		}
	}
}

// An alternative cannot end the response or hold it again: the
// producer's EOS does the ending.
func TestHoldDivertRefusesMetadata(t *testing.T) {
	for _, k := range []BucketKind{BucketEOS, BucketHold} {
		func() {
			defer func() {
				if p := recover(); p == nil || !strings.Contains(p.(string), k.String()) {
					t.Errorf("Divert with %s: panic %v", k, p)
				}
			}()
			NewHold(nil).Divert([]Bucket{{Kind: k}})
		}()
	}
}

// Replaced moves Unsent by the difference, leaving BytesSent alone.
func TestResponseReplaced(t *testing.T) {
	r := NewResponse(nil, nil)
	r.Begin(nil, nil, r.Started)
	r.Append(Bucket{Kind: BucketHeap, Data: make([]byte, 100)})
	r.Sent(10, 0)
	r.Replaced(90, 30, 0)
	if r.Unsent() != 30 || r.BytesSent != 10 {
		t.Fatalf("unsent %d, sent %d; want 30, 10", r.Unsent(), r.BytesSent)
	}
	r.Sent(30, 0)
	if r.Unsent() != 0 || r.BytesSent != 40 {
		t.Fatalf("unsent %d, sent %d; want 0, 40", r.Unsent(), r.BytesSent)
	}
}

// The writer touches the drained channel only when the producer waits in
// WaitDrained: a response nobody waits on costs no channel operation. A
// waiting producer is still woken by every Sent that brings Unsent to the
// low-water mark, however the two race (no wake-up is lost: a lost one
// would hold WaitDrained for its whole timeout and fail the round).
func TestSentWakesOnlyAWaitingProducer(t *testing.T) {
	r := NewResponse(nil, nil)
	r.Begin(nil, nil, r.Started)
	r.Append(Bucket{Kind: BucketHeap, Data: make([]byte, 100)})
	r.Sent(100, 0)
	if n := len(r.drained); n != 0 {
		t.Fatalf("Sent with nobody waiting left %d tokens in drained", n)
	}
	for round := range 2000 {
		r.Begin(nil, nil, r.Started)
		r.Append(Bucket{Kind: BucketHeap, Data: make([]byte, 100)})
		done := make(chan error, 1)
		go func() { done <- r.WaitDrained(0, time.Minute, nil) }()
		for i := 0; i < 10; i++ {
			r.Sent(10, 0)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: WaitDrained: %v", round, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the producer was never woken", round)
		}
	}
}

// Requeue puts taken buckets back ahead of what was appended since, and
// HoldKicks keeps Append from kicking until TakeOut (or ResumeKicks).
func TestRequeueAndHeldKicks(t *testing.T) {
	kicks := 0
	r := NewResponse(func(r *Response) {
		if r.MarkQueued() {
			kicks++
		}
	}, nil)
	r.Begin(nil, nil, r.Started)
	r.HoldKicks()
	r.Append(Bucket{Kind: BucketHeap, Data: []byte("a")}, Bucket{Kind: BucketHeap, Data: []byte("b")})
	if kicks != 0 {
		t.Fatalf("%d kicks while held", kicks)
	}
	taken, _ := r.TakeOut(nil)
	r.Append(Bucket{Kind: BucketHeap, Data: []byte("c")}, Bucket{Kind: BucketEOS})
	if kicks != 1 {
		t.Fatalf("%d kicks after TakeOut and an Append, want 1", kicks)
	}
	r.Requeue(taken[1:], false)
	r.ResumeKicks()
	if kicks != 2 {
		t.Fatalf("%d kicks after ResumeKicks, want 2", kicks)
	}
	got, eos := r.TakeOut(nil)
	var s string
	for _, b := range got {
		s += string(b.Data)
	}
	if s != "bc" || !eos || got[len(got)-1].Kind != BucketEOS {
		t.Fatalf("after Requeue: %q, eos %v", s, eos)
	}
}
