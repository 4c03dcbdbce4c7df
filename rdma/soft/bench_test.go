package soft_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

const (
	benchMsg    = 1 << 20 // bytes per operation
	benchWindow = 8       // operations in flight
)

// BenchmarkWrite1MiB compares software iWARP RDMA Writes of 1 MiB on
// loopback, CRC off and on, with plain TCP moving the same bytes from
// the same kind of memory in the same run. The tcp case runs first; the
// soft cases report their bandwidth as a ratio to it (x-tcp).
func BenchmarkWrite1MiB(b *testing.B) {
	var tcpRate float64 // bytes per ns of the tcp case
	b.Run("tcp", func(b *testing.B) {
		tcpRate = benchTCP(b)
	})
	for _, m := range []struct {
		name string
		cfg  soft.Config
	}{
		{"soft-crc-off", soft.Config{}},
		{"soft-crc-on", soft.Config{CRC: true}},
	} {
		b.Run(m.name, func(b *testing.B) {
			rate := benchSoftWrite(b, m.cfg)
			if tcpRate > 0 {
				b.ReportMetric(rate/tcpRate, "x-tcp")
			}
		})
	}
}

// benchTCP: a client writes 1 MiB per op from mmap'd memory, the server
// reads into mmap'd memory; returns bytes per ns.
func benchTCP(b *testing.B) float64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- -1
			return
		}
		defer c.Close()
		m, _ := rdma.Alloc(benchMsg)
		defer m.Free()
		n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, m.Bytes())
		done <- n
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	m, _ := rdma.Alloc(benchMsg)
	defer m.Free()
	fill(m.Bytes(), 1)
	b.SetBytes(benchMsg)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(m.Bytes()); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-done; n != int64(b.N)*benchMsg {
		b.Fatalf("server read %d bytes", n)
	}
	b.StopTimer()
	c.Close()
	return float64(b.N) * benchMsg / float64(b.Elapsed().Nanoseconds())
}

// benchSoftWrite keeps benchWindow RDMA Writes in flight and ends with a
// zero-length Read, which completes only after the peer has placed every
// Write before it; returns bytes per ns.
func benchSoftWrite(b *testing.B, cfg soft.Config) float64 {
	o := pairOpts{cfg: cfg, memSize: benchMsg, sendDepth: benchWindow + 1}
	cli, srv := pair(b, o)
	defer cli.close(b)
	defer srv.close(b)
	fill(cli.mem.Bytes(), 1)
	sgl := []rdma.SGE{rdma.SGEOf(cli.mr, 0, benchMsg)}
	raddr, rkey := srv.mr.Addr(), srv.mr.RKey()
	wcs := make([]rdma.Completion, benchWindow)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.SetBytes(benchMsg)
	b.ReportAllocs()
	b.ResetTimer()
	inflight := 0
	for i := 0; i < b.N; i++ {
		for inflight == benchWindow {
			n, err := rdma.Wait(ctx, cli.cq, wcs)
			if err != nil {
				b.Fatal(err)
			}
			for _, wc := range wcs[:n] {
				if wc.Status != rdma.StatusSuccess {
					b.Fatalf("completion %+v", wc)
				}
			}
			inflight -= n
		}
		if err := cli.qp.PostWrite(uint64(i), sgl, raddr, rkey, 0); err != nil {
			b.Fatal(err)
		}
		inflight++
	}
	if err := cli.qp.PostRead(1<<62, []rdma.SGE{rdma.SGEOf(cli.mr, 0, 0)}, raddr, rkey, 0); err != nil {
		b.Fatal(err)
	}
	for inflight >= 0 {
		n, err := rdma.Wait(ctx, cli.cq, wcs)
		if err != nil {
			b.Fatal(err)
		}
		inflight -= n
	}
	b.StopTimer()
	return float64(b.N) * benchMsg / float64(b.Elapsed().Nanoseconds())
}
