package stages

import (
	"io"
	"sync/atomic"
	"time"
)

// Header is one request header field. Name and Value alias the connection's
// read buffer: they are valid only until the request is recycled, which the
// writer does after the response's last byte is sent (Pane's request_rec
// lifetime). Value has leading and trailing whitespace removed.
type Header struct {
	Name  []byte
	Value []byte
}

// Request is the record the reader builds for one HTTP/1.1 request and hands
// to the processor; the writer recycles it once the response is on the wire.
//
// Byte-slice fields alias the connection's read buffer and die with the
// request. Handlers that keep any of them longer must copy.
type Request struct {
	Conn *Conn

	Method []byte // token, as sent (methods are case-sensitive)
	Target []byte // request-target, as sent
	Path   []byte // Target up to '?', still percent-encoded
	Query  []byte // after '?', without it; nil when absent
	Major  int    // HTTP major version (always 1 once parsed)
	// Minor is the HTTP minor version as sent, 0 to 9. Above 1 the request
	// is served as HTTP/1.1 (RFC 9110 §2.5), so test Minor >= 1 or
	// Minor == 0, never Minor == 1.
	Minor int

	Headers []Header // in arrival order, duplicates kept

	Host []byte // value of the Host header; nil when absent

	// Body framing, decided by the parser from the headers (RFC 9112 §6).
	ContentLength int64 // -1 when the body is chunked or absent
	Chunked       bool  // Transfer-Encoding ends in chunked
	Close         bool  // the client asked for the connection to close
	Expect100     bool  // Expect: 100-continue was sent

	// Body streams the request body; it is never nil (an empty body reads EOF).
	Body io.Reader
	// BodyBytes is the whole body when the reader read it before
	// dispatch (a framed protocol's body always is), aliasing the read
	// buffer like the other byte slices; nil otherwise. Body reads the
	// same bytes.
	BodyBytes []byte
	// Interim is the reply that tells a client waiting to send its body
	// to go on (stages.BodyPlan.Interim: HTTP's 100 Continue), which the
	// processor sends before the handler's first Read of Body; nil when
	// the client does not wait. Owned by the protocol: never changed.
	Interim []byte
	// Frame is a protocol's decoded head (Protocol, FrameParser), set
	// by its parser, which owns it; nil for HTTP/1.1, whose head is the
	// fields above, pointing into the read buffer.
	Frame any

	// Received is when the first byte of the request arrived.
	Received time.Time
	// WireBytes counts the bytes of this request read from the connection
	// so far: request line, header block, and body with its framing
	// (mod_logio's %I). The reader adds body bytes as it reads them, while
	// the handler runs, hence the atomic.
	WireBytes atomic.Int64
	// Seq numbers the requests on one connection, from 1.
	Seq uint64

	// Class is the request's class for admission control and for fair
	// scheduling between classes (ClassQueue); the runtime sets it as it
	// dispatches the request.
	Class uint8
	// Dispatched is when the reader handed the request on, by its loop's
	// clock (the turn's, advanced by the parse's own reading: no clock
	// read of its own): its queue wait runs from here, and the service of
	// a request served inline.
	Dispatched time.Time

	// Ticket is nonzero for a request in flight beside others of its
	// connection (a Pipelined protocol's): the reader went on reading
	// the connection after dispatching it, and its answer is handed
	// back on its own, by ticket (reader.Loop.Answered), not with the
	// connection. Zero: the request had the connection to itself, which
	// comes back with its answer (reader.Loop.Return).
	Ticket int32
	// Follows says other requests of the connection were in flight when
	// this one was dispatched: its answer must go through the writer loop
	// theirs go through (Conn.Writer stays), or two loops would write
	// one socket at once.
	Follows bool
}

// HasBody reports whether a body follows the header block.
func (r *Request) HasBody() bool { return r.Chunked || r.ContentLength > 0 }

// Header returns the first value of the named header (case-insensitive), or
// nil. It allocates nothing.
func (r *Request) Header(name string) []byte {
	for i := range r.Headers {
		if EqualFoldASCII(r.Headers[i].Name, name) {
			return r.Headers[i].Value
		}
	}
	return nil
}

// Reset clears r for reuse, keeping the Headers backing array.
func (r *Request) Reset() {
	h := r.Headers[:0]
	*r = Request{Headers: h, ContentLength: -1}
}

// IsMethod reports whether the request method is m.
func (r *Request) IsMethod(m string) bool { return string(r.Method) == m }

// KeepAlive reports whether the connection may carry another request after
// this one, by the rules of RFC 9112 §9.3.
func (r *Request) KeepAlive() bool {
	if r.Close {
		return false
	}
	if r.Minor >= 1 {
		return !r.connectionHas("close")
	}
	return r.connectionHas("keep-alive")
}

// connectionHas looks for a token in every Connection field, as a client
// may split the list over several lines.
func (r *Request) connectionHas(t string) bool {
	for i := range r.Headers {
		if EqualFoldASCII(r.Headers[i].Name, "Connection") && ListHasToken(r.Headers[i].Value, t) {
			return true
		}
	}
	return false
}
