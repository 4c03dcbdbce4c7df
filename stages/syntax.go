package stages

// HTTP syntax every stage reads the same way: the reader parsing requests,
// the processor framing responses, the static file server, the load
// generator parsing responses. One copy each, so the stages cannot come to
// disagree about what a field says; the parser's policy on leniency
// (protocol/http1/parse.go) relies on it.

// EqualFoldASCII compares two ASCII tokens (header names, connection
// options) ignoring case, without the Unicode folding of strings.EqualFold
// and without allocating, for any mix of strings and byte slices.
func EqualFoldASCII[A, B ~string | ~[]byte](a A, b B) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		c, d := a[i], b[i]
		if c == d {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// TrimOWS strips optional whitespace, which RFC 9110 §5.6.3 defines as SP
// and HTAB only: bytes.TrimSpace and strings.TrimSpace also strip Unicode
// spaces, and so read "close\u00a0" as close where net/http and the
// proxies in front of a server do not.
func TrimOWS[T ~string | ~[]byte](v T) T {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// ListHasToken reports whether the comma-separated list (RFC 9110
// §5.6.1) has a member equal to token, ignoring ASCII case; members are
// trimmed of OWS only. Empty members are allowed, as the RFC asks of a
// recipient. Connection: keep-alive, Upgrade holds "upgrade".
func ListHasToken[T ~string | ~[]byte](list T, token string) bool {
	for len(list) > 0 {
		member := list
		i := 0
		for i < len(list) && list[i] != ',' {
			i++
		}
		if i < len(list) {
			member, list = list[:i], list[i+1:]
		} else {
			list = list[len(list):]
		}
		if EqualFoldASCII(TrimOWS(member), token) {
			return true
		}
	}
	return false
}

// Unhex is the value of the hexadecimal digit c (either case).
func Unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
