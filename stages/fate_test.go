package stages

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFateAndPhaseNames(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{FateKeepAlive.String(), "keep-alive"},
		{FateLinger.String(), "linger"},
		{FateClose.String(), "close"},
		{FateReset.String(), "reset"},
		{Fate(9).String(), "fate?"},
		{PhaseQueued.String(), "queued"},
		{PhaseRunning.String(), "running"},
		{PhaseParked.String(), "parked"},
		{PhaseWriting.String(), "writing"},
		{Phase(9).String(), "phase?"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

// Drop recycles a response that no writer ever held, at once, with its fate.
func TestResponseDrop(t *testing.T) {
	var recycled *Response
	r := NewResponse(func(*Response) { t.Fatal("a dropped response was kicked") }, func(r *Response) { recycled = r })
	r.Begin(&Conn{}, nil, time.Now())
	r.Drop(FateClose)
	if recycled != r || r.Fate() != FateClose {
		t.Fatalf("recycled %p (want %p), fate %v", recycled, r, r.Fate())
	}
	r.Begin(&Conn{}, nil, time.Now())
	if r.Fate() != FateKeepAlive || r.Record() != NoRecord {
		t.Errorf("after Begin: fate %v, record %d", r.Fate(), r.Record())
	}
}

// countingParker counts Park and Unpark calls.
type countingParker struct{ parks, unparks int }

func (p *countingParker) Park()   { p.parks++ }
func (p *countingParker) Unpark() { p.unparks++ }

// WaitDrained tells its Parker only when it has to wait, and always pairs
// the calls.
func TestWaitDrainedParksOnlyToWait(t *testing.T) {
	for _, tc := range []struct {
		name      string
		unsent    int64
		sentLater int64 // bytes the "writer" reports sent while the producer waits
		abort     bool
		wantErr   error
		wantParks int
	}{
		{"below the low mark: no wait", 10, 0, false, nil, 0},
		{"drained by the writer", 1000, 1000, false, nil, 1},
		{"aborted while waiting", 1000, 0, true, ErrAborted, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewResponse(nil, nil)
			r.Begin(&Conn{}, nil, time.Now())
			r.Append(Bucket{Kind: BucketHeap, Data: make([]byte, tc.unsent)})
			pk := &countingParker{}
			go func() {
				time.Sleep(10 * time.Millisecond)
				if tc.abort {
					r.Abort(errors.New("peer reset"))
				} else if tc.sentLater > 0 {
					r.Sent(tc.sentLater, 100)
				}
			}()
			err := r.WaitDrained(100, 5*time.Second, pk)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("WaitDrained: %v, want %v", err, tc.wantErr)
			}
			if pk.parks != tc.wantParks || pk.unparks != pk.parks {
				t.Errorf("%d parks, %d unparks; want %d of each", pk.parks, pk.unparks, tc.wantParks)
			}
		})
	}
}

// The connection's context is cancelled when the client hangs up, whether
// it was asked for before or after, and Gone says so.
func TestConnHangUpCancelsContext(t *testing.T) {
	before := &Conn{}
	ctx := before.Context()
	before.HangUp()
	after := &Conn{}
	after.HangUp()
	for _, tc := range []struct {
		name string
		c    *Conn
		ctx  context.Context
	}{
		{"context asked for before the hang-up", before, ctx},
		{"context asked for after it", after, after.Context()},
	} {
		select {
		case <-tc.ctx.Done():
		default:
			t.Errorf("%s: not cancelled", tc.name)
		}
		if !tc.c.Gone() {
			t.Errorf("%s: Gone() false", tc.name)
		}
	}
	live := &Conn{}
	if live.Context().Err() != nil || live.Gone() {
		t.Error("a live connection's context is cancelled")
	}
	live.RunCleanups() // the reader closed it: the context is released
	if live.Context().Err() == nil {
		t.Error("the context outlives the connection")
	}
}

// WaitDrained times out only when the client takes nothing for the whole
// timeout: a client the writer sees taking bytes (Progressed), however
// slowly, keeps the producer waiting until it has drained.
func TestWaitDrainedTimesOutOnlyWithoutProgress(t *testing.T) {
	for _, tc := range []struct {
		name     string
		progress bool
		want     error
	}{
		{"a client that takes nothing", false, ErrWriteTimeout},
		{"a client that takes bytes slowly", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = 50 * time.Millisecond
			r := NewResponse(nil, nil)
			r.Begin(&Conn{}, nil, time.Now())
			r.Append(Bucket{Kind: BucketHeap, Data: make([]byte, 1000)})
			done := make(chan struct{})
			defer close(done)
			go func() {
				// For ten timeouts the client takes bytes only the kernel's
				// send queue shows; then the writer writes the rest.
				for i := 0; i < 20; i++ {
					select {
					case <-done:
						return
					case <-time.After(timeout / 2):
					}
					if tc.progress {
						r.Progressed()
					}
				}
				r.Sent(1000, 0)
			}()
			if err := r.WaitDrained(0, timeout, nil); !errors.Is(err, tc.want) {
				t.Fatalf("WaitDrained: %v, want %v", err, tc.want)
			}
		})
	}
}
