package reader

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// TestLingerEndsAtTheClientsFIN: a lingering connection (FateLinger: the
// response went out with a FIN) whose client goes on sending is read up
// to maxLingerBytes, then left unread, and the linger timeout (a minute
// here) would close it. A client that then finishes and half-closes must
// not wait for that: once its FIN has reached the socket, the loop reads
// what is left to the end and closes. The receive buffer is made large
// enough for the whole body, so that the FIN arrives behind the bytes the
// loop left unread; its event may come after the loop stopped reading, or
// be seen while it still reads (finQueued).
func TestLingerEndsAtTheClientsFIN(t *testing.T) {
	for _, size := range []int{maxLingerBytes / 2, 4 * maxLingerBytes} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			dispatched := make(chan *stages.Request, 1)
			loop := startLoopWith(t, Config{
				Dispatch:      func(r *stages.Request) bool { dispatched <- r; return true },
				LingerTimeout: time.Minute,
			})
			client, fd := acceptedConn(t)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20); err != nil {
				t.Fatal(err)
			}
			loop.Adopt(&stages.Conn{ID: 1, FD: fd})
			head := fmt.Sprintf("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 64<<20)
			if _, err := io.WriteString(client, head); err != nil {
				t.Fatal(err)
			}
			var r *stages.Request
			select {
			case r = <-dispatched:
			case <-time.After(10 * time.Second):
				t.Fatal("the request was never dispatched")
			}
			// Answered without reading the body, as the writer ends such a
			// response: FIN, then the connection back to linger.
			if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			loop.Return(r.Conn, stages.FateLinger)
			if _, err := io.WriteString(client, strings.Repeat("x", size)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // let the loop stop reading first, as a rule
			client.(*net.TCPConn).CloseWrite()
			if _, err := io.ReadAll(client); err != nil {
				t.Fatalf("the client's read after our FIN: %v, want EOF", err)
			}
			if !waitFor(func() bool { c := loop.Census(); return c == (Census{}) && loop.withWork.Load() == 0 }) {
				t.Fatalf("the connection still lingers 10 s after the client's FIN: %+v", loop.Census())
			}
		})
	}
}
