package poll

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// newTestRing skips where the kernel refuses io_uring (a seccomp filter,
// kernel.io_uring_disabled): the callers' fallback is what runs there.
func newTestRing(t *testing.T, entries int) *SendRing {
	t.Helper()
	r, err := NewSendRing(entries)
	if errors.Is(err, ErrNoSendRing) {
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
func TestSendRing(t *testing.T) {
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
	type result struct {
		n   int
		err error
	}
	got := map[uint64]result{}
	if err := r.Submit(func(tag uint64, n int, err error) { got[tag] = result{n, err} }); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]result{0: {13, nil}, 1: {3, nil}, 2: {0, unix.EAGAIN}}
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
func TestSendRingWraps(t *testing.T) {
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
func TestSendRingCloseReleases(t *testing.T) {
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
	if _, err := NewSendRing(3); err == nil {
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
