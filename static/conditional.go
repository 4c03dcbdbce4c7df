package static

import (
	"bytes"
	"net/http"
	"strconv"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// precondition evaluates the request's conditional headers against the
// file, in the order of RFC 9110 §13.2.2, and returns the status that
// answers the request instead of the file (304 or 412), or 0 to go on.
func precondition(r *stages.Request, e *entry) int {
	getOrHead := r.IsMethod("GET") || r.IsMethod("HEAD")
	if im := r.Header("If-Match"); im != nil {
		if !etagListMatch(im, e.etag, true) {
			return http.StatusPreconditionFailed
		}
	} else if ius := r.Header("If-Unmodified-Since"); ius != nil {
		if t, ok := parseHTTPDate(ius); ok && e.mod.Truncate(time.Second).After(t) {
			return http.StatusPreconditionFailed
		}
	}
	if inm := r.Header("If-None-Match"); inm != nil {
		if etagListMatch(inm, e.etag, false) {
			if getOrHead {
				return http.StatusNotModified
			}
			return http.StatusPreconditionFailed
		}
	} else if ims := r.Header("If-Modified-Since"); ims != nil && getOrHead {
		if t, ok := parseHTTPDate(ims); ok && !e.mod.Truncate(time.Second).After(t) {
			return http.StatusNotModified
		}
	}
	return 0
}

// etagListMatch reports whether the If-Match / If-None-Match list matches
// etag: "*" matches any; strong comparison (If-Match) never matches a weak
// tag, weak comparison (If-None-Match) ignores the W/ prefix.
func etagListMatch(list []byte, etag string, strong bool) bool {
	list = bytes.TrimSpace(list)
	if string(list) == "*" {
		return true
	}
	for len(list) > 0 {
		list = bytes.TrimLeft(list, " \t,")
		weak := false
		if bytes.HasPrefix(list, []byte("W/")) {
			weak, list = true, list[2:]
		}
		if len(list) == 0 || list[0] != '"' {
			return false // malformed: match nothing
		}
		end := bytes.IndexByte(list[1:], '"')
		if end < 0 {
			return false
		}
		tag := list[:end+2]
		list = list[end+2:]
		if string(tag) == etag && !(strong && weak) {
			return true
		}
	}
	return false
}

func parseHTTPDate(b []byte) (time.Time, bool) {
	t, err := http.ParseTime(string(b))
	return t, err == nil
}

// byteRange is one satisfiable range of a file.
type byteRange struct{ off, n int64 }

// parseRange reads a Range header against a file of the given size. It
// returns the range to send, or ok=false to send the whole file (absent,
// unparsable, or several ranges: multipart is not offered), or
// unsatisfiable=true for 416.
func parseRange(h []byte, size int64) (br byteRange, ok, unsatisfiable bool) {
	const unit = "bytes="
	if !bytes.HasPrefix(h, []byte(unit)) {
		return br, false, false
	}
	spec := bytes.TrimSpace(h[len(unit):])
	if bytes.IndexByte(spec, ',') >= 0 {
		return br, false, false // several ranges: answer 200 with the whole file
	}
	dash := bytes.IndexByte(spec, '-')
	if dash < 0 {
		return br, false, false
	}
	first, last := bytes.TrimSpace(spec[:dash]), bytes.TrimSpace(spec[dash+1:])
	if !digits(first) || !digits(last) {
		return br, false, false // RFC 9110 §14.1.1: 1*DIGIT only (ParseInt would take "+5")
	}
	switch {
	case len(first) == 0: // suffix: the last N bytes
		n, err := strconv.ParseInt(string(last), 10, 64)
		if err != nil || n < 0 {
			return br, false, false
		}
		if n == 0 || size == 0 {
			return br, false, true
		}
		n = min(n, size)
		return byteRange{size - n, n}, true, false
	default:
		off, err := strconv.ParseInt(string(first), 10, 64)
		if err != nil || off < 0 {
			return br, false, false
		}
		end := size - 1
		if len(last) > 0 {
			e, err := strconv.ParseInt(string(last), 10, 64)
			if err != nil || e < off {
				return br, false, false
			}
			end = min(e, size-1)
		}
		if off >= size {
			return br, false, true
		}
		return byteRange{off, end - off + 1}, true, false
	}
}

// ifRangeAllows: a Range applies only if If-Range is absent or still
// describes the file (RFC 9110 §13.1.5: a strong ETag or the exact date).
func ifRangeAllows(r *stages.Request, e *entry) bool {
	ir := r.Header("If-Range")
	if ir == nil {
		return true
	}
	if len(ir) > 0 && (ir[0] == '"' || bytes.HasPrefix(ir, []byte("W/"))) {
		return string(ir) == e.etag
	}
	t, ok := parseHTTPDate(ir)
	return ok && e.mod.Truncate(time.Second).Equal(t)
}

// digits reports whether b is empty or all ASCII digits.
func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
