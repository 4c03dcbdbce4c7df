package http1

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// The seam's contract, as HTTP/1.1 keeps it: a Protocol the processors
// serve with the Handler.
var _ stages.HandlerProtocol = (*Protocol)(nil)

// TestHeadPlansBody: each framing of a request becomes the body plan the
// reader carries out.
func TestHeadPlansBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		kind    stages.BodyKind
		length  int64
		await   bool
		decoder bool
	}{
		{"no body", "GET / HTTP/1.1\r\nHost: h\r\n\r\n", stages.BodyNone, 0, false, false},
		{"empty length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", stages.BodyNone, 0, false, false},
		{"length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", stages.BodyLength, 5, false, false},
		{"large length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n", stages.BodyLength, 1000000, false, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", stages.BodyDecoded, 0, false, true},
		{"100-continue", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", stages.BodyLength, 5, true, false},
		{"100-continue, chunked", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n", stages.BodyDecoded, 0, true, true},
		{"100-continue ignored in 1.0", "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", stages.BodyLength, 5, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := New(Config{}).NewParser()
			req := &stages.Request{}
			req.Reset()
			h, err := fp.Head([]byte(tc.in), req)
			if err != nil {
				t.Fatal(err)
			}
			b := h.Body
			if !h.Aliases || h.Size == 0 || b.Kind != tc.kind || b.Length != tc.length || b.Await != tc.await || (b.Decoder != nil) != tc.decoder ||
				tc.await != (string(b.Interim) == Continue) {
				t.Fatalf("head %+v", h)
			}
		})
	}
}

// TestHeadChunkedDecoder: the plan's decoder is the parser's chunked
// decoder, fresh for each body, so a body left half decoded does not
// leak into the next request's.
func TestHeadChunkedDecoder(t *testing.T) {
	fp := New(Config{}).NewParser()
	in := []byte("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := range 2 {
		req := &stages.Request{}
		h, err := fp.Head(in, req)
		if err != nil {
			t.Fatal(err)
		}
		src := []byte("5\r\nhello\r\n0\r\n\r\n")
		if i == 0 {
			src = src[:4] // left mid-chunk
		}
		dst := make([]byte, 16)
		_, n, done, err := h.Body.Decoder.Decode(dst, src)
		if err != nil || (i == 1) != done || i == 1 && string(dst[:n]) != "hello" {
			t.Fatalf("body %d: %q done=%v err=%v", i, dst[:n], done, err)
		}
	}
}

// TestHeadErrors: the parser's errors reach the reader as they are, and
// ErrNeedMore as the stages' own.
func TestHeadErrors(t *testing.T) {
	fp := New(Config{Limits: Limits{MaxRequestLine: 16}}).NewParser()
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"GET / HTTP/1.1\r\nHost", stages.ErrNeedMore},
		{"GET /a-very-long-target HTTP/1.1\r\n\r\n", ErrURITooLong},
		{"GET / HTTP/1.1\nHost: h\r\n\r\n", ErrBareLF},
	} {
		fp.Reset()
		if _, err := fp.Head([]byte(tc.in), &stages.Request{}); !errors.Is(err, tc.want) {
			t.Errorf("%q: %v, want %v", tc.in, err, tc.want)
		}
	}
}

// TestReject: every refusal is a status response a client can read; only
// a shed request whose framing is intact keeps its connection, and shed
// answers are shared, not built per request.
func TestReject(t *testing.T) {
	p := New(Config{ServerName: "q"})
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	keepAlive := &stages.Request{Minor: 1}
	expect := &stages.Request{Minor: 1, Expect100: true}
	for _, tc := range []struct {
		name   string
		req    *stages.Request
		why    stages.Refusal
		status int
		keep   bool
		retry  string
	}{
		{"malformed", keepAlive, stages.Refusal{Err: ErrBadTarget, Now: now}, 400, false, ""},
		{"head timeout", keepAlive, stages.Refusal{Err: stages.ErrHeadTimeout, Now: now}, 408, false, ""},
		{"head too large", keepAlive, stages.Refusal{Err: stages.ErrHeadTooLarge, Now: now}, 431, false, ""},
		{"body too large", keepAlive, stages.Refusal{Err: stages.ErrBodyTooLarge, Now: now}, 413, false, ""},
		{"not implemented", keepAlive, stages.Refusal{Err: ErrUnknownTransferCoding, Now: now}, 501, false, ""},
		{"shed", keepAlive, stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: 2, Now: now}, 503, true, "2"},
		{"shed, Retry-After capped", keepAlive, stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: 1 << 40, Now: now}, 503, true, "60"},
		{"shed, HTTP/1.0", &stages.Request{}, stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: 1, Now: now}, 503, false, "1"},
		{"shed, shutting down", keepAlive, stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: 1, Now: now, Closing: true}, 503, false, "1"},
		{"shed, awaiting 100-continue", expect, stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: 1, Now: now}, 503, false, "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rej := p.Reject(tc.req, tc.why)
			if rej.Status != tc.status || rej.KeepAlive != tc.keep {
				t.Fatalf("status %d keep %v, want %d %v", rej.Status, rej.KeepAlive, tc.status, tc.keep)
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(rej.Frame)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || resp.Close == tc.keep || resp.Header.Get("Retry-After") != tc.retry {
				t.Fatalf("%d close=%v %v", resp.StatusCode, resp.Close, resp.Header)
			}
		})
	}
	shed := stages.Refusal{Err: stages.ErrOverloaded, RetryAfter: 1, Now: now}
	if a := testing.AllocsPerRun(100, func() { p.Reject(keepAlive, shed) }); a != 0 {
		t.Fatalf("shedding allocates %v times", a)
	}
}

// A server name that would split a response is sent with spaces: the
// stages' own answers carry it raw (runtime.Config.Validate refuses it;
// this is for a protocol table built by hand).
func TestServerNameCannotSplitTheAnswer(t *testing.T) {
	p := New(Config{ServerName: "q\r\nX-Evil: 1\x00"})
	rej := p.Reject(&stages.Request{Minor: 1}, stages.Refusal{Err: ErrBadTarget, Now: time.Now()})
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(rej.Frame)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("Server"); got != "q  X-Evil: 1" || resp.Header.Get("X-Evil") != "" {
		t.Fatalf("Server %q, X-Evil %q", got, resp.Header.Get("X-Evil"))
	}
}
