package runtime

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// BenchmarkKeepAliveHello is one keep-alive request end to end over
// loopback: the client writes a request and reads the response into a fixed
// buffer, so the allocations reported are the server's (all four stages run
// in this process).
func BenchmarkKeepAliveHello(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"R1P1W1", Config{Readers: 1, Processors: 1, Writers: 1}},
		{"R1P4W1", Config{Readers: 1, Processors: 4, Writers: 1}},
		// /hello declares it never blocks, so the two above serve it on the
		// reader loop; this one takes the staged path through a processor.
		{"R1P4W1-staged", Config{Readers: 1, Processors: 4, Writers: 1, NoInline: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := startServer(b, tc.cfg)
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: quartet-bench\r\nAccept: */*\r\n\r\n")
			buf := make([]byte, 4096)
			roundTrip := func() {
				if _, err := c.Write(req); err != nil {
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
					if n >= 13 && bytes.HasSuffix(buf[:n], []byte("Hello, World!")) {
						return
					}
				}
			}
			for i := 0; i < 200; i++ { // warm the pools
				roundTrip()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				roundTrip()
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N), "ns/roundtrip")
		})
	}
}
