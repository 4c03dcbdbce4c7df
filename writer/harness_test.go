//go:build linux

package writer

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// waitLimit bounds every wait in these tests: long enough for a loaded
// machine under -race, short enough that a hang fails with a message.
const waitLimit = 10 * time.Second

// logEntry is what the loop's Log hook saw, copied on the loop goroutine.
type logEntry struct {
	resp *stages.Response
	sent int64
	err  error
	gid  uint64 // goroutine that ran Log: the loop's
}

// harness is one writer Loop running in a goroutine, with its Log hook and
// its responses' recycle function reporting to channels.
type harness struct {
	t        testing.TB
	l        *Loop
	logs     chan logEntry
	recycled chan *stages.Response
	ids      atomic.Uint64
	runErr   chan error
}

// startLoop builds a loop from cfg (Log is the harness's) and runs it until
// the test ends, when it is stopped and must return nil.
func startLoop(t testing.TB, cfg Config) *harness {
	return startLoopWith(t, cfg, nil)
}

// startLoopWith lets the test touch the loop before Run starts (prepare
// runs on the test goroutine, before the loop goroutine exists).
func startLoopWith(t testing.TB, cfg Config, prepare func(*Loop)) *harness {
	t.Helper()
	h := &harness{t: t, logs: make(chan logEntry, 64), recycled: make(chan *stages.Response, 64), runErr: make(chan error, 1)}
	cfg.Log = func(r *stages.Response) {
		h.logs <- logEntry{resp: r, sent: r.BytesSent, err: r.WriteErr, gid: goid()}
	}
	l, err := New(0, cfg, &stages.StageCounters{})
	if err != nil {
		t.Fatalf("writer.New: %v", err)
	}
	h.l = l
	if prepare != nil {
		prepare(l)
	}
	go func() { h.runErr <- l.Run(context.Background()) }()
	t.Cleanup(func() {
		l.Stop()
		select {
		case err := <-h.runErr:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			buf := make([]byte, 1<<20)
			t.Errorf("Run did not return within %v of Stop (queue depth %d):\n%s",
				waitLimit, l.QueueDepth(), buf[:runtime.Stack(buf, true)])
		}
	})
	return h
}

// response begins a keep-alive response on fd, kicked to the harness's loop.
func (h *harness) response(fd int) *stages.Response {
	r := stages.NewResponse(h.l.Kick, func(r *stages.Response) {
		r.RunCleanups()
		h.recycled <- r
	})
	r.Begin(&stages.Conn{ID: h.ids.Add(1), FD: fd}, nil, time.Now())
	r.KeepAlive = true
	return r
}

// record is the loop's record for r, if it has one. Loop goroutine only
// (inside inLoop).
func (h *harness) record(r *stages.Response) (*record, bool) {
	i := int(r.Record())
	if i < 0 || i >= len(h.l.records) || h.l.records[i].resp != r {
		return nil, false
	}
	return &h.l.records[i], true
}

// log waits for the next Log call.
func (h *harness) log() logEntry {
	h.t.Helper()
	select {
	case e := <-h.logs:
		return e
	case <-time.After(waitLimit):
		h.t.Fatalf("no response was logged within %v", waitLimit)
	}
	return logEntry{}
}

// waitRecycled waits until r has been recycled (both owners let go).
func (h *harness) waitRecycled(r *stages.Response) {
	h.t.Helper()
	select {
	case got := <-h.recycled:
		if got != r {
			h.t.Fatalf("recycled %p, want %p", got, r)
		}
	case <-time.After(waitLimit):
		h.t.Fatalf("response not recycled within %v", waitLimit)
	}
}

// inLoop runs fn on the loop goroutine, through a completion source (the
// interface RDMA will use), and waits for it. It is how tests look at
// loop-owned state without a data race.
func (h *harness) inLoop(fn func()) {
	h.t.Helper()
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		h.t.Fatalf("eventfd: %v", err)
	}
	defer unix.Close(efd) // after RemoveSource, deferred below
	done := make(chan struct{})
	id, err := h.l.AddSource(efd, func() {
		drainEventfd(efd)
		select {
		case <-done:
			return // level-triggered leftovers; fn ran already
		default:
		}
		fn()
		close(done)
	})
	if err != nil {
		h.t.Fatalf("AddSource: %v", err)
	}
	defer func() {
		if err := h.l.RemoveSource(id); err != nil {
			h.t.Errorf("RemoveSource: %v", err)
		}
	}()
	fireEventfd(h.t, efd)
	select {
	case <-done:
	case <-time.After(waitLimit):
		h.t.Fatalf("loop did not run a completion callback within %v", waitLimit)
	}
}

// waitStalled polls, in the loop, until r is parked on EPOLLOUT: its
// socket is full and the loop has armed the one-shot registration.
func (h *harness) waitStalled(r *stages.Response) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		stalled := false
		h.inLoop(func() {
			rec, ok := h.record(r)
			stalled = ok && rec.waiting
		})
		if stalled {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("response never waited for EPOLLOUT within %v", waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

func newEventfd(t testing.TB) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatalf("eventfd: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func fireEventfd(t testing.TB, fd int) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatalf("write eventfd: %v", err)
	}
}

func drainEventfd(fd int) {
	var b [8]byte
	unix.Read(fd, b[:])
}

// goid is the calling goroutine's id, from its stack header.
func goid() uint64 {
	var buf [64]byte
	s := buf[:runtime.Stack(buf[:], false)]
	s = bytes.TrimPrefix(s, []byte("goroutine "))
	s = s[:bytes.IndexByte(s, ' ')]
	id, _ := strconv.ParseUint(string(s), 10, 64)
	return id
}

// tcpPair connects a client to a server socket on 127.0.0.1 and returns
// the server side as a raw non-blocking fd the test owns (as a reader loop
// would) and the client as a net.Conn. sndbuf and rcvbuf, when positive,
// shrink the server's send buffer and the client's receive buffer (set
// before connect, so the advertised window is small from the start).
func tcpPair(t testing.TB, sndbuf, rcvbuf int) (int, *net.TCPConn) {
	t.Helper()
	fd, client := tcpPairOwned(t, sndbuf, rcvbuf)
	t.Cleanup(func() { unix.Close(fd) })
	return fd, client
}

// tcpPairOwned is tcpPair for a test that closes the server fd itself, as
// a reader loop would.
func tcpPairOwned(t testing.TB, sndbuf, rcvbuf int) (int, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if rcvbuf <= 0 {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	cc, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client := cc.(*net.TCPConn)
	t.Cleanup(func() { client.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	fd := dupRawOwned(t, sc.(*net.TCPConn))
	sc.Close()
	if sndbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
			t.Fatal(err)
		}
	}
	return fd, client
}

// dupRawOwned takes a raw, non-blocking copy of c's fd, which the caller
// closes.
func dupRawOwned(t testing.TB, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatalf("dup: %v", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return fd
}

// pattern returns n reproducible pseudo-random bytes: a misplaced or
// repeated run shows up as a mismatch.
func pattern(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// split cuts b into heap buckets of at most size bytes.
func split(b []byte, size int) []stages.Bucket {
	var bs []stages.Bucket
	for len(b) > 0 {
		n := min(size, len(b))
		bs = append(bs, stages.Bucket{Kind: stages.BucketHeap, Data: b[:n]})
		b = b[n:]
	}
	return bs
}

func heap(b []byte) stages.Bucket { return stages.Bucket{Kind: stages.BucketHeap, Data: b} }

var eos = stages.Bucket{Kind: stages.BucketEOS}

// readN reads exactly n bytes from c within waitLimit.
func readN(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b := make([]byte, n)
	got := 0
	for got < n {
		m, err := c.Read(b[got:])
		got += m
		if err != nil {
			t.Fatalf("read %d of %d bytes: %v", got, n, err)
		}
	}
	return b
}

// tempFile writes b to a file in the test's temp dir and opens it for reading.
func tempFile(t testing.TB, b []byte) *os.File {
	t.Helper()
	name := t.TempDir() + "/body"
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
