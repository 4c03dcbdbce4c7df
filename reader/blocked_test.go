package reader

import (
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// acceptedConn returns a client connection and the server side's fd,
// ready for a loop to adopt (non-blocking, as the listener hands it over).
func acceptedConn(t testing.TB) (net.Conn, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f, err := sc.(*net.TCPConn).File()
	sc.Close()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return client, fd
}

// A request the processors have no room for waits in the loop without
// being offered again and again: the loop dispatches it once more when
// told there is room (Unblock), not every turn. Before, a full queue was
// retried every millisecond (51.8 M failed attempts in 45 s in issue 14's
// run).
func TestBlockedDispatchWaitsForUnblock(t *testing.T) {
	var attempts atomic.Int64
	var room atomic.Bool
	dispatched := make(chan *stages.Request, 1)
	loop := startLoop(t, func(r *stages.Request) bool {
		attempts.Add(1)
		if !room.Load() {
			return false
		}
		dispatched <- r
		return true
	})

	client, fd := acceptedConn(t)
	loop.Adopt(&stages.Conn{ID: 1, FD: fd})
	if _, err := client.Write([]byte("GET /blocked HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for attempts.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request was never dispatched")
		}
		time.Sleep(time.Millisecond)
	}
	// The loop keeps running (other connections, timers); a busy-retrying
	// loop would offer the request ~200 times in this while.
	time.Sleep(200 * time.Millisecond)
	if n := attempts.Load(); n != 1 {
		t.Errorf("the request was offered %d times while the queue stayed full, want 1", n)
	}
	loop.Unblock() // room reported, but the queue is full again by the time the loop looks
	time.Sleep(50 * time.Millisecond)
	if n := attempts.Load(); n != 2 {
		t.Errorf("offered %d times after one Unblock, want 2", n)
	}
	room.Store(true)
	loop.Unblock()
	select {
	case r := <-dispatched:
		if string(r.Path) != "/blocked" {
			t.Errorf("dispatched %q", r.Path)
		}
		loop.Return(r.Conn, stages.FateClose) // as the writer would: the loop closes it
	case <-time.After(10 * time.Second):
		t.Fatal("the request was not dispatched after Unblock")
	}
}

// A retry pass offers each class until it refuses once: the requests of
// a class found full again wait for the next Unblock untouched, while
// those of a class with room go. Offering every waiting request on every
// Unblock made the retries a quarter of the server's CPU with 12,000
// connections behind a full queue.
func TestRetryPassesOverAFullClass(t *testing.T) {
	const perClass = 5
	var attempts atomic.Int64
	var room [3]atomic.Int64 // by class: how many more it takes
	dispatched := make(chan *stages.Request, 2*perClass)
	loop := startLoop(t, func(r *stages.Request) bool {
		attempts.Add(1)
		r.Class = 1
		if string(r.Path) == "/b" {
			r.Class = 2
		}
		if room[r.Class].Add(-1) < 0 {
			room[r.Class].Add(1)
			return false
		}
		dispatched <- r
		return true
	})
	for i := range 2 * perClass {
		client, fd := acceptedConn(t)
		loop.Adopt(&stages.Conn{ID: uint64(i + 1), FD: fd})
		path := "/a"
		if i%2 == 1 {
			path = "/b"
		}
		if _, err := client.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if !waitFor(func() bool { return attempts.Load() == 2*perClass }) {
		t.Fatalf("%d first dispatches, want %d", attempts.Load(), 2*perClass)
	}
	take := func(n int, path string) {
		t.Helper()
		for range n {
			takeDispatched(t, loop, dispatched, path)
		}
	}
	for _, step := range []struct {
		class        int
		path         string
		wantAttempts int64 // in the pass
	}{
		{2, "/b", 1 + perClass}, // /a refused once, its others passed over; every /b goes
		{1, "/a", perClass},
	} {
		before := attempts.Load()
		room[step.class].Store(perClass)
		loop.Unblock()
		take(perClass, step.path)
		time.Sleep(50 * time.Millisecond) // a pass that went on would count here
		if n := attempts.Load() - before; n != step.wantAttempts {
			t.Errorf("room for %s: %d offers in the pass, want %d", step.path, n, step.wantAttempts)
		}
	}
}

// A new request of a class with requests waiting for room waits behind
// them, instead of taking the place a pop made before the retry pass
// comes: otherwise the waiting ones are passed again and again. Another
// class's requests still go at once.
func TestNewRequestsWaitBehindBlocked(t *testing.T) {
	var room atomic.Int64
	var offered []string // appended by the loop's goroutine
	dispatched := make(chan *stages.Request, 8)
	classify := func(r *stages.Request) uint8 {
		if string(r.Path) == "/other" {
			return 2
		}
		return 1
	}
	loop := startLoopWith(t, Config{
		Dispatch: func(r *stages.Request) bool {
			offered = append(offered, string(r.Path))
			r.Class = classify(r)
			if r.Class == 1 && room.Add(-1) < 0 {
				room.Add(1)
				return false
			}
			dispatched <- r
			return true
		},
		Classify: classify,
	})
	send := func(id uint64, path string) {
		t.Helper()
		client, fd := acceptedConn(t)
		loop.Adopt(&stages.Conn{ID: id, FD: fd})
		if _, err := client.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	take := func(path string) {
		t.Helper()
		takeDispatched(t, loop, dispatched, path)
	}
	send(1, "/first") // refused: no room
	if !waitFor(func() bool { return loop.Blocked() == 1 }) {
		t.Fatal("the first request was not blocked")
	}
	room.Store(2) // a pop made room, its Unblock not yet seen
	send(2, "/second")
	send(3, "/other")
	take("/other") // another class goes at once
	if !waitFor(func() bool { return loop.Blocked() == 2 }) {
		t.Fatal("the second request did not wait behind the first")
	}
	loop.Unblock()
	take("/first")
	take("/second")
	// offered is the loop's; each append came before a send received above.
	if want := []string{"/first", "/other", "/first", "/second"}; !slices.Equal(offered, want) {
		t.Errorf("offered %v, want %v", offered, want)
	}
}

// takeDispatched takes the next request dispatch handed over, which must
// be for path, and gives its connection back to be closed.
func takeDispatched(t *testing.T, loop *Loop, dispatched <-chan *stages.Request, path string) {
	t.Helper()
	select {
	case r := <-dispatched:
		if string(r.Path) != path {
			t.Errorf("dispatched %s, want %s", r.Path, path)
		}
		loop.Return(r.Conn, stages.FateClose)
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s dispatched", path)
	}
}
