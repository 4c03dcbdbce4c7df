package http1

import (
	"errors"

	"github.com/quartet-server/quartet/stages"
)

// statusError is a parse or framing failure that carries the HTTP status the
// server must answer with. Every sentinel below is one; StatusOf reads the
// status back, so the mapping lives next to the error and cannot drift.
type statusError struct {
	msg    string
	status int
}

func (e *statusError) Error() string { return e.msg }

// HTTPStatus is the status the server answers the error with; other stages
// read it through this method (processor answers a failed request body
// with it) without importing the reader.
func (e *statusError) HTTPStatus() int { return e.status }

func newError(status int, msg string) error { return &statusError{msg: msg, status: status} }

// ErrNeedMore is returned by Parser.Parse while the header block is not yet
// complete: read more bytes, append them to the buffer and call Parse again.
// It is not a failure and has no status. It is the stages' own
// (stages.ErrNeedMore), so the parser answers the reader in its terms.
var ErrNeedMore = stages.ErrNeedMore

// Request-line errors.
var (
	// ErrURITooLong is returned when the request line (method, target and
	// version) is longer than Limits.MaxRequestLine. Status 414.
	ErrURITooLong = newError(414, "quartet: request line too long")

	// ErrMalformedRequestLine is returned when the request line is not
	// exactly "method SP request-target SP HTTP-version" (RFC 9112 §3). Status 400.
	ErrMalformedRequestLine = newError(400, "quartet: malformed request line")

	// ErrBadMethod is returned when the method is empty or holds a byte
	// that is not a token character (RFC 9110 §9.1). Status 400.
	ErrBadMethod = newError(400, "quartet: invalid method")

	// ErrBadTarget is returned when the request-target is none of the
	// four forms of RFC 9112 §3.2 allowed for its method (asterisk-form
	// only with OPTIONS, authority-form only with CONNECT), holds a control
	// byte, a bad percent-escape in its path, or a malformed authority. Status 400.
	ErrBadTarget = newError(400, "quartet: invalid request-target")

	// ErrBadVersion is returned when the HTTP-version is not of the form
	// "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3). Status 400.
	ErrBadVersion = newError(400, "quartet: malformed HTTP version")

	// ErrVersionNotSupported is returned for a well-formed HTTP-version
	// whose major version is not 1. A higher minor version (HTTP/1.2 to
	// HTTP/1.9) is not an error: RFC 9110 §2.5 says to process it as the
	// highest minor version supported, 1.1. Status 505.
	ErrVersionNotSupported = newError(505, "quartet: HTTP version not supported")
)

// Header-section errors.
var (
	// ErrHeadersTooLarge is returned when the header block (request line,
	// field lines and any leading empty lines) exceeds Limits.MaxHeaderBytes
	// or holds more than Limits.MaxHeaders field lines. Status 431.
	ErrHeadersTooLarge = newError(431, "quartet: request header fields too large")

	// ErrBareLF is returned when a line of the header block ends in LF
	// without the CR that RFC 9112 §2.2 requires. Quartet does not take
	// the "MAY recognize a single LF" leniency: a front end that splits
	// lines differently is how requests get smuggled. Status 400.
	ErrBareLF = newError(400, "quartet: bare LF in request header block")

	// ErrObsFold is returned when a field line starts with SP or HTAB
	// (obsolete line folding, RFC 9112 §5.2). Status 400.
	ErrObsFold = newError(400, "quartet: obsolete line folding in request header")

	// ErrBadFieldName is returned when a field line has no colon, an empty
	// name, a non-token byte in its name, or whitespace between the name
	// and the colon (RFC 9112 §5.1). Status 400.
	ErrBadFieldName = newError(400, "quartet: invalid header field name")

	// ErrBadFieldValue is returned when a field value holds a control byte
	// other than HTAB, including a CR not followed by LF (RFC 9110 §5.5). Status 400.
	ErrBadFieldValue = newError(400, "quartet: invalid header field value")

	// ErrMissingHost is returned for an HTTP/1.1 request without a Host
	// field (RFC 9112 §3.2). Status 400.
	ErrMissingHost = newError(400, "quartet: missing Host header")

	// ErrDuplicateHost is returned when a request has more than one Host
	// field line (RFC 9112 §3.2). Status 400.
	ErrDuplicateHost = newError(400, "quartet: more than one Host header")

	// ErrBadHost is returned when the Host field value holds a byte that
	// cannot appear in uri-host [":" port]. Status 400.
	ErrBadHost = newError(400, "quartet: invalid Host header")

	// ErrExpectationFailed is returned when the first Expect field holds
	// an expectation other than 100-continue (RFC 9110 §10.1.1). Status 417.
	ErrExpectationFailed = newError(417, "quartet: unsupported expectation")
)

// Body-framing errors (RFC 9112 §6 and §11.2, request smuggling).
var (
	// ErrBadContentLength is returned when Content-Length is not 1*DIGIT,
	// does not fit in an int64, or appears more than once with differing
	// values (RFC 9112 §6.3 item 5). Status 400.
	ErrBadContentLength = newError(400, "quartet: invalid Content-Length")

	// ErrConflictingFraming is returned when a request carries both
	// Transfer-Encoding and Content-Length; RFC 9112 §6.1 lets a server
	// reject it, and it is the classic smuggling shape. Status 400.
	ErrConflictingFraming = newError(400, "quartet: both Transfer-Encoding and Content-Length")

	// ErrTransferEncodingHTTP10 is returned when an HTTP/1.0 request carries
	// Transfer-Encoding: RFC 9112 §6.1 says its framing must be treated as
	// faulty. Status 400.
	ErrTransferEncodingHTTP10 = newError(400, "quartet: Transfer-Encoding in an HTTP/1.0 request")

	// ErrUnknownTransferCoding is returned when Transfer-Encoding is
	// anything but a single field whose value is "chunked": the only coding
	// Quartet implements (RFC 9112 §6.1: 501 for codings not understood). Status 501.
	ErrUnknownTransferCoding = newError(501, "quartet: unsupported transfer coding")

	// ErrMalformedChunk is returned by ChunkedDecoder for a bad chunk-size
	// line, a chunk whose data is not followed by CRLF, a chunk line over
	// maxChunkLine bytes, or a malformed trailer field (RFC 9112 §7.1). Status 400.
	ErrMalformedChunk = newError(400, "quartet: malformed chunked encoding")

	// ErrChunkOverhead is returned by ChunkedDecoder when chunk-size lines
	// (mostly chunk extensions, which Quartet skips) outweigh the data they
	// frame: more than 16 KiB beyond an allowance of 16 bytes per chunk
	// plus twice its size, net/http's rule. RFC 9112 §7.1.1: a server ought
	// to limit the total length of chunk extensions. Status 400.
	ErrChunkOverhead = newError(400, "quartet: chunked encoding carries too much non-data")

	// ErrChunkSizeOverflow is returned by ChunkedDecoder when a chunk-size
	// has more than 16 hex digits or exceeds the int64 range: no body that
	// large can be accepted. Status 413.
	ErrChunkSizeOverflow = newError(413, "quartet: chunk size too large")

	// ErrTrailerTooLarge is returned by ChunkedDecoder when the trailer
	// section exceeds ChunkedDecoder.MaxTrailerBytes. Status 431.
	ErrTrailerTooLarge = newError(431, "quartet: chunked trailer section too large")
)

// StatusOf maps an error to the HTTP status the server answers it with:
// this package's sentinels carry theirs; the stages' refusals and body
// errors, which name no protocol's answer, map here (a timeout to 408,
// overload to 503, a body too large to 413, a body too slow to 408); any
// other error that says its status (an HTTPStatus method) gets it; the
// rest get 400. It returns 0 for nil and ErrNeedMore, which are not
// failures.
func StatusOf(err error) int {
	if err == nil || errors.Is(err, ErrNeedMore) {
		return 0
	}
	var se interface{ HTTPStatus() int }
	if errors.As(err, &se) {
		return se.HTTPStatus()
	}
	switch {
	case errors.Is(err, stages.ErrHeadTimeout), errors.Is(err, stages.ErrBodyTimeout), errors.Is(err, stages.ErrBodyTooSlow):
		return 408
	case errors.Is(err, stages.ErrHeadTooLarge):
		return 431
	case errors.Is(err, stages.ErrBodyTooLarge):
		return 413
	case errors.Is(err, stages.ErrOverloaded):
		return 503
	}
	return 400
}
