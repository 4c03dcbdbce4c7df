package http1

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/quartet-server/quartet/stages"
)

// The request parser works in two steps, in the manner of nginx's
// ngx_http_parse_request_line/ngx_http_parse_header_line but split where Go
// makes it cheap:
//
//  1. Scan: find the end of the header block. The scan is resumable: the
//     Parser remembers the offset it reached, the start of the line being
//     scanned and how many lines it has seen, so each byte of a request that
//     trickles in one byte per read is looked at once (O(n) in total, never a
//     rescan from the start). Limits are enforced during the scan, so a
//     client cannot make the reader buffer more than MaxHeaderBytes. Bare LF
//     is rejected here, where line ends are found, and the request line is
//     judged as soon as it is whole.
//  2. Parse: once the block is complete, one pass over it fills the
//     stages.Request with slices aliasing the buffer. No allocation unless
//     req.Headers must grow.
//
// Policy. Where RFC 9112 lets a server choose, Quartet takes the strict side,
// because a request two parsers read differently is a smuggled request. Each
// rule has a sentinel in errors.go; where net/http decides otherwise,
// fuzz_test.go's knownDifference names the rule:
//
//   - line ends must be CRLF: bare LF (§2.2 "MAY recognize") and a CR not
//     followed by LF are 400s, in the header block and in chunked framing;
//   - obs-fold (§5.2) and whitespace before a field's colon (§5.1) are 400s;
//   - Transfer-Encoding with Content-Length is a 400 (§6.1 allows rejecting;
//     net/http drops Content-Length), so is Transfer-Encoding in HTTP/1.0
//     (§6.1: "faulty framing"; net/http ignores it);
//   - only a single "Transfer-Encoding: chunked" is accepted, anything else is
//     a 501 (as net/http and nginx do); Content-Length must be 1*DIGIT, and
//     repeats must be byte-identical (as net/http);
//   - the version must be "HTTP/" DIGIT "." DIGIT (anything else is a 400)
//     with major version 1 (any other is a 505); HTTP/1.2 to HTTP/1.9 are
//     served as HTTP/1.1 (RFC 9110 §2.5 "SHOULD process the message as if
//     it were in the highest minor version", as net/http does);
//   - asterisk-form only with OPTIONS; authority-form (host:port) only, and
//     always, with CONNECT; absolute-form must be scheme "://" host[:port]
//     then path and query, with no userinfo or percent-encoding in the
//     authority (net/url also takes "a:b", "http:///x" and "http://u@h/");
//   - Host is required in every HTTP/1.1 request, CONNECT included (net/http
//     exempts CONNECT); more than one Host, or bytes no uri-host can hold,
//     are 400s;
//   - Expect is a comma-separated list: without a 100-continue member it is a
//     417 (net/http also finds "100-continue" after a space);
//   - leniency the other way: empty lines before the request line are
//     skipped (§2.2 "SHOULD ignore"), which net/http does only after a POST.

// Parser finds and parses one request header block. The zero value is ready;
// one Parser belongs to one connection (reader loop only).
type Parser struct {
	scanned   int  // buf[:scanned] has been searched for LF; the next search starts here
	lineStart int  // offset of the line being scanned
	start     int  // offset of the request line, after any leading empty lines
	lineEnd   int  // offset of the request line's CR; valid when haveLine
	haveLine  bool // the request line has been scanned
	fields    int  // field lines scanned so far
}

// Reset forgets any partial scan, so the next Parse starts a new request.
// Parse resets itself whenever it returns something other than ErrNeedMore.
func (p *Parser) Reset() { *p = Parser{} }

// Parse looks for one complete header block at the start of buf. buf always
// starts at the request's first byte and grows between calls (its prefix
// unchanged); the parser remembers how far it scanned.
//
// It returns ErrNeedMore until the block is complete; then it fills req and
// returns the header block length n: the body, or the next pipelined request,
// starts at buf[n:]. Leading empty lines (CRLF) before the request-line are
// skipped as RFC 9112 §2.2 allows, and n counts them.
//
// Parse sets Method, Target, Path, Query, Major, Minor, Headers (reusing its
// backing array), Host, ContentLength, Chunked, Close and Expect100; it leaves
// Conn, Body, Received and Seq to the caller. The byte slices alias buf.
// Any other error is a protocol error, returned with n == 0 and the Parser
// reset: answer StatusOf(err) and close the connection; req is then partly
// filled and must not be used. The request line is judged as soon as it is
// whole, so such an error can come before the header block is complete.
func (p *Parser) Parse(buf []byte, lim Limits, req *stages.Request) (n int, err error) {
	if len(buf) < p.scanned {
		// The caller broke the "buf only grows" contract (a new request
		// in a fresh buffer without Reset); start over rather than index
		// past the end.
		p.Reset()
	}
	maxLine, maxBytes, maxFields := lim.maxRequestLine(), lim.maxHeaderBytes(), lim.maxHeaders()

	// The header block, final CRLF included, must fit in maxBytes, so its
	// last LF is at an index below maxBytes: never scan past that.
	window := buf
	if len(window) > maxBytes {
		window = window[:maxBytes]
	}
	if p.scanned > len(window) {
		// Only if MaxHeaderBytes shrank mid-request: what was scanned
		// is already over the new limit.
		p.Reset()
		return 0, ErrHeadersTooLarge
	}
	lineParsed := false // parseRequestLine ran on req in this call
	for {
		i := bytes.IndexByte(window[p.scanned:], '\n')
		if i < 0 {
			p.scanned = len(window)
			switch {
			case !p.haveLine && len(window)-p.lineStart > maxLine+1: // +1: its CR may be in
				err = ErrURITooLong
			case len(buf) >= maxBytes:
				err = ErrHeadersTooLarge
			default:
				return 0, ErrNeedMore
			}
			p.Reset()
			return 0, err
		}
		lf := p.scanned + i
		p.scanned = lf + 1
		if lf == p.lineStart || buf[lf-1] != '\r' {
			p.Reset()
			return 0, ErrBareLF
		}
		cr := lf - 1
		if cr == p.lineStart { // an empty line
			if !p.haveLine {
				// RFC 9112 §2.2: "SHOULD ignore at least one empty
				// line (CRLF) received prior to the request-line".
				p.start, p.lineStart = lf+1, lf+1
				continue
			}
			n = lf + 1
			break
		}
		if !p.haveLine {
			if cr-p.lineStart > maxLine {
				p.Reset()
				return 0, ErrURITooLong
			}
			// Judge the request line as soon as it is whole, as nginx
			// does: garbage or HTTP/0.9 gets its 400/505 now instead of
			// holding the connection until the header timeout.
			if err := parseRequestLine(buf[p.lineStart:cr], req); err != nil {
				p.Reset()
				return 0, err
			}
			lineParsed = true
			p.haveLine, p.lineEnd = true, cr
		} else if p.fields++; p.fields > maxFields {
			p.Reset()
			return 0, ErrHeadersTooLarge
		}
		p.lineStart = lf + 1
	}
	start, lineEnd := p.start, p.lineEnd
	p.Reset()
	if !lineParsed {
		// The line arrived in an earlier call: parse it again rather
		// than trust req to be the record passed then. It costs little
		// and keeps the contract simple.
		if err := parseRequestLine(buf[start:lineEnd], req); err != nil {
			return 0, err
		}
	}
	// The field lines lie between the request line's CRLF and the final
	// empty line's CRLF.
	if err := parseFields(buf[lineEnd+2:n-2], req); err != nil {
		return 0, err
	}
	return n, nil
}

// parseRequestLine parses "method SP request-target SP HTTP-version"
// (RFC 9112 §3), exactly one SP each: extra whitespace is a 400, like
// net/http, rather than nginx's tolerance.
func parseRequestLine(line []byte, req *stages.Request) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 0 {
		return ErrMalformedRequestLine
	}
	method, rest := line[:sp1], line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 {
		return ErrMalformedRequestLine
	}
	target, version := rest[:sp2], rest[sp2+1:]
	if len(method) == 0 || !isToken(method) {
		return ErrBadMethod
	}
	// The version decides 400 against 505, so check it before the target:
	// "GET  HTTP/2.0" is a malformed line, but "PRI * HTTP/2.0" is 505.
	if len(version) != len("HTTP/1.1") || string(version[:5]) != "HTTP/" ||
		!isDigit(version[5]) || version[6] != '.' || !isDigit(version[7]) {
		return ErrBadVersion
	}
	req.Major, req.Minor = int(version[5]-'0'), int(version[7]-'0')
	if req.Major != 1 {
		return ErrVersionNotSupported
	}
	// A higher minor version is served as 1.1 (RFC 9110 §2.5): Minor keeps
	// what was sent, for the log and for net/http handlers, and every rule
	// that depends on it asks "at least 1.1" (Minor >= 1) or "1.0"
	// (Minor == 0), never "exactly 1.1".
	req.Method, req.Target, req.Path, req.Query, req.Host = method, target, nil, nil, nil
	return parseTarget(req)
}

// parseTarget classifies req.Target into the four forms of RFC 9112 §3.2 and
// sets Path, Query and, for absolute- and authority-form, Host.
func parseTarget(req *stages.Request) error {
	t := req.Target
	if len(t) == 0 {
		return ErrBadTarget
	}
	for _, c := range t {
		if c < ' ' || c == 0x7f { // url.Parse rejects these too
			return ErrBadTarget
		}
	}
	if string(req.Method) == "CONNECT" {
		// authority-form, §3.2.3: "uri-host : port", nothing else.
		if !validAuthority(t, true) {
			return ErrBadTarget
		}
		req.Host = t
		return nil
	}
	switch {
	case t[0] == '/': // origin-form, §3.2.1
		return setPathQuery(req, t)
	case len(t) == 1 && t[0] == '*': // asterisk-form, §3.2.4
		if string(req.Method) != "OPTIONS" {
			return ErrBadTarget
		}
		req.Path = t
		return nil
	}
	// absolute-form, §3.2.2: scheme "://" authority path-abempty ["?" query].
	// §3.2.2 says to take the host from it and ignore the Host field.
	i := 0
	for i < len(t) && (isAlpha(t[i]) || i > 0 && (isDigit(t[i]) || t[i] == '+' || t[i] == '-' || t[i] == '.')) {
		i++
	}
	if i == 0 || !bytes.HasPrefix(t[i:], []byte("://")) {
		return ErrBadTarget
	}
	rest := t[i+3:]
	end := bytes.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	if !validAuthority(rest[:end], false) {
		return ErrBadTarget
	}
	req.Host = rest[:end]
	if err := setPathQuery(req, rest[end:]); err != nil {
		return err
	}
	if len(req.Path) == 0 {
		// An empty path means "/" (RFC 9110 §4.2.3): handlers that route
		// by Path answered "http://x" 404. The second slash of "://" is
		// one, in the target itself, so it costs no allocation.
		req.Path = t[i+2 : i+3]
	}
	return nil
}

// setPathQuery splits path ["?" query] and checks the path's percent-escapes,
// which net/url also insists on; the query is left to the application.
func setPathQuery(req *stages.Request, pq []byte) error {
	path := pq
	if q := bytes.IndexByte(pq, '?'); q >= 0 {
		path, req.Query = pq[:q], pq[q+1:]
	}
	for i := 0; i < len(path); i++ {
		if path[i] == '%' {
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return ErrBadTarget
			}
			i += 2
		}
	}
	req.Path = path
	return nil
}

// validAuthority reports whether a is uri-host [":" port] with no userinfo
// (RFC 9110 §4.2.4 says to treat userinfo as an error) and no
// percent-encoding: an IP-literal holding an IPv6 address, or a non-empty
// reg-name of unreserved and sub-delims characters. needPort demands a
// non-empty port, as authority-form does.
func validAuthority(a []byte, needPort bool) bool {
	if len(a) == 0 {
		return false
	}
	var port []byte
	hasPort := false
	if a[0] == '[' {
		j := bytes.IndexByte(a, ']')
		if j < 0 {
			return false
		}
		for _, c := range a[1:j] {
			if !isHex(c) && c != ':' && c != '.' {
				return false
			}
		}
		// Same rule as net/url: only IPv6 (IPv4-mapped included) may be
		// bracketed. Rare enough that the string conversion may allocate.
		addr, err := netip.ParseAddr(string(a[1:j]))
		if err != nil || addr.Is4() {
			return false
		}
		if rest := a[j+1:]; len(rest) > 0 {
			if rest[0] != ':' {
				return false
			}
			port, hasPort = rest[1:], true
		}
	} else {
		host := a
		if c := bytes.LastIndexByte(a, ':'); c >= 0 {
			host, port, hasPort = a[:c], a[c+1:], true
		}
		if len(host) == 0 {
			return false
		}
		for _, c := range host {
			if !isRegName(c) {
				return false
			}
		}
	}
	if needPort && (!hasPort || len(port) == 0) {
		return false
	}
	for _, c := range port {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

// parseFields parses the field lines of block (each ending in CRLF; the scan
// already proved there is no bare LF) into req.Headers and derives the
// framing and connection fields from the few headers the server acts on.
func parseFields(block []byte, req *stages.Request) error {
	req.Headers = req.Headers[:0]
	req.ContentLength, req.Chunked, req.Close, req.Expect100 = -1, false, false, false
	var (
		host, expect, contentLength, transferEncoding []byte
		hosts, teFields                               int
		haveExpect                                    bool
	)
	for len(block) > 0 {
		eol := bytes.IndexByte(block, '\n') // always preceded by CR
		line := block[:eol-1]
		block = block[eol+1:]

		if line[0] == ' ' || line[0] == '\t' {
			return ErrObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			// Catches a missing colon, an empty name and whitespace
			// before the colon (§5.1: MUST reject with 400).
			return ErrBadFieldName
		}
		name, value := line[:colon], stages.TrimOWS(line[colon+1:])
		if !validFieldValue(value) {
			return ErrBadFieldValue
		}
		req.Headers = append(req.Headers, stages.Header{Name: name, Value: value})

		// Dispatch on length first so most fields cost one compare.
		switch len(name) {
		case 4:
			if stages.EqualFoldASCII(name, "Host") {
				hosts++
				host = value
			}
		case 6:
			if stages.EqualFoldASCII(name, "Expect") && !haveExpect {
				// net/http looks at the first Expect field only; so do we.
				expect, haveExpect = value, true
			}
		case 10:
			if stages.EqualFoldASCII(name, "Connection") && stages.ListHasToken(value, "close") {
				req.Close = true
			}
		case 14:
			if stages.EqualFoldASCII(name, "Content-Length") {
				if contentLength != nil && !bytes.Equal(contentLength, value) {
					return ErrBadContentLength
				}
				contentLength = value
			}
		case 17:
			if stages.EqualFoldASCII(name, "Transfer-Encoding") {
				teFields++
				transferEncoding = value
			}
		}
	}

	if hosts > 1 {
		return ErrDuplicateHost
	}
	if hosts == 0 && req.Minor >= 1 {
		return ErrMissingHost
	}
	for _, c := range host {
		if !isHostByte(c) {
			return ErrBadHost
		}
	}
	if req.Host == nil { // absolute- and authority-form set it from the target
		req.Host = host
	}

	if teFields > 0 {
		switch {
		case req.Minor == 0:
			return ErrTransferEncodingHTTP10
		case contentLength != nil:
			return ErrConflictingFraming
		case teFields > 1 || !stages.EqualFoldASCII(transferEncoding, "chunked"):
			// Like net/http and nginx, only a lone "chunked" is
			// accepted: codings we do not implement are a 501, and a
			// list is the most smuggling-prone shape of all.
			return ErrUnknownTransferCoding
		}
		req.Chunked = true
	} else if contentLength != nil {
		cl, ok := parseContentLength(contentLength)
		if !ok {
			return ErrBadContentLength
		}
		req.ContentLength = cl
	}

	if len(expect) > 0 {
		if !stages.ListHasToken(expect, "100-continue") {
			return ErrExpectationFailed
		}
		// RFC 9110 §10.1.1: a server MUST ignore 100-continue in an
		// HTTP/1.0 request.
		req.Expect100 = req.Minor >= 1
	}
	return nil
}

// parseContentLength parses 1*DIGIT into an int64, rejecting signs, spaces,
// lists ("5, 5") and overflow.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		if n > (1<<63-1-9)/10 {
			// Might overflow; finish carefully.
			d := int64(c - '0')
			if n > (1<<63-1-d)/10 {
				return 0, false
			}
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validFieldValue reports whether v is free of control bytes other than
// HTAB (RFC 9110 §5.5: CTLs are not field-vchar; obs-text is allowed).
// Values are most of a header block's bytes, so it tests eight at a time
// with the "has a byte less than n" and "has a zero byte" word tricks
// (Anderson's Bit Twiddling Hacks) and looks at single bytes only for a
// word that may hold an HTAB or a bad byte.
func validFieldValue(v []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(v) >= 8 {
		w := binary.LittleEndian.Uint64(v)
		below := (w - ones*' ') &^ w & highs // some byte < 0x20
		del := w ^ (ones * 0x7f)
		del = (del - ones) &^ del & highs // some byte == 0x7f
		if below|del != 0 && !validFieldValueBytes(v[:8]) {
			return false
		}
		v = v[8:]
	}
	return validFieldValueBytes(v)
}

func validFieldValueBytes(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// Character classes as 128-bit masks (as in net/textproto): constant, so no
// table lives in mutable package state, and one shift tests a byte.
const (
	alnumMask = (1<<10-1)<<'0' | (1<<26-1)<<'a' | (1<<26-1)<<'A'

	// tchar, RFC 9110 §5.6.2.
	tokenMask = alnumMask | 1<<'!' | 1<<'#' | 1<<'$' | 1<<'%' | 1<<'&' | 1<<'\'' |
		1<<'*' | 1<<'+' | 1<<'-' | 1<<'.' | 1<<'^' | 1<<'_' | 1<<'`' | 1<<'|' | 1<<'~'

	// unreserved / sub-delims, RFC 3986 §3.2.2 reg-name without pct-encoded.
	regNameMask = alnumMask | 1<<'-' | 1<<'.' | 1<<'_' | 1<<'~' |
		1<<'!' | 1<<'$' | 1<<'&' | 1<<'\'' | 1<<'(' | 1<<')' | 1<<'*' | 1<<'+' | 1<<',' | 1<<';' | 1<<'='

	// Bytes net/http's httpguts.ValidHostHeader allows in a Host field: the
	// union of everything uri-host [":" port] may contain. Matching it keeps
	// the two servers' accept/reject decisions on Host identical.
	hostMask = regNameMask | 1<<'%' | 1<<':' | 1<<'[' | 1<<']'
)

func inMask(c byte, mask0, mask1 uint64) bool {
	if c < 64 {
		return mask0&(1<<c) != 0
	}
	if c < 128 {
		return mask1&(1<<(c-64)) != 0
	}
	return false
}

func isTokenByte(c byte) bool {
	return inMask(c, tokenMask&(1<<64-1), tokenMask>>64)
}

func isToken(b []byte) bool {
	for _, c := range b {
		if !isTokenByte(c) {
			return false
		}
	}
	return true
}

func isRegName(c byte) bool  { return inMask(c, regNameMask&(1<<64-1), regNameMask>>64) }
func isHostByte(c byte) bool { return inMask(c, hostMask&(1<<64-1), hostMask>>64) }
func isDigit(c byte) bool    { return '0' <= c && c <= '9' }
func isAlpha(c byte) bool    { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isHex(c byte) bool      { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
