package static

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// conditionalFields are the request fields plan reads, in the order the
// fuzz target's arguments give their values.
var conditionalFields = [...]string{"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Range"}

// FuzzPlan checks plan, which decides from a request's validators and
// Range what a file's answer is (200, 206 and which bytes, 304, 412 or
// 416), against net/http's ServeContent, which implements the same rules
// of RFC 9110 §13.2.2 and §14. present picks which of the six fields the
// request carries (bit i for conditionalFields[i]) and bit 6 HEAD instead
// of GET; the file is size bytes, last modified at mod seconds.
//
// The two must give the same status, and for a 206 the same range, unless
// plan's result is what RFC 9110 asks and knownPlanDifference names the
// shape on which net/http does otherwise. Whatever the input, a 206's
// range must lie inside the file.
func FuzzPlan(f *testing.F) {
	etag := `"5f1a2b-a"`
	date := "Wed, 01 May 2024 12:00:00 GMT"
	seeds := []struct {
		present uint8
		values  [6]string
		size    uint16
	}{
		{0b000001, [6]string{etag}, 10},
		{0b000001, [6]string{"W/" + etag}, 10},
		{0b000001, [6]string{`"x", ` + etag}, 10},
		{0b000010, [6]string{1: "*"}, 10},
		{0b000010, [6]string{1: `W/"x",W/` + etag}, 10},
		{0b000100, [6]string{2: date}, 10},
		{0b000100, [6]string{2: "Tuesday, 30-Apr-24 12:00:00 GMT"}, 10},
		{0b001000, [6]string{3: "Tue Apr 30 12:00:00 2024"}, 10},
		{0b100000, [6]string{5: "bytes=2-5"}, 10},
		{0b100000, [6]string{5: "bytes=-3"}, 10},
		{0b100000, [6]string{5: "bytes=8-100"}, 10},
		{0b100000, [6]string{5: "bytes=10-"}, 10},
		{0b100000, [6]string{5: "bytes=-0"}, 10},
		{0b100000, [6]string{5: "bytes=0-"}, 0},
		{0b100000, [6]string{5: "bytes=0-1,4-5"}, 10},
		{0b110000, [6]string{4: etag, 5: "bytes=0-0"}, 10},
		{0b110000, [6]string{4: date, 5: "bytes=1-1"}, 10},
		{0b110000, [6]string{4: `"old"`, 5: "bytes=1-1"}, 10},
		{0b1100000, [6]string{5: "bytes=0-1"}, 10},
		{0b000011, [6]string{etag, etag}, 10},
		{0b001100, [6]string{2: date, 3: date}, 10},
	}
	for _, s := range seeds {
		f.Add(s.present, s.values[0], s.values[1], s.values[2], s.values[3], s.values[4], s.values[5], s.size, int64(1714564800))
	}
	f.Fuzz(func(t *testing.T, present uint8, im, inm, ims, ius, ir, rng string, size uint16, mod int64) {
		values := [...]string{im, inm, ims, ius, ir, rng}
		// After the epoch, which ServeContent takes for no time at all,
		// and before 2242, past which UnixNano overflows.
		mod = 1 + (mod&(1<<63-1))%(1<<33)
		e := &entry{size: int64(size), mod: time.Unix(mod, 0).UTC()}
		e.etag = `"` + strconv.FormatInt(e.mod.UnixNano(), 16) + "-" + strconv.FormatInt(e.size, 16) + `"`
		// One of the seeds' tags is the file's, whatever mod is.
		for i := range values {
			values[i] = strings.ReplaceAll(values[i], etag, e.etag)
		}

		method := "GET"
		if present&(1<<6) != 0 {
			method = "HEAD"
		}
		ours := &stages.Request{Method: []byte(method)}
		theirs := httptest.NewRequest(method, "/f", nil)
		for i, name := range conditionalFields {
			if present&(1<<i) == 0 {
				continue
			}
			// As the parser hands them over: no control bytes (it answers
			// 400 to those), no whitespace around the value.
			v := strings.Trim(values[i], " \t")
			if !validFieldValueForTest(v) {
				return
			}
			ours.Headers = append(ours.Headers, stages.Header{Name: []byte(name), Value: []byte(v)})
			theirs.Header.Set(name, v)
		}

		got := plan(ours, e)
		if got.status == http.StatusPartialContent && (got.n < 1 || got.off < 0 || got.off+got.n > e.size) {
			t.Fatalf("206 range off %d n %d outside a file of %d bytes", got.off, got.n, e.size)
		}

		rec := httptest.NewRecorder()
		rec.Header().Set("ETag", e.etag)
		http.ServeContent(rec, theirs, "", e.mod, bytes.NewReader(make([]byte, size)))
		want := answer{status: rec.Code}
		if cr := rec.Header().Get("Content-Range"); rec.Code == http.StatusPartialContent && cr != "" {
			want.off, want.n = contentRange(t, cr)
		} // else multipart/byteranges: several ranges, each in its part

		if got == want {
			return
		}
		if rule := knownPlanDifference(ours, e, got, want); rule != "" {
			t.Logf("known difference (%s): quartet %+v, net/http %+v", rule, got, want)
			return
		}
		t.Fatalf("%s with %q on a file of %d bytes (ETag %s, modified %s):\nquartet  %+v\nnet/http %+v",
			method, ours.Headers, size, e.etag, e.mod.Format(http.TimeFormat), got, want)
	})
}

// knownPlanDifference names the rule of RFC 9110 on which plan answers got
// and net/http's ServeContent answers want, or "" if the difference is not
// one of them.
func knownPlanDifference(r *stages.Request, e *entry, got, want answer) string {
	rng := r.Header("Range")
	im, inm, ir := r.Header("If-Match"), r.Header("If-None-Match"), r.Header("If-Range")
	switch {
	case im != nil && !wellFormedETags(im) && got.status == http.StatusPreconditionFailed:
		// A malformed If-Match matches nothing (nginx too); net/http
		// takes a leading "*" for "*" whatever follows, and a list for
		// as many tags as it could read before the fault.
		return "malformed If-Match"
	case inm != nil && !wellFormedETags(inm) && want.status != got.status:
		// A malformed If-None-Match matches nothing, so the file is
		// sent; net/http reads it as for If-Match.
		return "malformed If-None-Match"
	case im != nil && len(im) == 0 && got.status == http.StatusPreconditionFailed:
		// §13.1.1: an empty If-Match is a list of no entity-tags, none
		// of which matches, so 412 (nginx does the same); net/http's
		// Header.Get cannot tell an empty field from an absent one.
		return "empty If-Match"
	case inm != nil && len(inm) == 0 && r.Header("If-Modified-Since") != nil && want.status == http.StatusNotModified:
		// §13.2.2: If-Modified-Since counts only when If-None-Match is
		// absent, and an empty one (a list of no tags) is present;
		// net/http takes it for absent and answers the date.
		return "empty If-None-Match"
	case ir != nil && len(ir) == 0 && rng != nil && got.status == http.StatusOK:
		// §13.1.5: Range applies only if If-Range's validator matches,
		// and an empty one does not; net/http takes it for absent.
		return "empty If-Range"
	case ir != nil && rng != nil && got.status == http.StatusOK && !oneETag(ir) && !isHTTPDate(ir):
		// §13.1.5: If-Range is one entity-tag or a date, and one that
		// is neither matches nothing, so Range is ignored; net/http
		// reads the first tag of anything that starts with one.
		return "malformed If-Range"
	case rng != nil && r.IsMethod("HEAD") && got.status == http.StatusOK && want.status != http.StatusOK:
		// §14.2: GET is the only method range handling is defined for,
		// and a server MUST ignore Range on others; ServeContent applies
		// it to HEAD as well.
		return "range on HEAD"
	case rng != nil && bytes.IndexByte(rng, ',') >= 0 && got.status == http.StatusOK:
		// §14.2 lets a server ignore Range; plan does for several
		// ranges rather than build multipart/byteranges.
		return "several ranges"
	case got.status == http.StatusRequestedRangeNotSatisfiable && want.status == http.StatusPartialContent && want.n == 0:
		// §14.1.1: a suffix-length of 0 is unsatisfiable; ServeContent
		// answers 206 with the empty range "bytes 10-9/10".
		return "zero suffix"
	case got.status == http.StatusRequestedRangeNotSatisfiable && want.status == http.StatusOK && e.size == 0:
		// §14.1.1: no range of an empty file is satisfiable, as no
		// first-pos is less than its length; ServeContent (and nginx)
		// ignore Range on an empty file, which §14.2 allows too.
		return "empty file"
	case rng != nil && got.status == http.StatusOK && !validRange(rng) && bytes.IndexByte(rng, ',') < 0:
		// §14.2: "A server MAY ignore the Range header field", and
		// plan ignores one that is not valid (§14.1.1, §14.1.2). ServeContent
		// answers 416 "invalid range" to most, and reads some (signs,
		// whitespace inside) as ranges.
		return "invalid range"
	case rng != nil && (want.status == http.StatusOK || want.status == http.StatusRequestedRangeNotSatisfiable) &&
		len(rng) >= 6 && string(rng[:6]) != "bytes=" && validRange(rng):
		// §14.1: range units are case-insensitive; ServeContent
		// takes any spelling but "bytes" for an invalid range.
		return "unit case"
	}
	return ""
}

// validRange reports whether v is one valid range-spec of RFC 9110
// §14.1.2, written independently of parseRange: "bytes=" (in any case),
// then 1*DIGIT "-" *DIGIT or "-" 1*DIGIT, and no last-pos below first-pos
// ("invalid", §14.1.1). Whitespace around the spec and around its dash is
// taken as both parsers take it (OWS, as around a list element).
func validRange(v []byte) bool {
	if len(v) < 6 || !strings.EqualFold(string(v[:6]), "bytes=") {
		return false
	}
	first, last, ok := strings.Cut(string(v[6:]), "-")
	first, last = strings.Trim(first, " \t"), strings.Trim(last, " \t")
	isDigits := func(s string) bool { return strings.Trim(s, "0123456789") == "" }
	if !ok || !isDigits(first) || !isDigits(last) || first+last == "" {
		return false
	}
	if first == "" || last == "" {
		return true
	}
	// last >= first, as numbers of any length
	first, last = strings.TrimLeft(first, "0"), strings.TrimLeft(last, "0")
	return len(last) > len(first) || len(last) == len(first) && last >= first
}

// wellFormedETags reports whether v is "*" or a list of entity-tags
// (RFC 9110 §8.8.3: opaque-tag is DQUOTE *etagc DQUOTE, etagc any visible
// byte but DQUOTE, or obs-text).
func wellFormedETags(v []byte) bool {
	if string(v) == "*" {
		return true
	}
	for _, item := range strings.Split(string(v), ",") {
		item = strings.Trim(item, " \t")
		if item == "" {
			continue // §5.6.1: empty list elements are allowed
		}
		item = strings.TrimPrefix(item, "W/")
		if len(item) < 2 || item[0] != '"' || item[len(item)-1] != '"' || strings.ContainsAny(item[1:len(item)-1], "\" \t") {
			return false
		}
	}
	return true
}

func oneETag(v []byte) bool {
	return wellFormedETags(v) && string(v) != "*" && !bytes.ContainsRune(v, ',')
}

func isHTTPDate(v []byte) bool {
	_, err := http.ParseTime(string(v))
	return err == nil
}

// contentRange reads "bytes first-last/size".
func contentRange(t *testing.T, v string) (off, n int64) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	first, rest, ok2 := strings.Cut(spec, "-")
	last, _, ok3 := strings.Cut(rest, "/")
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	if !ok || !ok2 || !ok3 || err1 != nil || err2 != nil {
		t.Fatalf("net/http's Content-Range %q", v)
	}
	return a, b - a + 1
}

// validFieldValueForTest is RFC 9110's field-value: visible bytes,
// obs-text, space and tab.
func validFieldValueForTest(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
