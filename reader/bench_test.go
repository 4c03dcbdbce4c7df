package reader

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// BenchmarkReaderFloor is the reader stage with nothing behind it: a
// reader loop reads and parses keep-alive GET /hello requests over
// loopback, and its Dispatch writes /hello's response bytes (a constant,
// the size of the server's) on the loop and hands the connection straight
// back, as an inline response written whole does (runtime's recycle,
// ReturnOwn). No processor, handler, response record or writer runs. Set
// beside runtime's BenchmarkKeepAliveHello at the same depth (the same
// request bytes, the same client), the difference is what answering
// through the other stages costs; what is left is the floor a shorter
// response path could reach. user-ns/op and sys-ns/op are the process's
// CPU time per request (client included, as there).
func BenchmarkReaderFloor(b *testing.B) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Date: Sat, 05 Dec 2026 20:18:17 GMT\r\nServer: quartet\r\nContent-Length: 13\r\n\r\nHello, World!")
	for _, depth := range []int{1, 16} {
		b.Run(fmt.Sprintf("depth%d", depth), func(b *testing.B) {
			var loop *Loop
			var failed atomic.Pointer[error] // set by the loop's goroutine
			loop = startLoopWith(b, Config{Dispatch: func(r *stages.Request) bool {
				// An empty socket takes 16 responses at once: a short
				// write would be a broken benchmark, not back-pressure.
				if n, err := poll.Write(r.Conn.FD, resp); err != nil || n != len(resp) {
					err := fmt.Errorf("write: %d of %d bytes: %v", n, len(resp), err)
					failed.CompareAndSwap(nil, &err)
				}
				loop.ReturnOwn(r.Conn, stages.FateKeepAlive)
				return true
			}})
			client, fd := acceptedConn(b)
			loop.Adopt(&stages.Conn{ID: 1, FD: fd})
			req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: quartet-bench\r\nAccept: */*\r\n\r\n")
			body := []byte("Hello, World!")
			reqs := bytes.Repeat(req, depth)
			buf := make([]byte, 64<<10)
			roundTrip := func() {
				if _, err := client.Write(reqs); err != nil {
					b.Fatal(err)
				}
				n := 0
				for !bytes.HasSuffix(buf[:n], body) || bytes.Count(buf[:n], body) != depth {
					client.SetReadDeadline(time.Now().Add(10 * time.Second))
					k, err := client.Read(buf[n:])
					if err != nil {
						b.Fatalf("after %d bytes: %v (dispatch: %v)", n, err, failed.Load())
					}
					n += k
				}
			}
			for range 200 { // warm the stashes
				roundTrip()
			}
			b.ReportAllocs()
			b.ResetTimer()
			rounds := (b.N + depth - 1) / depth
			u0, s0 := rusage(b)
			for range rounds {
				roundTrip()
			}
			u1, s1 := rusage(b)
			served := float64(rounds * depth)
			b.ReportMetric(float64(u1-u0)/served, "user-ns/op")
			b.ReportMetric(float64(s1-s0)/served, "sys-ns/op")
			if err := failed.Load(); err != nil {
				b.Fatal(*err)
			}
		})
	}
}

// rusage is the process's user and system CPU time so far, in ns.
func rusage(b *testing.B) (user, sys int64) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano(), ru.Stime.Nano()
}
