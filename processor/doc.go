// Package processor is Quartet's third stage: a bounded pool of P worker
// goroutines that run handlers, which may block (a database call, a sleep, a
// slow disk), without ever touching a socket.
//
// # Writing a handler
//
// A net/http handler runs unchanged: runtime.Config{Handler: Adapt(mux)}.
// A native handler is a Handler or HandlerFunc that reads the request in
// place (package stages) and writes through the worker's ResponseWriter:
//
//	hello := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
//		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
//		w.WriteString("Hello, World!\n")
//	})
//
// Write copies its bytes, so the handler may reuse them at once; a response
// that fits the buffer gets a Content-Length, a longer or flushed one is
// chunked. The request and the ResponseWriter belong to the one request:
// copy what you keep after returning. Runnable examples are in package
// runtime.
//
// # Handlers that never block
//
// A handler that can promise, per request, that serving it waits on
// nothing (a constant answer, a file already open, a computation of a few
// microseconds) says so by implementing Inliner:
//
//	func (h *hello) Inline(r *stages.Request) bool { return true }
//
// Such a request is served on the reader loop that parsed it, and its
// response written from there (writer.Direct), so it crosses no stage
// boundary: no worker wake-up, no goroutine switch, no second core. Only
// what the socket does not take goes on to the writer loop. The price of a
// broken promise is a stalled loop, so declare only what cannot wait;
// every other request runs on a worker as below. Wrappers (middleware, a
// mux) answer for what they wrap; modules with an InsertFilter answer
// through runtime.Module.Inline.
//
// # Why a pool of blocking workers between two event loops
//
// Brian Pane's design (httpd-dev, November 2002) does "the slow part of
// request processing — network reads and writes — in an event loop for
// scalability", and "the fast part … in a one-request-per-thread mode so
// that module developers don't have to rewrite all their code as reentrant
// state machines". A worker therefore pops a parsed *stages.Request from the
// reader->processor ring, runs the handler to completion, and hands the
// response to the writer stage as it is produced. P bounds how many
// handlers run at once, so a flood of slow requests queues in the ring
// instead of multiplying goroutines; a handler that has to wait on its
// client (below) gives its place back while it waits, so that slow clients
// cannot take the pool (places.go: "Places").
//
// # How a response leaves the worker
//
// Pane: "As the Request Processor produces output brigades, it sends them to
// the Writer". The ResponseWriter is that output filter chain, minus the
// core output filter (which is writer/): it turns handler calls into
// stages.Buckets on a *stages.Response.
//
//   - Body bytes are copied into 16 KiB chunks from a per-Pool sync.Pool and
//     lent to heap buckets. The worker takes a chunk back as soon as the
//     writer reports it sent, so a long response holds about HighWater of
//     chunks, not its whole length; the few still unsent when the handler
//     returns go back through Pool.Release (resp.Chunks records them),
//     which leaves two with the record for the next response that takes
//     it, so that a small response costs no trip through the sync.Pool.
//   - Until the handler flushes, returns or exceeds a buffer limit, the body
//     is held back, because the header block that must precede it depends on
//     it: a handler that returns without flushing gets a Content-Length, and a
//     small response becomes one heap bucket (status line, headers and body
//     in one chunk), so the writer issues one write(2) for it.
//   - A handler that flushes (or writes more than the buffer limit) without
//     a declared length gets chunked transfer coding on HTTP/1.1 and a
//     close-delimited body on HTTP/1.0.
//   - Files are queued as BucketFile and sent with sendfile(2) by the writer;
//     Hold queues a BucketHold, a point the writer will not pass until the
//     hold is released (RDMA delivery completes asynchronously).
//
// # Lifetimes
//
// A response outlives its handler: the writer may still be sending it when
// the worker has moved on. Heap bytes are safe (they were copied into
// chunks); a file given to SendFile must stay open until the response is
// recycled, which OnRecycle(CloseFile(f)) arranges (the recycle function
// runs resp.RunCleanups). The net/http adapter does this for handlers that
// io.Copy from an *os.File, with a duplicate descriptor, since they close
// theirs on return.
//
// A ResponseWriter and its Header are one worker's, reused for its next
// request: a handler must not use them from another goroutine, nor after it
// returns.
//
// # Wiring
//
// New takes the reader->processor queue (a stages.ClassQueue: a ring per
// request class, popped fairly between classes) and a WorkerWaker made for
// the most places the pool will have (the readers call Pool.Wake after
// each push, which wakes an idle worker through it, or hands a place a
// parked handler left free to a goroutine), and a responses function that
// returns an idle *stages.Response made by stages.NewResponse with the
// writer's kick and a recycle function. The recycle function runs when both
// the worker (Done) and the writer (Finish) have let go; it must call
// resp.RunCleanups and then Pool.Release, which returns the chunks the
// response still holds, before the response is reused. The writer must pass
// Pool.LowWater to Response.Sent, call Sent only for bytes the kernel has
// taken (the worker reuses memory behind that point at once), and read
// Status and KeepAlive only after it has taken the EOS bucket.
//
// # Back-pressure, and waiting on the client without a place
//
// A response's Unsent count is what the handler produced and the socket has
// not taken. Once it exceeds Config.HighWater, Write blocks in
// resp.WaitDrained until the writer brings it down to Config.LowWater, so a
// slow client slows its own handler instead of growing the server's memory.
// The check happens every time a chunk is handed over, so Unsent never
// exceeds HighWater by more than one chunk (plus the buffered body when it
// is first handed over, which is capped at HighWater as well).
//
// That wait, and a Read of a streamed request body whose bytes have not
// arrived, are waits on the client: the handler parks, giving its place to
// another request, and takes a place again when the wait is over (up to
// Config.MaxParked parked handlers; beyond that one waits holding its
// place). A client that never catches up is cut off by the writer (write
// timeout, minimum rate) or the reader (body timeout, minimum body rate),
// which ends the wait with an error.
//
// A handler that returns after its request body failed, without having
// committed a response (ResponseWriter.Committed), is answered with the
// body error's status (408, 413, 400) and a close.
//
// A request whose client hung up while it waited for a place is dropped
// unanswered (the stage's Dropped counter); Adapt cancels the request's
// context when the client hangs up during the handler.
//
// # Size
//
// The number of places changes while the pool serves (SetPlaces; the
// runtime's controller calls it): new places go to parked handlers waiting
// for one, then to queued requests; a retired place's holder finishes its
// request first. Every request taken from the queue is reported back to
// it when its place is let go (ClassQueue.Finished), with its queue wait
// and its time holding a place, which is what the controller sizes the
// pool by. Goroutines left without a place (spares) exit once idle for the
// period given to RetireSpares.
//
// # Failure
//
// A handler panic is recovered in the worker, counted (the stage's Failed
// counter), logged through Config.Logger (with its stack the first time a
// place in the code panics, then at most once every 10 s with the count,
// so that a handler failing on every request does not write a stack a
// request), and answered with a 500 if the final header block was not yet
// handed to the writer; otherwise the response is cut short (no chunked
// terminator, a short Content-Length body) and the connection closed,
// which is the only honest thing left to tell the client. The worker goes
// on to the next request either way.
//
// # Allocation
//
// The native API (Handler, ResponseWriter, Header) allocates nothing per
// request once the pools and the worker's reusable arrays have warmed up.
// Adapt runs unchanged net/http handlers; it allocates what net/http's own
// server would (the *http.Request, its URL, its header map, a context). What
// it cannot offer: Hijack (the writer stage owns the socket; it returns
// ErrHijackNotSupported) and per-request write deadlines through
// http.ResponseController (WriteTimeout applies instead). Response
// trailers are sent as net/http sends them, after a chunked body
// (ResponseWriter.Trailer in the native API).
package processor
