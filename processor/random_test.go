package processor

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// TestRandomFraming drives the ResponseWriter with random sequences of
// writes, flushes and declared lengths, on GET and HEAD, HTTP/1.1 and 1.0,
// and checks that net/http's client parser reads back exactly the body
// written, with nothing left over on a kept-alive connection.
func TestRandomFraming(t *testing.T) {
	type op struct {
		n     int  // bytes to write
		flush bool // flush after the write
	}
	type scenario struct {
		ops      []op
		total    int
		declare  bool // set Content-Length to the total up front
		head     bool
		minor    int
		expected []byte
	}
	rng := rand.New(rand.NewPCG(1, 2))
	scenarios := make(chan scenario, 1)
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		sc := <-scenarios
		if sc.declare {
			w.Header().Set("Content-Length", strconv.Itoa(sc.total))
		}
		off := 0
		for _, o := range sc.ops {
			if _, err := w.Write(sc.expected[off : off+o.n]); err != nil {
				panic(err)
			}
			off += o.n
			if o.flush {
				w.Flush()
			}
		}
	})
	hs := newHarness(t, Config{Workers: 1, HighWater: 128 << 10}, h, writerOpts{})
	for i := range 200 {
		var sc scenario
		for range rng.IntN(6) {
			n := rng.IntN(3000)
			if rng.IntN(4) == 0 {
				n = rng.IntN(100 << 10)
			}
			sc.ops = append(sc.ops, op{n: n, flush: rng.IntN(3) == 0})
			sc.total += n
		}
		sc.declare = rng.IntN(3) == 0
		sc.head = rng.IntN(5) == 0
		sc.minor = 1
		if rng.IntN(5) == 0 {
			sc.minor = 0
		}
		sc.expected = make([]byte, sc.total)
		seed := rng.IntN(26)
		for j := range sc.expected {
			sc.expected[j] = byte('a' + (j*7+j/26+seed)%26) // misplaced bytes show
		}
		method := "GET"
		if sc.head {
			method = "HEAD"
		}
		scenarios <- sc
		headers := []string{"Host", "x"}
		if sc.minor == 0 {
			headers = append(headers, "Connection", "keep-alive")
		}
		res := hs.do(newRequest(method, "/r", sc.minor, "", headers...))
		p := parse(t, res, method)
		want := sc.expected
		if sc.head {
			want = nil
		}
		if p.resp.StatusCode != http.StatusOK || !bytes.Equal(p.body, want) || (p.bodyErr != nil && res.keepAlive) {
			t.Fatalf("scenario %d %+v: status %d, body %d bytes (want %d), err %v",
				i, sc.ops, p.resp.StatusCode, len(p.body), len(want), p.bodyErr)
		}
		if res.keepAlive && len(p.rest) != 0 {
			t.Fatalf("scenario %d: %d stray bytes on a kept-alive connection", i, len(p.rest))
		}
		flushed := false
		for _, o := range sc.ops {
			flushed = flushed || o.flush
		}
		// Keep-alive is lost only by an HTTP/1.0 body without a length.
		wantKA := !(sc.minor == 0 && !sc.declare && !sc.head && (flushed || sc.total > maxBuffered))
		if res.keepAlive != wantKA {
			t.Fatalf("scenario %d (minor %d, declare %v, head %v, flushed %v, total %d): keep-alive %v",
				i, sc.minor, sc.declare, sc.head, flushed, sc.total, res.keepAlive)
		}
	}
}
