package http1

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/quartet-server/quartet/stages"
)

// parseAll runs Parse once over the whole input.
func parseAll(t testing.TB, in string, lim Limits) (*stages.Request, int, error) {
	t.Helper()
	var p Parser
	req := &stages.Request{}
	req.Reset()
	n, err := p.Parse([]byte(in), lim, req)
	return req, n, err
}

func TestParseRules(t *testing.T) {
	const host = "Host: example.com\r\n"
	tests := []struct {
		name   string
		in     string
		status int   // 0: accepted
		err    error // expected sentinel when status != 0
	}{
		// Accepted shapes.
		{"simple GET", "GET / HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 0, nil},
		{"leading CRLFs skipped", "\r\n\r\nGET / HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"OPTIONS asterisk", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"CONNECT authority", "CONNECT example.com:443 HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"CONNECT IPv6", "CONNECT [::1]:443 HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"absolute-form", "GET http://example.com/a?b HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"identical duplicate Content-Length", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 3\r\n\r\n", 0, nil},
		{"chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: Chunked\r\n\r\n", 0, nil},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, nil},
		{"obs-text in value", "GET / HTTP/1.1\r\n" + host + "X: caf\xc3\xa9\r\n\r\n", 0, nil},
		{"Expect 100-continue", "POST / HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n", 0, nil},
		{"percent-escape in path", "GET /a%20b HTTP/1.1\r\n" + host + "\r\n", 0, nil},
		{"HTTP/1.2 served as 1.1", "GET / HTTP/1.2\r\n" + host + "\r\n", 0, nil},
		{"HTTP/1.9 chunked, as in 1.1", "POST / HTTP/1.9\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n", 0, nil},

		// Request line.
		{"no spaces", "GET\r\n" + host + "\r\n", 400, ErrMalformedRequestLine},
		{"HTTP/0.9 simple request", "GET /\r\n\r\n", 400, ErrMalformedRequestLine},
		{"double space", "GET  / HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadVersion},
		{"trailing space", "GET / HTTP/1.1 \r\n" + host + "\r\n", 400, ErrBadVersion},
		{"empty method", " / HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadMethod},
		{"bad method byte", "GE(T / HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadMethod},
		{"lowercase version", "GET / http/1.1\r\n" + host + "\r\n", 400, ErrBadVersion},
		{"garbage version", "GET / HTTP/1.1x\r\n" + host + "\r\n", 400, ErrBadVersion},
		{"two-digit version", "GET / HTTP/10.1\r\n" + host + "\r\n", 400, ErrBadVersion},
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", 505, ErrVersionNotSupported},
		{"HTTP/3.0", "GET / HTTP/3.0\r\n" + host + "\r\n", 505, ErrVersionNotSupported},
		{"HTTP/1.2 needs Host, as 1.1", "GET / HTTP/1.2\r\n\r\n", 400, ErrMissingHost},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505, ErrVersionNotSupported},
		{"PRI preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, ErrVersionNotSupported},

		// Request-target.
		{"asterisk with GET", "GET * HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"authority-form with GET", "GET example.com:80 HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"CONNECT origin-form", "CONNECT /x HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"CONNECT without port", "CONNECT example.com HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"relative path", "GET a/b HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"bad percent-escape", "GET /%zz HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"truncated percent-escape", "GET /%4 HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"CTL in target", "GET /\x01 HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"userinfo in absolute-form", "GET http://u@example.com/ HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"empty authority", "GET http:///x HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},
		{"opaque URI", "GET mailto:x HTTP/1.1\r\n" + host + "\r\n", 400, ErrBadTarget},

		// Line endings and field syntax.
		{"bare LF after request line", "GET / HTTP/1.1\n" + host + "\r\n", 400, ErrBareLF},
		{"bare LF ends block", "GET / HTTP/1.1\r\n" + host + "\n", 400, ErrBareLF},
		{"bare LF leading", "\nGET / HTTP/1.1\r\n" + host + "\r\n", 400, ErrBareLF},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X: a\rb\r\n\r\n", 400, ErrBadFieldValue},
		{"CR CR LF", "GET / HTTP/1.1\r\n" + host + "X: a\r\r\n\r\n", 400, ErrBadFieldValue},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X: a\r\n b\r\n\r\n", 400, ErrObsFold},
		{"obs-fold tab", "GET / HTTP/1.1\r\n" + host + "X: a\r\n\tb\r\n\r\n", 400, ErrObsFold},
		{"leading whitespace first field", "GET / HTTP/1.1\r\n " + host + "\r\n", 400, ErrObsFold},
		{"space before colon", "GET / HTTP/1.1\r\n" + host + "X : a\r\n\r\n", 400, ErrBadFieldName},
		{"tab before colon", "GET / HTTP/1.1\r\n" + host + "X\t: a\r\n\r\n", 400, ErrBadFieldName},
		{"no colon", "GET / HTTP/1.1\r\n" + host + "X\r\n\r\n", 400, ErrBadFieldName},
		{"empty name", "GET / HTTP/1.1\r\n" + host + ": a\r\n\r\n", 400, ErrBadFieldName},
		{"non-token name", "GET / HTTP/1.1\r\n" + host + "X(y): a\r\n\r\n", 400, ErrBadFieldName},
		{"NUL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x00b\r\n\r\n", 400, ErrBadFieldValue},
		{"DEL in value", "GET / HTTP/1.1\r\n" + host + "X: a\x7fb\r\n\r\n", 400, ErrBadFieldValue},

		// Host.
		{"missing Host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400, ErrMissingHost},
		{"missing Host with absolute-form", "GET http://example.com/ HTTP/1.1\r\n\r\n", 400, ErrMissingHost},
		{"two Hosts", "GET / HTTP/1.1\r\n" + host + host + "\r\n", 400, ErrDuplicateHost},
		{"two Hosts in 1.0", "GET / HTTP/1.0\r\n" + host + host + "\r\n", 400, ErrDuplicateHost},
		{"bad Host byte", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, ErrBadHost},

		// Framing and smuggling.
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, ErrConflictingFraming},
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, ErrConflictingFraming},
		{"differing CLs", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, ErrBadContentLength},
		{"CL list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 3, 3\r\n\r\n", 400, ErrBadContentLength},
		{"CL sign", "POST / HTTP/1.1\r\n" + host + "Content-Length: +3\r\n\r\n", 400, ErrBadContentLength},
		{"CL negative", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", 400, ErrBadContentLength},
		{"CL empty", "POST / HTTP/1.1\r\n" + host + "Content-Length:\r\n\r\n", 400, ErrBadContentLength},
		{"CL hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x10\r\n\r\n", 400, ErrBadContentLength},
		{"CL overflow", "POST / HTTP/1.1\r\n" + host + "Content-Length: 9223372036854775808\r\n\r\n", 400, ErrBadContentLength},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, ErrTransferEncodingHTTP10},
		{"TE gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", 501, ErrUnknownTransferCoding},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501, ErrUnknownTransferCoding},
		{"TE chunked, gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, gzip\r\n\r\n", 501, ErrUnknownTransferCoding},
		{"TE twice", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, ErrUnknownTransferCoding},
		{"TE identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", 501, ErrUnknownTransferCoding},
		{"TE empty", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding:\r\n\r\n", 501, ErrUnknownTransferCoding},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n", 501, ErrUnknownTransferCoding},

		// Expect.
		{"Expect other", "GET / HTTP/1.1\r\n" + host + "Expect: 200-ok\r\n\r\n", 417, ErrExpectationFailed},
		{"Expect other in 1.0", "GET / HTTP/1.0\r\nExpect: foo\r\n\r\n", 417, ErrExpectationFailed},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%s", tc.status, tc.name), func(t *testing.T) {
			_, n, err := parseAll(t, tc.in, Limits{})
			if got := StatusOf(err); got != tc.status {
				t.Fatalf("status = %d (err %v), want %d", got, err, tc.status)
			}
			if tc.status == 0 {
				if n != len(tc.in) {
					t.Fatalf("n = %d, want %d", n, len(tc.in))
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	in := "\r\nPOST http://Example.com:8080/p/a%2Fth?x=1&y HTTP/1.1\r\n" +
		"Host: ignored.example\r\n" +
		"Content-Length:  42 \t\r\n" +
		"Connection: keep-alive, Close\r\n" +
		"Expect: 100-continue\r\n" +
		"X-Empty:\r\n" +
		"\r\nBODY"
	req, n, err := parseAll(t, in, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if want := len(in) - len("BODY"); n != want {
		t.Errorf("n = %d, want %d", n, want)
	}
	check := func(field string, got []byte, want string) {
		t.Helper()
		if string(got) != want {
			t.Errorf("%s = %q, want %q", field, got, want)
		}
	}
	check("Method", req.Method, "POST")
	check("Target", req.Target, "http://Example.com:8080/p/a%2Fth?x=1&y")
	check("Path", req.Path, "/p/a%2Fth")
	check("Query", req.Query, "x=1&y")
	check("Host", req.Host, "Example.com:8080")
	if req.Major != 1 || req.Minor != 1 {
		t.Errorf("version = %d.%d", req.Major, req.Minor)
	}
	if req.ContentLength != 42 || req.Chunked || !req.Close || !req.Expect100 {
		t.Errorf("framing: CL=%d chunked=%v close=%v expect100=%v", req.ContentLength, req.Chunked, req.Close, req.Expect100)
	}
	if len(req.Headers) != 5 {
		t.Fatalf("%d headers, want 5", len(req.Headers))
	}
	check("Content-Length value", req.Headers[1].Value, "42")
	check("X-Empty name", req.Headers[4].Name, "X-Empty")
	check("X-Empty value", req.Headers[4].Value, "")

	// An absolute-form target's empty path is "/" (RFC 9110 §4.2.3).
	for _, target := range []string{"http://x", "http://x?a=1"} {
		req, _, err = parseAll(t, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n", Limits{})
		if err != nil || string(req.Path) != "/" || string(req.Host) != "x" {
			t.Errorf("%s: Path %q Host %q, %v; want /, x", target, req.Path, req.Host, err)
		}
	}

	// Query absent vs empty.
	req, _, _ = parseAll(t, "GET /a HTTP/1.0\r\n\r\n", Limits{})
	if req.Query != nil || req.ContentLength != -1 || req.Host != nil {
		t.Errorf("Query=%q CL=%d Host=%q, want nil, -1, nil", req.Query, req.ContentLength, req.Host)
	}
	req, _, _ = parseAll(t, "GET /a? HTTP/1.0\r\n\r\n", Limits{})
	if req.Query == nil || len(req.Query) != 0 {
		t.Errorf("Query = %#v, want empty non-nil", req.Query)
	}
	// HTTP/1.2-1.9 follow 1.1's rules, and keep the version they sent.
	req, _, err = parseAll(t, "POST / HTTP/1.7\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", Limits{})
	if err != nil || req.Major != 1 || req.Minor != 7 || !req.Expect100 || !req.KeepAlive() {
		t.Errorf("HTTP/1.7: version %d.%d Expect100 %v KeepAlive %v, err %v", req.Major, req.Minor, req.Expect100, req.KeepAlive(), err)
	}
	// HTTP/1.0 ignores 100-continue.
	req, _, err = parseAll(t, "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", Limits{})
	if err != nil || req.Expect100 {
		t.Errorf("HTTP/1.0 Expect100 = %v, err %v", req.Expect100, err)
	}
}

func TestParseLimits(t *testing.T) {
	lim := Limits{MaxRequestLine: 64, MaxHeaderBytes: 256, MaxHeaders: 4}
	line := func(targetLen int) string {
		return "GET /" + strings.Repeat("a", targetLen-1) + " HTTP/1.1\r\nHost: h\r\n\r\n"
	}
	// "GET " + target + " HTTP/1.1" = target + 13 bytes.
	tests := []struct {
		name   string
		in     string
		status int
	}{
		{"request line at limit", line(64 - 13), 0},
		{"request line over limit", line(65 - 13), 414},
		{"request line over limit, incomplete", "GET /" + strings.Repeat("a", 100), 414},
		{"fields at limit", "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0},
		{"fields over limit", "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431},
		{"block over limit", "GET / HTTP/1.1\r\nHost: h\r\nA: " + strings.Repeat("x", 256) + "\r\n\r\n", 431},
		{"block over limit, incomplete", "GET / HTTP/1.1\r\nHost: h\r\nA: " + strings.Repeat("x", 256), 431},
		{"endless leading CRLF", strings.Repeat("\r\n", 200), 431},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%s", tc.status, tc.name), func(t *testing.T) {
			_, _, err := parseAll(t, tc.in, lim)
			if got := StatusOf(err); got != tc.status {
				t.Fatalf("status = %d (err %v), want %d", got, err, tc.status)
			}
		})
	}
	// A block of exactly MaxHeaderBytes is accepted, one more byte is not.
	base := "GET / HTTP/1.1\r\nHost: h\r\nA: \r\n\r\n"
	exact := strings.Replace(base, "A: ", "A: "+strings.Repeat("x", 256-len(base)), 1)
	if _, n, err := parseAll(t, exact+"BODY", lim); err != nil || n != 256 {
		t.Errorf("block of exactly the limit: n=%d err=%v", n, err)
	}
	over := strings.Replace(exact, "A: ", "A: x", 1)
	if _, _, err := parseAll(t, over, lim); !errors.Is(err, ErrHeadersTooLarge) {
		t.Errorf("block one over the limit: err=%v", err)
	}
}

const browserGET = "GET /index.html?lang=en HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=0123456789abcdef; theme=dark\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"\r\n"

// TestParseIncremental feeds requests one byte at a time and checks that
// the result equals a one-shot parse.
func TestParseIncremental(t *testing.T) {
	inputs := []string{
		browserGET,
		"\r\n\r\nPOST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\n\r\n", // bare LF, found mid-stream
	}
	for _, in := range inputs {
		want, wantN, wantErr := parseAll(t, in, Limits{})
		var p Parser
		got := &stages.Request{}
		var n int
		var err error
		for i := 1; i <= len(in); i++ {
			n, err = p.Parse([]byte(in[:i]), Limits{}, got)
			if err != ErrNeedMore {
				break
			}
		}
		if n != wantN || err != wantErr {
			t.Fatalf("%q: incremental n=%d err=%v, one-shot n=%d err=%v", in, n, err, wantN, wantErr)
		}
		if err == nil && (!bytes.Equal(got.Target, want.Target) || len(got.Headers) != len(want.Headers)) {
			t.Fatalf("%q: incremental parse differs", in)
		}
	}
}

// countingParse parses in one-byte steps and reports how many bytes the scan
// examined in total, from the Parser's own offsets.
func TestParseIncrementalIsLinear(t *testing.T) {
	for _, size := range []int{1 << 10, 8 << 10, 32 << 10} {
		in := "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 57)+"\r\n", size/66) + "\r\n"
		var p Parser
		req := &stages.Request{}
		scanned := 0
		lim := Limits{MaxHeaderBytes: 1 << 20, MaxHeaders: 1 << 20}
		for i := 1; i <= len(in); i++ {
			before := p.scanned
			_, err := p.Parse([]byte(in[:i]), lim, req)
			if err != ErrNeedMore {
				scanned += i - before
				if err != nil {
					t.Fatal(err)
				}
				break
			}
			scanned += p.scanned - before
		}
		if scanned != len(in) {
			t.Errorf("%d-byte request fed bytewise: scan examined %d bytes, want exactly %d", len(in), scanned, len(in))
		}
	}
}

// TestParsePipelined checks that n leaves the next request intact.
func TestParsePipelined(t *testing.T) {
	in := "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n"
	buf := []byte(in)
	var p Parser
	req := &stages.Request{}
	for i := 1; i <= 3; i++ {
		n, err := p.Parse(buf, Limits{}, req)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("/%d", i); string(req.Path) != want {
			t.Fatalf("request %d: Path = %q", i, req.Path)
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left", len(buf))
	}
}

func TestStatusOf(t *testing.T) {
	if StatusOf(nil) != 0 || StatusOf(ErrNeedMore) != 0 {
		t.Error("nil and ErrNeedMore must map to 0")
	}
	if StatusOf(errors.New("other")) != 400 {
		t.Error("foreign errors must map to 400")
	}
	if StatusOf(fmt.Errorf("wrapped: %w", ErrURITooLong)) != 414 {
		t.Error("wrapped sentinels must keep their status")
	}
}

// TestParseAllocs pins the zero-allocation contract for a typical request
// parsed into a recycled record (whose Headers array has grown once).
func TestParseAllocs(t *testing.T) {
	buf := []byte(browserGET)
	var p Parser
	req := &stages.Request{Headers: make([]stages.Header, 0, 16)}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := p.Parse(buf, Limits{}, req); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per Parse, want 0", allocs)
	}
}

func BenchmarkParse(b *testing.B) {
	buf := []byte(browserGET)
	var p Parser
	// A recycled record, as the reader loop passes: its Headers array
	// has already grown.
	req := &stages.Request{Headers: make([]stages.Header, 0, 16)}
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := p.Parse(buf, Limits{}, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseIncremental delivers the request in 16-byte reads, as a slow
// or fragmenting client would, calling Parse after each.
func BenchmarkParseIncremental(b *testing.B) {
	buf := []byte(browserGET)
	var p Parser
	req := &stages.Request{Headers: make([]stages.Header, 0, 16)}
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		for end := 16; ; end += 16 {
			end = min(end, len(buf))
			_, err := p.Parse(buf[:end], Limits{}, req)
			if err == nil {
				break
			}
			if err != ErrNeedMore {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkParseBytewise is the worst case for rescanning parsers: one byte
// per read, for header blocks of growing size. ns/op divided by the size
// (the MB/s column) stays flat because the scan resumes where it stopped; a
// parser that rescanned would slow down in proportion to the size.
func BenchmarkParseBytewise(b *testing.B) {
	for _, size := range []int{512, 4 << 10, 32 << 10} {
		in := "GET / HTTP/1.1\r\nHost: h\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 55)+"\r\n", size/64) + "\r\n"
		buf := []byte(in)
		lim := Limits{MaxHeaders: 1 << 20}
		b.Run(fmt.Sprintf("size=%d", len(buf)), func(b *testing.B) {
			var p Parser
			req := &stages.Request{Headers: make([]stages.Header, 0, size/64+2)}
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				for end := 1; ; end++ {
					_, err := p.Parse(buf[:end], lim, req)
					if err == nil {
						break
					}
					if err != ErrNeedMore {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// TestValidFieldValue checks the word-at-a-time test against the byte loop
// for every byte value at every position of a 17-byte value (two words and
// a tail), on a background of each kind of neighbour.
func TestValidFieldValue(t *testing.T) {
	for _, bg := range []byte{'a', '\t', 0x80, 0xff, ' '} {
		for pos := 0; pos < 17; pos++ {
			for c := 0; c < 256; c++ {
				v := bytes.Repeat([]byte{bg}, 17)
				v[pos] = byte(c)
				if got, want := validFieldValue(v), validFieldValueBytes(v); got != want {
					t.Fatalf("background %#x, byte %#x at %d: got %v, want %v", bg, c, pos, got, want)
				}
			}
		}
	}
}

// TestParsePipelinedBodies walks a connection's byte stream the way the
// reader loop does: header block, then the body by Content-Length or by the
// chunked decoder, then the next request from where the body ended.
func TestParsePipelinedBodies(t *testing.T) {
	stream := []byte("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n" +
		"\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n")
	want := []struct{ path, body string }{{"/a", "hello"}, {"/b", "abcde"}, {"/c", ""}}
	var p Parser
	req := &stages.Request{}
	for _, w := range want {
		n, err := p.Parse(stream, Limits{}, req)
		if err != nil {
			t.Fatalf("%s: %v", w.path, err)
		}
		if string(req.Path) != w.path {
			t.Fatalf("Path = %q, want %q", req.Path, w.path)
		}
		stream = stream[n:]
		var body []byte
		switch {
		case req.Chunked:
			var d ChunkedDecoder
			consumed, produced, done, err := d.Decode(stream, stream) // in place
			if !done || err != nil {
				t.Fatalf("%s: done=%v err=%v", w.path, done, err)
			}
			body = append(body, stream[:produced]...)
			stream = stream[consumed:]
		case req.ContentLength > 0:
			body = stream[:req.ContentLength]
			stream = stream[req.ContentLength:]
		}
		if string(body) != w.body {
			t.Fatalf("%s: body %q, want %q", w.path, body, w.body)
		}
	}
	if len(stream) != 0 {
		t.Fatalf("%q left over", stream)
	}
}
