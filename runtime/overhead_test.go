package runtime

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// extensionFlood is issue 16's reproducer body: n chunks of one data byte
// "A", each size line padded with a 4,000-byte chunk extension.
func extensionFlood(n int) string {
	return strings.Repeat("1;"+strings.Repeat("x", 4000)+"\r\nA\r\n", n) + "0\r\n\r\n"
}

const chunkedPost = "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

// overheadHandler reads the whole body of /readall (answering the body
// error's status, as a net/http handler would) and ignores the body of
// /ignore, which leaves it to the reader's drain.
func overheadHandler() processor.Handler {
	return Builtin(processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		switch string(r.Path) {
		case "/readall":
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				w.WriteHeader(http1.StatusOf(err))
				return
			}
			w.WriteString("read it all")
		case "/ignore":
			w.WriteString("ignored")
		default:
			w.WriteHeader(404)
		}
	}))
}

// TestChunkExtensionFloodIsRefused: issue 16 item 1, a handler reading the
// body. 64 chunk lines of 4 KiB extensions carrying one byte each used to
// be read to the end and echoed (200, connection kept); RFC 9112 §7.1.1
// says to limit them, and net/http answers 400 past 16 KiB of unpaid
// overhead.
func TestChunkExtensionFloodIsRefused(t *testing.T) {
	s := startServer(t, Config{Handler: overheadHandler()})

	t.Run("a handler that reads it all gets ErrChunkOverhead", func(t *testing.T) {
		c := dial(t, s)
		br := bufio.NewReader(c)
		go io.WriteString(c, strings.Replace(chunkedPost, "%s", "/readall", 1)+extensionFlood(64))
		resp, _ := exchange(t, c, br, "", "POST")
		if resp.StatusCode != 400 || !resp.Close {
			t.Fatalf("status %d close %v, want 400 and Connection: close", resp.StatusCode, resp.Close)
		}
		expectClosed(t, c, br)
	})

	t.Run("the issue's reproducer: POST /echo", func(t *testing.T) {
		c := dial(t, s)
		br := bufio.NewReader(c)
		go io.WriteString(c, strings.Replace(chunkedPost, "%s", "/echo", 1)+extensionFlood(64))
		// /echo answers 400 when the error comes before it has echoed
		// anything; if some "A"s arrived first it must cut the response
		// short. Either way: never a complete 200, and the connection
		// does not carry another request.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
		if err == nil {
			body, berr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && berr == nil {
				t.Fatalf("200 with %d bytes echoed: the extension flood was accepted", len(body))
			}
			if resp.StatusCode != 200 && resp.StatusCode != 400 {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
		} else if isTimeout(err) {
			t.Fatalf("no response and no close: %v", err)
		}
		expectClosed(t, c, br)
	})
}

// TestUnreadChunkedBodyDrainIsBounded: issue 16 item 1, the drain path. A
// handler that answers without reading its body leaves the reader to
// discard the rest so the connection can carry the next request; that is
// only worth it for a small body. The bound counts bytes read, framing
// included: an extension flood (128 KiB, 32 bytes of data), or a stream of
// one-byte chunks well past maxDiscardBytes on the wire (1 MB, 170 KB of
// data; the pipe takes up to 64 KiB of data before the response, which is
// 384 KiB of such chunks), closes the connection instead of answering the
// pipelined request behind it.
func TestUnreadChunkedBodyDrainIsBounded(t *testing.T) {
	s := startServer(t, Config{Handler: overheadHandler(), LingerTimeout: 300 * time.Millisecond})
	next := "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name string
		body string
		kept bool // the pipelined /hello is answered
	}{
		{"small body: drained, connection kept", "5\r\nhello\r\n0\r\n\r\n", true},
		{"small chunks under the bound: kept", strings.Repeat("1\r\nX\r\n", 30000) + "0\r\n\r\n", true},
		{"extension flood: closed", extensionFlood(32), false},
		{"small chunks past the bound on the wire: closed", strings.Repeat("1\r\nX\r\n", 170000) + "0\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, s)
			br := bufio.NewReader(c)
			go io.WriteString(c, strings.Replace(chunkedPost, "%s", "/ignore", 1)+tt.body+next)
			resp, body := exchange(t, c, br, "", "POST")
			if resp.StatusCode != 200 || body != "ignored" {
				t.Fatalf("first response %d %q", resp.StatusCode, body)
			}
			if !tt.kept {
				expectClosed(t, c, br)
				return
			}
			resp, body = exchange(t, c, br, "", "GET")
			if resp.StatusCode != 200 || body != "Hello, World!" {
				t.Fatalf("pipelined request after the drain: %d %q", resp.StatusCode, body)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
