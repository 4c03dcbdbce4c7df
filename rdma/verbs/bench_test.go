//go:build verbs

package verbs

import (
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// The device benchmarks run where the tests do (in the VM: bash vm/ci.sh,
// or vm/run.sh -- verbs.test -test.run '^$' -test.bench .); they separate
// the provider's own per-operation cost from the device's, to compare
// with perftest, which calls libibverbs from C.

// BenchmarkPollEmpty is one Poll of an empty CQ: the cost of crossing from
// Go into libibverbs and back, paid by every look of a busy poll.
func BenchmarkPollEmpty(b *testing.B) {
	for _, td := range testDevices(b) {
		b.Run(td.name, func(b *testing.B) {
			p := connect(b, td, 0)
			var wc [1]rdma.Completion
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if n, err := p.cli.cq.Poll(wc[:]); n != 0 || err != nil {
					b.Fatalf("Poll: %d %v", n, err)
				}
			}
		})
	}
}

// BenchmarkReadLatency is one 2-byte RDMA Read, posted and busy-polled to
// its completion, as ib_read_lat measures it.
func BenchmarkReadLatency(b *testing.B) {
	for _, td := range testDevices(b) {
		b.Run(td.name, func(b *testing.B) {
			p := connect(b, td, 0)
			local := newRegion(b, p.cli.pd, 4096, accAll)
			remote := newRegion(b, p.srv.pd, 4096, accAll)
			sgl := []rdma.SGE{rdma.SGEOf(local.mr, 0, 2)}
			var wc [1]rdma.Completion
			polls := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := p.cli.qp.PostRead(uint64(i), sgl, remote.mr.Addr(), remote.mr.RKey(), rdma.SendSignaled); err != nil {
					b.Fatal(err)
				}
				for {
					polls++
					n, err := p.cli.cq.Poll(wc[:])
					if err != nil || n == 1 && wc[0].Status != rdma.StatusSuccess {
						b.Fatalf("Poll: %v %v", err, wc[0].Status)
					}
					if n == 1 {
						break
					}
				}
			}
			b.ReportMetric(float64(polls)/float64(b.N), "polls/op")
		})
	}
}

// BenchmarkClock is one time.Now: perf's latency figures read the clock
// once per request. vm/run.sh boots the guest on the TSC clocksource; on
// HPET (a TCG guest's default) a read costs about 1 µs.
func BenchmarkClock(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = time.Now()
	}
}
