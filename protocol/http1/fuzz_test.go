package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// fuzzLimits are large enough that no fuzz input hits a Quartet limit:
// net/http has no equivalent limits in ReadRequest, so limits are tested by
// the table tests, not differentially.
var fuzzLimits = Limits{MaxRequestLine: 1 << 30, MaxHeaderBytes: 1 << 30, MaxHeaders: 1 << 30}

// outcome is what one implementation made of a request.
type outcome struct {
	accepted bool // the header block was accepted
	err      error

	method, target, host, path, query string
	headers                           map[string][]string // canonical names
	contentLength                     int64               // net/http convention: -1 chunked, 0 absent
	close                             bool                // net/http's Request.Close

	bodyOK   bool   // the whole body was read
	body     []byte // what was read of it
	consumed int    // bytes of the input used by this request, body included, when bodyOK
}

// quartetOutcome parses in with Parser and the body with ChunkedDecoder or
// Content-Length, all in one shot.
func quartetOutcome(in []byte) outcome {
	var p Parser
	req := &stages.Request{}
	req.Reset()
	n, err := p.Parse(in, fuzzLimits, req)
	if err != nil {
		return outcome{err: err}
	}
	o := outcome{
		accepted:      true,
		method:        string(req.Method),
		target:        string(req.Target),
		host:          string(req.Host),
		path:          string(req.Path),
		query:         string(req.Query),
		headers:       map[string][]string{},
		contentLength: req.ContentLength,
		close:         req.Close,
	}
	for _, h := range req.Headers {
		k := textproto.CanonicalMIMEHeaderKey(string(h.Name))
		o.headers[k] = append(o.headers[k], string(h.Value))
	}
	if req.Minor == 0 && !stages.ListHasToken(strings.Join(o.headers["Connection"], ","), "keep-alive") {
		o.close = true // net/http folds HTTP/1.0's default into Close
	}
	switch {
	case req.Chunked:
		o.contentLength = -1
		var d ChunkedDecoder
		d.MaxTrailerBytes = 1 << 30
		body := make([]byte, len(in)-n)
		consumed, produced, done, err := d.Decode(body, in[n:])
		o.body, o.bodyOK = body[:produced], done && err == nil
		o.consumed = n + consumed
	case req.ContentLength > 0:
		if int64(len(in)-n) >= req.ContentLength {
			o.body, o.bodyOK = in[n:n+int(req.ContentLength)], true
			o.consumed = n + int(req.ContentLength)
		} else {
			o.body = in[n:]
		}
	default:
		o.contentLength = 0
		o.body, o.bodyOK, o.consumed = []byte{}, true, n
	}
	return o
}

// netHTTPOutcome runs net/http's ReadRequest and then the checks that
// net/http's server (conn.readRequest and conn.serve in server.go) applies
// before a handler runs, so that "accepted" means what it means for a real
// net/http server.
func netHTTPOutcome(in []byte) outcome {
	r := bytes.NewReader(in)
	br := bufio.NewReaderSize(r, max(len(in), 16)) // the whole input fits: no buffer-size artefacts
	req, err := http.ReadRequest(br)
	if err != nil {
		return outcome{err: err}
	}
	reject := func(msg string) outcome { return outcome{err: errors.New(msg)} }
	// http1ServerSupportsRequest.
	if req.ProtoMajor != 1 && !(req.ProtoMajor == 2 && req.ProtoMinor == 0 && req.Method == "PRI" && req.RequestURI == "*") {
		return reject("505 unsupported protocol version")
	}
	// ReadRequest deletes Host from req.Header, but the server's checks
	// look at the Host fields as received; re-read them the same way
	// readRequest does (one line, then ReadMIMEHeader).
	tp := textproto.NewReader(bufio.NewReaderSize(bytes.NewReader(in), max(len(in), 16)))
	tp.ReadLine()
	raw, _ := tp.ReadMIMEHeader()
	hosts, haveHost := raw["Host"]
	if haveHost {
		req.Header["Host"] = hosts
	}
	isH2Upgrade := req.Method == "PRI" && len(req.Header) == 0 && req.URL.Path == "*" && req.Proto == "HTTP/2.0"
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && !isH2Upgrade && req.Method != "CONNECT" {
		return reject("missing required Host header")
	}
	if len(hosts) == 1 && !validHostHeader(hosts[0]) {
		return reject("malformed Host header")
	}
	for k, vv := range req.Header {
		if !isToken([]byte(k)) {
			return reject("invalid header name")
		}
		for _, v := range vv {
			for _, c := range []byte(v) {
				if c < ' ' && c != '\t' || c == 0x7f {
					return reject("invalid header value")
				}
			}
		}
	}
	// conn.serve: any Expect other than 100-continue gets a 417.
	if e := req.Header.Get("Expect"); e != "" && !netHasToken(e, "100-continue") {
		return reject("417 expectation failed")
	}
	o := outcome{
		accepted:      true,
		method:        req.Method,
		target:        req.RequestURI,
		host:          req.Host,
		path:          req.URL.Path,
		query:         req.URL.RawQuery,
		headers:       req.Header,
		contentLength: req.ContentLength,
		close:         req.Close,
	}
	o.body, err = io.ReadAll(req.Body)
	o.bodyOK = err == nil
	o.consumed = len(in) - r.Len() - br.Buffered()
	return o
}

// netHasToken is net/http's hasToken (header.go), which conn.serve uses for
// Expect: token may sit anywhere between SP, HTAB or comma boundaries, not
// only as a whole list member.
func netHasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	boundary := func(c byte) bool { return c == ' ' || c == ',' || c == '\t' }
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if sp > 0 && !boundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !boundary(v[end]) {
			continue
		}
		if strings.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

// validHostHeader is httpguts.ValidHostHeader, which net/http vendors
// where tests cannot import it: the same byte set as Quartet's hostMask.
func validHostHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		if !isHostByte(h[i]) {
			return false
		}
	}
	return true
}

// knownDifference reports whether in has a shape on which Quartet's
// documented policy deliberately differs from net/http, so that the two may
// disagree on accepting it. Each rule is narrow: it names one shape, and the
// fuzz target logs which rule excused a difference.
func knownDifference(in []byte) bool { return knownDifferenceRule(in) != "" }

func knownDifferenceRule(in []byte) string {
	lines, rest, complete := headerLines(in)
	if len(lines) == 0 {
		return ""
	}
	reqLine := string(bytes.TrimSuffix(lines[0], []byte("\r")))
	method, rl, _ := strings.Cut(reqLine, " ")
	target, version, _ := strings.Cut(rl, " ")

	for _, l := range lines {
		// Bare LF (RFC 9112 §2.2 MAY accept it): Quartet rejects it,
		// net/textproto accepts it as a line end.
		if !bytes.HasSuffix(l, []byte("\r")) {
			return "bare LF in header block"
		}
		// Bare CR: textproto trims trailing whitespace including CR, so
		// "X: a\r\r\n" passes; Quartet sees a CTL in the value.
		if bytes.IndexByte(l[:len(l)-1], '\r') >= 0 {
			return "bare CR in header block"
		}
	}
	var hasTE, hasCL, hasHost bool
	var trailerHeader []string
	for i, l := range lines[1:] {
		// obs-fold (RFC 9112 §5.2): Quartet rejects, textproto unfolds
		// (net/http rejects only a fold on the first field line).
		if i > 0 && len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			return "obs-fold"
		}
		name, value, _ := bytes.Cut(l, []byte(":"))
		switch textproto.CanonicalMIMEHeaderKey(string(name)) {
		case "Transfer-Encoding":
			hasTE = true
		case "Content-Length":
			hasCL = true
		case "Host":
			hasHost = true
		case "Trailer":
			trailerHeader = append(trailerHeader, string(value))
		}
	}
	if !complete {
		return ""
	}
	// RFC 9112 §6.1 lets a server reject Transfer-Encoding with
	// Content-Length; net/http drops Content-Length and reads chunked.
	if hasTE && hasCL {
		return "Transfer-Encoding with Content-Length"
	}
	// RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding has faulty framing;
	// Quartet rejects it, net/http ignores Transfer-Encoding in HTTP/1.0.
	if hasTE && version == "HTTP/1.0" {
		return "Transfer-Encoding in HTTP/1.0"
	}
	// Quartet answers 505 to the HTTP/2 preface; net/http passes
	// PRI * HTTP/2.0 on to its HTTP/2 server. (HTTP/1.2-1.9 both serve
	// as 1.1: no rule.)
	if version == "HTTP/2.0" && method == "PRI" {
		return "HTTP/2 preface"
	}
	// Asterisk-form is only for OPTIONS (RFC 9112 §3.2.4); net/http
	// accepts it with any method.
	if target == "*" && method != "OPTIONS" {
		return "asterisk-form without OPTIONS"
	}
	if method == "CONNECT" {
		// CONNECT takes only authority-form host:port (RFC 9112 §3.2.3);
		// net/http also takes a path (net/rpc) or a port-less host.
		if !validAuthority([]byte(target), true) {
			return "CONNECT target not host:port"
		}
		// RFC 9112 §3.2 requires Host in every HTTP/1.1 request (and
		// so in HTTP/1.2-1.9, served as 1.1); net/http exempts CONNECT.
		if !hasHost && strings.HasPrefix(version, "HTTP/1.") && version != "HTTP/1.0" {
			return "CONNECT without Host"
		}
	}
	// absolute-form: Quartet takes only scheme "://" host[:port] with a
	// plain reg-name or IPv6 literal; net/url also takes opaque and
	// rootless URIs ("a:b"), userinfo (RFC 9110 §4.2.4: treat as an
	// error), percent-encoded hosts and zones, and an empty host.
	if method != "CONNECT" && target != "*" && !strings.HasPrefix(target, "/") {
		scheme, after, ok := strings.Cut(target, "://")
		authority := after
		if i := strings.IndexAny(after, "/?"); i >= 0 {
			authority = after[:i]
		}
		if !ok || !isScheme(scheme) || !validAuthority([]byte(authority), false) {
			return "absolute-form authority not plain host[:port]"
		}
	}
	// Expect is a comma-separated list (RFC 9110 §10.1.1) for Quartet;
	// net/http finds "100-continue" between any SP, HTAB or comma, so
	// "Expect: foo 100-continue" gets a 417 only from Quartet.
	if e := firstField(lines[1:], "Expect"); netHasToken(e, "100-continue") && !stages.ListHasToken(e, "100-continue") {
		return "Expect member not comma-separated"
	}
	// A chunked request's Trailer field may name any field for Quartet,
	// which discards trailers; net/http refuses Transfer-Encoding,
	// Trailer and Content-Length there.
	for _, v := range trailerHeader {
		for _, k := range strings.Split(v, ",") {
			switch textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)) {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				if hasTE {
					return "Trailer names a framing field"
				}
			}
		}
	}
	if hasTE {
		return chunkedKnownDifference(rest)
	}
	return ""
}

// isScheme reports whether s is an RFC 3986 scheme:
// ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func isScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// firstField returns the OWS-trimmed value of the first field line named
// name, as net/textproto would read it.
func firstField(lines [][]byte, name string) string {
	for _, l := range lines {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if ok && textproto.CanonicalMIMEHeaderKey(string(k)) == name {
			return string(stages.TrimOWS(bytes.TrimSuffix(v, []byte("\r"))))
		}
	}
	return ""
}

// headerLines splits in into lines the way net/textproto does (each ends at
// LF; the LF is dropped), up to and including the first line that is empty
// or holds only CR. It returns what follows and whether that line was found.
func headerLines(in []byte) (lines [][]byte, rest []byte, complete bool) {
	// Quartet skips leading CRLFs (RFC 9112 §2.2) and the fuzz target
	// strips them before net/http sees the input: do the same here.
	for bytes.HasPrefix(in, []byte("\r\n")) {
		in = in[2:]
	}
	for {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			return lines, in, false
		}
		l := in[:i]
		in = in[i+1:]
		lines = append(lines, l)
		if len(lines) > 1 && (len(l) == 0 || string(l) == "\r") {
			return lines, in, true
		}
	}
}

// chunkedKnownDifference is knownDifference for a chunked body: the rules on
// which Quartet's ChunkedDecoder deliberately differs from net/http's.
func chunkedKnownDifference(body []byte) string {
	for {
		i := bytes.IndexByte(body, '\n')
		if i < 0 {
			return ""
		}
		line := body[:i]
		body = body[i+1:]
		size, ext, hasExt := bytes.Cut(bytes.TrimSuffix(line, []byte("\r")), []byte(";"))
		if hasExt {
			// RFC 9112 §7.1.1 allows BWS before ";"; net/http trims
			// whitespace only at the end of the line.
			if len(bytes.TrimRight(size, " \t")) != len(size) {
				return "BWS before chunk-ext"
			}
			// Quartet rejects control bytes in chunk extensions;
			// net/http skips anything up to CRLF.
			for _, c := range ext {
				if c < ' ' && c != '\t' || c == 0x7f {
					return "CTL in chunk-ext"
				}
			}
		}
		digits := bytes.TrimRight(size, " \t")
		if len(digits) > 16 && len(bytes.TrimLeft(digits, "0")) <= 16 {
			// Leading zeros past 16 digits: net/http refuses a 17th
			// digit, Quartet (and nginx) only a 17th significant one.
			return "leading zeros past 16 chunk-size digits"
		}
		n, ok := parseHexForTest(digits)
		if !ok {
			return ""
		}
		if n == 0 {
			return trailerKnownDifference(body)
		}
		if uint64(len(body)) < n+2 {
			return ""
		}
		body = body[n+2:]
	}
}

// trailerKnownDifference: net/http reads the trailer section with
// net/textproto's ReadMIMEHeader, which has the header block's leniencies
// (bare LF, obs-fold, bare CR before CRLF, spaces in names) and no server
// field-name check; Quartet holds trailers to the header block's rules.
func trailerKnownDifference(tr []byte) string {
	for {
		i := bytes.IndexByte(tr, '\n')
		if i < 0 {
			return ""
		}
		l := tr[:i]
		tr = tr[i+1:]
		if !bytes.HasSuffix(l, []byte("\r")) {
			return "bare LF in trailer"
		}
		l = l[:len(l)-1]
		if len(l) == 0 {
			return ""
		}
		if bytes.IndexByte(l, '\r') >= 0 {
			return "bare CR in trailer"
		}
		if l[0] == ' ' || l[0] == '\t' {
			return "obs-fold in trailer"
		}
		if name, _, _ := bytes.Cut(l, []byte(":")); bytes.ContainsAny(name, " \t") {
			return "whitespace in trailer field name"
		}
	}
}

func parseHexForTest(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		v, ok := stages.Unhex(c)
		if !ok {
			return 0, false
		}
		n = n<<4 | uint64(v)
	}
	return n, true
}

// normalizeHeaders removes from Quartet's header map what net/http's
// ReadRequest removes or rewrites, so the two maps can be compared.
func normalizeHeaders(o, theirs outcome) map[string][]string {
	h := map[string][]string{}
	for k, vv := range o.headers {
		h[k] = vv
	}
	// Framing fields net/http consumes (transfer.go).
	delete(h, "Transfer-Encoding")
	if o.contentLength == -1 {
		delete(h, "Trailer")
		delete(h, "Content-Length")
	}
	if cl := h["Content-Length"]; len(cl) > 1 {
		h["Content-Length"] = cl[:1] // identical repeats, deduplicated
	}
	// fixPragmaCacheControl (request.go) adds Cache-Control for
	// "Pragma: no-cache".
	if pv := h["Pragma"]; len(pv) > 0 && pv[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			if _, ok := theirs.headers["Cache-Control"]; ok {
				h["Cache-Control"] = []string{"no-cache"}
			}
		}
	}
	return h
}

func equalHeaders(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || len(va) != len(vb) {
			return false
		}
		for i := range va {
			if va[i] != vb[i] {
				return false
			}
		}
	}
	return true
}

// checkIncremental feeds in to a fresh Parser in small pieces and checks the
// result equals the one-shot parse: resumption must not change the outcome.
func checkIncremental(t *testing.T, in []byte, step int) {
	var one Parser
	oneReq := &stages.Request{}
	wantN, wantErr := one.Parse(in, fuzzLimits, oneReq)

	var p Parser
	req := &stages.Request{}
	var n int
	var err error
	for end := min(step, len(in)); ; end = min(end+step, len(in)) {
		n, err = p.Parse(in[:end], fuzzLimits, req)
		if err != ErrNeedMore || end == len(in) {
			break
		}
	}
	if n != wantN || err != wantErr {
		t.Fatalf("fed %d bytes at a time: n=%d err=%v; one shot: n=%d err=%v", step, n, err, wantN, wantErr)
	}
	if err == nil && (!bytes.Equal(req.Target, oneReq.Target) || len(req.Headers) != len(oneReq.Headers) || !bytes.Equal(req.Host, oneReq.Host)) {
		t.Fatalf("fed %d bytes at a time: request differs from one-shot parse", step)
	}
}

// checkLimits parses in under limits scaled to its size and checks that a
// limit error is only returned when that limit is really exceeded, and that
// otherwise the result is the one without limits.
func checkLimits(t *testing.T, in []byte) {
	lim := Limits{
		MaxRequestLine: 1 + len(in)/3,
		MaxHeaderBytes: 1 + len(in)/2,
		MaxHeaders:     1 + bytes.Count(in, []byte("\n"))/3,
	}
	var p Parser
	req := &stages.Request{}
	n, err := p.Parse(in, lim, req)

	trimmed := in
	for bytes.HasPrefix(trimmed, []byte("\r\n")) {
		trimmed = trimmed[2:]
	}
	// The request line ends at CRLF; a lone CR is part of it (and is
	// rejected as a CTL once the line is whole).
	line := trimmed
	if i := bytes.Index(line, []byte("\r\n")); i >= 0 {
		line = line[:i]
	}
	switch err {
	case ErrURITooLong:
		if len(line) <= lim.MaxRequestLine {
			t.Fatalf("414 for a %d-byte request line under MaxRequestLine %d", len(line), lim.MaxRequestLine)
		}
		return
	case ErrHeadersTooLarge:
		if len(in) < lim.MaxHeaderBytes && bytes.Count(in, []byte("\n")) <= lim.MaxHeaders {
			t.Fatalf("431 for %d bytes and at most %d lines under %+v", len(in), bytes.Count(in, []byte("\n")), lim)
		}
		return
	}
	var big Parser
	wantN, wantErr := big.Parse(in, fuzzLimits, &stages.Request{})
	if wantErr == ErrURITooLong || wantErr == ErrHeadersTooLarge {
		t.Fatalf("limit error %v under fuzzLimits", wantErr)
	}
	if n != wantN || err != wantErr {
		t.Fatalf("under %+v: n=%d err=%v; without limits: n=%d err=%v", lim, n, err, wantN, wantErr)
	}
	if err == nil && (n > lim.MaxHeaderBytes || len(line) > lim.MaxRequestLine || len(req.Headers) > lim.MaxHeaders) {
		t.Fatalf("accepted a request over %+v: n=%d line=%d fields=%d", lim, n, len(line), len(req.Headers))
	}
}

// FuzzParse is the differential test against net/http: for every input the
// two must agree on accepting the header block (unless knownDifference names
// the policy that makes them differ), and when both accept, on method,
// target, Host, path, query, header fields, Content-Length, Close, the body
// and how many bytes the request used, which is where the next pipelined
// request starts: a disagreement there is request smuggling. Each input is
// also parsed in 1- and 7-byte pieces and under small limits, which must not
// change the outcome except by a justified limit error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		browserGET,
		"GET / HTTP/1.0\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
		"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: v\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
		"GET http://h:80/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /x HTTP/1.2\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"GET / HTTP/1.9\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkIncremental(t, in, 1)
		checkIncremental(t, in, 7)
		checkLimits(t, in)

		ours := quartetOutcome(in)
		// Quartet skips leading empty lines (RFC 9112 §2.2); net/http's
		// server does so only after a POST. Give net/http the same bytes
		// without them, and account for them in the consumed count.
		trimmed := in
		for bytes.HasPrefix(trimmed, []byte("\r\n")) {
			trimmed = trimmed[2:]
		}
		skipped := len(in) - len(trimmed)
		theirs := netHTTPOutcome(trimmed)

		if ours.accepted != theirs.accepted {
			if knownDifference(in) {
				t.Logf("known difference %q: quartet err=%v, net/http err=%v", knownDifferenceRule(in), ours.err, theirs.err)
				return
			}
			t.Fatalf("accept differs: quartet err=%v, net/http err=%v\ninput %q", ours.err, theirs.err, in)
		}
		if !ours.accepted {
			if ours.err == ErrNeedMore {
				// net/http must have failed for want of bytes too.
				if !errors.Is(theirs.err, io.EOF) && !errors.Is(theirs.err, io.ErrUnexpectedEOF) && !knownDifference(in) {
					t.Logf("incomplete for quartet, net/http rejected: %v", theirs.err)
				}
			}
			return
		}
		mismatch := func(what string, q, n any) {
			t.Fatalf("%s differs: quartet %q, net/http %q\ninput %q", what, q, n, in)
		}
		if ours.method != theirs.method {
			mismatch("method", ours.method, theirs.method)
		}
		if ours.target != theirs.target {
			mismatch("target", ours.target, theirs.target)
		}
		if ours.host != theirs.host {
			mismatch("host", ours.host, theirs.host)
		}
		if ours.method != "CONNECT" && ours.target != "*" {
			// Quartet's Path is still percent-encoded, and an
			// absolute-form target's empty path is "/" (RFC 9110
			// §4.2.3), where net/url leaves it empty.
			if p, err := pathUnescape(ours.path); err != nil || p != theirs.path && !(p == "/" && theirs.path == "") {
				mismatch("path", ours.path, theirs.path)
			}
			if ours.query != theirs.query {
				mismatch("query", ours.query, theirs.query)
			}
		}
		if h := normalizeHeaders(ours, theirs); !equalHeaders(h, theirs.headers) {
			mismatch("headers", h, theirs.headers)
		}
		if ours.contentLength != theirs.contentLength {
			mismatch("content length", ours.contentLength, theirs.contentLength)
		}
		if ours.close != theirs.close {
			mismatch("close", ours.close, theirs.close)
		}
		if ours.bodyOK != theirs.bodyOK {
			if rule := knownDifferenceRule(in); rule != "" {
				t.Logf("known body difference %q", rule)
				return
			}
			t.Fatalf("body read differs: quartet ok=%v, net/http ok=%v\ninput %q", ours.bodyOK, theirs.bodyOK, in)
		}
		if ours.bodyOK {
			if !bytes.Equal(ours.body, theirs.body) {
				mismatch("body", ours.body, theirs.body)
			}
			// Where the next pipelined request starts: a disagreement
			// here is request smuggling.
			if ours.consumed != theirs.consumed+skipped {
				mismatch("bytes consumed", ours.consumed, theirs.consumed+skipped)
			}
		}
	})
}

// pathUnescape is net/url's path unescaping, which leaves '+' alone.
func pathUnescape(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", errors.New("bad escape")
			}
			hi, _ := stages.Unhex(s[i+1])
			lo, _ := stages.Unhex(s[i+2])
			b.WriteByte(hi<<4 | lo)
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String(), nil
}

// netChunked decodes in with net/http: httputil's chunked reader for
// the chunks, then the trailer section as net/http's body.readTrailer reads
// it (transfer.go). It returns the body, whether it was complete, and the
// bytes consumed.
func netChunked(in []byte) (body []byte, ok bool, consumed int) {
	r := bytes.NewReader(in)
	br := bufio.NewReaderSize(r, max(len(in), 16))
	body, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		return body, false, 0
	}
	if buf, _ := br.Peek(2); string(buf) == "\r\n" {
		br.Discard(2)
	} else {
		if len(buf) < 2 || !bytes.Contains(in[len(in)-r.Len()-br.Buffered():], []byte("\r\n\r\n")) {
			return body, false, 0
		}
		if _, err := textproto.NewReader(br).ReadMIMEHeader(); err != nil {
			return body, false, 0
		}
	}
	return body, true, len(in) - r.Len() - br.Buffered()
}

// quartetChunked decodes in with ChunkedDecoder in one call, out of place.
func quartetChunked(in []byte) (body []byte, done bool, consumed int, err error) {
	var d ChunkedDecoder
	d.MaxTrailerBytes = 1 << 30
	out := make([]byte, len(in))
	consumed, produced, done, err := d.Decode(out, in)
	return out[:produced], done, consumed, err
}

// FuzzChunked compares ChunkedDecoder with net/http's chunked reader and
// trailer handling: same decision, same body, same bytes consumed. It also
// checks that decoding in place and in small pieces gives the same result.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: v\r\n\r\n",
		"5 \r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
		"ffffffffffffffff\r\n",
		"5\nhello\n0\n\n",
		// The overhead rule (ErrChunkOverhead) is net/http's: both must
		// draw the line at the same byte. (FuzzParse reads bodies with the
		// same decoder; inputs this large would slow its search.)
		extensionFlood(6, 4000),
		overheadAt(maxChunkOverhead),
		overheadAt(maxChunkOverhead + 1),
		"2000\r\n" + strings.Repeat("d", 8192) + "\r\n" + extensionFlood(5, 4000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		body, done, consumed, err := quartetChunked(in)

		// Self-consistency: in place, and in pieces with a small dst,
		// must decode exactly the same.
		inplace := bytes.Clone(in)
		var d ChunkedDecoder
		d.MaxTrailerBytes = 1 << 30
		c2, p2, done2, err2 := d.Decode(inplace, inplace)
		if c2 != consumed || !bytes.Equal(inplace[:p2], body) || done2 != done || err2 != err {
			t.Fatalf("in-place decode differs: consumed %d/%d done %v/%v err %v/%v", c2, consumed, done2, done, err2, err)
		}
		d.Reset()
		var pieces []byte
		var c3 int
		var done3 bool
		var err3 error
		small := make([]byte, 3)
		for off := 0; off < len(in) && !done3 && err3 == nil; {
			end := min(off+5, len(in))
			c, p, dn, e := d.Decode(small, in[off:end])
			pieces = append(pieces, small[:p]...)
			off += c
			c3 += c
			done3, err3 = dn, e
			if c == 0 && p == 0 && e == nil && !dn {
				if end == len(in) {
					break
				}
				t.Fatalf("no progress at offset %d", off)
			}
		}
		if done3 != done || err3 != err || !bytes.Equal(pieces, body) || (done && c3 != consumed) {
			t.Fatalf("piecewise decode differs: done %v/%v err %v/%v body %q/%q", done3, done, err3, err, pieces, body)
		}

		netBody, netOK, netConsumed := netChunked(in)
		if done != netOK {
			if rule := chunkedKnownDifference(in); rule != "" {
				t.Logf("known difference %q", rule)
				return
			}
			t.Fatalf("accept differs: quartet done=%v err=%v, net/http ok=%v\ninput %q", done, err, netOK, in)
		}
		if done {
			if !bytes.Equal(body, netBody) {
				t.Fatalf("body differs: quartet %q, net/http %q", body, netBody)
			}
			if consumed != netConsumed {
				t.Fatalf("consumed differs: quartet %d, net/http %d\ninput %q", consumed, netConsumed, in)
			}
			return
		}
		// Both failed or are incomplete: what each delivered before
		// stopping must agree as far as both got.
		k := min(len(body), len(netBody))
		if !bytes.Equal(body[:k], netBody[:k]) {
			t.Fatalf("partial bodies differ: quartet %q, net/http %q", body, netBody)
		}
	})
}
