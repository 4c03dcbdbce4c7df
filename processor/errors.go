package processor

import "errors"

// ErrBodyNotAllowed is returned by Write, WriteString and SendFile when the
// response status is 1xx, 204 or 304, which carry no body (RFC 9110 §6.4.1).
var ErrBodyNotAllowed = errors.New("quartet: response status does not allow a body")

// ErrContentLength is returned by Write, WriteString and SendFile when the
// handler writes more than the Content-Length it declared.
var ErrContentLength = errors.New("quartet: wrote more than the declared Content-Length")

// ErrHijackNotSupported is returned by the net/http adapter's Hijack: the
// connection belongs to a writer event loop (and its reader), so there is no
// net.Conn a handler could take over.
var ErrHijackNotSupported = errors.New("quartet: hijacking is not supported: the writer stage owns the socket")

// ErrPoolRunning is returned by Run when the pool is already running.
var ErrPoolRunning = errors.New("quartet: processor pool is already running")

// errHandlerPanicked is the sticky error of a ResponseWriter whose handler
// panicked after the final header block was handed to the writer.
var errHandlerPanicked = errors.New("quartet: handler panicked")

// ErrWouldBlock is returned by WaitSent to a handler served inline on a
// reader loop (see Inliner), which must not wait on its client; the bytes
// are queued and will be written.
var ErrWouldBlock = errors.New("quartet: an inline handler cannot wait for its client")
