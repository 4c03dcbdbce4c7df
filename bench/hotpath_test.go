//go:build linux

package bench

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
