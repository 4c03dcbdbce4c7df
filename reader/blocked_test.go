package reader

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// acceptedConn returns a client connection and the server side's fd,
// ready for a loop to adopt (non-blocking, as the listener hands it over).
func acceptedConn(t *testing.T) (net.Conn, int) {
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
