package msg

import (
	"errors"
	"fmt"

	"github.com/quartet-server/quartet/stages"
)

// ErrNeedMore is returned by Parser.Next while buf holds less than a
// whole head: read more bytes and call Next again with all of them. It
// is not a failure and has no code.
var ErrNeedMore = errors.New("quartet: msg: frame head incomplete")

// Frame errors. The parser returns them wrapped with the detail (which
// field, which value), so test with errors.Is; Parser.Next and PutHead
// return the same ones, so a frame PutHead writes is a frame Next reads.
// After any of them a connection is past saving: the receiver answers
// with an error frame (CodeOf says which code) and closes.
var (
	// ErrVersion is returned when a frame's first byte is not Version.
	// Code CodeVersion.
	ErrVersion = errors.New("quartet: msg: unsupported version")

	// ErrType is returned for a frame type this version does not define.
	// Code CodeMalformed.
	ErrType = errors.New("quartet: msg: unknown frame type")

	// ErrDirection is returned when a frame's type is not one its sender
	// may send to the receiver: a request or a completion arriving at a
	// client, a reply arriving at a server. Code CodeMalformed.
	ErrDirection = errors.New("quartet: msg: frame type not sent in this direction")

	// ErrFlags is returned for a flag bit this version does not define, a
	// flag its type may not carry (FlagUnordered on a reply), FlagByRDMA
	// without FlagRDMA, FlagError with FlagRDMA, or a completion without
	// FlagRDMA. Code CodeMalformed.
	ErrFlags = errors.New("quartet: msg: flags not allowed")

	// ErrTxID is returned for a request with transaction id 0, a reply
	// with id 0 that is not an error, or a completion with an id other
	// than 0. Code CodeMalformed.
	ErrTxID = errors.New("quartet: msg: transaction id not allowed")

	// ErrPayloadTooLarge is returned when a frame announces more payload
	// than Limits.MaxPayload. Its header was well-formed, so the error
	// frame can name the request's transaction id. Code CodeTooLarge.
	ErrPayloadTooLarge = errors.New("quartet: msg: payload too large")

	// ErrUnexpectedPayload is returned when a frame that carries no
	// payload has a non-zero length: a completion, or a reply with
	// FlagByRDMA (its payload went by RDMA). Code CodeMalformed.
	ErrUnexpectedPayload = errors.New("quartet: msg: payload not allowed on this frame")

	// ErrErrorBody is returned for an error reply whose payload is shorter
	// than its 2-byte code or longer than the code and MaxErrorMessage
	// bytes of message. Code CodeMalformed.
	ErrErrorBody = errors.New("quartet: msg: malformed error body")

	// ErrDescriptor is returned for an RDMA descriptor with an unknown
	// mode, operation id 0, a field its use must leave zero (docs/
	// messenger.md, "RDMA descriptor"), a missing field (a request's
	// endpoint port, a server-writes buffer of length 0, a fallback
	// reply's reason) or an endpoint address with a zone. Code
	// CodeMalformed.
	ErrDescriptor = errors.New("quartet: msg: malformed RDMA descriptor")

	// ErrOpID is returned when a request's operation id is not greater
	// than the previous RDMA request's on the connection, or a completion
	// names an id that no request has used yet. Op ids are what lets the
	// server reclaim from a high-water mark, so they must only grow. Code
	// CodeMalformed.
	ErrOpID = errors.New("quartet: msg: operation id out of order")

	// ErrPayloadPending is returned by Parser.Next while the current
	// frame's payload has not all been passed to Parser.Payload: the
	// caller lost its place in the stream. It is the caller's bug, not
	// the peer's, and does not stop the parser.
	ErrPayloadPending = errors.New("quartet: msg: payload of the previous frame not consumed")
)

// Code is an error frame's code. Codes below 256 are connection errors:
// the server closes the connection right after the frame, so a client
// fails every call still in flight. Codes from 256 on fail only the
// request whose transaction id the frame carries. An unknown code is
// classified by the same rule, so old clients read new codes correctly.
type Code uint16

// Connection error codes (the connection closes after them).
const (
	// CodeMalformed: a frame broke the wire format (any frame error but
	// those below). Sent with TxID 0.
	CodeMalformed Code = 1
	// CodeTooLarge: a request's payload is over the server's
	// Limits.MaxPayload. Sent with the request's TxID.
	CodeTooLarge Code = 2
	// CodeVersion: the frame's version is not spoken here. Sent with TxID 0.
	CodeVersion Code = 3
	// CodeShutdown: the server is going away; requests in flight are not
	// answered. Sent with TxID 0.
	CodeShutdown Code = 4
)

// Request error codes (the connection stays open).
const (
	// CodeUnsupported: the dispatcher does not handle this request.
	CodeUnsupported Code = 256
	// CodeBusy: the server is overloaded; the request was not run and may
	// be sent again later.
	CodeBusy Code = 257
	// CodeInternal: the dispatcher failed.
	CodeInternal Code = 258
	// CodeTimeout: the server gave up on the request before it finished.
	CodeTimeout Code = 259
	// CodeApplication is the first code left to applications' dispatchers.
	CodeApplication Code = 1024
)

// Fatal reports whether the server closes the connection after an error
// frame with code c.
func (c Code) Fatal() bool { return c < 256 }

func (c Code) String() string {
	switch c {
	case CodeMalformed:
		return "malformed"
	case CodeTooLarge:
		return "too-large"
	case CodeVersion:
		return "version"
	case CodeShutdown:
		return "shutdown"
	case CodeUnsupported:
		return "unsupported"
	case CodeBusy:
		return "busy"
	case CodeInternal:
		return "internal"
	case CodeTimeout:
		return "timeout"
	}
	if c >= CodeApplication {
		return fmt.Sprintf("application(%d)", uint16(c))
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Error is an error frame as the client receives it: the server's code
// and message. The client returns it (as *Error) from the call it
// answers; a fatal one also fails the calls still in flight, wrapped.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "quartet: msg: server error " + e.Code.String()
	}
	return "quartet: msg: server error " + e.Code.String() + ": " + e.Message
}

// CodeOf maps an error to the code of the error frame that reports it:
// the frame errors above to CodeVersion, CodeTooLarge or CodeMalformed,
// an *Error to its own code, anything else to CodeInternal, and nil and
// ErrNeedMore (not failures) to 0.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil, errors.Is(err, ErrNeedMore):
		return 0
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, ErrVersion):
		return CodeVersion
	case errors.Is(err, ErrPayloadTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrType), errors.Is(err, ErrDirection), errors.Is(err, ErrFlags),
		errors.Is(err, ErrTxID), errors.Is(err, ErrUnexpectedPayload), errors.Is(err, ErrErrorBody),
		errors.Is(err, ErrDescriptor), errors.Is(err, ErrOpID), errors.Is(err, stages.ErrDuplicateKey):
		return CodeMalformed
	}
	return CodeInternal
}
