//go:build linux

package bench

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/protocol/msg"
)

// BenchmarkHotPath drives one connection's per-request path (queue,
// write, read, parse, record) over a socketpair whose far end the benchmark
// plays itself, so it measures the generator alone. It must report
// 0 allocs/op.
func BenchmarkHotPath(b *testing.B) {
	for _, open := range []bool{false, true} {
		for _, depth := range []int{1, 16} {
			name := fmt.Sprintf("closed/pipeline-%d", depth)
			if open {
				name = fmt.Sprintf("open/pipeline-%d", depth)
			}
			b.Run(name, func(b *testing.B) { benchHotPath(b, depth, open) })
		}
	}
}

// benchHotPath measures one connection's request cycle; open selects the
// open-loop path (intended send times, the late-connection resume).
func benchHotPath(b *testing.B, depth int, open bool) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[1])
	tg := target{host: "127.0.0.1", path: "/hello"}
	reqs, sched, _ := buildMix(tg, nil)
	r := &run{reqs: reqs, sched: sched, measureEnd: 1 << 62, base: time.Now()}
	l, err := newLoop(r, &loopCounters{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.core.Close()
	c := &conn{fd: fds[0], state: csOpen, l: l, heapIdx: -1, ring: make([]inflight, depth), sp: &httpSpeaker{}}
	l.conns = []*conn{c}
	defer unix.Close(c.fd)

	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!")
	var batch []byte
	for range depth {
		batch = append(batch, resp...)
	}
	sink := make([]byte, 64<<10)
	b.ReportAllocs()
	b.ResetTimer()
	if open {
		// Always behind schedule: every response resumes the connection
		// through schedule(), as under an overloaded server.
		l.interval = 1
		l.schedule(c, l.now())
	} else {
		l.fill(c, l.now()) // queues depth requests, one write(v)
	}
	for i := 0; i < b.N; i += depth {
		now := l.now()
		if _, err := unix.Read(fds[1], sink); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Write(fds[1], batch); err != nil {
			b.Fatal(err)
		}
		// Parses depth responses and, closed loop, refills the pipeline.
		if !l.readable(c, now) || c.n != depth || c.unsent != 0 {
			b.Fatalf("connection state %v with %d in flight", c.state, c.n)
		}
	}
	b.StopTimer()
	if l.stats.Requests == 0 || l.stats.Errors.total() != 0 {
		b.Fatalf("stats %+v", l.stats)
	}
}

// TestHotPathAllocs pins the 0 allocs/op claim in the ordinary test run.
func TestHotPathAllocs(t *testing.T) {
	for _, open := range []bool{false, true} {
		res := testing.Benchmark(func(b *testing.B) { benchHotPath(b, 4, open) })
		if a := res.AllocsPerOp(); a != 0 {
			t.Fatalf("open loop %v: %d allocs/op on the per-request path, want 0", open, a)
		}
	}
}

// BenchmarkMsgHotPath is BenchmarkHotPath for the messenger: a 13-byte
// echo per request, the far end answering with the transaction ids the
// connection uses (1, 2, 3, ...). It must report 0 allocs/op.
func BenchmarkMsgHotPath(b *testing.B) {
	for _, depth := range []int{1, 16} {
		b.Run(fmt.Sprintf("closed/pipeline-%d", depth), func(b *testing.B) { benchMsgHotPath(b, depth, 13) })
	}
}

// msgConn is a loop with one open messenger connection on fd, as Run
// would set it up.
func msgConn(tb testing.TB, fd, depth, payload int) (*loop, *conn) {
	r := &run{sched: []uint16{0}, measureEnd: 1 << 62, base: time.Now()}
	l, err := newLoop(r, &loopCounters{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.core.Close() })
	c := &conn{fd: fd, state: csOpen, l: l, heapIdx: -1, ring: make([]inflight, depth),
		sp: newMsgSpeaker(msgPayload(payload), depth)}
	l.conns = []*conn{c}
	return l, c
}

// echoFrame is the reply to the request with transaction id txid.
func echoFrame(dst []byte, txid uint64, payload []byte) []byte {
	h := msg.Header{Type: msg.TypeReply, TxID: txid, Length: uint32(len(payload))}
	var head [msg.HeaderSize]byte
	_, _ = msg.PutHead(head[:], &h)
	return append(append(dst, head[:]...), payload...)
}

func benchMsgHotPath(b *testing.B, depth, payload int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[1])
	defer unix.Close(fds[0])
	l, c := msgConn(b, fds[0], depth, payload)
	want := msgPayload(payload)
	batch := make([]byte, 0, depth*(msg.HeaderSize+payload))
	sink := make([]byte, 64<<10)
	var txid uint64
	b.ReportAllocs()
	b.ResetTimer()
	l.fill(c, l.now())
	for i := 0; i < b.N; i += depth {
		now := l.now()
		if _, err := unix.Read(fds[1], sink); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
		for range depth {
			txid++
			batch = echoFrame(batch, txid, want)
		}
		if _, err := unix.Write(fds[1], batch); err != nil {
			b.Fatal(err)
		}
		if !l.readable(c, now) || c.n != depth || c.unsent != 0 {
			b.Fatalf("connection state %v with %d in flight", c.state, c.n)
		}
	}
	b.StopTimer()
	if l.stats.Requests == 0 || l.stats.Errors.total() != 0 {
		b.Fatalf("stats %+v", l.stats)
	}
}

// TestMsgHotPathAllocs pins the messenger's 0 allocs/op.
func TestMsgHotPathAllocs(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchMsgHotPath(b, 4, 13) })
	if a := res.AllocsPerOp(); a != 0 {
		t.Fatalf("%d allocs/op on the messenger's per-request path, want 0", a)
	}
}

// Replies are checked whatever the read boundaries: a stream of replies
// (good, error frame, wrong id, wrong payload, empty) is fed cut at every
// offset, and each cut gives the same counts.
func TestMsgSpeakerSplitReads(t *testing.T) {
	for _, payload := range []int{0, 13, 200} {
		want := msgPayload(payload)
		wrong := bytes.Clone(want)
		if payload > 0 {
			wrong[payload-1]++
		}
		var errFrame [msg.MaxErrorFrame]byte
		n, _ := msg.PutErrorFrame(errFrame[:], 2, msg.CodeBusy, "busy")
		var stream []byte
		stream = echoFrame(stream, 1, want)
		stream = append(stream, errFrame[:n]...)
		stream = echoFrame(stream, 99, want) // request 3's reply names no request
		stream = echoFrame(stream, 4, wrong)
		stream = echoFrame(stream, 5, want[:payload/2])
		stream = echoFrame(stream, 6, want)
		// The wrong id always; with a payload, the changed and the short.
		mismatches := uint64(1)
		if payload > 0 {
			mismatches = 3
		}
		for cut := 0; cut <= len(stream); cut++ {
			l, c := msgConn(t, -1, 6, payload)
			for range 6 {
				l.queue(c, 0, 0)
			}
			c.unsent = 0 // as if written
			for _, part := range [][]byte{stream[:cut], stream[cut:]} {
				if err := c.sp.feed(c, part); err != nil {
					t.Fatalf("payload %d, cut %d: %v", payload, cut, err)
				}
			}
			e := l.stats.Errors
			if l.stats.Requests != 6 || c.n != 0 || e.Reply != 1 || e.Mismatch != mismatches {
				t.Fatalf("payload %d, cut %d: %d replies, %d in flight, errors %+v", payload, cut, l.stats.Requests, c.n, e)
			}
		}
	}
}
