package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/quartet-server/quartet/stages"
)

func hello(w *ResponseWriter, r *stages.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteString("Hello, World!")
}

// want describes the response a case expects. Zero fields are not checked,
// except where noted.
type want struct {
	status     int
	body       string
	header     map[string]string // "" value: must be absent
	chunked    bool              // Transfer-Encoding: chunked, no Content-Length
	length     int64             // Content-Length; -1: must be absent; 0: not checked
	keepAlive  bool              // checked always
	oneBucket  bool              // status line, headers and body in one heap bucket
	closeDelim bool              // body ends at the close: no length, no chunking
	truncated  bool              // the body is cut short of its framing
}

func TestResponses(t *testing.T) {
	bigBody := strings.Repeat("0123456789abcdef", 200<<10/16) // 200 KiB: more than maxBuffered
	tests := []struct {
		name    string
		req     *stages.Request
		handler HandlerFunc
		want    want
	}{
		{
			name:    "hello",
			req:     newRequest("GET", "/hello", 1, "", "Host", "example.com"),
			handler: hello,
			want: want{status: 200, body: "Hello, World!", length: 13, keepAlive: true, oneBucket: true,
				header: map[string]string{"Server": "quartet", "Content-Type": "text/plain"}},
		},
		{
			name:    "HEAD has the GET length and no body",
			req:     newRequest("HEAD", "/hello", 1, ""),
			handler: hello,
			want:    want{status: 200, length: 13, keepAlive: true},
		},
		{
			name: "HEAD handler that skips the body sends no length",
			req:  newRequest("HEAD", "/x", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.WriteHeader(200)
			},
			want: want{status: 200, length: -1, keepAlive: true},
		},
		{
			name:    "empty handler is 200 with length 0",
			req:     newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {},
			want:    want{status: 200, length: 0, keepAlive: true, header: map[string]string{"Content-Length": "0"}},
		},
		{
			name: "204 has no body and no length",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.WriteHeader(http.StatusNoContent)
				if _, err := w.WriteString("nope"); !errors.Is(err, ErrBodyNotAllowed) {
					panic("Write on a 204 did not fail")
				}
			},
			want: want{status: 204, length: -1, keepAlive: true, header: map[string]string{"Transfer-Encoding": ""}},
		},
		{
			name: "304 has no body",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("ETag", `"v1"`)
				w.WriteHeader(http.StatusNotModified)
			},
			want: want{status: 304, length: -1, keepAlive: true, header: map[string]string{"ETag": `"v1"`}},
		},
		{
			name:    "HTTP/1.0 without keep-alive closes",
			req:     newRequest("GET", "/hello", 0, ""),
			handler: hello,
			want:    want{status: 200, body: "Hello, World!", length: 13, keepAlive: false, header: map[string]string{"Connection": "close"}},
		},
		{
			name:    "HTTP/1.0 keep-alive is kept and said",
			req:     newRequest("GET", "/hello", 0, "", "Connection", "keep-alive"),
			handler: hello,
			want:    want{status: 200, body: "Hello, World!", length: 13, keepAlive: true, header: map[string]string{"Connection": "keep-alive"}},
		},
		{
			name: "HTTP/1.0 flush without length is close-delimited",
			req:  newRequest("GET", "/", 0, "", "Connection", "keep-alive"),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.WriteString("part one, ")
				w.Flush()
				w.WriteString("part two")
			},
			want: want{status: 200, body: "part one, part two", keepAlive: false, closeDelim: true},
		},
		{
			name: "HTTP/1.1 flush without length is chunked",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.WriteString("part one, ")
				w.Flush()
				w.WriteString("part two")
			},
			want: want{status: 200, body: "part one, part two", chunked: true, keepAlive: true},
		},
		{
			name: "flush before any write is chunked",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Flush()
			},
			want: want{status: 200, chunked: true, keepAlive: true},
		},
		{
			name: "declared length is kept through a flush",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Content-Length", "8")
				w.WriteString("1234")
				w.Flush()
				w.WriteString("5678")
			},
			want: want{status: 200, body: "12345678", length: 8, keepAlive: true},
		},
		{
			name: "more than the buffer without a length is chunked",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				for i := 0; i < len(bigBody); i += 1000 {
					w.WriteString(bigBody[i:min(i+1000, len(bigBody))])
				}
			},
			want: want{status: 200, body: bigBody, chunked: true, keepAlive: true},
		},
		{
			name: "one big write with a length",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(bigBody)))
				w.Write([]byte(bigBody))
			},
			want: want{status: 200, body: bigBody, length: int64(len(bigBody)), keepAlive: true},
		},
		{
			name: "writing past the declared length fails",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Content-Length", "3")
				w.WriteString("abc")
				if _, err := w.WriteString("d"); !errors.Is(err, ErrContentLength) {
					panic("no ErrContentLength")
				}
			},
			want: want{status: 200, body: "abc", length: 3, keepAlive: true},
		},
		{
			name:    "client asked for close",
			req:     newRequest("GET", "/hello", 1, "", "Connection", "close"),
			handler: hello,
			want:    want{status: 200, body: "Hello, World!", length: 13, keepAlive: false, header: map[string]string{"Connection": "close"}},
		},
		{
			name: "handler asked for close",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Connection", "close")
				w.WriteString("bye")
			},
			want: want{status: 200, body: "bye", keepAlive: false, header: map[string]string{"Connection": "close"}},
		},
		{
			name: "handler's close in a list, with OWS",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Connection", "upgrade,\tClose ")
			},
			want: want{status: 200, keepAlive: false, header: map[string]string{"Connection": "close"}},
		},
		{
			// OWS is SP and HTAB (RFC 9110 §5.6.3): "close" followed by
			// NBSP is another token, for the framer as for the reader.
			name: "handler's close<NBSP> is not close",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Connection", "close\u00a0")
			},
			want: want{status: 200, keepAlive: true},
		},
		{
			name: "handler's Date and Server win",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Server", "custom")
				w.Header().Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
			},
			want: want{status: 200, keepAlive: true, header: map[string]string{"Server": "custom", "Date": "Mon, 02 Jan 2006 15:04:05 GMT"}},
		},
		{
			name: "header values cannot split the response",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Add("X-Evil", "a\r\nSet-Cookie: owned=1")
				w.Header().Add("Bad Name", "dropped")
				w.Header().AddBytes([]byte("X-Bytes"), []byte("copied"))
			},
			want: want{status: 200, keepAlive: true, header: map[string]string{"X-Evil": "a  Set-Cookie: owned=1", "Set-Cookie": "", "X-Bytes": "copied"}},
		},
		{
			name: "Del and Set",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Add("X-A", "1")
				w.Header().Add("x-a", "2")
				w.Header().Set("X-A", "3")
				w.Header().Add("X-Gone", "1")
				w.Header().Del("x-gone")
				w.WriteHeader(201)
				w.Header().Set("X-Late", "ignored after WriteHeader")
			},
			want: want{status: 201, keepAlive: true, header: map[string]string{"X-A": "3", "X-Gone": "", "X-Late": ""}},
		},
		{
			name: "short body against a declared length closes",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("Content-Length", "10")
				w.WriteString("abc")
				w.Flush()
			},
			want: want{status: 200, body: "abc", length: 10, keepAlive: false, truncated: true},
		},
		{
			name: "103 Early Hints then 200",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.Header().Add("Link", "</style.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.WriteString("ok")
			},
			want: want{status: 200, body: "ok", length: 2, keepAlive: true, header: map[string]string{"Link": "</style.css>; rel=preload"}},
		},
		{
			name: "unknown status code gets a generic reason",
			req:  newRequest("GET", "/", 1, ""),
			handler: func(w *ResponseWriter, r *stages.Request) {
				w.WriteHeader(599)
			},
			want: want{status: 599, keepAlive: true},
		},
		{
			name: "request body is read",
			req:  newRequest("POST", "/echo", 1, "ping"),
			handler: func(w *ResponseWriter, r *stages.Request) {
				b := make([]byte, 16)
				n, _ := r.Body.Read(b)
				w.Write(b[:n])
			},
			want: want{status: 200, body: "ping", length: 4, keepAlive: true},
		},
		{
			name: "a body read error closes the connection",
			req: func() *stages.Request {
				r := newRequest("POST", "/echo", 1, "ignored")
				r.Body = iotest.ErrReader(errors.New("body too large"))
				return r
			}(),
			handler: func(w *ResponseWriter, r *stages.Request) {
				if _, err := io.ReadAll(r.Body); err != nil {
					w.WriteHeader(http.StatusRequestEntityTooLarge)
				}
			},
			want: want{status: 413, keepAlive: false, header: map[string]string{"Connection": "close"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Config{}, tt.handler, writerOpts{})
			res := hs.do(tt.req)
			method := string(tt.req.Method)
			p := parse(t, res, method)
			checkResponse(t, res, p, method, tt.want)
		})
	}
}

// Trailers (ResponseWriter.Trailer) follow a chunked body; asking for them
// before the header block makes a small body chunked, so that they have
// a place. Where there is no chunked body they are dropped, as are fields
// that must not be trailers, and a trailer never outlives a response the
// pool replaced.
func TestTrailers(t *testing.T) {
	bigBody := strings.Repeat("x", 100<<10) // more than the buffer: committed early, chunked
	tests := []struct {
		name    string
		req     *stages.Request
		handler HandlerFunc
		chunked bool
		trailer http.Header
		status  int
	}{
		{"asked before the body", newRequest("GET", "/", 1, ""), func(w *ResponseWriter, r *stages.Request) {
			tr := w.Trailer()
			w.WriteString("small")
			tr.Set("X-Sum", "7")
			tr.Set("Content-Length", "5") // not a trailer
			tr.Set("X-Bad", "a\r\nInjected: yes")
		}, true, http.Header{"X-Sum": {"7"}, "X-Bad": {"a  Injected: yes"}}, 200},
		{"asked after a chunked body began", newRequest("GET", "/", 1, ""), func(w *ResponseWriter, r *stages.Request) {
			w.WriteString(bigBody)
			w.Trailer().Set("X-Sum", "big")
		}, true, http.Header{"X-Sum": {"big"}}, 200},
		{"a declared length has no place for them", newRequest("GET", "/", 1, ""), func(w *ResponseWriter, r *stages.Request) {
			w.Header().Set("Content-Length", "5")
			w.Trailer().Set("X-Sum", "7")
			w.WriteString("small")
		}, false, nil, 200},
		{"asked after a small body was framed", newRequest("GET", "/", 1, ""), func(w *ResponseWriter, r *stages.Request) {
			w.WriteString("small")
			w.Flush()
			w.Trailer().Set("X-Sum", "7") // the Flush chunked it: sent
		}, true, http.Header{"X-Sum": {"7"}}, 200},
		{"HTTP/1.0", newRequest("GET", "/", 0, ""), func(w *ResponseWriter, r *stages.Request) {
			w.Trailer().Set("X-Sum", "7")
			w.WriteString("small")
		}, false, nil, 200},
		{"HEAD", newRequest("HEAD", "/", 1, ""), func(w *ResponseWriter, r *stages.Request) {
			w.Trailer().Set("X-Sum", "7")
			w.WriteString("small")
		}, false, nil, 200},
		{"a panic replaces the response", newRequest("GET", "/", 1, ""), func(w *ResponseWriter, r *stages.Request) {
			w.Trailer().Set("X-Sum", "7")
			w.WriteString("small")
			panic("handler fails")
		}, false, nil, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Config{}, tt.handler, writerOpts{})
			p := parse(t, hs.do(tt.req), string(tt.req.Method))
			if p.resp.StatusCode != tt.status || p.bodyErr != nil || len(p.rest) > 0 {
				t.Fatalf("%d, %v, %d bytes after the response", p.resp.StatusCode, p.bodyErr, len(p.rest))
			}
			if chunked := len(p.resp.TransferEncoding) > 0; chunked != tt.chunked {
				t.Errorf("chunked %v, want %v", chunked, tt.chunked)
			}
			if fmt.Sprint(p.resp.Trailer) != fmt.Sprint(tt.trailer) {
				t.Errorf("trailer %v, want %v", p.resp.Trailer, tt.trailer)
			}
		})
	}
}

func checkResponse(t *testing.T, res result, p parsed, method string, w want) {
	t.Helper()
	resp := p.resp
	if resp.StatusCode != w.status {
		t.Errorf("status %d, want %d", resp.StatusCode, w.status)
	}
	if res.status != w.status {
		t.Errorf("resp.Status %d, want %d", res.status, w.status)
	}
	if p.bodyErr != nil && !w.closeDelim && !w.truncated {
		t.Errorf("reading body: %v", p.bodyErr)
	}
	if string(p.body) != w.body {
		t.Errorf("body %d bytes %.40q, want %d bytes %.40q", len(p.body), p.body, len(w.body), w.body)
	}
	if len(p.rest) != 0 && w.keepAlive {
		t.Errorf("%d bytes after the response: %.60q", len(p.rest), p.rest)
	}
	if res.keepAlive != w.keepAlive {
		t.Errorf("resp.KeepAlive %v, want %v", res.keepAlive, w.keepAlive)
	}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err != nil || time.Since(d) > time.Minute && w.header["Date"] == "" {
		t.Errorf("Date %q: %v", resp.Header.Get("Date"), err)
	}
	if resp.Header.Get("Server") == "" {
		t.Error("no Server header")
	}
	te := strings.Join(resp.TransferEncoding, ",")
	if w.chunked && te != "chunked" {
		t.Errorf("Transfer-Encoding %q, want chunked", te)
	}
	if !w.chunked && te != "" {
		t.Errorf("Transfer-Encoding %q, want none", te)
	}
	cl := resp.Header.Get("Content-Length")
	if method == "HEAD" || w.status == 304 {
		// ReadResponse does not trust Content-Length on HEAD: read it raw.
		cl = rawHeader(res.raw, "Content-Length")
	}
	switch {
	case w.length == -1 || w.chunked || w.closeDelim:
		if cl != "" {
			t.Errorf("Content-Length %q, want none", cl)
		}
	case w.length > 0:
		if cl != strconv.FormatInt(w.length, 10) {
			t.Errorf("Content-Length %q, want %d", cl, w.length)
		}
	}
	if method == "HEAD" && !strings.HasSuffix(string(res.raw), "\r\n\r\n") {
		t.Errorf("HEAD response has bytes after the header block: %q", res.raw)
	}
	for k, v := range w.header {
		got := resp.Header.Get(k)
		if k == "Connection" {
			got = rawHeader(res.raw, k) // ReadResponse consumes "close"
		}
		if got != v {
			t.Errorf("header %s: %q, want %q", k, got, v)
		}
	}
	if w.oneBucket && res.heapBuckets != 1 {
		t.Errorf("%d heap buckets, want 1 (one write)", res.heapBuckets)
	}
}

// rawHeader finds a field in the raw header block.
func rawHeader(raw []byte, name string) string {
	head, _, _ := strings.Cut(string(raw), "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, _ := strings.Cut(line, ":")
		if strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestSendFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.txt")
	content := strings.Repeat("file bytes ", 3000)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // open until the test ends: past the writer's last byte
	tests := []struct {
		name    string
		handler HandlerFunc
		body    string
		chunked bool
	}{
		{"whole file gets a length", func(w *ResponseWriter, r *stages.Request) {
			w.SendFile(f, 0, int64(len(content)))
		}, content, false},
		{"region after heap bytes", func(w *ResponseWriter, r *stages.Request) {
			w.WriteString("head:")
			w.SendFile(f, 5, 100)
			w.WriteString(":tail")
		}, "head:" + content[5:105] + ":tail", false},
		{"after a flush, chunked", func(w *ResponseWriter, r *stages.Request) {
			w.Flush()
			w.SendFile(f, 0, 11)
			w.WriteString("!")
		}, content[:11] + "!", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Config{}, tt.handler, writerOpts{})
			res := hs.do(newRequest("GET", "/f", 1, ""))
			if res.fileBuckets != 1 {
				t.Errorf("%d file buckets, want 1", res.fileBuckets)
			}
			p := parse(t, res, "GET")
			length := int64(len(tt.body))
			if tt.chunked {
				length = 0
			}
			checkResponse(t, res, p, "GET", want{status: 200, body: tt.body, chunked: tt.chunked, length: length, keepAlive: true})
		})
	}
}

func TestPanic(t *testing.T) {
	tests := []struct {
		name      string
		handler   HandlerFunc
		wantBody  bool // a 500 reaches the client
		logged    bool
		truncated bool // the client sees a response cut short
	}{
		{"before anything", func(w *ResponseWriter, r *stages.Request) {
			panic("boom")
		}, true, true, false},
		{"after buffered writes", func(w *ResponseWriter, r *stages.Request) {
			w.Header().Set("X-Secret", "must not leak into the 500")
			w.WriteString("half a page")
			panic("boom")
		}, true, true, false},
		{"after a flush", func(w *ResponseWriter, r *stages.Request) {
			w.WriteString("half a page")
			w.Flush()
			panic("boom")
		}, false, true, true},
		{"after a hold", func(w *ResponseWriter, r *stages.Request) {
			w.Hold() // never released by the handler: the pool must
			w.WriteString("body")
			w.Flush()
			panic("boom")
		}, false, true, true},
		{"after a hold, before the header block", func(w *ResponseWriter, r *stages.Request) {
			w.Hold()
			panic("boom")
		}, true, true, false},
		{"invalid status code", func(w *ResponseWriter, r *stages.Request) {
			w.WriteHeader(42)
		}, true, true, false},
		{"ErrAbortHandler is quiet", func(w *ResponseWriter, r *stages.Request) {
			panic(http.ErrAbortHandler)
		}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One worker: the request after the panic proves it survived.
			var calls atomic.Int64
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				if calls.Add(1) == 1 {
					tt.handler(w, r)
					return
				}
				hello(w, r)
			})
			hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
			res := hs.do(newRequest("GET", "/panic", 1, ""))
			if res.keepAlive {
				t.Error("connection kept alive after a panic")
			}
			switch {
			case tt.wantBody:
				p := parse(t, res, "GET")
				if p.resp.StatusCode != 500 || !strings.Contains(string(p.body), "Internal Server Error") {
					t.Errorf("got %d %q, want a 500", p.resp.StatusCode, p.body)
				}
				if p.resp.Header.Get("X-Secret") != "" {
					t.Error("the handler's headers leaked into the 500")
				}
				if rawHeader(res.raw, "Connection") != "close" {
					t.Error("no Connection: close on the 500")
				}
			case tt.truncated:
				p := parse(t, res, "GET")
				if p.bodyErr == nil {
					t.Errorf("chunked body after a panic read cleanly: %q", p.body)
				}
			default:
				if len(res.raw) != 0 {
					t.Errorf("aborted response sent %q", res.raw)
				}
			}
			if got := strings.Contains(hs.log.String(), "handler panic"); got != tt.logged {
				t.Errorf("logged %v, want %v; log:\n%s", got, tt.logged, hs.log.String())
			}
			if log := hs.log.String(); tt.logged && !strings.Contains(log, "boom") && !strings.Contains(log, "invalid WriteHeader code 42") {
				t.Error("panic value not logged")
			}
			after := parse(t, hs.do(newRequest("GET", "/hello", 1, "")), "GET")
			if after.resp.StatusCode != 200 || string(after.body) != "Hello, World!" {
				t.Errorf("after the panic: %d %q", after.resp.StatusCode, after.body)
			}
		})
	}
}

func TestExpectContinue(t *testing.T) {
	const interim = "HTTP/1.1 100 Continue\r\n\r\n"
	tests := []struct {
		name      string
		read      bool
		minor     int
		wantCont  bool
		keepAlive bool
	}{
		{"body read: 100 first", true, 1, true, true},
		{"body never read: no 100, close", false, 1, false, false},
		{"HTTP/1.0 ignores the expectation", true, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				if !tt.read {
					w.WriteHeader(http.StatusRequestEntityTooLarge)
					return
				}
				b := make([]byte, 64)
				n, _ := r.Body.Read(b)
				w.Write(b[:n])
			})
			hs := newHarness(t, Config{}, h, writerOpts{})
			res := hs.do(newRequest("PUT", "/up", tt.minor, "payload", "Expect", "100-continue"))
			if got := strings.HasPrefix(string(res.raw), interim); got != tt.wantCont {
				t.Errorf("100 Continue sent %v, want %v: %q", got, tt.wantCont, res.raw)
			}
			if tt.wantCont && res.flushes == 0 {
				t.Error("100 Continue not followed by a flush")
			}
			p := parse(t, res, "PUT")
			if tt.read && string(p.body) != "payload" {
				t.Errorf("body %q", p.body)
			}
			if res.keepAlive != tt.keepAlive {
				t.Errorf("keep-alive %v, want %v", res.keepAlive, tt.keepAlive)
			}
			if !tt.keepAlive && rawHeader(res.raw, "Connection") != "close" {
				t.Error("no Connection: close")
			}
		})
	}
}

func TestDrain(t *testing.T) {
	hs := newHarness(t, Config{}, HandlerFunc(hello), writerOpts{})
	if res := hs.do(newRequest("GET", "/", 1, "")); !res.keepAlive {
		t.Fatal("not kept alive before Drain")
	}
	hs.pool.Drain()
	res := hs.do(newRequest("GET", "/", 1, ""))
	p := parse(t, res, "GET")
	if res.keepAlive || rawHeader(res.raw, "Connection") != "close" {
		t.Errorf("after Drain: keep-alive %v, Connection %q", res.keepAlive, p.resp.Header.Get("Connection"))
	}
}

// TestBackPressure writes 10 MiB against a slow client: the bytes queued
// for the writer must never exceed HighWater by more than a chunk.
// A small response through a worker takes its chunks from its record's
// last use (Release keeps them there), not from the pool's sync.Pool:
// once every record has served, the pool gives out no chunk.
func TestRecycledRecordCarriesItsChunks(t *testing.T) {
	tests := []struct {
		name    string
		body    int
		maxGets uint64 // chunk Gets over the last 40 of 50 responses
	}{
		{"small body", 13, 0},
		// Beyond two chunks a response takes the rest from the pool,
		// and gives back what its record does not keep.
		{"three chunks of body", 3 * chunkSize, 40 * 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.Repeat("x", tt.body)
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) { io.WriteString(w, body) })
			hs := newHarness(t, Config{Workers: 1}, h, writerOpts{reuse: true})
			var warm uint64
			for i := range 50 {
				if i == 10 {
					warm = hs.pool.chunkGets.Load()
				}
				res := hs.do(newRequest("GET", "/", 1, ""))
				if p := parse(t, res, "GET"); len(p.body) != tt.body {
					t.Fatalf("response %d: body %d bytes, want %d", i, len(p.body), tt.body)
				}
				// The record is back before the next request takes one.
				deadline := time.Now().Add(5 * time.Second)
				for hs.recycled.Load() != int64(i+1) && time.Now().Before(deadline) {
					time.Sleep(100 * time.Microsecond)
				}
			}
			gets := hs.pool.chunkGets.Load() - warm
			t.Logf("%d chunks taken from the pool for 40 responses", gets)
			if gets > tt.maxGets {
				t.Errorf("%d chunks taken from the pool for 40 responses, want at most %d", gets, tt.maxGets)
			}
		})
	}
}

func TestBackPressure(t *testing.T) {
	const total = 10 << 20
	tests := []struct {
		name  string
		write func(w *ResponseWriter) error
	}{
		{"4 KiB writes", func(w *ResponseWriter) error {
			buf := make([]byte, 4096)
			for i := 0; i < total; i += len(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
			return nil
		}},
		{"one 10 MiB write", func(w *ResponseWriter) error {
			_, err := w.Write(make([]byte, total))
			return err
		}},
		{"with a length", func(w *ResponseWriter) error {
			w.Header().Set("Content-Length", strconv.Itoa(total))
			buf := make([]byte, 100_000)
			for i := 0; i < total; i += len(buf) {
				if _, err := w.Write(buf[:min(len(buf), total-i)]); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{HighWater: 256 << 10}
			errc := make(chan error, 1)
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) { errc <- tt.write(w) })
			hs := newHarness(t, cfg, h, writerOpts{delay: 20 * time.Microsecond})
			res := hs.do(newRequest("GET", "/big", 1, ""))
			if err := recv(t, errc); err != nil {
				t.Fatalf("handler: %v", err)
			}
			p := parse(t, res, "GET")
			if len(p.body) != total {
				t.Errorf("body %d bytes, want %d", len(p.body), total)
			}
			limit := cfg.HighWater + chunkSize
			if m := hs.fw.maxUnsent.Load(); m > limit {
				t.Errorf("unsent peaked at %d, limit HighWater+chunk = %d", m, limit)
			} else {
				t.Logf("unsent peaked at %d (limit %d)", m, limit)
			}
			// 10 MiB is 640 chunks; a response may keep only what can be
			// unsent, plus the chunk being filled, one retired late, and
			// the spares its writer hands on to the next (Release).
			deadline := time.Now().Add(5 * time.Second)
			for hs.recycled.Load() != 1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n, most := hs.maxChunks.Load(), limit/chunkSize+3+sparesPerResponse; n > most {
				t.Errorf("response held %d chunks at recycle, want at most %d", n, most)
			} else {
				t.Logf("response held %d chunks at recycle", n)
			}
		})
	}
}

func TestAbortAndTimeout(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		opts    writerOpts
		wantErr error
	}{
		{"writer aborts", Config{}, writerOpts{abortAt: 100 << 10}, stages.ErrAborted},
		{"client stops reading", Config{WriteTimeout: 50 * time.Millisecond}, writerOpts{stall: true}, stages.ErrWriteTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errc := make(chan error, 1)
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				buf := make([]byte, 8192)
				for i := 0; i < 100<<20; i += len(buf) {
					if _, err := w.Write(buf); err != nil {
						errc <- err
						// Sticky: the next call fails the same way at once.
						if _, err2 := w.Write(buf); !errors.Is(err2, err) {
							errc <- err2
						}
						return
					}
				}
				errc <- nil
			})
			hs := newHarness(t, tt.cfg, h, tt.opts)
			res := hs.do(newRequest("GET", "/big", 1, ""))
			if err := recv(t, errc); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Write returned %v, want %v", err, tt.wantErr)
			}
			if res.keepAlive {
				t.Error("kept alive")
			}
			// Both sides let go: the response is recycled.
			deadline := time.Now().Add(5 * time.Second)
			for hs.recycled.Load() != 1 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if n := hs.recycled.Load(); n != 1 {
				t.Errorf("recycled %d responses, want 1", n)
			}
		})
	}
}

func TestHold(t *testing.T) {
	holds := make(chan *stages.Hold, 1)
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		holds <- w.Hold() // the header block waits behind it
		w.WriteString("after the hold")
	})
	hs := newHarness(t, Config{}, h, writerOpts{})
	hs.push(newRequest("GET", "/rdma", 1, ""))
	hold := recv(t, holds)
	select {
	case res := <-hs.fw.results:
		t.Fatalf("response finished before the hold was released: %q", res.raw)
	case <-time.After(50 * time.Millisecond):
	}
	hold.Release()
	p := parse(t, hs.result(), "GET")
	if string(p.body) != "after the hold" {
		t.Errorf("body %q", p.body)
	}
}

// TestManyRequests runs many requests through several workers, in a steady
// stream and in bursts separated by pauses (so that workers park and must be
// woken), and checks that each is answered once, and counters, Busy and
// recycling.
func TestManyRequests(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		n       int
		burst   int // requests pushed back to back before a pause
		pause   time.Duration
	}{
		{"stream, 4 workers", 4, 300, 300, 0},
		{"bursts, 8 workers", 8, 1000, 7, 200 * time.Microsecond},
		{"single requests, 3 workers", 3, 300, 1, 100 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				w.Header().Set("X-Target", string(r.Target))
				w.Write(r.Target)
			})
			hs := newHarness(t, Config{Workers: tt.workers}, h, writerOpts{})
			go func() {
				for i := range tt.n {
					req := newRequest("GET", "/r/"+strconv.Itoa(i), 1, "")
					for !hs.in.Push(req) {
						time.Sleep(time.Microsecond)
					}
					hs.wake.Wake()
					if (i+1)%tt.burst == 0 && tt.pause > 0 {
						time.Sleep(tt.pause)
					}
				}
			}()
			seen := map[string]bool{}
			for range tt.n {
				p := parse(t, hs.result(), "GET")
				if p.resp.Header.Get("X-Target") != string(p.body) {
					t.Errorf("header %q, body %q", p.resp.Header.Get("X-Target"), p.body)
				}
				seen[string(p.body)] = true
			}
			n := int64(tt.n)
			if len(seen) != tt.n {
				t.Errorf("%d distinct responses, want %d", len(seen), tt.n)
			}
			if got := hs.counters.Dequeued.Load(); got != uint64(n) {
				t.Errorf("Dequeued %d, want %d", got, n)
			}
			deadline := time.Now().Add(5 * time.Second)
			for (hs.recycled.Load() != n || hs.counters.ServiceSnapshot().Count != uint64(n)) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := hs.recycled.Load(); got != n {
				t.Errorf("recycled %d, want %d", got, n)
			}
			if got := hs.counters.ServiceSnapshot().Count; got != uint64(n) {
				t.Errorf("service times recorded %d, want %d", got, n)
			}
			if b := hs.pool.Busy(); b != 0 {
				t.Errorf("Busy %d after all responses", b)
			}
		})
	}
}

// TestRunDrainsQueue: cancelling Run still answers what was queued.
func TestRunDrainsQueue(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		<-release
		w.Write(r.Target)
	})
	in := stages.NewClassQueue(16, nil)
	wake := stages.NewWorkerWaker(1)
	fw := &fakeWriter{kicks: make(chan *stages.Response, 64), results: make(chan result, 16), stop: make(chan struct{}), stopped: make(chan struct{})}
	go fw.run()
	defer func() { close(fw.stop); <-fw.stopped }()
	var pool *Pool
	pool = New(Config{Workers: 1}, in, wake, h, func() *stages.Response {
		return stages.NewResponse(fw.kick, func(r *stages.Response) { pool.Release(r) })
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- pool.Run(ctx) }()
	for i := range 3 {
		in.Push(newRequest("GET", "/"+strconv.Itoa(i), 1, ""))
		wake.Wake()
	}
	deadline := time.Now().Add(5 * time.Second)
	for pool.Busy() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no worker picked up the queued requests (lost wake-up?)")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-ran:
		t.Fatal("Run returned with a request in flight")
	case <-time.After(20 * time.Millisecond):
	}
	if err := pool.Run(context.Background()); !errors.Is(err, ErrPoolRunning) {
		t.Errorf("second Run: %v", err)
	}
	close(release)
	if err := recv(t, ran); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case <-fw.results:
		case <-time.After(5 * time.Second):
			t.Fatal("a queued request was dropped at shutdown")
		}
	}
}

// TestWorkerPathAllocs is BenchmarkHello's zero-allocation claim as a test,
// so that plain `go test` guards it.
func TestWorkerPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	res := testing.Benchmark(BenchmarkHello)
	if a := res.AllocsPerOp(); a != 0 {
		t.Errorf("native hello: %d allocs/op, want 0", a)
	}
}

func TestCleanupAfterSend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("sent after the handler returned"), 0o644); err != nil {
		t.Fatal(err)
	}
	var file *os.File
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		f, err := os.Open(path)
		if err != nil {
			panic(err)
		}
		file = f
		w.OnRecycle(CloseFile(f))
		w.SendFile(f, 0, 31)
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	p := parse(t, hs.do(newRequest("GET", "/", 1, "")), "GET")
	if string(p.body) != "sent after the handler returned" {
		t.Errorf("body %q", p.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for hs.recycled.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := file.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("file not closed at recycle: %v", err)
	}
}

func TestBusy(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) { <-release })
	hs := newHarness(t, Config{Workers: 3}, h, writerOpts{})
	for range 2 {
		hs.push(newRequest("GET", "/", 1, ""))
	}
	deadline := time.Now().Add(5 * time.Second)
	for hs.pool.Busy() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if b := hs.pool.Busy(); b != 2 {
		t.Errorf("Busy %d, want 2", b)
	}
	close(release)
	hs.result()
	hs.result()
}

func TestInterimNotForHTTP10(t *testing.T) {
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteString("x")
	})
	hs := newHarness(t, Config{}, h, writerOpts{})
	res := hs.do(newRequest("GET", "/", 0, ""))
	if !strings.HasPrefix(string(res.raw), "HTTP/1.0 200 OK\r\n") {
		t.Errorf("raw %q", res.raw)
	}
}

// TestGoexit: a handler that calls runtime.Goexit (t.FailNow does) still
// gets its response ended, and the pool keeps its size.
func TestGoexit(t *testing.T) {
	var calls atomic.Int64
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		if calls.Add(1) == 1 {
			runtime.Goexit()
		}
		hello(w, r)
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	p := parse(t, hs.do(newRequest("GET", "/", 1, "")), "GET")
	if p.resp.StatusCode != 500 {
		t.Errorf("status %d, want 500", p.resp.StatusCode)
	}
	if !strings.Contains(hs.log.String(), "Goexit") {
		t.Errorf("not logged: %s", hs.log.String())
	}
	p = parse(t, hs.do(newRequest("GET", "/", 1, "")), "GET")
	if string(p.body) != "Hello, World!" {
		t.Errorf("after Goexit: %q", p.body)
	}
}

// recv receives from c, failing the test instead of hanging when nothing
// comes: a lost wake-up must show as a failure, not a ten-minute timeout.
func recv[T any](t testing.TB, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received in 10s")
	}
	var zero T
	return zero
}
