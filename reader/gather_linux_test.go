package reader

import (
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/stages"
)

// TestGatherRingFailingAsAWhole: when io_uring_enter fails (not one recv:
// the call itself), whether the kernel made the reads it did not report
// is unknown, so the connections they were for are closed rather than
// read on with a possible hole in their stream; the ring is closed (its
// mappings gone) and dropped, and the loop reads every connection by
// read(2) from then on. The failure is made real by pointing the ring's
// descriptor at /dev/null, where io_uring_enter fails with EOPNOTSUPP.
func TestGatherRingFailingAsAWhole(t *testing.T) {
	fdsBefore, mapsBefore := ringFDs(t), ringMaps(t)
	dispatched := make(chan *stages.Request, 2)
	closed := make(chan uint64, 2)
	loop := startLoopWith(t, Config{
		Dispatch: func(r *stages.Request) bool { dispatched <- r; return true },
		Closed:   func(c *stages.Conn) { closed <- c.ID },
	})
	var ringFD int
	switch fds := newFDs(ringFDs(t), fdsBefore); len(fds) {
	case 0:
		t.Skip("no io_uring here: the loop reads each connection")
	case 1:
		ringFD = fds[0]
	default:
		t.Fatalf("%d new rings, want the loop's one", len(fds))
	}
	if ringMaps(t) <= mapsBefore {
		t.Fatalf("the ring's mappings not found in /proc/self/maps")
	}

	clients := map[uint64]net.Conn{}
	for id := uint64(1); id <= 2; id++ {
		client, fd := acceptedConn(t)
		clients[id] = client
		loop.Adopt(&stages.Conn{ID: id, FD: fd})
	}
	// serve has client id send a request and checks it is dispatched
	// (the loop answers nothing: the test returns the connection).
	serve := func(id uint64, path string) {
		t.Helper()
		if _, err := io.WriteString(clients[id], "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-dispatched:
			if r.Conn.ID != id || string(r.Path) != path {
				t.Fatalf("dispatched %s of connection %d, want %s of %d", r.Path, r.Conn.ID, path, id)
			}
			loop.Return(r.Conn, stages.FateKeepAlive)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s of connection %d never dispatched", path, id)
		}
	}
	// A first request may be read where its connection is adopted, if it
	// arrives first (not gathered); the next, on an idle connection, is.
	serve(1, "/a")
	serve(2, "/b")
	_, adopted := loop.ReadCounts()
	serve(1, "/a2")
	serve(2, "/b2")
	if _, batches := loop.ReadCounts(); batches < adopted+2 {
		t.Fatalf("%d gathered batches for two requests on idle connections, want a read of each through the ring", batches-adopted)
	}

	devNull, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(devNull)
	if err := unix.Dup3(devNull, ringFD, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	_, batchesAtFailure := loop.ReadCounts()

	// Connection 1's request meets the failed ring: closed, not served.
	if _, err := io.WriteString(clients[1], "GET /c HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-closed:
		if id != 1 {
			t.Fatalf("connection %d closed, want 1", id)
		}
	case r := <-dispatched:
		t.Fatalf("%s of connection %d dispatched through a failed ring", r.Path, r.Conn.ID)
	case <-time.After(10 * time.Second):
		t.Fatal("connection 1 neither closed nor served after the ring failed")
	}
	clients[1].SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := clients[1].Read(make([]byte, 1)); n != 0 || err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("client 1 read %d bytes, %v; want its connection closed", n, err)
	}

	// Connection 2 is read by read(2), the ring gone with its mappings.
	serve(2, "/d")
	if _, batches := loop.ReadCounts(); batches != batchesAtFailure+1 {
		t.Errorf("%d batches after the failure, want the failed one (%d) and no more", batches, batchesAtFailure+1)
	}
	if n := ringMaps(t); n != mapsBefore {
		t.Errorf("%d io_uring mappings after the failure, want %d as before the loop", n, mapsBefore)
	}
	select {
	case id := <-closed:
		t.Errorf("connection %d closed too", id)
	default:
	}
}

// ringFDs lists this process's io_uring descriptors.
func ringFDs(t *testing.T) []int {
	t.Helper()
	var fds []int
	for _, fd := range fdtest.Open(t, func(target string) bool { return target == "anon_inode:[io_uring]" }) {
		fds = append(fds, fd.Num)
	}
	return fds
}

// newFDs is what of now was not in before.
func newFDs(now, before []int) []int {
	var fresh []int
	for _, fd := range now {
		old := false
		for _, b := range before {
			old = old || b == fd
		}
		if !old {
			fresh = append(fresh, fd)
		}
	}
	return fresh
}

// ringMaps counts the io_uring mappings in /proc/self/maps (a ring's
// submission and completion rings, and its entries).
func ringMaps(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	return strings.Count(string(b), "[io_uring]")
}
