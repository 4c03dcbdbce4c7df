package processor

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// altFilter stands in for a module that ships the body another way: it
// drops the body buckets, prepares an Alternative carrying altBody, sets
// the headers of the "shipped" response, and passes a hold ahead of EOS.
// decide then releases or diverts the hold, from another goroutine, so
// that it races the EOS the processor appends after the filter returns.
type altFilter struct {
	altBody []stages.Bucket
	divert  bool
	drain   *Pool // if set, a drain begins after the Alternative was made
	out     chan altOutcome
}

type altOutcome struct {
	rendered []byte // the alternative's header block, rendered
	err      error
}

func (f *altFilter) FilterOutput(c *FilterChain, bs []stages.Bucket) error {
	for _, b := range bs {
		if b.Kind != stages.BucketEOS {
			continue // shipped elsewhere
		}
		alt, err := c.Alternative(f.altBody)
		if err != nil {
			f.out <- altOutcome{err: err}
			return c.Pass(b)
		}
		if f.drain != nil {
			f.drain.Drain()
		}
		c.Header().Set("X-Shipped", "elsewhere")
		c.Header().Set("Content-Length", "0")
		hold := c.NewHold()
		go func() {
			r := alt.Render(func(h *Header) {
				h.Del("X-Shipped")
				h.Set("X-Fallback", "failed: over TCP instead")
				h.Set("Content-Length", "12345") // the framer's to decide: ignored
			})
			if f.divert {
				hold.Divert(r)
			} else {
				hold.Release()
			}
			f.out <- altOutcome{rendered: r[0].Data}
		}()
		return c.Pass(stages.Bucket{Kind: stages.BucketHold, Hold: hold}, b)
	}
	return nil
}

// An Alternative is a valid HTTP/1.x response (net/http parses it) with
// the real response's status, fields, Date, Server and Connection
// decision, and a Content-Length of its own body; diverted, it replaces
// the real header block (and anything else after the hold) exactly, for
// GET and HEAD, keep-alive and close.
func TestAlternative(t *testing.T) {
	file := filepath.Join(t.TempDir(), "alt")
	fileData := bytes.Repeat([]byte("0123456789"), 10000)
	if err := os.WriteFile(file, fileData, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	heapPart := []byte("the body, over TCP after all: ")
	altBody := []stages.Bucket{{Kind: stages.BucketHeap, Data: heapPart}, {Kind: stages.BucketFile, File: f, Off: 10, Len: 5000}}
	wantBody := append(append([]byte(nil), heapPart...), fileData[10:5010]...)

	for _, tc := range []struct {
		name      string
		method    string
		minor     int
		headers   []string
		drain     bool
		wantClose bool
	}{
		{"GET keep-alive", "GET", 1, nil, false, false},
		{"GET close", "GET", 1, []string{"Connection", "close"}, false, true},
		{"HEAD keep-alive", "HEAD", 1, nil, false, false},
		{"HEAD close", "HEAD", 1, []string{"Connection", "close"}, false, true},
		{"HTTP/1.0 keep-alive", "GET", 0, []string{"Connection", "keep-alive"}, false, false},
		{"HTTP/1.0", "GET", 0, nil, false, true},
		// A drain that begins after the Alternative was made does not
		// make the real header block disagree with it.
		{"drain after", "GET", 1, nil, true, false},
	} {
		for _, divert := range []bool{true, false} {
			name := tc.name + map[bool]string{true: ", diverted", false: ", released"}[divert]
			t.Run(name, func(t *testing.T) {
				af := &altFilter{altBody: altBody, divert: divert, out: make(chan altOutcome, 1)}
				h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
					if err := w.AddOutputFilter(af); err != nil {
						t.Error(err)
					}
					w.Header().Set("X-Common", "both")
					w.Header().Set("Content-Type", "text/plain")
					w.WriteString("the body, shipped elsewhere")
				})
				hs := newHarness(t, Config{ServerName: "alt-test"}, h, writerOpts{})
				if tc.drain {
					af.drain = hs.pool
				}
				res := hs.do(newRequest(tc.method, "/x", tc.minor, "", tc.headers...))
				out := recv(t, af.out)
				if out.err != nil {
					t.Fatal(out.err)
				}
				// The rendered alternative on its own.
				alt, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out.rendered)), &http.Request{Method: "HEAD"})
				if err != nil {
					t.Fatalf("alternative header: %v\n%q", err, out.rendered)
				}
				if alt.StatusCode != 200 || alt.ContentLength != int64(len(wantBody)) || alt.Close != tc.wantClose ||
					alt.ProtoMinor != tc.minor || alt.Header.Get("X-Common") != "both" || alt.Header.Get("X-Shipped") != "" ||
					alt.Header.Get("X-Fallback") == "" || alt.Header.Get("Server") != "alt-test" || alt.Header.Get("Date") == "" {
					t.Fatalf("alternative header:\n%s", out.rendered)
				}
				p := parse(t, res, tc.method)
				if p.resp.StatusCode != 200 || p.resp.Close != tc.wantClose || res.keepAlive == tc.wantClose || res.status != 200 {
					t.Fatalf("status %d (published %d), close %v, published keep-alive %v; want close %v",
						p.resp.StatusCode, res.status, p.resp.Close, res.keepAlive, tc.wantClose)
				}
				if len(p.rest) != 0 {
					t.Fatalf("%d bytes after the response: %q", len(p.rest), p.rest)
				}
				if !divert {
					if p.resp.Header.Get("X-Shipped") != "elsewhere" || p.resp.ContentLength != 0 || len(p.body) != 0 {
						t.Fatalf("released: %v, %d body bytes", p.resp.Header, len(p.body))
					}
					return
				}
				want := wantBody
				if tc.method == "HEAD" {
					want = nil
				}
				if !bytes.Equal(p.body, want) || p.bodyErr != nil || p.resp.ContentLength != int64(len(wantBody)) {
					t.Fatalf("diverted: Content-Length %d, %d body bytes (%v), want %d", p.resp.ContentLength, len(p.body), p.bodyErr, len(want))
				}
				if p.resp.Header.Get("X-Shipped") != "" || p.resp.Header.Get("X-Fallback") == "" || p.resp.Header.Get("X-Common") != "both" {
					t.Fatalf("diverted header: %v", p.resp.Header)
				}
				if !bytes.HasPrefix(res.raw, out.rendered) {
					t.Fatalf("the response is not the alternative:\n%q", res.raw)
				}
			})
		}
	}
}

// An Alternative carries heap and file data only, and needs a status
// that allows content.
func TestAlternativeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   []stages.Bucket
		want   error
	}{
		{"EOS in the body", 200, []stages.Bucket{{Kind: stages.BucketEOS}}, ErrAlternativeBody},
		{"hold in the body", 200, []stages.Bucket{{Kind: stages.BucketHold}}, ErrAlternativeBody},
		{"204", 204, nil, ErrBodyNotAllowed},
		{"304", 304, nil, ErrBodyNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, 1)
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				w.AddOutputFilter(OutputFilterFunc(func(c *FilterChain, bs []stages.Bucket) error {
					if bs[len(bs)-1].Kind == stages.BucketEOS {
						_, err := c.Alternative(tc.body)
						errs <- err
					}
					return c.Pass(bs...)
				}))
				w.WriteHeader(tc.status)
			})
			hs := newHarness(t, Config{}, h, writerOpts{})
			res := hs.do(newRequest("GET", "/", 1, ""))
			if err := recv(t, errs); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if res.status != tc.status {
				t.Fatalf("status %d", res.status)
			}
		})
	}
}
