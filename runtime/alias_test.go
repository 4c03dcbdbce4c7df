package runtime

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// A request whose small body arrives after its header, at the end of a read
// buffer that already held an earlier pipelined request, must keep its
// header bytes intact while the rest of the body is read: the request's
// fields alias the buffer, so the buffer may not be compacted under them.
func TestPrereadBodyDoesNotMoveTheHeaderItAliases(t *testing.T) {
	s := startServer(t, Config{})
	for _, pad := range []int{2800, 3300, 3600, 3900} {
		t.Run(fmt.Sprint(pad), func(t *testing.T) {
			c := dial(t, s)
			br := bufio.NewReader(c)
			first := "GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\n\r\n"
			body := strings.Repeat("b", 3000)
			second := "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-kept-intact\r\nContent-Length: 3000\r\n\r\n"
			io.WriteString(c, first+second+body[:10])
			resp, got := exchange(t, c, br, "", "GET")
			if got != "Hello, World!" {
				t.Fatalf("first: %d %q", resp.StatusCode, got)
			}
			time.Sleep(30 * time.Millisecond) // the second request waits for its body
			io.WriteString(c, body[10:])
			resp, got = exchange(t, c, br, "", "POST")
			if got != body || resp.Header.Get("Content-Type") != "text/x-kept-intact" {
				t.Fatalf("second: %d, %d body bytes, Content-Type %q", resp.StatusCode, len(got), resp.Header.Get("Content-Type"))
			}
		})
	}
}
