package http1

import (
	"net/http"
	"strconv"
	"time"
)

// The bytes of HTTP/1.1 responses. Building a response (choosing its
// status, fields and framing) is the processor's ResponseWriter's job;
// the byte shapes it and the stages' own answers share are here, once.

// Continue is the interim response that tells a client waiting on
// "Expect: 100-continue" to send its body (RFC 9110 §10.1.1). It is sent
// when the handler first reads the body, never for HTTP/1.0.
const Continue = "HTTP/1.1 100 Continue\r\n\r\n"

// ChunkEnd ends a chunk's data, and LastChunk ends a chunked body with no
// trailer section (RFC 9112 §7.1).
const (
	ChunkEnd  = "\r\n"
	LastChunk = "0\r\n\r\n"
)

// MaxStatusLine is the longest line AppendStatusLine appends for a code
// of 100 to 999: a caller with that much room never makes append grow
// (and so allocate).
const MaxStatusLine = len("HTTP/1.1 511 Network Authentication Required\r\n") + 8

// AppendStatusLine appends the status line for code to dst. A request in
// HTTP/1.0 (minor 0) is answered in its own version, as net/http does:
// some 1.0 clients take a 1.1 status line as licence for 1.1 framing. A
// code without a reason phrase gets "status code N", as in net/http.
func AppendStatusLine(dst []byte, minor, code int) []byte {
	if code == http.StatusOK {
		// Most responses: no number to format, no status text to look up.
		if minor >= 1 {
			return append(dst, "HTTP/1.1 200 OK\r\n"...)
		}
		return append(dst, "HTTP/1.0 200 OK\r\n"...)
	}
	if minor >= 1 {
		dst = append(dst, "HTTP/1.1 "...)
	} else {
		dst = append(dst, "HTTP/1.0 "...)
	}
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	if text := http.StatusText(code); text != "" {
		dst = append(dst, text...)
	} else {
		dst = append(dst, "status code "...)
		dst = strconv.AppendInt(dst, int64(code), 10)
	}
	return append(dst, "\r\n"...)
}

// AppendChunkHeader appends the chunk-size line of a chunk of n bytes
// (hex, no extensions).
func AppendChunkHeader(dst []byte, n int64) []byte {
	dst = strconv.AppendInt(dst, n, 16)
	return append(dst, "\r\n"...)
}

// ErrorResponse is a short text response the server answers by itself,
// with no handler: a request it could not parse, that timed out, or that
// was shed under overload.
type ErrorResponse struct {
	Status int
	Date   time.Time
	Server string // the Server field's value
	// RetryAfter, in seconds, adds a Retry-After field (RFC 9110 §10.2.3)
	// when positive: a shed request may come back then.
	RetryAfter int64
	// KeepAlive leaves the connection open after the response; otherwise
	// it says "Connection: close".
	KeepAlive bool
}

// Append appends the whole response to dst, and says how many of the
// bytes appended are its head (the access log counts them apart). It is
// built on the error path, or cached by its caller, so clarity wins over
// speed.
func (e ErrorResponse) Append(dst []byte) (out []byte, head int) {
	from := len(dst)
	text := strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
	body := text + "\n"
	if e.Status == http.StatusServiceUnavailable && e.RetryAfter > 0 {
		body = text + ": the server is busy; retry later\n"
	}
	dst = AppendStatusLine(dst, 1, e.Status)
	dst = append(dst, "Date: "...)
	dst = e.Date.UTC().AppendFormat(dst, http.TimeFormat)
	dst = append(dst, "\r\n"...)
	dst = append(dst, "Server: "...)
	dst = append(dst, e.Server...)
	dst = append(dst, "\r\n"...)
	if e.RetryAfter > 0 {
		dst = append(dst, "Retry-After: "...)
		dst = strconv.AppendInt(dst, e.RetryAfter, 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n"...)
	if !e.KeepAlive {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	head = len(dst) - from
	return append(dst, body...), head
}
