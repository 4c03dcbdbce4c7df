package runtime

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// Limits of the built-in endpoints, so a load experiment cannot be turned
// into a denial of service by a typo.
const (
	maxSleep   = 60 * time.Second
	maxBytes   = 1 << 30
	maxCompute = 1_000_000
)

// builtin serves the endpoints load experiments use, natively (no
// allocation for /hello), and passes every other request to next.
type builtin struct {
	next  processor.Handler
	bufs  sync.Pool // *[]byte, 32 KiB, for /echo
	block []byte    // /bytes pattern
}

// Builtin returns the handler for Quartet's built-in endpoints:
//
//	GET  /hello       13-byte "Hello, World!"
//	GET  /sleep?ms=N  blocks the handler N ms (at most 60000), then 200
//	GET  /compute?n=N computes for N rounds (one round hashes 512 bytes, about
//	                  a microsecond), then 200 with the hash: a handler
//	                  bound by CPU, for overload experiments
//	GET  /bytes?n=N   N bytes (at most 1 GiB)
//	POST /echo        the request body
//
// Other paths go to next (404 when next is nil). They exist for load
// experiments: any client that reaches them can hold a worker for a minute
// or ask for a gigabyte, so mount them only where you control the clients
// (quartet serve does only in its demo mode or with --bench-endpoints).
func Builtin(next processor.Handler) processor.Handler {
	b := &builtin{next: next, block: make([]byte, 64<<10)}
	for i := range b.block {
		b.block[i] = 'a' + byte(i%26)
	}
	b.bufs.New = func() any { s := make([]byte, 32<<10); return &s }
	return b
}

// Inline declares /hello non-blocking (a constant answer, or 405), so it
// is served on the reader loop (processor.Inliner); /sleep sleeps, /bytes
// may be a gigabyte that must wait for its client, /echo reads a body.
// Other paths are next's to answer.
func (b *builtin) Inline(r *stages.Request) bool {
	switch string(r.Path) {
	case "/hello":
		return true
	case "/sleep", "/compute", "/bytes", "/echo":
		return false
	}
	return b.next == nil || processor.ServesInline(b.next, r) // nil: a 404
}

func (b *builtin) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	switch string(r.Path) {
	case "/hello":
		if !getOrHead(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteString("Hello, World!")
	case "/sleep":
		if !getOrHead(w, r) {
			return
		}
		ms, ok := r.QueryInt("ms")
		if !ok || ms < 0 || time.Duration(ms)*time.Millisecond > maxSleep {
			badRequest(w, "ms must be 0..60000\n")
			return
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteString("OK\n")
	case "/compute":
		if !getOrHead(w, r) {
			return
		}
		n, ok := r.QueryInt("n")
		if !ok || n < 0 || n > maxCompute {
			badRequest(w, "n must be 0..1000000\n")
			return
		}
		sum := compute(int(n))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var line [24]byte
		w.Write(append(strconv.AppendUint(line[:0], uint64(sum), 16), '\n'))
	case "/bytes":
		if !getOrHead(w, r) {
			return
		}
		n, ok := r.QueryInt("n")
		if !ok || n < 0 || n > maxBytes {
			badRequest(w, "n must be 0..1073741824\n")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(b.block)))
			if _, err := w.Write(b.block[:k]); err != nil {
				return
			}
			n -= k
		}
	case "/echo":
		if !r.IsMethod("POST") && !r.IsMethod("PUT") {
			w.Header().Set("Allow", "POST, PUT")
			w.WriteHeader(405)
			return
		}
		if ct := r.Header("Content-Type"); ct != nil {
			w.Header().SetBytes([]byte("Content-Type"), ct)
		}
		if r.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		}
		bp := b.bufs.Get().(*[]byte)
		_, err := io.CopyBuffer(onlyWriter{w}, onlyReader{r.Body}, *bp)
		b.bufs.Put(bp)
		if err != nil && w.Committed() {
			// Part of the body is already on its way: the client must see
			// a response cut short, not a complete one with data missing.
			panic(http.ErrAbortHandler)
		}
		// Otherwise nothing went out, and the pool answers a failed body
		// with its status (408, 413, 400) in place of the echo.
	default:
		if b.next != nil {
			b.next.ServeQuartet(w, r)
			return
		}
		w.WriteHeader(404)
		w.WriteString("404 page not found\n")
	}
}

func getOrHead(w *processor.ResponseWriter, r *stages.Request) bool {
	if r.IsMethod("GET") || r.IsMethod("HEAD") {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	w.WriteHeader(405)
	return false
}

func badRequest(w *processor.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(400)
	w.WriteString(msg)
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo so CopyBuffer uses the
// pooled buffer.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

// compute is /compute's work: n rounds of FNV-1a over a fixed 512 bytes
// block, each round seeded by the last, so the compiler cannot skip any
// and the result is the same everywhere (the peers in bench/peers do the
// same rounds). A round takes about a microsecond.
func compute(n int) uint32 {
	const prime = 16777619
	h := uint32(2166136261)
	for range n {
		for i := range 512 {
			h = (h ^ uint32(byte(i)^byte(h))) * prime
		}
	}
	return h
}
