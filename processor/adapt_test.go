package processor

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

func TestAdapt(t *testing.T) {
	dir := t.TempDir()
	page := strings.Repeat("<p>static</p>\n", 2000)
	if err := os.WriteFile(filepath.Join(dir, "page.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	type check func(t *testing.T, p parsed, res result)
	tests := []struct {
		name    string
		method  string
		target  string
		minor   int
		body    string
		headers []string
		handler http.HandlerFunc
		check   check
	}{
		{
			name:    "request fields",
			method:  "POST",
			target:  "/echo/a%20b?x=1&y=2",
			minor:   1,
			body:    "hello body",
			headers: []string{"Host", "example.com:8080", "x-custom", "one", "X-Custom", "two", "Content-Length", "10"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					panic(err)
				}
				got := []string{
					r.Method, r.URL.Path, r.URL.RawQuery, r.URL.Query().Get("y"), r.Host, r.Proto,
					r.RemoteAddr, r.RequestURI, strings.Join(r.Header.Values("X-Custom"), ","),
					r.Header.Get("Host"), string(b),
				}
				w.Header().Set("X-Got", strings.Join(got, "|"))
				w.Header().Set("X-Len", strconvI(r.ContentLength))
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, "created")
			},
			check: func(t *testing.T, p parsed, res result) {
				want := "POST|/echo/a b|x=1&y=2|2|example.com:8080|HTTP/1.1|192.0.2.7:40000|/echo/a%20b?x=1&y=2|one,two||hello body"
				if got := p.resp.Header.Get("X-Got"); got != want {
					t.Errorf("request seen as\n%s\nwant\n%s", got, want)
				}
				if p.resp.Header.Get("X-Len") != "10" {
					t.Errorf("ContentLength %s", p.resp.Header.Get("X-Len"))
				}
				if p.resp.StatusCode != 201 || string(p.body) != "created" || p.resp.ContentLength != 7 {
					t.Errorf("%d %q length %d", p.resp.StatusCode, p.body, p.resp.ContentLength)
				}
				if !res.keepAlive {
					t.Error("not kept alive")
				}
			},
		},
		{
			name:   "content type is sniffed",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("<!DOCTYPE html><html></html>"))
			},
			check: func(t *testing.T, p parsed, res result) {
				if ct := p.resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("Content-Type %q", ct)
				}
			},
		},
		{
			name:   "headers without a write",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Only", "headers")
			},
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.StatusCode != 200 || p.resp.Header.Get("X-Only") != "headers" || p.resp.ContentLength != 0 {
					t.Errorf("%d %v", p.resp.StatusCode, p.resp.Header)
				}
			},
		},
		{
			name:   "trailers follow a chunked body",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "X-Sum, Content-Length")
				io.WriteString(w, "body")
				w.Header().Set("X-Sum", "42")
				w.Header().Set("Content-Length", "99") // not a trailer: dropped
				w.Header().Set(http.TrailerPrefix+"X-Late", "1")
			},
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.StatusCode != 200 || string(p.body) != "body" || p.bodyErr != nil || len(p.rest) > 0 {
					t.Fatalf("%d %q %v, %d bytes after", p.resp.StatusCode, p.body, p.bodyErr, len(p.rest))
				}
				if got := p.resp.TransferEncoding; len(got) != 1 || got[0] != "chunked" {
					t.Errorf("transfer encoding %v: a declared trailer needs a chunked body", got)
				}
				want := http.Header{"X-Sum": {"42"}, "X-Late": {"1"}}
				if fmt.Sprint(p.resp.Trailer) != fmt.Sprint(want) {
					t.Errorf("trailer %v, want %v", p.resp.Trailer, want)
				}
				for name := range p.resp.Header {
					if strings.Contains(name, ":") {
						t.Errorf("header %q sent", name)
					}
				}
			},
		},
		{
			name:   "no trailer for HTTP/1.0",
			method: "GET", target: "/", minor: 0,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", "X-Sum")
				io.WriteString(w, "body")
				w.Header().Set("X-Sum", "42")
			},
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.StatusCode != 200 || string(p.body) != "body" || len(p.resp.TransferEncoding) > 0 || len(p.resp.Trailer) > 0 {
					t.Errorf("%d %q te %v trailer %v", p.resp.StatusCode, p.body, p.resp.TransferEncoding, p.resp.Trailer)
				}
			},
		},
		{
			name:   "a nil Date suppresses it",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Date"] = nil
				io.WriteString(w, "no date")
			},
			check: func(t *testing.T, p parsed, res result) {
				if _, ok := p.resp.Header["Date"]; ok || p.resp.Header.Get("Server") != "quartet" {
					t.Errorf("header %v", p.resp.Header)
				}
			},
		},
		{
			name:   "Flush makes it chunked",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "first ")
				w.(http.Flusher).Flush()
				io.WriteString(w, "second")
				if err := http.NewResponseController(w).Flush(); err != nil {
					panic(err)
				}
			},
			check: func(t *testing.T, p parsed, res result) {
				if string(p.body) != "first second" || len(p.resp.TransferEncoding) != 1 || res.flushes < 2 {
					t.Errorf("body %q, TE %v, flushes %d", p.body, p.resp.TransferEncoding, res.flushes)
				}
			},
		},
		{
			name:   "Hijack returns a clear error",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _, err := w.(http.Hijacker).Hijack()
				_, _, err2 := http.NewResponseController(w).Hijack()
				if !errors.Is(err, ErrHijackNotSupported) || !errors.Is(err2, ErrHijackNotSupported) {
					panic("Hijack did not fail with ErrHijackNotSupported")
				}
				io.WriteString(w, err.Error())
			},
			check: func(t *testing.T, p parsed, res result) {
				if !strings.Contains(string(p.body), "writer stage owns the socket") {
					t.Errorf("body %q", p.body)
				}
			},
		},
		{
			name:   "context cancelled after return",
			method: "GET", target: "/", minor: 1,
			handler: func() http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					ctx := r.Context()
					if ctx.Err() != nil {
						panic("context done during the handler")
					}
					go func() {
						select {
						case <-ctx.Done():
						case <-time.After(5 * time.Second):
							panic("context not cancelled after the handler returned")
						}
					}()
				}
			}(),
			check: func(t *testing.T, p parsed, res result) {},
		},
		{
			name:   "body not allowed maps to net/http's error",
			method: "GET", target: "/", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
				if _, err := w.Write([]byte("x")); err != http.ErrBodyNotAllowed {
					panic("want http.ErrBodyNotAllowed")
				}
			},
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.StatusCode != 204 {
					t.Errorf("status %d", p.resp.StatusCode)
				}
			},
		},
		{
			name:   "http.FileServer goes out with sendfile",
			method: "GET", target: "/page.html", minor: 1,
			handler: http.FileServer(http.Dir(dir)).ServeHTTP,
			check: func(t *testing.T, p parsed, res result) {
				if string(p.body) != page || p.resp.ContentLength != int64(len(page)) {
					t.Errorf("body %d bytes, length %d", len(p.body), p.resp.ContentLength)
				}
				if res.fileBuckets != 1 {
					t.Errorf("%d file buckets, want 1", res.fileBuckets)
				}
				if ct := p.resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("Content-Type %q", ct)
				}
			},
		},
		{
			name:   "http.FileServer HEAD",
			method: "HEAD", target: "/page.html", minor: 1,
			handler: http.FileServer(http.Dir(dir)).ServeHTTP,
			check: func(t *testing.T, p parsed, res result) {
				if rawHeader(res.raw, "Content-Length") != strconvI(int64(len(page))) || res.fileBuckets != 0 {
					t.Errorf("raw %q", res.raw)
				}
			},
		},
		{
			name:    "chunked request body",
			method:  "POST",
			target:  "/up",
			minor:   1,
			headers: []string{"Host", "x", "Transfer-Encoding", "chunked"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%d|%q|%q|%s", r.ContentLength, r.TransferEncoding, r.Header.Get("Transfer-Encoding"), b)
			},
			check: func(t *testing.T, p parsed, res result) {
				if want := `-1|["chunked"]|""|decoded`; string(p.body) != want {
					t.Errorf("handler saw %s, want %s", p.body, want)
				}
			},
		},
		{
			name:   "a Range is a sendfile of the region",
			method: "GET", target: "/page.html", minor: 1,
			headers: []string{"Range", "bytes=100-199"},
			handler: http.FileServer(http.Dir(dir)).ServeHTTP,
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.StatusCode != 206 || string(p.body) != page[100:200] || res.fileBuckets != 1 {
					t.Errorf("%d, body %q, %d file buckets", p.resp.StatusCode, p.body, res.fileBuckets)
				}
			},
		},
		{
			name:   "bad target is a 400",
			method: "GET", target: "no-slash", minor: 1,
			handler: func(w http.ResponseWriter, r *http.Request) { panic("handler called") },
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.StatusCode != 400 || res.keepAlive {
					t.Errorf("status %d keep-alive %v", p.resp.StatusCode, res.keepAlive)
				}
			},
		},
		{
			name:   "HTTP/1.0",
			method: "GET", target: "/", minor: 0,
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.ProtoMinor != 0 || !r.Close {
					panic("HTTP/1.0 request not seen as such")
				}
				io.WriteString(w, "old")
			},
			check: func(t *testing.T, p parsed, res result) {
				if p.resp.Proto != "HTTP/1.0" || res.keepAlive || string(p.body) != "old" {
					t.Errorf("%s keep-alive %v %q", p.resp.Proto, res.keepAlive, p.body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newHarness(t, Config{}, Adapt(tt.handler), writerOpts{})
			req := newRequest(tt.method, tt.target, tt.minor, tt.body, tt.headers...)
			if stages.ListHasToken(req.Header("Transfer-Encoding"), "chunked") {
				// What the reader hands over: the decoded stream.
				req.Chunked, req.ContentLength, req.Body = true, -1, strings.NewReader("decoded")
			}
			res := hs.do(req)
			if strings.Contains(hs.log.String(), "panic") {
				t.Fatalf("handler panicked:\n%s", hs.log.String())
			}
			tt.check(t, parse(t, res, tt.method), res)
		})
	}
}

func strconvI(n int64) string { return strconv.FormatInt(n, 10) }

type httpHello struct{}

func (httpHello) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "Hello, World!")
}
