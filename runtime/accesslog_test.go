package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// syncBuffer is a log sink the test can read while writers append.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines are the complete lines written so far; none for an empty log.
func (s *syncBuffer) lines() []string {
	text := strings.TrimSpace(s.String())
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// combinedIO matches a combinedio line: host, user, request, status, %b,
// referer, user agent, %I, %O.
var combinedIO = regexp.MustCompile(`^(\S+) - (\S+) \[[^\]]+\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)" (\d+) (\d+)$`)

type logEntry struct {
	host, user, request, status, body, referer, agent string
	in, out                                           int64
}

func parseLog(t *testing.T, lines []string) []logEntry {
	var es []logEntry
	for _, l := range lines {
		m := combinedIO.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("not a combinedio line: %q", l)
		}
		in, _ := strconv.ParseInt(m[8], 10, 64)
		out, _ := strconv.ParseInt(m[9], 10, 64)
		es = append(es, logEntry{m[1], m[2], m[3], m[4], m[5], m[6], m[7], in, out})
	}
	return es
}

// Every request on its own connection, closed by the server after the
// response, so that what the client reads is exactly the response's bytes
// on the wire; the log must agree with the client on both directions.
func TestAccessLogCountsWhatCrossedTheWire(t *testing.T) {
	var log syncBuffer
	logf, err := AccessLog(&log, CombinedIO)
	if err != nil {
		t.Fatal(err)
	}
	chunks := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		w.WriteString("abc")
		w.Flush() // commits to chunked coding
		w.WriteString("defgh")
	})
	s := startServer(t, Config{Log: logf, Handler: Builtin(chunks)})
	tests := []struct {
		name, raw        string
		body, user       string // %b and %u as logged
		referer, agent   string
		bodyOnTheWire    int // bytes after the header block, framing included
		wantStatus, line string
	}{
		{name: "content-length", raw: "GET /bytes?n=3000 HTTP/1.1\r\nHost: x\r\nUser-Agent: \"quoted\" agent\r\nReferer: http://ref/\r\nConnection: close\r\n\r\n",
			body: "3000", user: "-", referer: "http://ref/", agent: `\"quoted\" agent`, bodyOnTheWire: 3000, wantStatus: "200", line: "GET /bytes?n=3000 HTTP/1.1"},
		{name: "HEAD", raw: "HEAD /bytes?n=3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			body: "-", user: "-", referer: "-", agent: "-", wantStatus: "200", line: "HEAD /bytes?n=3000 HTTP/1.1"},
		{name: "chunked", raw: "GET /chunks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			body: "8", user: "-", referer: "-", agent: "-", bodyOnTheWire: len("3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"), wantStatus: "200", line: "GET /chunks HTTP/1.1"},
		{name: "chunked upload", raw: "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n2;ext=1\r\nef\r\n0\r\n\r\n",
			body: "6", user: "-", referer: "-", agent: "-", bodyOnTheWire: 6, wantStatus: "200", line: "POST /echo HTTP/1.1"},
		{name: "basic auth", raw: "GET /hello HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6czNjcjN0\r\nConnection: close\r\n\r\n", // alice:s3cr3t
			body: "13", user: "alice", referer: "-", agent: "-", bodyOnTheWire: 13, wantStatus: "200", line: "GET /hello HTTP/1.1"},
		{name: "bad request", raw: "GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
			user: "-", referer: "-", agent: "-", wantStatus: "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(log.lines())
			c := dial(t, s)
			io.WriteString(c, tt.raw)
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			head := bytes.Index(got, []byte("\r\n\r\n")) + 4
			var es []logEntry
			if !eventually(5*time.Second, func() bool { return len(log.lines()) == before+1 }) {
				t.Fatalf("log: %q", log.lines())
			}
			es = parseLog(t, log.lines()[before:])
			e := es[0]
			if e.status != tt.wantStatus || e.host != "127.0.0.1" || e.user != tt.user || e.referer != tt.referer || e.agent != tt.agent {
				t.Errorf("entry %+v", e)
			}
			if tt.line != "" && e.request != tt.line {
				t.Errorf("request %q, want %q", e.request, tt.line)
			}
			if e.out != int64(len(got)) {
				t.Errorf("%%O = %d, the client received %d bytes", e.out, len(got))
			}
			if tt.wantStatus == "400" {
				return
			}
			if e.in != int64(len(tt.raw)) {
				t.Errorf("%%I = %d, the client sent %d bytes", e.in, len(tt.raw))
			}
			if len(got)-head != tt.bodyOnTheWire {
				t.Errorf("%d body bytes on the wire, want %d: %q", len(got)-head, tt.bodyOnTheWire, got[head:])
			}
			if e.body != tt.body {
				t.Errorf("%%b = %s, want %s", e.body, tt.body)
			}
		})
	}
}

// A response the server gives up on because the client stops reading: the
// log shows what reached the client, headers included in %O, not in %b.
func TestAccessLogOfAnAbortedResponse(t *testing.T) {
	var log syncBuffer
	logf, _ := AccessLog(&log, CombinedIO)
	s := startServer(t, Config{Log: logf, WriteTimeout: 300 * time.Millisecond})
	big := dial(t, s)
	io.WriteString(big, "GET /bytes?n=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(1500 * time.Millisecond) // read nothing: the write timeout aborts the response
	big.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(big)
	var head int64
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head += int64(len(l))
		if l == "\r\n" {
			break
		}
	}
	// Everything that reached this side before the server gave up, then
	// the reset that dropped the rest of the server's queue.
	body, err := io.Copy(io.Discard, br)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("draining the aborted response: %v, want a reset after the data", err)
	}
	if body >= 200000000 || body == 0 {
		t.Fatalf("the response was not cut short (%d body bytes)", body)
	}
	if !eventually(5*time.Second, func() bool { return len(log.lines()) > 0 }) {
		t.Fatal("nothing logged")
	}
	e := parseLog(t, log.lines())[0]
	if e.out != head+body || e.body != strconv.FormatInt(body, 10) {
		t.Errorf("logged %%b %s %%O %d; the client received %d header and %d body bytes", e.body, e.out, head, body)
	}
}

func TestAccessLogFormats(t *testing.T) {
	if _, err := AccessLog(io.Discard, "common"); err == nil || !strings.Contains(err.Error(), `"combinedio"`) {
		t.Fatalf("unknown format: %v", err)
	}
	req := &stages.Request{Method: []byte("GET"), Target: []byte("/a\"b"), Minor: 1}
	req.Headers = append(req.Headers, stages.Header{Name: []byte("Authorization"), Value: []byte("Basic bm9jb2xvbg==")}) // "nocolon"
	req.WireBytes.Store(40)
	r := &stages.Response{Req: req, Status: 304, BytesSent: 120, HeaderBytes: 120}
	now := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	tests := []struct {
		f    AccessLogFormat
		want string
	}{
		{Combined, `- - nocolon [03/Dec/2026:17:00:00 +0000] "GET /a\"b HTTP/1.1" 304 - "-" "-"` + "\n"},
		{CombinedIO, `- - nocolon [03/Dec/2026:17:00:00 +0000] "GET /a\"b HTTP/1.1" 304 - "-" "-" 40 120` + "\n"},
	}
	for _, tt := range tests {
		if got := string(AppendAccessLog(nil, tt.f, r, now)); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.f, got, tt.want)
		}
	}
}

// A Write that fails loses its line, and the log says so: once, then one
// line an interval with the count, not one per response.
func TestAccessLogSaysWhenLinesAreLost(t *testing.T) {
	var logged syncBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logged, nil)))
	defer slog.SetDefault(prev)

	log, err := AccessLog(failingWriter{syscall.ENOSPC}, Combined)
	if err != nil {
		t.Fatal(err)
	}
	r := &stages.Response{Req: &stages.Request{Method: []byte("GET"), Target: []byte("/"), Minor: 1}, Status: 200}
	for range 5 {
		log(r)
	}
	var lost []string
	for _, l := range logged.lines() {
		if strings.Contains(l, "access log: lines lost") {
			lost = append(lost, l)
		}
	}
	if len(lost) != 1 || !strings.Contains(lost[0], "level=ERROR") || !strings.Contains(lost[0], "no space left on device") || !strings.Contains(lost[0], "lines=1") {
		t.Errorf("for 5 lost lines, logged %q; want one ERROR line saying why", lost)
	}
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

func BenchmarkAccessLogLine(b *testing.B) {
	req := &stages.Request{Method: []byte("GET"), Target: []byte("/index.html"), Minor: 1}
	req.Headers = append(req.Headers,
		stages.Header{Name: []byte("User-Agent"), Value: []byte("curl/8.5.0")},
		stages.Header{Name: []byte("Authorization"), Value: []byte("Basic YWxpY2U6czNjcjN0")})
	r := &stages.Response{Req: req, Status: 200, BytesSent: 1200, HeaderBytes: 200}
	buf := make([]byte, 0, 512)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendAccessLog(buf[:0], CombinedIO, r, now)
	}
}
