package static

import (
	"bytes"
	"math"
	"net/http"
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
// tag, weak comparison (If-None-Match) ignores the W/ prefix. A list that
// is not "*" or 1#entity-tag (RFC 9110 §13.1.1, §8.8.3) matches nothing,
// whatever tags it holds: a client that sent it cannot be taken to mean
// any of them, and If-Match then fails safe with 412 (as in nginx).
func etagListMatch(list []byte, etag string, strong bool) bool {
	list = stages.TrimOWS(list)
	if string(list) == "*" {
		return true
	}
	matched := false
	for len(list) > 0 {
		if list[0] == ',' { // §5.6.1: empty list elements are allowed
			list = stages.TrimOWS(list[1:])
			continue
		}
		weak := false
		if bytes.HasPrefix(list, []byte("W/")) {
			weak, list = true, list[2:]
		}
		if len(list) == 0 || list[0] != '"' {
			return false
		}
		end := bytes.IndexByte(list[1:], '"')
		if end < 0 || !opaqueTag(list[1:end+1]) {
			return false
		}
		if string(list[:end+2]) == etag && !(strong && weak) {
			matched = true
		}
		list = stages.TrimOWS(list[end+2:])
		if len(list) > 0 && list[0] != ',' {
			return false
		}
	}
	return matched
}

// opaqueTag reports whether b is *etagc: visible bytes but DQUOTE, and
// obs-text.
func opaqueTag(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c == '"' || c == 0x7f {
			return false
		}
	}
	return true
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
	const unit = "bytes=" // §14.1: units compare case-insensitively
	if len(h) < len(unit) || !stages.EqualFoldASCII(h[:len(unit)], unit) {
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
	// Numbers too long for an int64 are still valid (§14.1.2 sets no
	// bound): they saturate, and then mean "past any file".
	switch {
	case len(first) == 0: // suffix: the last N bytes
		if len(last) == 0 {
			return br, false, false // "bytes=-"
		}
		n := saturatingDigits(last)
		if n == 0 || size == 0 {
			return br, false, true
		}
		n = min(n, size)
		return byteRange{size - n, n}, true, false
	default:
		if len(last) > 0 && lessDigits(last, first) {
			return br, false, false // §14.1.1: invalid, so ignored
		}
		off := saturatingDigits(first)
		if off >= size {
			return br, false, true
		}
		end := size - 1
		if len(last) > 0 {
			end = min(saturatingDigits(last), size-1)
		}
		return byteRange{off, end - off + 1}, true, false
	}
}

// saturatingDigits reads 1*DIGIT, giving math.MaxInt64 for any number at
// or above it.
func saturatingDigits(b []byte) int64 {
	var n int64
	for _, c := range b {
		if n > (math.MaxInt64-9)/10 {
			return math.MaxInt64
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// lessDigits compares two 1*DIGIT numbers of any length.
func lessDigits(a, b []byte) bool {
	a, b = bytes.TrimLeft(a, "0"), bytes.TrimLeft(b, "0")
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return bytes.Compare(a, b) < 0
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
