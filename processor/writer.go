package processor

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// ResponseWriter builds one response as stages.Buckets for the writer stage.
// Each worker owns one and reuses it for every request it serves; a handler
// must not use it, nor anything it returned, after returning.
//
// Byte layout: the header block and body bytes are copied into pooled
// chunks. cur is the chunk being filled; the bytes cur[start:] are not yet in
// a bucket. seal turns them into a heap bucket on out, and sendOut appends
// out to the Response (which kicks the writer). A sealed part of a chunk is
// never written again, so the rest of the same chunk can keep filling while
// the writer sends the first part.
type ResponseWriter struct {
	p  *Pool
	wk *worker // the goroutine it belongs to; nil for a detached or inline writer
	// inline: the handler runs on a reader loop (InlineServer), which
	// must never wait on a client: writes skip the high-water wait.
	inline bool
	// record counts its handlers' service times: the pool's counters for
	// a worker's, its loop's shard of them for an inline server's (so
	// loops on different cores share no line); nil for none.
	record *stages.StageCounters
	resp   *stages.Response
	req    *stages.Request
	now    time.Time
	hdr    Header
	// trailer holds the fields sent after a chunked body; trailers: the
	// handler asked for it (Trailer), which makes the body chunked.
	trailer  Header
	trailers bool

	status    int   // 0 until WriteHeader (or the first Write)
	head      bool  // HEAD: count body bytes, send none
	committed bool  // the final header block is in the stream
	chunked   bool  // body framed with chunked coding
	declared  int64 // Content-Length the handler set, -1 if none
	written   int64 // body bytes the handler produced (counted for HEAD too)
	err       error // sticky: ErrAborted, ErrWriteTimeout, errHandlerPanicked
	framed    int64 // chunked coding's own bytes in the stream (size lines, CRLFs)
	close     bool  // close the connection after this response whatever else
	broken    bool  // the response is cut short: no terminator, close

	// The body written before commit: pooled heap chunks (each filled from
	// its start) and file regions, in order.
	body     []stages.Bucket
	bodyHeap int64
	bodyLen  int64

	cur   []byte // the chunk being filled; nil when there is none
	start int    // cur[start:] is not yet sealed
	lent  bool   // part of cur is in a bucket
	out   []stages.Bucket

	// Stream positions (bytes, heap and file) and the chunks that may be
	// taken back once the writer has sent past them (see reclaim).
	queued   int64 // put on out
	appended int64 // appended to the response
	retired  []retiredChunk
	rhead    int // retired[:rhead] are back in the pool

	expect  bool  // the client waits for req.Interim before it sends the body that follows
	asked   bool  // the handler has read (or tried to read) the body
	bodyErr error // the first request-body Read error other than EOF
	rbody   bodyReader
	holds   []*stages.Hold // released if the handler fails, so the writer is not stalled
	num     [24]byte       // number formatting scratch, here so it never escapes
	hdrBuf  []byte         // header block scratch (headerBlock), kept for the next response
	spares  [2][]byte      // an inline server's chunks kept for its next response (putChunk)
	nspares int
	kept    *stages.Response // an inline server's record kept for its next response (InlineServer.Keep)

	// Output filters (filter.go). chain[i] is the position that calls
	// filters[i]; chain[nfilters] calls the framing code.
	filters       [maxFilters]OutputFilter
	chain         [maxFilters + 1]FilterChain
	nfilters      int
	framing       bool // inside frame: public calls go to the framing code
	filterStarted bool // a bucket has entered the chain
	eosFramed     bool // EOS reached the end of the chain
	fstatus       int  // the status the handler or a filter chose, before framing
	stage         []byte
	one           [1]stages.Bucket

	// kaPinned: an Alternative was prepared with keep-alive, so commit
	// must not decide otherwise (say, because a drain began meanwhile).
	kaPinned bool
	// sink, when set, receives what emit writes instead of the stream:
	// only Alternative.Render's detached writer sets it.
	sink *[]byte
}

// bodyReader stands in for a request body while the handler runs, for two
// reasons. The handler's first Read sends the interim reply the client may
// be waiting for (req.Interim, from the protocol: HTTP's 100 Continue, RFC
// 9110 §10.1.1); the writer owns the socket, so the worker queues it as a
// heap bucket and a flush. And a Read error
// other than EOF (body too large, malformed chunking, a timeout) means the
// body's framing is lost, so the response must close the connection.
type bodyReader struct {
	w  *ResponseWriter
	r  io.Reader
	pr stages.ParkingReader // r, when its Read may wait on the client
}

func (b *bodyReader) Read(p []byte) (int, error) {
	w := b.w
	if !w.asked {
		w.asked = true
		if w.expect && !w.committed && w.err == nil && !w.broken {
			if emit(w, w.req.Interim) == nil {
				_ = w.sendOut(true, false, false)
			}
		}
	}
	var n int
	var err error
	if b.pr != nil && w.wk != nil {
		n, err = b.pr.ReadParking(p, w.wk) // waiting for body bytes gives the place back
	} else {
		n, err = b.r.Read(p)
	}
	if err != nil && err != io.EOF {
		// The body's framing is lost (too large, malformed, cut short): the
		// connection cannot carry another request, and the response should
		// say so rather than leave the client to find out.
		w.close = true
		if w.bodyErr == nil {
			w.bodyErr = err
		}
	}
	return n, err
}

// begin readies w for req, answered through resp.
func (w *ResponseWriter) begin(resp *stages.Response, req *stages.Request, now time.Time) {
	w.resp, w.req, w.now = resp, req, now
	w.status, w.committed, w.chunked, w.close, w.broken = 0, false, false, false, false
	w.declared, w.written, w.framed, w.err = -1, 0, 0, nil
	w.head = req.IsMethod("HEAD")
	w.expect = len(req.Interim) > 0 && req.HasBody()
	w.asked, w.bodyErr = false, nil
	w.rbody = bodyReader{w: w, r: req.Body}
	w.rbody.pr, _ = req.Body.(stages.ParkingReader)
	w.nfilters, w.framing, w.filterStarted, w.eosFramed, w.fstatus = 0, false, false, false, 0
	w.kaPinned = false
	if w.chain[0].w != w {
		// Once per writer: the positions never change, and filters
		// cannot change them (the fields are unexported). The check
		// catches a writer made or copied without them.
		for i := range w.chain {
			w.chain[i] = FilterChain{w: w, pos: i}
		}
	}
}

// end drops everything that belongs to the finished request. Chunks the
// writer may still read go to resp.Chunks until Pool.Release; the others go
// straight back to the pool.
func (w *ResponseWriter) end() {
	w.lendRest()
	w.dropBody()
	w.lendSpares()
	clear(w.out)
	w.out = w.out[:0]
	w.hdr.reset()
	w.dropTrailer()
	clear(w.holds)
	w.holds = w.holds[:0]
	clear(w.filters[:w.nfilters])
	w.nfilters = 0
	w.resp, w.req, w.rbody = nil, nil, bodyReader{}
}

// Header returns the response header set. See Header for its lifetime.
// Date and Server are added unless set; setting either to "" suppresses it.
func (w *ResponseWriter) Header() *Header { return &w.hdr }

// Trailer returns the trailer fields: set them before the handler
// returns, and they follow the body (RFC 9110, 6.5). A handler that calls
// Trailer before WriteHeader (or its first Write) gets a chunked body
// whatever its size, so that there is somewhere to send them, unless it
// set a Content-Length; after that, they are sent only if the body is
// chunked already. They are dropped for HEAD, for HTTP/1.0 clients, for
// statuses without a body, and when a panic or a failed request body
// replaces the response. Fields that must not be trailers (Content-Length,
// Host, Authorization and the rest of net/http's list) are dropped.
// Announce them with a Trailer header if the client needs to know in
// advance. See Header for the lifetime of what is set.
func (w *ResponseWriter) Trailer() *Header {
	w.trailers = true
	return &w.trailer
}

// dropTrailer forgets the trailer: the response is recycled, or replaced.
func (w *ResponseWriter) dropTrailer() {
	w.trailer.reset()
	w.trailers = false
}

// Status returns the status code set so far (0 before WriteHeader or Write).
func (w *ResponseWriter) Status() int { return w.status }

// Written returns the number of body bytes written so far (for HEAD: the
// bytes the body would have had), whether or not any has left the worker.
func (w *ResponseWriter) Written() int64 { return w.written }

// Committed reports whether the final status line and header block are in
// the response stream: from then on the status and header cannot change,
// and a failure can only cut the response short. Until then everything the
// handler wrote is held back by the worker (a body of up to 64 KiB, unless
// it flushes) and can still be replaced by another answer, as the pool
// does with a 500 for a panic, or with the body's error status (408, 413,
// 400) when the request body failed. Committed says nothing about what has
// reached the client: the writer may still be sending bytes committed
// long ago.
func (w *ResponseWriter) Committed() bool { return w.committed }

// WriteHeader sets the response status. Codes 100-199 other than 101 are
// interim responses: they are sent at once with the current header set
// (103 Early Hints, say), and a final status follows. Calls after the final
// status has been set do nothing. An invalid code (outside 100-999) panics,
// as in net/http, which makes the worker answer 500.
func (w *ResponseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic("quartet: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.status != 0 || w.broken {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.interim(code)
		return
	}
	if w.filtering() {
		// Filters may still change status and header: the framing code
		// applies them when the first bucket reaches it.
		if w.fstatus == 0 {
			w.fstatus = code
		}
		return
	}
	w.status = code
	if v, ok := w.hdr.lookup("Content-Length"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil && n >= 0 {
			w.declared = n
		} else {
			w.hdr.Del("Content-Length") // not a length: do not send it
		}
	}
	w.hdr.frozen = true
}

// interim sends a 1xx response. HTTP/1.0 clients do not know 1xx (RFC 9110
// §15.2), so they get none.
func (w *ResponseWriter) interim(code int) {
	if w.req.Minor < 1 || w.err != nil {
		return
	}
	if code == http.StatusContinue {
		if !w.expect || w.asked {
			return // nobody is waiting for it
		}
		w.asked = true
	}
	b := http1.AppendStatusLine(w.hdrBuf[:0], w.req.Minor, code)
	w.hdr.Visit(func(name, value string) bool {
		b = appendField(b, name, value)
		return true
	})
	w.emitHead(append(b, "\r\n"...))
	if w.err == nil {
		_ = w.sendOut(true, false, false)
	}
}

// Write queues p as body bytes; p is copied, so the caller may reuse it at
// once. It blocks while the client is more than Config.HighWater behind, and
// returns stages.ErrAborted once the writer has given up on the connection
// (stop producing), stages.ErrWriteTimeout if the client stopped reading.
func (w *ResponseWriter) Write(p []byte) (int, error) { return write(w, p) }

// WriteString is Write for a string, without converting it.
func (w *ResponseWriter) WriteString(s string) (int, error) { return write(w, s) }

func write[S string | []byte](w *ResponseWriter, p S) (int, error) {
	if w.filtering() {
		return filterWrite(w, p)
	}
	if err := w.startBody(int64(len(p))); err != nil {
		return 0, err
	}
	if w.head || len(p) == 0 {
		return len(p), nil
	}
	if !w.committed {
		if w.bodyHeap+int64(len(p)) <= w.p.bufferLimit {
			buffer(w, p)
			return len(p), nil
		}
		if err := w.commitEarly(); err != nil {
			return 0, err
		}
	}
	if w.chunked {
		w.chunkHeader(int64(len(p)))
	}
	emit(w, p)
	if w.chunked {
		w.chunkEnd()
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// startBody does the checks every body write shares and counts n bytes.
func (w *ResponseWriter) startBody(n int64) error {
	if w.err != nil {
		return w.err
	}
	if w.resp.Aborted() {
		w.fail(stages.ErrAborted)
		return w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return ErrBodyNotAllowed
	}
	if w.declared >= 0 && w.written+n > w.declared {
		return ErrContentLength
	}
	w.written += n
	return nil
}

// SendFile queues n bytes of f from offset off; the writer sends them with
// sendfile(2), never through user-space memory, and never moves f's file
// position. f must stay open until the writer has sent the region, which is
// usually after the handler returns: hand the closing to the response with
// OnRecycle(CloseFile(f)), keep f open in a cache of open files, or call
// WaitSent before closing it.
func (w *ResponseWriter) SendFile(f *os.File, off, n int64) error {
	if n <= 0 {
		return nil
	}
	if w.filtering() {
		return w.filterSendFile(f, off, n)
	}
	if err := w.startBody(n); err != nil {
		return err
	}
	if w.head {
		return nil
	}
	b := stages.Bucket{Kind: stages.BucketFile, File: f, Off: off, Len: n}
	if !w.committed {
		w.body = append(w.body, b)
		w.bodyLen += n
		return nil
	}
	if w.chunked {
		w.chunkHeader(n)
	}
	w.seal()
	w.queue(b)
	if w.chunked {
		w.chunkEnd()
	}
	// No high-water wait: the file bytes take no memory, and a handler
	// serving a large file should not wait for it to reach the client.
	return w.sendOut(false, false, false)
}

// Flush sends the header block (committing to chunked coding, or a close-
// delimited body for HTTP/1.0, unless a Content-Length was set) and every
// body byte written so far to the writer, with a BucketFlush.
func (w *ResponseWriter) Flush() error {
	if w.err != nil {
		return w.err
	}
	if w.filtering() {
		return w.enter(stages.Bucket{Kind: stages.BucketFlush})
	}
	if !w.committed {
		if err := w.commitEarly(); err != nil {
			return err
		}
	}
	return w.sendOut(true, false, true)
}

// WaitSent flushes and then blocks until the writer has put every byte
// queued so far on the wire (or the write timeout passes). Call it before
// closing a file given to SendFile.
func (w *ResponseWriter) WaitSent() error {
	if err := w.Flush(); err != nil {
		return err
	}
	if w.inline {
		return ErrWouldBlock
	}
	if err := w.resp.WaitDrained(0, w.p.cfg.WriteTimeout, w.parker()); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

// Hold queues a point in the response that the writer will not pass until
// the returned Hold is released (from any goroutine): bytes queued before it
// are written, bytes queued after it wait. Body written before the header
// block is committed stays behind the hold with the header block, so a
// handler can hold the whole header until an RDMA transfer completes.
func (w *ResponseWriter) Hold() *stages.Hold {
	h := stages.NewHold(w.resp)
	if w.err != nil {
		return h
	}
	w.holds = append(w.holds, h)
	if w.filtering() {
		_ = w.enter(stages.Bucket{Kind: stages.BucketHold, Hold: h})
		return h
	}
	w.holdBucket(h)
	return h
}

// holdBucket puts h in the stream: the writer stops there until released.
func (w *ResponseWriter) holdBucket(h *stages.Hold) {
	w.seal()
	w.queue(stages.Bucket{Kind: stages.BucketHold, Hold: h})
	_ = w.sendOut(false, false, false)
}

// bodyAllowed reports whether a response with this status may carry content
// (RFC 9110 §6.4.1).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// buffer appends p to the body held back before commit.
func buffer[S string | []byte](w *ResponseWriter, p S) {
	w.bodyHeap += int64(len(p))
	w.bodyLen += int64(len(p))
	for len(p) > 0 {
		n := len(w.body)
		if n == 0 || w.body[n-1].Kind != stages.BucketHeap || len(w.body[n-1].Data) == cap(w.body[n-1].Data) {
			w.body = append(w.body, stages.Bucket{Kind: stages.BucketHeap, Data: w.getChunk()})
			n++
		}
		b := &w.body[n-1]
		k := copy(b.Data[len(b.Data):cap(b.Data)], p)
		b.Data = b.Data[:len(b.Data)+k]
		p = p[k:]
	}
}

// getChunk takes one of the writer's spare chunks, or one from the pool.
func (w *ResponseWriter) getChunk() []byte {
	if w.nspares > 0 {
		w.nspares--
		b := w.spares[w.nspares]
		w.spares[w.nspares] = nil
		return b
	}
	return w.p.getChunk()
}

// putChunk gives back a chunk nothing else reads any more. A writer
// keeps two for its response (the body written before the header block
// is known, and the block), as the pool's Get and Put for them cost more
// than the rest of a small body's way. An inline server's writer keeps
// them for its next response too; its chunks come back on its own
// goroutine (InlineServer.Keep). A worker's writer hands what it kept to
// the response record as it ends (end), as a thousand workers would hold
// 32 MiB between them, and takes the record's when it begins (response).
func (w *ResponseWriter) putChunk(b []byte) {
	if w.nspares < len(w.spares) && cap(b) == chunkSize {
		w.spares[w.nspares] = b[:0]
		w.nspares++
		return
	}
	w.p.putChunk(b)
}

// response takes the record to fill: the one an inline server kept, or
// one from the runtime, whose spare chunks (Pool.Release) become the
// writer's.
func (w *ResponseWriter) response() *stages.Response {
	if r := w.kept; r != nil {
		w.kept = nil
		return r
	}
	r := w.p.responses()
	for i, b := range r.Chunks {
		w.putChunk(b)
		r.Chunks[i] = nil
	}
	r.Chunks = r.Chunks[:0]
	return r
}

// lendSpares gives a worker's spare chunks to the response it ends, for
// the next worker that takes the record (see putChunk).
func (w *ResponseWriter) lendSpares() {
	if w.inline {
		return
	}
	for i := range w.nspares {
		w.resp.Chunks = append(w.resp.Chunks, w.spares[i])
		w.spares[i] = nil
	}
	w.nspares = 0
}

func (w *ResponseWriter) dropBody() {
	for i := range w.body {
		if w.body[i].Kind == stages.BucketHeap {
			w.putChunk(w.body[i].Data)
		}
	}
	clear(w.body)
	w.body = w.body[:0]
	w.bodyHeap, w.bodyLen = 0, 0
}

// fail records the first error that ends the response's production.
func (w *ResponseWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}
