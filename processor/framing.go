package processor

import (
	"net/http"
	"strconv"

	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// This file turns the handler's calls into bytes and buckets: the header
// block, body framing (Content-Length, chunked, close-delimited), and the
// hand-off to the writer with the high-water wait.

// emit copies p into the stream. A full chunk is sealed and handed to the
// writer at once, so that the bytes the worker holds back never exceed one
// chunk and a long Write feels back-pressure chunk by chunk.
func emit[S string | []byte](w *ResponseWriter, p S) error {
	if w.sink != nil {
		// Rendering an Alternative: the bytes are not part of the stream.
		*w.sink = append(*w.sink, p...)
		return nil
	}
	for len(p) > 0 {
		if w.err != nil {
			return w.err
		}
		if len(w.cur) == cap(w.cur) {
			if err := w.nextChunk(); err != nil {
				return err
			}
		}
		n := copy(w.cur[len(w.cur):cap(w.cur)], p)
		w.cur = w.cur[:len(w.cur)+n]
		p = p[n:]
	}
	return w.err
}

func (w *ResponseWriter) emitString(s string) error { return emit(w, s) }

// nextChunk replaces a full (or missing) cur with a chunk from the pool,
// after handing the full one to the writer and returning the chunks the
// writer has finished with.
func (w *ResponseWriter) nextChunk() error {
	if w.cur != nil {
		if err := w.sendOut(false, false, true); err != nil {
			return err
		}
		if w.lent {
			w.retire(w.cur)
		} else {
			w.putChunk(w.cur) // full and never lent: cannot happen, but be tidy
		}
	}
	w.reclaim()
	w.cur, w.start, w.lent = w.getChunk(), 0, false
	return nil
}

// seal moves the unsealed bytes of cur into a heap bucket on out.
func (w *ResponseWriter) seal() {
	if len(w.cur) == w.start {
		return
	}
	w.lent = true
	end := len(w.cur)
	w.queue(stages.Bucket{Kind: stages.BucketHeap, Data: w.cur[w.start:end:end]})
	w.start = end
}

// queue puts b on out and advances the stream position past it.
func (w *ResponseWriter) queue(b stages.Bucket) {
	w.out = append(w.out, b)
	w.queued += b.Size()
}

// Chunk reuse within a response.
//
// A chunk lent to the writer could simply wait in resp.Chunks until the
// response is recycled, but then a long response (a 1 GiB download) would
// hold all of its chunks, every byte it ever sent, until its last byte:
// memory proportional to the response instead of to the high-water mark.
// So the worker takes chunks back while it produces. The writer reports
// bytes with Response.Sent only after writev has returned them, and sends
// the stream in order, so every byte before stream position
// appended-Unsent() is finished with: a retired chunk (one the worker
// stopped filling) whose last byte lies before that position goes back to
// the pool at once. Only the chunks still unsent, at most HighWater plus a
// chunk's worth, are left to Pool.Release.

type retiredChunk struct {
	buf []byte // the whole chunk, from its first byte
	end int64  // stream position just past its last byte
}

// retire records that the worker will write no more into buf, which is
// lent to the writer up to the current stream position.
func (w *ResponseWriter) retire(buf []byte) {
	w.retired = append(w.retired, retiredChunk{buf: buf[:0:cap(buf)], end: w.queued})
}

// reclaim returns the retired chunks the writer has sent to the pool.
func (w *ResponseWriter) reclaim() {
	if w.rhead == len(w.retired) {
		return
	}
	sent := w.appended - w.resp.Unsent()
	for w.rhead < len(w.retired) && w.retired[w.rhead].end <= sent {
		w.p.putChunk(w.retired[w.rhead].buf)
		w.retired[w.rhead] = retiredChunk{}
		w.rhead++
	}
	if w.rhead == len(w.retired) {
		w.retired, w.rhead = w.retired[:0], 0
	}
}

// lendRest gives the response every chunk it may still be reading, for
// Pool.Release to return when the response is recycled. The worker calls it
// last, before Done.
func (w *ResponseWriter) lendRest() {
	for i := w.rhead; i < len(w.retired); i++ {
		w.resp.Chunks = append(w.resp.Chunks, w.retired[i].buf)
	}
	clear(w.retired)
	w.retired, w.rhead = w.retired[:0], 0
	if w.cur != nil {
		if w.lent {
			w.resp.Chunks = append(w.resp.Chunks, w.cur[:0:cap(w.cur)])
		} else {
			w.putChunk(w.cur)
		}
	}
	w.cur, w.start, w.lent = nil, 0, false
	w.queued, w.appended = 0, 0
}

// sendOut hands everything sealed (and cur's unsealed bytes) to the writer,
// with a BucketFlush and/or the BucketEOS when asked. With wait, it then
// applies the high-water mark: if the client is more than HighWater behind,
// block until it is at most LowWater behind. The EOS append never waits: the
// worker is done and should move on to the next request.
func (w *ResponseWriter) sendOut(flush, eos, wait bool) error {
	w.seal()
	if flush {
		w.queue(stages.Bucket{Kind: stages.BucketFlush})
	}
	if eos {
		w.queue(stages.Bucket{Kind: stages.BucketEOS})
	}
	if len(w.out) == 0 {
		return w.err
	}
	heap := false
	for i := range w.out {
		if w.out[i].Kind == stages.BucketHeap {
			heap = true
			break
		}
	}
	err := w.resp.Append(w.out...)
	clear(w.out)
	w.out = w.out[:0]
	if err != nil {
		w.fail(err)
		return err
	}
	w.appended = w.queued
	if wait && heap && !w.inline && w.resp.Unsent() > w.p.cfg.HighWater {
		if err := w.resp.WaitDrained(w.p.cfg.LowWater, w.p.cfg.WriteTimeout, w.parker()); err != nil {
			w.fail(err)
			return err
		}
	}
	return nil
}

// appendField appends one header line, dropping invalid names and
// blanking CR, LF and NUL in values, so that a handler cannot split the
// response.
func appendField(dst []byte, name, value string) []byte {
	if !http1.ValidFieldName(name) {
		return dst
	}
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	if !http1.UnsafeFieldValue(value) {
		dst = append(dst, value...)
	} else {
		for i := 0; i < len(value); i++ {
			c := value[i]
			if c == '\r' || c == '\n' || c == 0 {
				c = ' '
			}
			dst = append(dst, c)
		}
	}
	return append(dst, "\r\n"...)
}

// maxKeptHead bounds the header scratch a writer keeps for its next
// response: one grown by an unusually large header block goes back to
// the garbage collector.
const maxKeptHead = 4 << 10

// emitHead emits a header block built in w.hdrBuf and keeps the scratch
// for the next one.
func (w *ResponseWriter) emitHead(b []byte) {
	emit(w, b)
	if cap(b) > maxKeptHead {
		b = nil
	}
	w.hdrBuf = b[:0]
}

// chunkHeader, chunkEnd and lastChunk write chunked coding's framing and
// count it, so that the log can tell body bytes from wire bytes.
func (w *ResponseWriter) chunkHeader(n int64) {
	line := http1.AppendChunkHeader(w.num[:0], n)
	w.framed += int64(len(line))
	emit(w, line)
}

func (w *ResponseWriter) chunkEnd() {
	w.framed += int64(len(http1.ChunkEnd))
	w.emitString(http1.ChunkEnd)
}

func (w *ResponseWriter) lastChunk() {
	if !w.trailers || len(w.trailer.fields) == 0 {
		w.framed += int64(len(http1.LastChunk))
		w.emitString(http1.LastChunk)
		return
	}
	b := append(w.hdrBuf[:0], "0\r\n"...)
	for i := range w.trailer.fields {
		if f := &w.trailer.fields[i]; !f.dead && !forbiddenTrailer(f.name) {
			b = appendField(b, f.name, f.value)
		}
	}
	b = append(b, "\r\n"...)
	w.framed += int64(len(b))
	w.emitHead(b)
}

// forbiddenTrailer reports whether a field must not be sent as a trailer:
// framing, routing, authentication and the like, which a recipient would
// act on too late (net/http's list, RFC 9110, 6.5.1).
func forbiddenTrailer(name string) bool {
	for _, f := range [...]string{"Authorization", "Cache-Control", "Connection", "Content-Encoding",
		"Content-Length", "Content-Range", "Content-Type", "Expect", "Host", "Keep-Alive",
		"Max-Forwards", "Pragma", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
		"Range", "Realm", "Te", "Trailer", "Transfer-Encoding", "Www-Authenticate"} {
		if stages.EqualFoldASCII(name, f) {
			return true
		}
	}
	return false
}

// keepAlive decides whether the connection may carry another request.
func (w *ResponseWriter) keepAlive() bool {
	switch {
	case w.close, w.broken, w.err != nil:
		return false
	case w.kaPinned:
		return true // an Alternative promised keep-alive: both framings agree
	case w.p.draining.Load():
		return false // graceful shutdown: let clients go to another server
	case !w.req.KeepAlive():
		return false
	case w.expect && !w.asked:
		// The client may be waiting for 100 Continue before it sends the
		// body, or may send it anyway: the bytes after this response are
		// unknowable, so the connection cannot carry another request.
		return false
	case w.uploadGoesOn():
		return false
	}
	if v, ok := w.hdr.lookup("Connection"); ok && stages.ListHasToken(v, "close") {
		return false
	}
	return true
}

// uploadGoesOn reports whether the request body may have more still to
// come than the reader throws away after the response
// (stages.IncomingBody): a counted body with more than DiscardLimit
// left, or a chunked one whose end has not arrived. The connection closes
// after this response, which says so. A chunked body's rest is unknown:
// promised keep-alive and then closed when the rest turned out long, a
// client that had finished sending (the socket buffers hold megabytes)
// would send its next request on a connection we had closed.
func (w *ResponseWriter) uploadGoesOn() bool {
	if !w.req.HasBody() {
		return false // most requests: no interface look-up per response
	}
	b, ok := w.req.Body.(stages.IncomingBody)
	if !ok {
		return false
	}
	n, known := b.Incoming()
	return !known || n > stages.DiscardLimit
}

// commit writes the final status line and header block into the stream.
// final means the handler has returned, so the buffered body is all of it
// and its length is known.
func (w *ResponseWriter) commit(final bool) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.committed = true
	w.hdr.frozen = true
	st := w.status
	ka := w.keepAlive()
	length := int64(-1)
	switch {
	case !bodyAllowed(st):
		if st == http.StatusNotModified {
			length = w.declared // the length of the representation, if told
		}
		if st == http.StatusSwitchingProtocols {
			ka = false // there is nobody to switch to: the writer owns the socket
		}
	case w.declared >= 0:
		length = w.declared
	case w.trailers && !w.head && w.req.Minor >= 1:
		w.chunked = true // the trailer goes after the last chunk
	case final && (!w.head || w.written > 0):
		// A HEAD handler that wrote nothing probably skipped the body on
		// purpose: "Content-Length: 0" would be a lie, so send none.
		length = w.written
	case w.head:
	case w.req.Minor >= 1:
		w.chunked = true
	default:
		ka = false // HTTP/1.0 without a length: the close delimits the body
	}
	w.close = !ka
	// Published before the first header byte is appended, so the writer
	// may log it even for a response it aborts before EOS.
	w.resp.Status = st
	w.headerBlock(st, &w.hdr, length, ka)
	// Everything in the stream so far, interim responses included, is
	// header: the log takes it from the bytes sent to find the body's.
	w.resp.HeaderBytes = w.queued + int64(len(w.cur)-w.start)
}

// headerBlock writes a final status line and header block: hdr's fields
// except the framing ones, Date and Server unless hdr sets them (to ""
// to suppress), then Content-Length (length >= 0) or chunked coding, and
// Connection as ka says. commit and Alternative.Render share it, so an
// alternative response is framed exactly as the real one would be.
func (w *ResponseWriter) headerBlock(st int, hdr *Header, length int64, ka bool) {
	// Built whole in a scratch and emitted once: a call of emit per piece
	// cost more than the copy (about a fifth of an inline /hello's
	// instructions went into the header block).
	b := http1.AppendStatusLine(w.hdrBuf[:0], w.req.Minor, st)
	hasDate, hasServer := false, false
	for i := range hdr.fields {
		f := &hdr.fields[i]
		if f.dead {
			continue
		}
		switch {
		case stages.EqualFoldASCII(f.name, "Content-Length"),
			stages.EqualFoldASCII(f.name, "Transfer-Encoding"),
			stages.EqualFoldASCII(f.name, "Connection"):
			continue // framing is ours to decide, below
		case stages.EqualFoldASCII(f.name, "Date"):
			hasDate = true
			if f.value == "" {
				continue // an empty Date suppresses the automatic one
			}
		case stages.EqualFoldASCII(f.name, "Server"):
			hasServer = true
			if f.value == "" {
				continue
			}
		}
		b = appendField(b, f.name, f.value)
	}
	if !hasDate {
		b = append(b, "Date: "...)
		b = append(b, w.p.date.Get(w.now)...)
		b = append(b, "\r\n"...)
	}
	if !hasServer {
		b = append(b, "Server: "...)
		b = append(b, w.p.cfg.ServerName...)
		b = append(b, "\r\n"...)
	}
	if length >= 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, length, 10)
		b = append(b, "\r\n"...)
	} else if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	switch {
	case !ka:
		b = append(b, "Connection: close\r\n"...)
	case w.req.Minor == 0:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	w.emitHead(append(b, "\r\n"...))
}

// commitEarly commits before the handler has returned (a Flush, or more
// body than the buffer holds) and moves the buffered body into the stream.
func (w *ResponseWriter) commitEarly() error {
	w.commit(false)
	w.moveBody(false)
	return w.err
}

// moveBody puts the body buffered before commit into the stream, right
// after the header block. A final body that fits in the header's chunk is
// copied there, so that a small response is one heap bucket and one write;
// otherwise the buffered chunks are handed over as they are.
func (w *ResponseWriter) moveBody(final bool) {
	if w.bodyLen == 0 || w.err != nil {
		w.dropBody()
		return
	}
	if final && !w.chunked && w.bodyHeap == w.bodyLen && w.bodyHeap <= int64(cap(w.cur)-len(w.cur)) {
		for i := range w.body {
			emit(w, w.body[i].Data)
		}
		w.dropBody()
		return
	}
	if w.chunked {
		w.chunkHeader(w.bodyLen)
	}
	w.seal()
	for i := range w.body {
		b := w.body[i]
		if b.Kind == stages.BucketHeap {
			b.Data = b.Data[:len(b.Data):len(b.Data)]
			w.queue(b)
			w.retire(b.Data)
		} else {
			w.queue(b)
		}
	}
	clear(w.body)
	w.body = w.body[:0]
	w.bodyHeap, w.bodyLen = 0, 0
	if w.chunked {
		w.chunkEnd()
	}
	// Hand the body over now: it may be up to maxBuffered bytes, and the
	// high-water wait belongs here rather than after the next Write. When
	// the handler has returned (final) there is no next Write to hold back,
	// and the EOS follows at once without waiting.
	if !final {
		_ = w.sendOut(false, false, true)
	}
}

// finish completes the response after the handler has returned (or
// panicked): it commits what was not committed, terminates the framing and
// appends EOS. It never waits for the client.
func (w *ResponseWriter) finish() {
	if w.nfilters > 0 && !w.framing {
		// The handler is done: EOS goes down the chain, and whatever the
		// filters passed has been framed. From here on the framing code
		// finishes the response directly.
		if w.err == nil && !w.broken && !w.eosFramed {
			_ = w.enter(stages.Bucket{Kind: stages.BucketEOS})
		}
		w.framing = true
		if w.status == 0 && w.err == nil && !w.broken {
			code := w.fstatus
			if code == 0 {
				code = http.StatusOK
			}
			w.WriteHeader(code)
		}
	}
	if w.err != nil || w.broken {
		// Aborted, timed out, or cut short after the header block: drop
		// what is left, and end the response so the writer closes the
		// connection. (If the writer aborted, Append fails; that is fine.)
		clear(w.out)
		w.out = w.out[:0]
		w.start = len(w.cur)
		w.dropBody()
		if !w.resp.Aborted() {
			w.releaseHolds() // a hold nobody will release would stall the writer
			w.publish(w.status, false)
			_ = w.resp.Append(stages.Bucket{Kind: stages.BucketEOS})
		}
		return
	}
	if !w.committed {
		w.commit(true)
		w.moveBody(true)
	}
	if w.chunked {
		w.lastChunk()
	}
	// The handler promised more than it wrote: the client would wait for
	// the missing bytes, so only a close can end the response.
	short := w.declared >= 0 && w.written < w.declared && bodyAllowed(w.status) && !w.head
	w.publish(w.status, !w.close && !short)
	// Without wait, sendOut fails only when the writer has aborted, and
	// then it needs no EOS.
	_ = w.sendOut(false, true, false)
}

// publish sets what the writer reads once it has taken the EOS bucket. It
// is done just before that bucket is appended, not when the header block is
// built: the fields are the writer's to read only after EOS (the Append's
// mutex orders our writes before its reads), and an aborted response never
// gets them, so a writer that logs an abort must not rely on them.
func (w *ResponseWriter) publish(status int, keepAlive bool) {
	if w.resp.Status == 0 {
		// Not committed (cannot happen before EOS today); once committed,
		// Status is never written again, since an aborting writer may be
		// reading it for the log.
		w.resp.Status = status
	}
	w.resp.KeepAlive = keepAlive
	w.resp.FramingBytes = w.framed
}

func (w *ResponseWriter) releaseHolds() {
	for _, h := range w.holds {
		h.Release()
	}
}

// parker is who to tell when the handler waits on its client: its
// goroutine (a nil interface for a detached writer, never a nil pointer in
// one).
func (w *ResponseWriter) parker() stages.Parker {
	if w.wk == nil {
		return nil
	}
	return w.wk
}

// answerBodyError answers for a handler that returned (or aborted) after
// its request body failed, without having committed a response: the
// client gets the body error's status (408 for a body that stalled or
// crawled, 413 too large, 400 malformed or cut short) instead of whatever
// the handler had started, which was built on a body it never got, or
// instead of nothing at all. A handler that chose an error status itself
// keeps it. It reports whether it answered.
func (w *ResponseWriter) answerBodyError() bool {
	if w.bodyErr == nil || w.committed || w.err != nil || w.broken || w.status >= 400 {
		return false
	}
	if w.resp.Aborted() {
		return false
	}
	code := http1.StatusOf(w.bodyErr)
	w.framing = true // the error response bypasses the filters
	w.releaseHolds()
	w.dropBody()
	w.hdr.reset()
	w.dropTrailer()
	w.status, w.declared, w.written = 0, -1, 0
	w.close = true
	w.hdr.Add("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.WriteString(http.StatusText(code))
	w.WriteString("\n")
	return true
}

// recoverPanic turns a handler panic into what the client can still be
// told: a 500 when the final header block has not been handed over, a cut-
// short response otherwise. abort is net/http's ErrAbortHandler: cut short
// without a 500.
func (w *ResponseWriter) recoverPanic(abort bool) {
	if abort && w.answerBodyError() {
		return // aborted over a failed body: say why rather than cut short
	}
	w.framing = true // the error response bypasses the filters
	if !w.resp.Aborted() {
		w.releaseHolds() // the handler will not release them now
	}
	if w.committed || w.err != nil || abort {
		w.broken = true
		w.fail(errHandlerPanicked)
		return
	}
	w.dropBody()
	w.hdr.reset()
	w.dropTrailer()
	w.status, w.declared, w.written = 0, -1, 0
	w.close = true // the handler may have left the request body half read
	w.hdr.Add("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	w.WriteString("Internal Server Error\n")
}
