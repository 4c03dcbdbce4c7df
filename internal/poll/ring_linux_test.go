package poll

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestRing skips where the kernel refuses io_uring (a seccomp filter,
// kernel.io_uring_disabled): the callers' fallback is what runs there.
func newTestRing(t *testing.T, entries int) *Ring {
	t.Helper()
	r, err := NewRing(entries)
	if errors.Is(err, ErrNoRing) {
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func iovecs(bs ...[]byte) []unix.Iovec {
	iov := make([]unix.Iovec, len(bs))
	for i, b := range bs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
	}
	return iov
}

// ringResult is what Submit reported for one operation.
type ringResult struct {
	n   int
	err error
}

// submitAll submits what r holds and returns each report by tag.
func submitAll(t *testing.T, r *Ring) map[uint64]ringResult {
	t.Helper()
	got := map[uint64]ringResult{}
	if err := r.Submit(func(tag uint64, n int, err error) { got[tag] = ringResult{n, err} }); err != nil {
		t.Fatal(err)
	}
	return got
}

func socketPair(t *testing.T) [2]int {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds
}

// One Submit sends on every socket queued, each report says what its
// sendmsg would have, and a full socket answers EAGAIN at once: Submit
// never waits for a client to read.
func TestRingSend(t *testing.T) {
	r := newTestRing(t, 8)
	defer r.Close()
	if r.Cap() != 8 {
		t.Fatalf("Cap %d, want 8", r.Cap())
	}
	a, b, full := socketPair(t), socketPair(t), socketPair(t)
	// Fill full's send buffer.
	chunk := make([]byte, 64<<10)
	for {
		if _, err := Write(full[0], chunk); err == unix.EAGAIN {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	x, y, z := []byte("head "), []byte("and body"), []byte("one")
	ivA, ivB, ivFull := iovecs(x, y), iovecs(z), iovecs(z)
	for i, s := range []struct {
		fd  int
		iov []unix.Iovec
	}{{a[0], ivA}, {b[0], ivB}, {full[0], ivFull}} {
		if !r.Send(s.fd, s.iov, uint64(i)) {
			t.Fatalf("send %d refused", i)
		}
	}
	if r.Queued() != 3 {
		t.Fatalf("Queued %d, want 3", r.Queued())
	}
	got := submitAll(t, r)
	want := map[uint64]ringResult{0: {13, nil}, 1: {3, nil}, 2: {0, unix.EAGAIN}}
	for tag, w := range want {
		if got[tag] != w {
			t.Errorf("send %d: %+v, want %+v", tag, got[tag], w)
		}
	}
	if r.Queued() != 0 {
		t.Fatalf("Queued %d after Submit", r.Queued())
	}
	buf := make([]byte, 64)
	if n, _ := Read(a[1], buf); !bytes.Equal(buf[:max(n, 0)], []byte("head and body")) {
		t.Errorf("socket a read %q", buf[:max(n, 0)])
	}
	if n, _ := Read(b[1], buf); !bytes.Equal(buf[:max(n, 0)], []byte("one")) {
		t.Errorf("socket b read %q", buf[:max(n, 0)])
	}
	// An empty Submit makes no call and reports nothing.
	if err := r.Submit(func(uint64, int, error) { t.Error("report from an empty submit") }); err != nil {
		t.Fatal(err)
	}
	// A send to a closed peer is EPIPE, not a signal.
	unix.Close(b[1])
	r.Send(b[0], ivB, 9)
	var sendErr error
	r.Submit(func(_ uint64, _ int, err error) { sendErr = err })
	if sendErr != unix.EPIPE {
		t.Errorf("send to a closed peer: %v, want EPIPE", sendErr)
	}
}

// The ring takes Cap sends and refuses the next until a Submit; sent
// again and again, it wraps around its slots.
func TestRingWraps(t *testing.T) {
	r := newTestRing(t, 4)
	defer r.Close()
	p := socketPair(t)
	msg := []byte("x")
	iov := iovecs(msg)
	sent := 0
	for round := range 5 {
		for i := range 4 {
			if !r.Send(p[0], iov, uint64(round*4+i)) {
				t.Fatalf("round %d: send %d refused", round, i)
			}
		}
		if r.Send(p[0], iov, 99) {
			t.Fatal("a fifth send on a ring of 4")
		}
		r.Submit(func(_ uint64, n int, err error) {
			if err != nil || n != 1 {
				t.Fatalf("send: %d, %v", n, err)
			}
			sent++
		})
	}
	buf := make([]byte, 64)
	if n, _ := Read(p[1], buf); n != sent || sent != 20 {
		t.Fatalf("read %d bytes of %d sent", n, sent)
	}
}

// Close releases the ring's fd and mappings; a second Close is harmless.
func TestRingCloseReleases(t *testing.T) {
	before := openFDCount(t)
	for range 10 {
		r := newTestRing(t, 64)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	if after := openFDCount(t); after != before {
		t.Fatalf("fds %d before, %d after", before, after)
	}
	if _, err := NewRing(3); err == nil {
		t.Fatal("a ring of 3 entries")
	}
}

func openFDCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// One Submit reads from every socket queued, each report says what its
// read would have: the bytes there (up to the buffer), 0 at EOF, EAGAIN
// at once from an empty socket (Submit never waits for a client to
// write), ECONNRESET from a reset one. Sends and receives share a
// submission.
func TestRingRecv(t *testing.T) {
	r := newTestRing(t, 8)
	defer r.Close()
	data, short, empty, eof, out := socketPair(t), socketPair(t), socketPair(t), socketPair(t), socketPair(t)
	Write(data[1], []byte("GET / HTTP/1.1\r\n\r\n"))
	Write(short[1], []byte("more than the buffer"))
	unix.Close(eof[1])
	bufs := [4][]byte{make([]byte, 64), make([]byte, 4), make([]byte, 64), make([]byte, 64)}
	for i, fd := range []int{data[0], short[0], empty[0], eof[0]} {
		if !r.Recv(fd, bufs[i], uint64(i)) {
			t.Fatalf("recv %d refused", i)
		}
	}
	if !r.Send(out[0], iovecs([]byte("reply")), 4) {
		t.Fatal("send refused")
	}
	if r.Recv(data[0], nil, 5) {
		t.Fatal("a recv into no buffer queued")
	}
	got := submitAll(t, r)
	want := map[uint64]ringResult{0: {18, nil}, 1: {4, nil}, 2: {0, unix.EAGAIN}, 3: {0, nil}, 4: {5, nil}}
	if len(got) != len(want) {
		t.Errorf("%d reports, want %d", len(got), len(want))
	}
	for tag, w := range want {
		if got[tag] != w {
			t.Errorf("op %d: %+v, want %+v", tag, got[tag], w)
		}
	}
	if string(bufs[0][:18]) != "GET / HTTP/1.1\r\n\r\n" || string(bufs[1]) != "more" {
		t.Errorf("read %q and %q", bufs[0][:18], bufs[1])
	}
	// The rest of what did not fit is still there for the next read.
	rest := make([]byte, 64)
	if n, _ := Read(short[0], rest); string(rest[:max(n, 0)]) != " than the buffer" {
		t.Errorf("left behind %q", rest[:max(n, 0)])
	}

	// A reset peer: ECONNRESET, as read returns it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli.(*net.TCPConn).SetLinger(0)
	cli.Close()
	f, err := srv.(*net.TCPConn).File() // a dup of its fd
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var resetErr error
	for range 100 { // the RST may take a moment to land
		r.Recv(int(f.Fd()), bufs[0], 0)
		r.Submit(func(_ uint64, _ int, err error) { resetErr = err })
		if resetErr != unix.EAGAIN {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if resetErr != unix.ECONNRESET {
		t.Errorf("recv from a reset peer: %v, want ECONNRESET", resetErr)
	}
}
