package stages

import "errors"

// The first step of the protocol seam (issue 17): a protocol other than
// HTTP/1.1 on the same four stages. A listener marks each connection it
// accepts with its protocol (Conn.Protocol); the reader parses that
// connection's requests with the protocol's FrameParser and reads each
// request's body whole before dispatch; a processor hands each request to
// the protocol's Serve, which frames the reply into the Response's
// buckets; the writer sends them as it sends any response. HTTP/1.1 is
// still the reader's and the processor's built-in code, under
// ProtocolHTTP1; moving it behind these interfaces too is the rest of the
// seam.
//
// Depth: one request of a connection is in the stages at a time, as for
// HTTP/1.1 today. The reader parses a connection's next request only once
// the writer has handed the connection back, so replies leave in request
// order and never interleave on the wire; requests the client pipelines
// wait in the reader's buffer (and the socket) meanwhile.

// ProtocolID names the protocol a connection speaks: its index in the
// server's protocol table, chosen per listener and set on the Conn at
// accept.
type ProtocolID uint8

// ProtocolHTTP1 is HTTP/1.1, the zero value: served by the reader's and
// the processor's own code, with no entry of its own in a protocol table.
const ProtocolHTTP1 ProtocolID = 0

// Protocol is a framed request/reply protocol served on the stages: a
// binary head that says how many body bytes follow it, and one reply per
// request.
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
	// to) stay valid until resp is recycled.
	Serve(resp *Response, req *Request)

	// Wait returns once every reply that Serve started has been handed to
	// the writer (appended with its EOS). The runtime calls it when the
	// processors have stopped and before it stops the writer loops, as it
	// waits for handlers still running: a reply that arrived after the
	// writers had gone would never be written, and its connection never
	// handed back. Like a handler that never returns, a reply that never
	// comes holds the shutdown.
	Wait()

	// Reject frames the answer to a request the stages will not serve,
	// on the goroutine that refuses it (a reader loop, or the one that
	// sheds load): err is the parser's error, ErrHeadTimeout or
	// ErrOverloaded, and req is as far as it was parsed (req.Frame may
	// be nil). keepAlive says whether the connection carries on (a
	// refusal of one request) or closes after the frame (the stream is
	// lost). The frame is sent as it is and may not be changed after.
	Reject(req *Request, err error) (frame []byte, keepAlive bool)
}

// FrameParser parses one connection's requests in place. A reader loop
// calls it on its own goroutine, for one connection at a time.
type FrameParser interface {
	// Head parses the head of the next request from the start of buf,
	// the connection's buffered bytes, into req: it sets req.Frame to its
	// decoded head (owned by the parser, valid until the next Head or
	// Reset) and returns the head's size and the number of body bytes
	// that follow it, which the reader reads into the same buffer before
	// dispatch. ErrNeedMore, with nothing consumed, asks for more bytes
	// and the same call again; any other error is final, and the reader
	// answers it with Protocol.Reject. It must not keep buf.
	Head(buf []byte, req *Request) (head int, body int64, err error)

	// Reset readies the parser for another connection: the reader calls
	// it when the request record goes back to its loop's pool.
	Reset()
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
