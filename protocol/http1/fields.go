package http1

// The rules a response's header fields must keep, so that what a handler
// sets cannot split the response or inject a line. The request parser
// holds requests to the same token rule (isTokenByte).

// ValidFieldName reports whether name is a token (RFC 9110 §5.1), the
// only shape a field name may have; a field with another name must not
// be sent.
func ValidFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenByte(name[i]) {
			return false
		}
	}
	return true
}

// UnsafeFieldValue reports whether a field value holds CR, LF or NUL,
// which would end the field (response splitting): send such bytes as
// spaces, as net/http does.
func UnsafeFieldValue(v string) bool {
	// Eight bytes at a time: a word has a CR, LF or NUL where, xored with
	// that byte repeated, it has a zero byte. Every response's fields pass
	// through here, most of them longer than a word.
	const ones = 0x0101010101010101
	for len(v) >= 8 {
		w := uint64(v[0]) | uint64(v[1])<<8 | uint64(v[2])<<16 | uint64(v[3])<<24 |
			uint64(v[4])<<32 | uint64(v[5])<<40 | uint64(v[6])<<48 | uint64(v[7])<<56
		if hasZeroByte(w) || hasZeroByte(w^(ones*'\r')) || hasZeroByte(w^(ones*'\n')) {
			return true
		}
		v = v[8:]
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return true
		}
	}
	return false
}

// CleanFieldValue returns v with its CR, LF and NUL bytes as spaces
// (UnsafeFieldValue), for a value set once and sent often, such as a
// server's name.
func CleanFieldValue(v string) string {
	if !UnsafeFieldValue(v) {
		return v
	}
	b := []byte(v)
	for i, c := range b {
		if c == '\r' || c == '\n' || c == 0 {
			b[i] = ' '
		}
	}
	return string(b)
}

// hasZeroByte reports whether one of w's bytes is zero (exact: a borrow
// can only mark bytes above a zero one).
func hasZeroByte(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	return (w-ones)&^w&highs != 0
}
