package stages

import (
	"errors"
	"time"
)

// The protocol seam (issue 17): what a protocol must say for the four
// stages to serve it, so that the stages know no protocol's wire format.
// A listener marks each connection it accepts with its protocol
// (Conn.Protocol), an index in the server's protocol table. The reader
// parses that connection's requests with the protocol's FrameParser,
// which also plans the body (read whole before dispatch, or streamed to
// the handler, through a decoder if the protocol codes it), and answers
// what it cannot dispatch with the protocol's Reject. A processor hands
// each request to the protocol's Serve, or, for a HandlerProtocol, runs
// the server's Handler. The writer sends the buckets it is given and
// knows no protocol at all.
//
// HTTP/1.1 (package protocol/http1) is one implementation, entry
// ProtocolHTTP1 of the table; the messenger (protocol/msg) is another.
//
// Depth: by default one request of a connection is in the stages at a
// time. The reader parses a connection's next request only once the
// writer has handed the connection back, so replies leave in request
// order and never interleave on the wire; requests the client pipelines
// wait in the reader's buffer (and the socket) meanwhile. HTTP/1.1 works
// so (in-order pipelining).
//
// A Pipelined protocol lets a connection have several requests in flight:
// the reader goes on parsing while earlier requests run, up to the
// protocol's window, each dispatched request taking its read buffer with
// it (the rest of the bytes move to a fresh one). Replies leave as they
// are ready, unless a request's head says it may not overtake
// (Head.Overtake false): such a request is dispatched only once every
// earlier one of its connection is answered, so its reply follows theirs.
// The writer loop of the connection writes one reply at a time and queues
// the others behind it, so replies never interleave. The connection's fd
// is closed only once no request of it is in flight, as always.

// ProtocolID names the protocol a connection speaks: its index in the
// server's protocol table, chosen per listener and set on the Conn at
// accept.
type ProtocolID uint8

// ProtocolHTTP1 is HTTP/1.1, the zero value, so a connection nobody marked
// speaks it: entry 0 of every protocol table.
const ProtocolHTTP1 ProtocolID = 0

// Protocol is a request/reply protocol served on the stages.
type Protocol interface {
	// NewParser returns a parser for requests of this protocol. The
	// reader calls it on its loop's goroutine when a request record
	// first serves a connection of this protocol, and keeps the parser
	// with that record (pooled per loop, held by a connection only while
	// it has a request in hand), so idle connections hold none.
	NewParser() FrameParser

	// Serve answers req through resp, on a processor. It takes over the
	// producer's side of resp (Response.Begin has run): Serve, or the
	// reply it starts, appends the reply and an EOS bucket and then calls
	// resp.Done, once, from any goroutine, now or after Serve has
	// returned. It must set resp.KeepAlive (false closes the connection
	// after the reply) and set the connection's phase to PhaseWriting
	// before Done. The caller touches neither req nor resp once Serve is
	// called. req and its byte slices (BodyBytes, and what Frame points
	// to) stay valid until resp is recycled. A HandlerProtocol's Serve is
	// never called.
	Serve(resp *Response, req *Request)

	// Wait returns once every reply that Serve started has been handed to
	// the writer (appended with its EOS). The runtime calls it when the
	// processors have stopped and before it stops the writer loops, as it
	// waits for handlers still running: a reply that arrived after the
	// writers had gone would never be written, and its connection never
	// handed back. Like a handler that never returns, a reply that never
	// comes holds the shutdown, unless the protocol is an Abandoner.
	Wait()

	// Reject frames the answer to a request the stages will not serve,
	// on the goroutine that refuses it (a reader loop, or the one that
	// sheds load): why.Err is the parser's error or one of the stages'
	// (ErrHeadTimeout, ErrHeadTooLarge, ErrBodyTooLarge, ErrOverloaded),
	// and req is as far as it was parsed (req.Frame may be nil; the
	// fields a parser fills may be partly filled). Every refusal of every
	// protocol comes here, so the stages never frame an answer
	// themselves. It must not keep req.
	Reject(req *Request, why Refusal) Rejection
}

// Refusal is why the stages refuse a request (Protocol.Reject).
type Refusal struct {
	Err error
	// RetryAfter is, for ErrOverloaded, how many seconds admission
	// control suggests the client wait before sending it again (HTTP's
	// Retry-After); zero otherwise.
	RetryAfter int64
	Now        time.Time // the refusing goroutine's clock, for a Date
	// Closing: the server is shutting down and closes the connection
	// after the answer whatever Rejection.KeepAlive says, so an answer
	// that can tell the client (HTTP's Connection: close) should.
	Closing bool
}

// Rejection is a protocol's answer to a refused request (Protocol.Reject).
type Rejection struct {
	// Frame is sent as it is and never changed after: a protocol may
	// hand out the same bytes to many refusals (a cached 503), so under
	// overload shedding need not allocate. Nil sends nothing.
	Frame []byte
	// Head is how many of Frame's bytes are head, not body, for the
	// access log.
	Head int
	// Status is the answer's code for the log and the counters (HTTP's
	// status), 0 when the protocol has none to say.
	Status int
	// KeepAlive says whether the connection carries on (a refusal of one
	// request whose framing is intact, such as a shed one) or closes
	// after the frame (the stream is lost).
	KeepAlive bool
}

// Abandoner is a Protocol whose replies may come after Serve returned
// and that can give up on those still to come: the runtime calls Abandon
// when a shutdown's grace is over, and from then on the protocol's Wait
// no longer waits for a reply its dispatcher may never send. (A handler
// still running is another matter: Go cannot stop it, and Wait waits for
// it to return.)
type Abandoner interface {
	Protocol
	Abandon()
}

// InlineProtocol is a Protocol some of whose requests may be served on
// the reader loop that read them, without the hand-offs to a processor
// and back (stage fusion), as HTTP requests whose handler declares it
// never blocks are. ServesInline runs on the reader loop for each request
// dispatched with no other request of its connection in flight; true
// promises that Serve(resp, req) never blocks and has appended the whole
// reply (EOS) and called resp.Done by the time it returns, so the loop
// can write the reply itself.
type InlineProtocol interface {
	Protocol
	ServesInline(req *Request) bool
}

// HandlerProtocol is a Protocol whose requests the processors answer by
// running the server's Handler instead of calling Serve: HTTP/1.1, whose
// handler API (processor.ResponseWriter, and net/http's through its
// adapter) frames the reply as the handler writes it, and needs the
// processor's worker to park, time out and recover a handler. The method
// only marks the protocol; it is never called.
type HandlerProtocol interface {
	Protocol
	RunsHandlers()
}

// FrameParser parses one connection's requests in place. A reader loop
// calls it on its own goroutine, for one connection at a time.
type FrameParser interface {
	// Head parses the head of the next request from the start of buf,
	// the connection's buffered bytes, into req, and says how big the
	// head is and what body follows it. It may keep a decoded head of
	// its own (req.Frame, valid until the next Head or Reset) or point
	// req's fields into buf (then Head.Aliases). ErrNeedMore, with
	// nothing consumed, asks for more bytes and the same call again on
	// the same bytes and more: a parser may remember how far it scanned,
	// so a head that trickles in costs O(n) in all. Any other error is
	// final: the reader answers it with Protocol.Reject and closes the
	// connection after. It must not keep buf, and it bounds what it
	// parses itself: the reader buffers at most its MaxHeadBytes for a
	// head, then refuses it with ErrHeadTooLarge.
	Head(buf []byte, req *Request) (Head, error)

	// Reset readies the parser for another connection, or for the same
	// bytes once again after the reader has moved them (Head.Aliases).
	Reset()
}

// Head is a parsed request head (FrameParser.Head).
type Head struct {
	Size int      // bytes of the head; its body, or the next request, starts at buf[Size:]
	Body BodyPlan // the body that follows it
	// Aliases says req's fields point into buf (HTTP/1.1's do: zero
	// copy). The reader then never moves the bytes under them: when the
	// body to read before dispatch does not fit behind the head, it
	// moves the bytes to a larger buffer, Resets the parser and parses
	// the head again there. A head decoded into the parser's own record
	// (req.Frame) is moved freely.
	Aliases bool
	// Overtake says the reply may leave before the replies to earlier
	// requests of the connection (and be overtaken by later ones): the
	// messenger's unordered flag. Only a Pipelined protocol's heads are
	// asked; a request that may not overtake waits to be dispatched
	// until every earlier one is answered.
	Overtake bool
	// Key names the request among its connection's requests in flight
	// (the messenger's transaction id), for a Pipelined protocol whose
	// replies are matched to requests by it: a request whose key is
	// already in flight is refused with ErrDuplicateKey, as a parse
	// error is. 0: the request has no key.
	Key uint64
}

// Pipelined is a Protocol whose connections may have several requests in
// flight at once (see Depth, above).
type Pipelined interface {
	Protocol
	// Window bounds a connection's requests in flight: at most requests
	// of them, holding at most bytes of request (head and body) between
	// them, except that one request is always let through, whatever its
	// size. Asked once, when the stages start.
	Window() (requests int, bytes int64)
}

// BodyKind is how a request's body is framed on the wire, which decides
// how the reader reads it.
type BodyKind uint8

const (
	// BodyNone: nothing follows the head; req.Body reads EOF.
	BodyNone BodyKind = iota
	// BodyWhole: Length bytes follow, read whole into the connection's
	// buffer before dispatch however large they are (req.BodyBytes, and
	// req.Body over them): for a protocol whose parser bounds its bodies
	// itself and whose replies may alias them.
	BodyWhole
	// BodyLength: Length bytes follow. The reader reads them before
	// dispatch when they are at most its PrereadBody and the client is
	// not waiting (Await), so a slow client never holds a processor;
	// otherwise it streams them to the handler through req.Body, with
	// back-pressure. More than its MaxBodyBytes is refused before
	// dispatch with ErrBodyTooLarge.
	BodyLength
	// BodyDecoded: a body of unknown length, coded on the wire (HTTP's
	// chunked coding): streamed through Decoder until it says done. Past
	// MaxBodyBytes decoded, req.Body fails with ErrBodyTooLarge.
	BodyDecoded
)

// BodyPlan is what a head says of its body (Head.Body).
type BodyPlan struct {
	Kind    BodyKind
	Length  int64       // BodyWhole, BodyLength
	Decoder BodyDecoder // BodyDecoded: owned by the parser, valid until its next Head or Reset
	// Await: the client sends the body only once told to (HTTP's
	// Expect: 100-continue). The reader never waits for such a body
	// before dispatch, and holds the client to the minimum body rate
	// only from its first byte.
	Await bool
	// Interim is what tells an awaiting client to send the body (HTTP's
	// "100 Continue"): the reader hands it on in Request.Interim, and the
	// processor sends it before the handler's first Read of the body,
	// not before, so a handler that answers without reading (a 401, a
	// 413) spares the client the upload. Owned by the protocol, never
	// changed.
	Interim []byte
}

// BodyDecoder decodes a coded body as its bytes arrive (BodyDecoded). The
// reader calls it on its loop's goroutine, with the pipe's lock held.
type BodyDecoder interface {
	// Decode consumes coded bytes from src and writes body bytes to dst,
	// which may alias src (decoding in place): output never runs ahead
	// of input. It returns the bytes consumed and produced, and done once
	// the body has ended (bytes after it, such as a pipelined request,
	// are left unconsumed). It resumes wherever the last call stopped.
	// An error is final: the body's framing is lost, req.Body fails with
	// it, and the connection closes after the response.
	Decode(dst, src []byte) (consumed, produced int, done bool, err error)
}

// Errors the stages hand to Protocol.Reject.
var (
	// ErrNeedMore is returned by FrameParser.Head while buf holds less
	// than a whole head. It is not a failure.
	ErrNeedMore = errors.New("quartet: request head incomplete")

	// ErrHeadTimeout: a request's head and body were not all received
	// within the header timeout (HTTP's 408).
	ErrHeadTimeout = errors.New("quartet: request not received in time")

	// ErrHeadTooLarge: a request's head outgrew the most the reader
	// buffers for one (HTTP's 431). A parser that bounds its heads
	// itself says so first, with its own error.
	ErrHeadTooLarge = errors.New("quartet: request head too large")

	// ErrOverloaded: admission control refused the request, which was
	// not run and may be sent again later (HTTP's 503).
	ErrOverloaded = errors.New("quartet: server overloaded; request not run")

	// ErrDuplicateKey: a request of a Pipelined protocol came with the
	// Key of a request of its connection still in flight, so their
	// replies could not be told apart. Final, like a parse error.
	ErrDuplicateKey = errors.New("quartet: request key already in flight on the connection")
)

// Errors a request body's Read returns when the stages, not the client's
// framing, end it. They say what happened and nothing about any
// protocol's answer: a protocol maps them to its own (HTTP/1.1's
// http1.StatusOf gives 413, 408, 408 and 400).
var (
	// ErrBodyTooLarge: the body passed the reader's MaxBodyBytes (a
	// streamed body; a declared length over the limit is refused before
	// dispatch).
	ErrBodyTooLarge = errors.New("quartet: request body too large")

	// ErrBodyTimeout: the client sent nothing for the body timeout.
	ErrBodyTimeout = errors.New("quartet: timed out waiting for the request body")

	// ErrBodyTooSlow: the client sent the body slower than the minimum
	// rate once its grace had passed (Apache mod_reqtimeout's MinRate).
	ErrBodyTooSlow = errors.New("quartet: request body arrived slower than the minimum rate")

	// ErrBodyClosed: the body was read after the response had finished;
	// the handler has no business reading it any more.
	ErrBodyClosed = errors.New("quartet: request body read after the response finished")
)
