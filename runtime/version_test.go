package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// TestHigherMinorVersionIsServedAsHTTP11: issue 16 item 2. RFC 9110 §2.5:
// a server SHOULD process HTTP/1.2 to HTTP/1.9 as the highest minor
// version it supports and answer in it; Quartet used to answer 505. Every
// rule that depends on the version behaves as for 1.1: the status line,
// keep-alive by default, Connection: close, 100-continue, chunked request
// and response bodies, Host required (the reader's error answers too). A
// major version other than 1 is still a 505.
func TestHigherMinorVersionIsServedAsHTTP11(t *testing.T) {
	var (
		mu    sync.Mutex
		proto []string // what net/http handlers saw
	)
	h := Builtin(processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		switch string(r.Path) {
		case "/stream": // length unknown until the end: chunked in 1.1
			w.WriteString("first,")
			w.Flush()
			w.WriteString("second")
		default:
			processor.Adapt(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				proto = append(proto, fmt.Sprintf("%s %d.%d %v", r.Proto, r.ProtoMajor, r.ProtoMinor, r.ProtoAtLeast(1, 1)))
				mu.Unlock()
			})).ServeQuartet(w, r)
		}
	}))
	var log bytes.Buffer
	var logMu sync.Mutex
	s := startServer(t, Config{Handler: h, Log: func(r *stages.Response) {
		logMu.Lock()
		log.Write(AppendAccessLog(nil, Combined, r, time.Now()))
		logMu.Unlock()
	}})

	statusLine := func(t *testing.T, br *bufio.Reader) string {
		t.Helper()
		b, err := br.Peek(12)
		if err != nil {
			t.Fatalf("no status line: %v", err)
		}
		return string(b)
	}
	for _, v := range []string{"1.2", "1.9"} {
		t.Run("HTTP/"+v, func(t *testing.T) {
			req := func(target, fields string) string {
				return "GET " + target + " HTTP/" + v + "\r\nHost: x\r\n" + fields + "\r\n"
			}
			t.Run("keep-alive by default, answered in 1.1", func(t *testing.T) {
				c := dial(t, s)
				br := bufio.NewReader(c)
				io.WriteString(c, req("/hello", ""))
				if sl := statusLine(t, br); sl != "HTTP/1.1 200" {
					t.Fatalf("status line %q, want HTTP/1.1 200", sl)
				}
				resp, body := exchange(t, c, br, "", "GET")
				if resp.Close || body != "Hello, World!" {
					t.Fatalf("close %v body %q", resp.Close, body)
				}
				resp, body = exchange(t, c, br, req("/bytes?n=3", ""), "GET")
				if resp.StatusCode != 200 || body != "abc" {
					t.Fatalf("second request on the connection: %d %q", resp.StatusCode, body)
				}
			})
			t.Run("Connection: close", func(t *testing.T) {
				c := dial(t, s)
				br := bufio.NewReader(c)
				resp, _ := exchange(t, c, br, req("/hello", "Connection: close\r\n"), "GET")
				if !resp.Close {
					t.Fatal("no Connection: close in the response")
				}
				expectClosed(t, c, br)
			})
			t.Run("chunked response", func(t *testing.T) {
				c := dial(t, s)
				br := bufio.NewReader(c)
				resp, body := exchange(t, c, br, req("/stream", ""), "GET")
				if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || body != "first,second" || resp.Close {
					t.Fatalf("TE %v close %v body %q", resp.TransferEncoding, resp.Close, body)
				}
			})
			t.Run("100-continue and a chunked request body", func(t *testing.T) {
				c := dial(t, s)
				br := bufio.NewReader(c)
				io.WriteString(c, "POST /echo HTTP/"+v+"\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
				line, err := br.ReadString('\n')
				if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
					t.Fatalf("interim response %q %v", line, err)
				}
				if l, _ := br.ReadString('\n'); l != "\r\n" {
					t.Fatalf("interim response not terminated: %q", l)
				}
				resp, body := exchange(t, c, br, "5\r\nhello\r\n0\r\n\r\n", "POST")
				if resp.StatusCode != 200 || body != "hello" {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
			})
			t.Run("Host is required, and the error is in 1.1", func(t *testing.T) {
				c := dial(t, s)
				br := bufio.NewReader(c)
				io.WriteString(c, "GET /hello HTTP/"+v+"\r\n\r\n")
				if sl := statusLine(t, br); sl != "HTTP/1.1 400" {
					t.Fatalf("status line %q, want HTTP/1.1 400", sl)
				}
				if resp, _ := exchange(t, c, br, "", "GET"); !resp.Close {
					t.Fatal("error response without Connection: close")
				}
				expectClosed(t, c, br)
			})
			t.Run("net/http handlers see the version sent", func(t *testing.T) {
				c := dial(t, s)
				br := bufio.NewReader(c)
				mu.Lock()
				proto = nil
				mu.Unlock()
				resp, _ := exchange(t, c, br, req("/adapted", ""), "GET")
				mu.Lock()
				defer mu.Unlock()
				want := fmt.Sprintf("HTTP/%s 1.%c true", v, v[2])
				if resp.StatusCode != 200 || len(proto) != 1 || proto[0] != want {
					t.Fatalf("%d, handler saw %q, want %q", resp.StatusCode, proto, want)
				}
			})
		})
	}
	t.Run("other major versions: 505", func(t *testing.T) {
		for _, v := range []string{"0.9", "2.0", "3.1"} {
			c := dial(t, s)
			br := bufio.NewReader(c)
			resp, _ := exchange(t, c, br, "GET /hello HTTP/"+v+"\r\nHost: x\r\n\r\n", "GET")
			if resp.StatusCode != 505 {
				t.Fatalf("HTTP/%s: %d, want 505", v, resp.StatusCode)
			}
			expectClosed(t, c, br)
		}
	})
	// The access log records the version as sent. The line is written
	// after the response; the server's shutdown at cleanup waits for it,
	// but this test reads it now, so look for it with a bound.
	if !eventually(5*time.Second, func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Contains(log.String(), `"GET /hello HTTP/1.9" 200`)
	}) {
		logMu.Lock()
		t.Errorf("access log lacks the request as sent:\n%s", log.String())
		logMu.Unlock()
	}
}
