package runtime

import (
	"encoding/base64"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/quartet-server/quartet/internal/ratelog"
	"github.com/quartet-server/quartet/stages"
)

// AccessLogFormat names the layout of an access log line.
type AccessLogFormat string

// The access log formats. Both write one line per response, when the
// writer has sent its last byte or given up, so the byte counts are what
// happened, not what was meant to happen.
const (
	// Combined is Apache's combined format,
	//
	//	%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"
	//
	// with %u the user of Basic authentication (- without), %t when the
	// request arrived, and %b the body bytes that reached the client (- for
	// none; a chunked response cut short counts the chunk-size lines it
	// sent as well).
	Combined AccessLogFormat = "combined"
	// CombinedIO is Combined followed by mod_logio's %I and %O: the bytes
	// received for the request (request line, header block, body with its
	// framing) and the bytes sent for the response (interim responses,
	// header block, body), as they crossed the socket. It is the
	// "accurate bytes_sent" Pane's design asks the writer for.
	CombinedIO AccessLogFormat = "combinedio"
)

// AccessLog returns a Config.Log that writes one line per response to w in
// format f, each line one Write on the writer loop that sent the response,
// serialised by a mutex. It suits an output that never waits (a test's
// buffer, a writer that hands lines on to a goroutine of its own); for a
// file, use an AccessLogger, which writes in batches from a goroutine of
// its own and never holds a writer loop on the disk. A Write that fails (a
// full disk) loses its line, and slog.Default() is told: the first at
// once, then one line every 10 s with the count, so that a log that
// stopped is not found out only when it is needed. An unknown format is
// an error naming the known ones.
func AccessLog(w io.Writer, f AccessLogFormat) (func(*stages.Response), error) {
	if err := checkAccessLogFormat(f); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var buf []byte
	var lost ratelog.Limiter
	return func(r *stages.Response) {
		mu.Lock()
		buf = AppendAccessLog(buf[:0], f, r, time.Now())
		_, err := w.Write(buf)
		mu.Unlock()
		if err != nil {
			if log, n := lost.Allow(time.Now()); log {
				slog.Default().Error("quartet: access log: lines lost", "err", err, "lines", n)
			}
		}
	}, nil
}

// AppendAccessLog appends r's log line in format f to b. now stands in for
// the arrival time of a request the reader could not parse.
func AppendAccessLog(b []byte, f AccessLogFormat, r *stages.Response, now time.Time) []byte {
	req := r.Req
	if r.Conn != nil && r.Conn.Remote.IsValid() {
		b = r.Conn.Remote.Addr().AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - "...)
	b = appendUser(b, req)
	b = append(b, " ["...)
	if req != nil && !req.Received.IsZero() {
		now = req.Received
	}
	b = now.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	if req != nil && len(req.Method) > 0 {
		b = appendEscaped(b, req.Method)
		b = append(b, ' ')
		b = appendEscaped(b, req.Target)
		b = append(b, " HTTP/1."...)
		b = strconv.AppendInt(b, int64(req.Minor), 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, ' ')
	if n := bodyBytesSent(r); n > 0 {
		b = strconv.AppendInt(b, n, 10)
	} else {
		b = append(b, '-')
	}
	b = append(b, " \""...)
	b = appendHeader(b, req, "Referer")
	b = append(b, "\" \""...)
	b = appendHeader(b, req, "User-Agent")
	b = append(b, '"')
	if f == CombinedIO {
		b = append(b, ' ')
		if req != nil {
			b = strconv.AppendInt(b, req.WireBytes.Load(), 10)
		} else {
			b = append(b, '0')
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, r.BytesSent, 10)
	}
	return append(b, '\n')
}

// bodyBytesSent is %b: the bytes sent past the header, less the chunked
// coding's framing, which is known exactly once the response is finished.
func bodyBytesSent(r *stages.Response) int64 {
	n := r.BytesSent - r.HeaderBytes
	if r.WriteErr == nil {
		n -= r.FramingBytes
	}
	return max(n, 0)
}

// appendUser appends the user name of Basic authentication (RFC 7617), or
// - when there is none or it cannot be decoded. It decodes into a stack
// buffer: names longer than fit are not logged.
func appendUser(b []byte, req *stages.Request) []byte {
	if req == nil {
		return append(b, '-')
	}
	v := req.Header("Authorization")
	const scheme = "basic "
	if len(v) <= len(scheme) || !stages.EqualFoldASCII(v[:len(scheme)], scheme) {
		return append(b, '-')
	}
	enc := v[len(scheme):]
	for len(enc) > 0 && enc[0] == ' ' {
		enc = enc[1:]
	}
	var buf [192]byte
	if base64.StdEncoding.DecodedLen(len(enc)) > len(buf) {
		return append(b, '-')
	}
	n, err := base64.StdEncoding.Decode(buf[:], enc)
	if err != nil {
		return append(b, '-')
	}
	user := buf[:n]
	for i, c := range user {
		if c == ':' {
			user = user[:i]
			break
		}
	}
	if len(user) == 0 {
		return append(b, '-')
	}
	return appendEscaped(b, user)
}

func appendHeader(b []byte, req *stages.Request, name string) []byte {
	if req == nil {
		return append(b, '-')
	}
	v := req.Header(name)
	if len(v) == 0 {
		return append(b, '-')
	}
	return appendEscaped(b, v)
}

// appendEscaped keeps a client's bytes from forging log lines.
func appendEscaped(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}
