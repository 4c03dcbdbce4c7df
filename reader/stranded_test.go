package reader

import (
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// After a Return the loop reads the socket only when bytes may wait there
// (an event came while the request was out, or the last read filled the
// buffer); otherwise it waits for the next edge. Each case leaves the next
// request's bytes somewhere a wrong rule would strand them: the loop would
// wait for an edge that already came, and the request would never be
// dispatched.
func TestNextRequestIsNeverStranded(t *testing.T) {
	small := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	// exact returns a request of exactly n bytes, padded with a header.
	exact := func(path string, n int) string {
		head := "GET " + path + " HTTP/1.1\r\nHost: x\r\nX-Pad: "
		return head + strings.Repeat("p", n-len(head)-4) + "\r\n\r\n"
	}
	for _, tc := range []struct {
		name string
		// first is written before the first dispatch; whileOut while the
		// first request is out (after its dispatch, before its Return).
		first, whileOut string
		want            []string // paths dispatched, in order
	}{
		{"pipelined in one write", small + "GET /b HTTP/1.1\r\nHost: x\r\n\r\n", "", []string{"/a", "/b"}},
		{"arrives while the request is out", small, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n", []string{"/a", "/b"}},
		{"half arrives while out", small, "GET /b HTT", []string{"/a"}},
		// The first read fills the 4 KiB buffer with exactly the first
		// request; the second waits in the socket, and its edge has been
		// consumed by that read.
		{"first read fills the buffer", exact("/a", DefaultReadBuffer) + small, "", []string{"/a", "/a"}},
		{"nothing more", small, "", []string{"/a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dispatched := make(chan *stages.Request, 4)
			loop := startLoop(t, func(r *stages.Request) bool { dispatched <- r; return true })

			client, fd := acceptedConn(t)
			c := &stages.Conn{ID: 1, FD: fd}
			loop.Adopt(c)
			if _, err := client.Write([]byte(tc.first)); err != nil {
				t.Fatal(err)
			}
			next := func() *stages.Request {
				t.Helper()
				select {
				case r := <-dispatched:
					return r
				case <-time.After(10 * time.Second):
					t.Fatal("the next request was never dispatched: its bytes were stranded")
					return nil
				}
			}
			r := next()
			if string(r.Path) != tc.want[0] {
				t.Fatalf("dispatched %q, want %q", r.Path, tc.want[0])
			}
			if tc.whileOut != "" {
				if _, err := client.Write([]byte(tc.whileOut)); err != nil {
					t.Fatal(err)
				}
				// Let the loop take the edge while the request is out;
				// a loop that has not seen it yet reads anyway, which
				// would hide a wrong rule, so wait for it generously.
				time.Sleep(100 * time.Millisecond)
			}
			loop.Return(c, stages.FateKeepAlive)
			for _, want := range tc.want[1:] {
				r := next()
				if string(r.Path) != want {
					t.Fatalf("dispatched %q, want %q", r.Path, want)
				}
				loop.Return(c, stages.FateKeepAlive)
			}
			if tc.whileOut == "GET /b HTT" {
				// The rest comes later, as a new edge on an idle connection.
				if _, err := client.Write([]byte("P/1.1\r\nHost: x\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				if r := next(); string(r.Path) != "/b" {
					t.Fatalf("dispatched %q, want /b", r.Path)
				}
				loop.Return(c, stages.FateKeepAlive)
			}
			// And a request written after everything is back still comes.
			if _, err := client.Write([]byte("GET /z HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			if r := next(); string(r.Path) != "/z" {
				t.Fatalf("dispatched %q, want /z", r.Path)
			}
			loop.Return(c, stages.FateClose)
		})
	}
}
