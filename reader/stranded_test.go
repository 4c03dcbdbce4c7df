package reader

import (
	"io"
	"net"
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

// The client's FIN, like a request's bytes, must never be stranded: a
// client that sends its requests and half-closes in one go gets its
// answers and then its connection closed, at once, not at the idle
// timeout. The bytes and the FIN must reach the loop in one event, as
// they do when they arrive while it works: the read that takes the bytes
// does not return the EOF behind them, and edge-triggered, no second
// event comes for it. So another connection's request holds the loop in
// Dispatch while they arrive.
func TestClientFINIsNeverStranded(t *testing.T) {
	small := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name string
		// sent while the loop is held, then the FIN unless finWhileOut;
		// finWhileOut sends whileOut and half-closes while the first
		// request is out instead.
		sent        string
		finWhileOut bool
		whileOut    string
		want        []string // paths dispatched, in order
	}{
		{"FIN alone", "", false, "", nil},
		{"a request and its FIN", small, false, "", []string{"/a"}},
		{"pipelined requests and a FIN", small + "GET /b HTTP/1.1\r\nHost: x\r\n\r\n", false, "", []string{"/a", "/b"}},
		{"a preread body and a FIN", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", false, "", []string{"/p"}},
		{"half a request and a FIN", "GET /a HTT", false, "", nil},
		{"a FIN while the request is out", small, true, "", []string{"/a"}},
		// The FIN comes while /a is out, with /b partly read already: the
		// loop must not take it for an abandoned request, and the read
		// that completes /b does not return the EOF either.
		{"the rest of the next request and a FIN while one is out", small + "GET /b HTT", true, "P/1.1\r\nHost: x\r\n\r\n", []string{"/a", "/b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dispatched := make(chan *stages.Request, 4)
			holding, release := make(chan *stages.Request, 1), make(chan struct{})
			loop := startLoopWith(t, Config{
				Dispatch: func(r *stages.Request) bool {
					if string(r.Path) == "/hold" {
						holding <- r
						<-release
						return true
					}
					dispatched <- r
					return true
				},
				IdleTimeout: time.Minute, HeaderTimeout: time.Minute,
			})
			client, fd := acceptedConn(t)
			c := &stages.Conn{ID: 1, FD: fd}
			loop.Adopt(c)
			holder, hfd := acceptedConn(t)
			loop.Adopt(&stages.Conn{ID: 2, FD: hfd})
			if _, err := io.WriteString(holder, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			var held *stages.Request
			select {
			case held = <-holding:
			case <-time.After(10 * time.Second):
				t.Fatal("the holding request was never dispatched")
			}
			if _, err := client.Write([]byte(tc.sent)); err != nil {
				t.Fatal(err)
			}
			if !tc.finWhileOut {
				client.(*net.TCPConn).CloseWrite()
			}
			time.Sleep(50 * time.Millisecond) // all of it queued in the socket
			close(release)
			t.Cleanup(func() { loop.Return(held.Conn, stages.FateClose) })
			for i, want := range tc.want {
				select {
				case r := <-dispatched:
					if string(r.Path) != want {
						t.Fatalf("dispatched %q, want %q", r.Path, want)
					}
					if _, err := io.Copy(io.Discard, r.Body); err != nil {
						t.Fatalf("body: %v", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s was never dispatched", want)
				}
				if i == 0 && tc.finWhileOut {
					if _, err := io.WriteString(client, tc.whileOut); err != nil {
						t.Fatal(err)
					}
					client.(*net.TCPConn).CloseWrite()
					time.Sleep(100 * time.Millisecond) // the loop takes the FIN's event
				}
				loop.Return(c, stages.FateKeepAlive)
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := client.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after the last answer: read %d bytes, %v; want the loop's close (EOF), well before the idle timeout", n, err)
			}
			select {
			case r := <-dispatched:
				t.Fatalf("dispatched %q as well", r.Path)
			default:
			}
		})
	}
}
