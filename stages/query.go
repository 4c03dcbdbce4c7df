package stages

// Query parameters without net/url: a handler on the hot path reads one
// parameter with no allocation, where url.ParseQuery builds a map of
// string slices for every request.

// QueryValue returns the value of the first key=value pair in the query
// whose key is key, as sent (still percent-encoded, aliasing the request
// like Query), and whether the key is there at all. A key sent
// percent-encoded matches its decoded form; "a" and "a=" both give an
// empty value. It allocates nothing.
func (r *Request) QueryValue(key string) ([]byte, bool) {
	q := r.Query
	for len(q) > 0 {
		var pair []byte
		pair, q = cut(q, '&')
		if len(pair) == 0 {
			continue // "a&&b": no pair between (WHATWG's urlencoded parser, net/url)
		}
		k, v := cut(pair, '=')
		if queryKeyIs(k, key) {
			return v, true
		}
	}
	return nil, false
}

// AppendQueryValue appends the decoded value of key to dst, as
// QueryValue finds it: "+" becomes a space and %XX its byte (a malformed
// escape is kept as sent). It allocates only if dst is too short.
func (r *Request) AppendQueryValue(dst []byte, key string) ([]byte, bool) {
	v, ok := r.QueryValue(key)
	if !ok {
		return dst, false
	}
	for i := 0; i < len(v); {
		var c byte
		c, i = decodeAt(v, i)
		dst = append(dst, c)
	}
	return dst, true
}

// QueryInt returns key's value as a non-negative decimal number (at most
// 18 digits, so it cannot overflow); ok is false when the key is absent or
// its value is not such a number.
func (r *Request) QueryInt(key string) (n int64, ok bool) {
	v, found := r.QueryValue(key)
	if !found || len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// queryKeyIs compares a raw query key with key, decoding the raw one as it
// goes.
func queryKeyIs(raw []byte, key string) bool {
	j := 0
	for i := 0; i < len(raw); {
		var c byte
		c, i = decodeAt(raw, i)
		if j >= len(key) || key[j] != c {
			return false
		}
		j++
	}
	return j == len(key)
}

// decodeAt decodes the query byte at b[i] ("+" is a space, %XX a byte, a
// malformed escape itself) and returns it with the index after it.
func decodeAt(b []byte, i int) (byte, int) {
	switch c := b[i]; {
	case c == '+':
		return ' ', i + 1
	case c == '%' && i+2 < len(b):
		if d, ok := percent(b[i+1], b[i+2]); ok {
			return d, i + 3
		}
	}
	return b[i], i + 1
}

func percent(hi, lo byte) (byte, bool) {
	h, ok1 := Unhex(hi)
	l, ok2 := Unhex(lo)
	return h<<4 | l, ok1 && ok2
}

func cut(b []byte, sep byte) (before, after []byte) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}
