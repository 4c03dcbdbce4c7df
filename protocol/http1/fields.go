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
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return true
		}
	}
	return false
}
