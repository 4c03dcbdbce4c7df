package http1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAppendStatusLine(t *testing.T) {
	for _, tc := range []struct {
		minor, code int
		want        string
	}{
		{1, 200, "HTTP/1.1 200 OK\r\n"},
		{0, 200, "HTTP/1.0 200 OK\r\n"},
		{9, 404, "HTTP/1.1 404 Not Found\r\n"},
		{1, 103, "HTTP/1.1 103 Early Hints\r\n"},
		{1, 599, "HTTP/1.1 599 status code 599\r\n"},
		{1, 511, "HTTP/1.1 511 Network Authentication Required\r\n"},
	} {
		if got := string(AppendStatusLine(nil, tc.minor, tc.code)); got != tc.want {
			t.Errorf("AppendStatusLine(%d, %d) = %q, want %q", tc.minor, tc.code, got, tc.want)
		}
	}
}

// TestStatusLineFitsScratch: a caller that gives AppendStatusLine
// MaxStatusLine bytes of room never allocates, whatever the code.
func TestStatusLineFitsScratch(t *testing.T) {
	var scratch [MaxStatusLine]byte
	for code := 100; code <= 999; code++ {
		if n := len(AppendStatusLine(scratch[:0], 1, code)); n > MaxStatusLine {
			t.Fatalf("code %d: %d bytes > MaxStatusLine %d", code, n, MaxStatusLine)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = AppendStatusLine(scratch[:0], 1, 200) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}

func TestAppendChunkHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{1, "1\r\n"}, {255, "ff\r\n"}, {65536, "10000\r\n"}} {
		if got := string(AppendChunkHeader(nil, tc.n)); got != tc.want {
			t.Errorf("AppendChunkHeader(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

// TestErrorResponse reads each error response back with net/http: its
// status, framing and fields must be what a client sees.
func TestErrorResponse(t *testing.T) {
	date := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		e          ErrorResponse
		wantClose  bool
		wantRetry  string
		wantBodyIn string
	}{
		{"bad request", ErrorResponse{Status: 400, Date: date, Server: "q"}, true, "", "400 Bad Request\n"},
		{"timeout", ErrorResponse{Status: 408, Date: date, Server: "q"}, true, "", "408 Request Timeout\n"},
		{"shed, keep-alive", ErrorResponse{Status: 503, Date: date, Server: "q", RetryAfter: 3, KeepAlive: true}, false, "3", "retry later"},
		{"shed, close", ErrorResponse{Status: 503, Date: date, Server: "q", RetryAfter: 1}, true, "1", "retry later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, head := tc.e.Append([]byte("prefix"))
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("Append dropped dst")
			}
			b = b[len("prefix"):]
			if !bytes.HasSuffix(b[:head], []byte("\r\n\r\n")) {
				t.Fatalf("head %q does not end the header block", b[:head])
			}
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.e.Status || resp.Close != tc.wantClose ||
				resp.Header.Get("Retry-After") != tc.wantRetry || resp.Header.Get("Server") != "q" ||
				resp.Header.Get("Date") != "Fri, 04 Dec 2026 10:00:00 GMT" || !strings.Contains(string(body), tc.wantBodyIn) {
				t.Fatalf("got %d close=%v %v %q", resp.StatusCode, resp.Close, resp.Header, body)
			}
			if len(b) != head+len(body) {
				t.Fatalf("%d bytes after the head, body is %d", len(b)-head, len(body))
			}
		})
	}
}

func TestFieldRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		valid bool
	}{
		{"Content-Type", true}, {"X-a!#$%&'*+-.^_`|~9", true},
		{"", false}, {"Bad Name", false}, {"Bad:Name", false}, {"Bad\r\nName", false}, {"é", false},
	} {
		if got := ValidFieldName(tc.name); got != tc.valid {
			t.Errorf("ValidFieldName(%q) = %v", tc.name, got)
		}
	}
	for _, tc := range []struct {
		value  string
		unsafe bool
	}{
		{"text/plain; charset=utf-8", false}, {"tab\there", false}, {"a\r\nSet-Cookie: x", true}, {"a\nb", true}, {"nul\x00", true},
	} {
		if got := UnsafeFieldValue(tc.value); got != tc.unsafe {
			t.Errorf("UnsafeFieldValue(%q) = %v", tc.value, got)
		}
	}
	// Every position of a word and of the tail, for each byte that ends a
	// field, and the bytes next to them that do not.
	for _, bad := range []byte{'\r', '\n', 0, '\t', 0x0b, 0x0c, 0x0e, 0xff, 0x8d} {
		unsafe := bad == '\r' || bad == '\n' || bad == 0
		for n := 1; n <= 19; n++ {
			for at := 0; at < n; at++ {
				v := []byte(strings.Repeat("a", n))
				v[at] = bad
				if got := UnsafeFieldValue(string(v)); got != unsafe {
					t.Errorf("UnsafeFieldValue(%q) = %v, want %v", v, got, unsafe)
				}
			}
		}
	}
}
