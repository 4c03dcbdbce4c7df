package processor

import (
	"bufio"
	"context"
	"errors"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// Adapt runs an unchanged net/http handler on the processor pool.
//
// The handler gets an *http.Request built from the stages.Request (method,
// URL, Proto, Header, Host, ContentLength, TransferEncoding, Close,
// RemoteAddr, RequestURI, and Body streaming the request body) with a context
// cancelled when it returns or when the client hangs up (stages.Conn.Gone
// says which hang-ups count), and an http.ResponseWriter that also implements
// http.Flusher, io.StringWriter, io.ReaderFrom (regular files go out with
// sendfile) and http.Hijacker, whose Hijack returns ErrHijackNotSupported.
// As in net/http, a Content-Type is sniffed from the first Write when the
// handler sets none. A body past the server's limit fails Read with an
// error that errors.As finds as *http.MaxBytesError, as
// http.MaxBytesReader's does (and errors.Is as stages.ErrBodyTooLarge).
//
// As net/http's server does, it answers "OPTIONS *" itself (200, no body)
// without calling the handler.
//
// What it leaves out: the context holds no http.ServerContextKey or
// http.LocalAddrContextKey value; http.ResponseController's Flush works,
// and its SetReadDeadline, SetWriteDeadline and EnableFullDuplex report
// http.ErrNotSupported (the stages' own timeouts apply: Config's
// BodyTimeout and WriteTimeout; a response never overlaps the reading of
// its request's body beyond what the reader buffers). Trailers are sent
// as net/http sends them (the fields a Trailer header declares, and keys
// with http.TrailerPrefix), after a chunked body: see
// ResponseWriter.Trailer for when there is one. A request's trailers are
// not passed on: the reader checks a chunked body's trailer section and
// drops it, so r.Trailer stays empty (RFC 9112 7.1.2 lets a recipient
// discard them).
//
// The adapter allocates what net/http's own server does per request (the
// Request, its URL, header map and strings, a context); the response side is
// pooled.
func Adapt(h http.Handler) Handler {
	a := &adapter{h: h}
	a.states.New = func() any { return new(adapterState) }
	return a
}

type adapter struct {
	h      http.Handler
	states sync.Pool // *adapterState
}

// adapterState is the per-request memory the adapter can reuse: nothing in
// it is reachable from the *http.Request once the handler has returned,
// except Body, which net/http forbids reading after return.
type adapterState struct {
	rw   httpResponseWriter
	body requestBody
	te   [1]string
}

func (a *adapter) ServeQuartet(w *ResponseWriter, r *stages.Request) {
	if len(r.Target) == 1 && r.Target[0] == '*' && r.IsMethod(http.MethodOptions) {
		// OPTIONS * asks about the server, not a resource: net/http's
		// server answers it before the handler (whose ServeMux would say
		// 400), and so does its adapter.
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	s := a.states.Get().(*adapterState)
	defer a.put(s) // also on panic, which the pool recovers
	hr, err := s.request(r)
	s.body.limit = w.p.cfg.MaxBodyBytes
	if err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		w.WriteString("400 Bad Request: " + err.Error() + "\n")
		return
	}
	// Cancelled when the handler returns, or when the client hangs up
	// (the connection's context), as net/http's is.
	parent := context.Background()
	if r.Conn != nil {
		parent = r.Conn.Context()
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	hr = hr.WithContext(ctx)
	s.rw.w = w
	if s.rw.h == nil {
		s.rw.h = make(http.Header)
	}
	a.h.ServeHTTP(&s.rw, hr)
	if !s.rw.wroteHeader {
		// A handler that set headers and wrote nothing still answers 200
		// with those headers.
		s.rw.WriteHeader(http.StatusOK)
	}
	s.rw.trailers()
}

// trailerNames yields the names a Trailer header's list declares, but
// those that must not be trailers.
func trailerNames(list string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for name := range strings.SplitSeq(list, ",") {
			if name = strings.TrimSpace(name); name != "" && !forbiddenTrailer(name) && !yield(name) {
				return
			}
		}
	}
}

// trailers hands the handler's trailer values to w, as net/http's server
// finds them once the handler has returned: the fields the Trailer header
// declared, and the keys with http.TrailerPrefix.
func (hw *httpResponseWriter) trailers() {
	for name, values := range hw.h {
		if strings.HasPrefix(name, http.TrailerPrefix) {
			for _, v := range values {
				hw.w.Trailer().Add(name[len(http.TrailerPrefix):], v)
			}
		}
	}
	for _, list := range hw.h["Trailer"] {
		for name := range trailerNames(list) {
			for _, v := range hw.h[http.CanonicalHeaderKey(name)] {
				hw.w.Trailer().Add(name, v)
			}
		}
	}
}

func (a *adapter) put(s *adapterState) {
	clear(s.rw.h)
	s.rw.w, s.rw.wroteHeader = nil, false
	s.body = requestBody{}
	a.states.Put(s)
}

// protoNames holds "HTTP/1.0" to "HTTP/1.9", eight bytes each: a handler
// sees the version the client sent, as under net/http, though HTTP/1.2
// and above are served as 1.1 (RFC 9110 §2.5).
const protoNames = "HTTP/1.0HTTP/1.1HTTP/1.2HTTP/1.3HTTP/1.4HTTP/1.5HTTP/1.6HTTP/1.7HTTP/1.8HTTP/1.9"

// request builds the *http.Request net/http's server would have built.
func (s *adapterState) request(r *stages.Request) (*http.Request, error) {
	target := string(r.Target)
	method := methodString(r.Method)
	var u *url.URL
	var err error
	if method == http.MethodConnect && !strings.HasPrefix(target, "/") {
		// authority-form (RFC 9112 §3.2.3): host:port, not a URL
		u = &url.URL{Host: target}
	} else if u, err = url.ParseRequestURI(target); err != nil {
		return nil, err
	}

	// One string for all header names and values, sliced per field: one
	// allocation instead of two per field.
	n := 0
	for i := range r.Headers {
		n += len(r.Headers[i].Name) + len(r.Headers[i].Value)
	}
	var sb strings.Builder
	sb.Grow(n)
	for i := range r.Headers {
		sb.Write(r.Headers[i].Name)
		sb.Write(r.Headers[i].Value)
	}
	all := sb.String()
	hdr := make(http.Header, len(r.Headers))
	vals := make([]string, len(r.Headers))
	off := 0
	for i := range r.Headers {
		name := http.CanonicalHeaderKey(all[off : off+len(r.Headers[i].Name)])
		off += len(r.Headers[i].Name)
		value := all[off : off+len(r.Headers[i].Value)]
		off += len(r.Headers[i].Value)
		if name == "Host" || name == "Transfer-Encoding" {
			continue // net/http moves them to Request.Host and TransferEncoding
		}
		vals[i] = value
		if old, ok := hdr[name]; ok {
			hdr[name] = append(old, value)
		} else {
			hdr[name] = vals[i : i+1 : i+1]
		}
	}

	hr := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      protoNames[8*r.Minor : 8*r.Minor+8],
		ProtoMajor: 1,
		ProtoMinor: r.Minor,
		Header:     hdr,
		Host:       string(r.Host),
		RequestURI: target,
		Close:      !r.KeepAlive(),
	}
	if u.Host != "" {
		hr.Host = u.Host // absolute-form wins over Host (RFC 9112 §3.2.2)
	}
	if r.Conn != nil {
		hr.RemoteAddr = r.Conn.Remote.String()
	}
	switch {
	case r.Chunked:
		s.te[0] = "chunked"
		hr.TransferEncoding = s.te[:]
		hr.ContentLength = -1
		s.body.r = r.Body
		hr.Body = &s.body
	case r.ContentLength > 0:
		hr.ContentLength = r.ContentLength
		s.body.r = r.Body
		hr.Body = &s.body
	default:
		hr.Body = http.NoBody
	}
	return hr, nil
}

// methodString returns the common methods without allocating.
func methodString(m []byte) string {
	switch string(m) { // the compiler does not allocate for this conversion
	case http.MethodGet:
		return http.MethodGet
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPost:
		return http.MethodPost
	case http.MethodPut:
		return http.MethodPut
	case http.MethodDelete:
		return http.MethodDelete
	case http.MethodOptions:
		return http.MethodOptions
	case http.MethodPatch:
		return http.MethodPatch
	case http.MethodConnect:
		return http.MethodConnect
	}
	return string(m)
}

// requestBody is Request.Body: the request's body stream, with a Close that
// only stops further reads (the reader stage owns the connection and
// discards what the handler leaves unread).
type requestBody struct {
	r      io.Reader
	closed bool
	limit  int64 // the reader's MaxBodyBytes, for bodyTooLarge
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.closed || b.r == nil {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && errors.Is(err, stages.ErrBodyTooLarge) {
		err = &bodyTooLarge{limit: b.limit}
	}
	return n, err
}

// bodyTooLarge is the body limit's error as net/http handlers look for it
// (errors.As with *http.MaxBytesError, which http.MaxBytesReader returns
// and net/http's server answers 413 for), and still the stages' error to
// errors.Is.
type bodyTooLarge struct{ limit int64 }

func (e *bodyTooLarge) Error() string { return stages.ErrBodyTooLarge.Error() }
func (e *bodyTooLarge) Unwrap() error { return stages.ErrBodyTooLarge }

// As fills a **http.MaxBytesError.
func (e *bodyTooLarge) As(target any) bool {
	if p, ok := target.(**http.MaxBytesError); ok {
		*p = &http.MaxBytesError{Limit: e.limit}
		return true
	}
	return false
}

func (b *requestBody) Close() error {
	b.closed = true
	return nil
}

// httpResponseWriter is the http.ResponseWriter handed to net/http
// handlers: an http.Header map copied into the native Header when the
// status is written.
type httpResponseWriter struct {
	w           *ResponseWriter
	h           http.Header
	wroteHeader bool
}

var (
	_ http.ResponseWriter = (*httpResponseWriter)(nil)
	_ http.Flusher        = (*httpResponseWriter)(nil)
	_ http.Hijacker       = (*httpResponseWriter)(nil)
	_ io.ReaderFrom       = (*httpResponseWriter)(nil)
	_ io.StringWriter     = (*httpResponseWriter)(nil)
)

func (hw *httpResponseWriter) Header() http.Header { return hw.h }

func (hw *httpResponseWriter) WriteHeader(code int) {
	if hw.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("quartet: invalid WriteHeader code")
	}
	nh := hw.w.Header()
	nh.reset() // an earlier 1xx copied the map; copy it afresh
	for name, values := range hw.h {
		if name == "Trailer" {
			hw.w.Trailer() // the body is chunked, so the trailer has a place
			// Announce only what may be sent: Go's client refuses a
			// response that declares Content-Length a trailer.
			for _, list := range values {
				if v := strings.Join(slices.Collect(trailerNames(list)), ", "); v != "" {
					nh.Add(name, v)
				}
			}
			continue
		} else if strings.HasPrefix(name, http.TrailerPrefix) {
			// net/http's undeclared trailer, sent after the body
			// (trailers); "Trailer:X-Sum" is no field name anyway.
			hw.w.Trailer()
			continue
		}
		if values == nil && (name == "Date" || name == "Server") {
			// net/http's way to suppress an automatic header: the
			// native API's is an empty value.
			nh.Add(name, "")
			continue
		}
		for _, v := range values {
			nh.Add(name, v)
		}
	}
	if code >= 200 || code == http.StatusSwitchingProtocols {
		hw.wroteHeader = true
	}
	hw.w.WriteHeader(code)
}

// sniff sets Content-Type from the first body bytes when the handler set
// none, as net/http does.
func (hw *httpResponseWriter) sniff(p []byte) {
	if hw.wroteHeader {
		return
	}
	if _, ok := hw.h["Content-Type"]; !ok && len(p) > 0 && hw.h.Get("Transfer-Encoding") == "" {
		hw.h.Set("Content-Type", http.DetectContentType(p))
	}
	hw.WriteHeader(http.StatusOK)
}

func (hw *httpResponseWriter) Write(p []byte) (int, error) {
	hw.sniff(p)
	n, err := hw.w.Write(p)
	return n, httpError(err)
}

func (hw *httpResponseWriter) WriteString(s string) (int, error) {
	if !hw.wroteHeader {
		if _, ok := hw.h["Content-Type"]; ok {
			hw.WriteHeader(http.StatusOK) // nothing to sniff: skip the conversion
		} else {
			hw.sniff([]byte(s[:min(len(s), 512)])) // DetectContentType reads 512 at most
		}
	}
	n, err := hw.w.WriteString(s)
	return n, httpError(err)
}

func (hw *httpResponseWriter) Flush() {
	if !hw.wroteHeader {
		hw.WriteHeader(http.StatusOK)
	}
	_ = hw.w.Flush()
}

// FlushError is what http.ResponseController calls, so it sees the error.
func (hw *httpResponseWriter) FlushError() error {
	if !hw.wroteHeader {
		hw.WriteHeader(http.StatusOK)
	}
	return httpError(hw.w.Flush())
}

func (hw *httpResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, ErrHijackNotSupported
}

// ReadFrom sends regular files (what http.ServeContent and io.Copy from an
// *os.File produce) with sendfile, and copies anything else. net/http
// handlers close their files when they return, usually before the writer
// has sent them, so the response keeps a duplicate of the descriptor (same
// open file, so the same data) and closes it when it is recycled; the worker
// does not wait for the client.
func (hw *httpResponseWriter) ReadFrom(src io.Reader) (int64, error) {
	f, limit := fileSource(src)
	if f == nil || (!hw.wroteHeader && hw.h.Get("Content-Type") == "") {
		// Not a file, or a body whose type must be sniffed: plain copy.
		return io.Copy(writerOnly{hw}, src)
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return io.Copy(writerOnly{hw}, src)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return io.Copy(writerOnly{hw}, src)
	}
	n := fi.Size() - off
	if limit >= 0 && limit < n {
		n = limit
	}
	if n <= 0 {
		return 0, nil
	}
	if !hw.wroteHeader {
		hw.WriteHeader(http.StatusOK)
	}
	if !hw.w.head {
		dup, err := dupFile(f)
		if err != nil {
			return io.Copy(writerOnly{hw}, src)
		}
		hw.w.OnRecycle(CloseFile(dup))
		f = dup
	}
	if err := hw.w.SendFile(f, off, n); err != nil {
		return 0, httpError(err)
	}
	// Move the handler's file and reader on as a copy would have.
	if lr, ok := src.(*io.LimitedReader); ok {
		lr.N -= n
	}
	if _, err := fileSeek(src, off+n); err != nil {
		return n, err
	}
	return n, nil
}

// fileSeek sets the position of the file inside src.
func fileSeek(src io.Reader, pos int64) (int64, error) {
	f, _ := fileSource(src)
	return f.Seek(pos, io.SeekStart)
}

// dupFile duplicates f's descriptor (close-on-exec), so that the response
// can outlive the handler's Close.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// fileSource unwraps an *os.File, possibly inside an *io.LimitedReader
// (io.CopyN's wrapping), and the limit (-1 for none).
func fileSource(src io.Reader) (*os.File, int64) {
	limit := int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		src, limit = lr.R, lr.N
	}
	f, _ := src.(*os.File)
	return f, limit
}

// writerOnly hides ReadFrom from io.Copy, which would call it again.
type writerOnly struct{ io.Writer }

// httpError maps the native sentinels to net/http's, which net/http
// handlers compare against.
func httpError(err error) error {
	switch {
	case errors.Is(err, ErrBodyNotAllowed):
		return http.ErrBodyNotAllowed
	case errors.Is(err, ErrContentLength):
		return http.ErrContentLength
	}
	return err
}
