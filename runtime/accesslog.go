package runtime

import (
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// CombinedLog returns a Config.Log that writes Apache's combined log
// format to w, one line per response, with the bytes sent as the writer
// counted them (mod_logio's %O: headers and body, what reached the
// socket; an aborted response shows what was really sent). Lines from
// several writer loops are serialised by a mutex; each line is one Write.
func CombinedLog(w io.Writer) func(*stages.Response) {
	var mu sync.Mutex
	var buf []byte
	return func(r *stages.Response) {
		mu.Lock()
		defer mu.Unlock()
		buf = AppendCombined(buf[:0], r, time.Now())
		w.Write(buf)
	}
}

// AppendCombined appends r's combined-format log line to b.
func AppendCombined(b []byte, r *stages.Response, now time.Time) []byte {
	req := r.Req
	if r.Conn != nil && r.Conn.Remote.IsValid() {
		b = r.Conn.Remote.Addr().AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - - ["...)
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
	b = strconv.AppendInt(b, r.BytesSent, 10)
	b = append(b, " \""...)
	b = appendHeader(b, req, "Referer")
	b = append(b, "\" \""...)
	b = appendHeader(b, req, "User-Agent")
	b = append(b, "\"\n"...)
	return b
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
