package poll

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// The raw calls behave as the plain ones on a non-blocking socket: bytes
// through, EAGAIN when there is nothing to read, the errno otherwise.
func TestRawIO(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf := make([]byte, 64)
	if n, err := Read(fds[1], buf); err != unix.EAGAIN || n != -1 {
		t.Fatalf("Read of an empty socket: %d, %v; want -1, EAGAIN", n, err)
	}
	if n, err := Write(fds[0], []byte("ab")); err != nil || n != 2 {
		t.Fatalf("Write: %d, %v", n, err)
	}
	c, d := []byte("cd"), []byte("efg")
	iov := []unix.Iovec{{Base: &c[0]}, {Base: &d[0]}}
	iov[0].SetLen(len(c))
	iov[1].SetLen(len(d))
	if n, err := Writev(fds[0], iov); err != nil || n != 5 {
		t.Fatalf("Writev: %d, %v", n, err)
	}
	if n, err := Read(fds[1], buf); err != nil || !bytes.Equal(buf[:n], []byte("abcdefg")) {
		t.Fatalf("Read: %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := Read(-1, buf); err != unix.EBADF {
		t.Fatalf("Read of fd -1: %v, want EBADF", err)
	}
}

// Pending sees the events a Wait would return without taking them, and
// allocates nothing (a worker asks it at every yield under load).
func TestPendingTakesNothing(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	tok := MakeToken(KindConn, 1, 0)
	if err := p.Add(fds[0], Readable|EdgeTriggered, tok); err != nil {
		t.Fatal(err)
	}
	if p.Pending() {
		t.Fatal("pending before anything was written")
	}
	if _, err := Write(fds[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if !p.Pending() {
			t.Fatal("not pending after a write")
		}
	}
	evs, err := p.Wait(nil, 0)
	if err != nil || len(evs) != 1 || evs[0].Token != tok {
		t.Fatalf("Wait after Pending: %v, %v", evs, err)
	}
	if p.Pending() {
		t.Fatal("pending after Wait took the edge-triggered event")
	}
	if n := testing.AllocsPerRun(100, func() { p.Pending() }); n != 0 {
		t.Errorf("Pending allocates %v times", n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Pending() {
		t.Error("a closed poller is pending")
	}
}
