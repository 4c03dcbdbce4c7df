package runtime

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkKeepAliveHello is keep-alive requests end to end over
// loopback: the client writes depth requests at once and reads their
// responses into a fixed buffer, so the allocations reported are the
// server's (all four stages run in this process). At depth 1 it is one
// request's round trip, wake-ups and all; at depth 16 (pipeline16) the server
// reads the requests in one go and serves them one after the other, so the
// process's CPU time per request (user-ns/op, sys-ns/op) is mostly the
// server's per-request path.
func BenchmarkKeepAliveHello(b *testing.B) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		depth int
	}{
		{"R1P1W1", Config{Readers: 1, Processors: 1, Writers: 1}, 1},
		{"R1P4W1", Config{Readers: 1, Processors: 4, Writers: 1}, 1},
		// /hello declares it never blocks, so the two above serve it on the
		// reader loop; this one takes the staged path through a processor.
		{"R1P4W1-staged", Config{Readers: 1, Processors: 4, Writers: 1, NoInline: true}, 1},
		{"R1P1W1-pipeline16", Config{Readers: 1, Processors: 1, Writers: 1}, 16},
		{"R1P4W1-staged-pipeline16", Config{Readers: 1, Processors: 4, Writers: 1, NoInline: true}, 16},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := startServer(b, tc.cfg)
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: quartet-bench\r\nAccept: */*\r\n\r\n")
			body := []byte("Hello, World!")
			reqs := bytes.Repeat(req, tc.depth)
			buf := make([]byte, 64<<10)
			roundTrip := func() {
				if _, err := c.Write(reqs); err != nil {
					b.Fatal(err)
				}
				n := 0
				for {
					k, err := c.Read(buf[n:])
					if err != nil {
						b.Fatal(err)
					}
					n += k
					// A complete /hello response ends with its 13-byte body.
					if bytes.HasSuffix(buf[:n], body) && bytes.Count(buf[:n], body) == tc.depth {
						return
					}
				}
			}
			for i := 0; i < 200; i++ { // warm the pools
				roundTrip()
			}
			b.ReportAllocs()
			b.ResetTimer()
			rounds := (b.N + tc.depth - 1) / tc.depth
			start, cpu := time.Now(), processCPUTime(b)
			for range rounds {
				roundTrip()
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(rounds), "ns/roundtrip")
			user, sys := processCPUTime(b).since(cpu)
			served := float64(rounds * tc.depth)
			b.ReportMetric(float64(user.Nanoseconds())/served, "user-ns/op")
			b.ReportMetric(float64(sys.Nanoseconds())/served, "sys-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
type cpuTime struct{ user, sys time.Duration }

// processCPUTime reads the process's CPU time: client and server both,
// so that a change to the server shows as a change of the whole.
func processCPUTime(b *testing.B) cpuTime {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return cpuTime{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

func (t cpuTime) since(then cpuTime) (user, sys time.Duration) {
	return t.user - then.user, t.sys - then.sys
}
