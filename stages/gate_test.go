package stages

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
)

// The gate reports a loop starved only while the loop sleeps with events
// waiting; a worker waiting at the gate is released by the loop's next
// turn, or by the bound when no loop turns; a closed loop leaves it.
func TestLoopGate(t *testing.T) {
	gate := NewLoopGate()
	gate.SetOn(true)
	fds, err := nonblockingPair()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var buf [16]byte
	loop, err := NewLoop(LoopHooks{
		Turn: func(_ time.Time, stopping bool) (time.Duration, bool) { return -1, stopping },
		Event: func(poll.Event) {
			for {
				if n, _ := poll.Read(fds[0], buf[:]); n <= 0 {
					return
				}
			}
		},
	}, LoopOptions{Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	if err := loop.Poller().Add(fds[0], poll.Readable|poll.EdgeTriggered, poll.MakeToken(poll.KindConn, 1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := poll.Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name    string
		do      func()
		starved bool
	}{
		{"running, events waiting", func() {}, false},
		{"asleep, events waiting", func() { loop.waker.Sleep() }, true},
		{"woken by a producer", func() { loop.waker.Wake() }, true},
		{"off, asleep with events waiting", func() { gate.SetOn(false); loop.waker.Sleep() }, false},
		{"on again", func() { gate.SetOn(true) }, true},
		{"awake again", func() { loop.waker.Awake() }, false},
	} {
		step.do()
		gate.checked.Store(-int64(gateCheckEvery)) // look again now
		if got := gate.Starved(time.Now()); got != step.starved {
			t.Errorf("%s: Starved %v, want %v", step.name, got, step.starved)
		}
	}

	var w GateWaiter
	released := make(chan struct{})
	go func() { gate.Wait(&w); close(released) }()
	for gate.nwait.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- loop.Run(ctx) }()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop's turn did not release the waiting worker")
	}
	if !waitUntil(func() bool { return !gate.Starved(time.Now()) }) {
		t.Error("still starved while the loop runs")
	}

	// No loop turns at another gate: the wait ends by its bound.
	NewLoopGate().Wait(&w)

	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if err := loop.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(*gate.loops.Load()); n != 0 {
		t.Errorf("%d loops left in the gate after Close", n)
	}
}

func waitUntil(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// nonblockingPair is a connected pair of non-blocking Unix sockets.
func nonblockingPair() ([2]int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return fds, err
	}
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return fds, err
		}
	}
	return fds, nil
}
