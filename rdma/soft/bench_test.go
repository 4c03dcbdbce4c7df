package soft_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

const (
	benchMsg    = 1 << 20 // bytes per operation
	benchWindow = 8       // RDMA Writes in flight
	benchRound  = 64      // operations per timed round, per transport
)

// BenchmarkWrite1MiB compares software iWARP RDMA Writes of 1 MiB on
// loopback, CRC off and on, with plain TCP moving the same bytes from
// the same kind of memory. The machine is shared and noisy, so the two
// transports alternate in rounds of benchRound MiB inside one benchmark
// and each round is timed until the bytes have arrived (TCP: the reader
// has them; soft: a zero-length Read behind the Writes has completed,
// which happens only after the peer placed them). Reported: soft-MB/s,
// tcp-MB/s and their ratio x-tcp. One op is one MiB on each transport.
func BenchmarkWrite1MiB(b *testing.B) {
	for _, m := range []struct {
		name string
		cfg  soft.Config
	}{
		{"crc-off", soft.Config{}},
		{"crc-on", soft.Config{CRC: true}},
	} {
		b.Run(m.name, func(b *testing.B) {
			tcp := newTCPMover(b)
			defer tcp.close()
			sw := newSoftMover(b, m.cfg)
			defer sw.close(b)
			// Warm both up (TCP windows, page faults, the receive
			// buffer's one growth) before timing.
			tcp.move(b, benchWindow)
			sw.move(b, benchWindow)
			// One op moves 1 MiB over each transport, so MB/s is their
			// combined rate; soft-MB/s and tcp-MB/s below split it.
			b.SetBytes(2 * benchMsg)
			b.ReportAllocs()
			b.ResetTimer()
			var tTCP, tSoft, cTCP, cSoft time.Duration
			for done := 0; done < b.N; {
				k := min(benchRound, b.N-done)
				c0 := cpuTime()
				tTCP += tcp.move(b, k)
				c1 := cpuTime()
				tSoft += sw.move(b, k)
				cTCP, cSoft = cTCP+c1-c0, cSoft+cpuTime()-c1
				done += k
			}
			b.StopTimer()
			mb := float64(b.N) * benchMsg / 1e6
			b.ReportMetric(mb/tSoft.Seconds(), "soft-MB/s")
			b.ReportMetric(mb/tTCP.Seconds(), "tcp-MB/s")
			b.ReportMetric(tTCP.Seconds()/tSoft.Seconds(), "x-tcp")
			// CPU per MiB (both ends, the whole process) is steadier than
			// wall time on a shared machine.
			b.ReportMetric(float64(cSoft.Microseconds())/float64(b.N), "soft-cpu-us/MiB")
			b.ReportMetric(float64(cTCP.Microseconds())/float64(b.N), "tcp-cpu-us/MiB")
		})
	}
}

// tcpMover writes 1 MiB per op from mmap'd memory; a reader goroutine
// reads into mmap'd memory and reports progress.
type tcpMover struct {
	c    net.Conn
	mem  *rdma.Memory
	got  chan int64 // total bytes read so far, after each read
	done chan struct{}
	sent int64
}

func newTCPMover(b *testing.B) *tcpMover {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	t := &tcpMover{got: make(chan int64, 1), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		m, _ := rdma.Alloc(benchMsg)
		defer m.Free()
		var total int64
		for {
			n, err := c.Read(m.Bytes())
			total += int64(n)
			select {
			case <-t.got:
			default:
			}
			t.got <- total
			if err != nil {
				return
			}
		}
	}()
	if t.c, err = net.Dial("tcp", ln.Addr().String()); err != nil {
		b.Fatal(err)
	}
	t.mem, _ = rdma.Alloc(benchMsg)
	fill(t.mem.Bytes(), 1)
	return t
}

func (t *tcpMover) move(b *testing.B, k int) time.Duration {
	start := time.Now()
	for i := 0; i < k; i++ {
		if _, err := t.c.Write(t.mem.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
	t.sent += int64(k) * benchMsg
	for n := int64(0); n < t.sent; {
		n = <-t.got
	}
	return time.Since(start)
}

func (t *tcpMover) close() {
	t.c.Close()
	<-t.done
	t.mem.Free()
}

// softMover keeps benchWindow RDMA Writes in flight and, as perftest
// does (its cq_mod), asks for a completion only on every benchCQMod-th
// one: send-queue completions are in order, so one completion retires
// the Writes before it.
type softMover struct {
	cli, srv *endpoint
	sgl      []rdma.SGE
	barrier  []rdma.SGE
	wcs      []rdma.Completion
	w        *rdma.Waiter
	covers   [benchWindow + 1]int // Writes retired by each outstanding signaled request, FIFO
	head, n  int
}

const benchCQMod = 4

func newSoftMover(b *testing.B, cfg soft.Config) *softMover {
	s := &softMover{wcs: make([]rdma.Completion, benchWindow+1)}
	s.cli, s.srv = pair(b, pairOpts{cfg: cfg, memSize: benchMsg, sendDepth: benchWindow + 1, unsignaled: true})
	fill(s.cli.mem.Bytes(), 1)
	s.sgl = []rdma.SGE{rdma.SGEOf(s.cli.mr, 0, benchMsg)}
	s.barrier = []rdma.SGE{rdma.SGEOf(s.cli.mr, 0, 0)}
	var err error
	if s.w, err = rdma.NewWaiter(s.cli.cq); err != nil {
		b.Fatal(err)
	}
	return s
}

// reap waits for at least one completion and returns how many Writes
// (and barrier Reads) it retired.
func (s *softMover) reap(b *testing.B) int {
	// Background: no per-wait cancellation hook, so waiting allocates
	// nothing; a stuck benchmark ends with the test binary's timeout.
	n, err := s.w.Wait(context.Background(), s.wcs)
	if err != nil {
		b.Fatal(err)
	}
	retired := 0
	for _, wc := range s.wcs[:n] {
		if wc.Status != rdma.StatusSuccess {
			b.Fatalf("completion %+v", wc)
		}
		retired += s.covers[s.head]
		s.head = (s.head + 1) % len(s.covers)
		s.n--
	}
	return retired
}

func (s *softMover) signal(covers int) {
	s.covers[(s.head+s.n)%len(s.covers)] = covers
	s.n++
}

func (s *softMover) move(b *testing.B, k int) time.Duration {
	raddr, rkey := s.srv.mr.Addr(), s.srv.mr.RKey()
	start := time.Now()
	inflight, since := 0, 0
	for i := 0; i < k; i++ {
		for inflight == benchWindow {
			inflight -= s.reap(b)
		}
		var flags rdma.SendFlags
		if since++; since == benchCQMod {
			flags = rdma.SendSignaled
			s.signal(since)
			since = 0
		}
		if err := s.cli.qp.PostWrite(uint64(i), s.sgl, raddr, rkey, flags); err != nil {
			b.Fatal(err)
		}
		inflight++
	}
	// The barrier Read retires the unsignaled tail and itself.
	s.signal(since + 1)
	if err := s.cli.qp.PostRead(1<<62, s.barrier, raddr, rkey, rdma.SendSignaled); err != nil {
		b.Fatal(err)
	}
	for inflight++; inflight > 0; {
		inflight -= s.reap(b)
	}
	return time.Since(start)
}

func (s *softMover) close(b *testing.B) {
	s.w.Close()
	s.cli.close(b)
	s.srv.close(b)
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
