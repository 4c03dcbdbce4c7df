//go:build linux

package static_test

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/static"
)

// With the process's fd table full, a file that cannot be opened is
// answered 503 with Retry-After, never 404 (which clients and proxies
// would cache as "gone"), counted, and logged once however many requests
// fail; a cached file whose revalidation cannot be made is served as it
// was; and when fds are free again every file is served, the failed ones
// not remembered as missing.
func TestDirOutOfFDs(t *testing.T) {
	for _, tt := range []struct {
		name   string
		opts   static.Options
		target string
		warm   bool // requested once before the fd table fills
		want   int  // while it is full
		body   string
	}{
		{"no cache", static.Options{CacheEntries: -1}, "/hello.txt", false, 503, ""},
		{"cache, a file never opened", static.Options{}, "/hello.txt", false, 503, ""},
		{"cache, a nested file never opened", static.Options{}, "/sub/index.html", false, 503, ""},
		{"cache, a nested file due for revalidation", static.Options{Revalidate: time.Nanosecond}, "/sub/index.html", true, 200, "<h1>sub</h1>"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root, _, _ := tree(t)
			var log syncBuffer
			tt.opts.Logger = slog.New(slog.NewTextHandler(&log, nil))
			d := newDir(t, root, tt.opts)
			c := dialKeepAlive(t, serve(t, d))
			// A first answer says the server has accepted the
			// connection, which it could not with the fd table full.
			// Not a file: its fd, closed once the response is sent,
			// could be closed after the table filled, and free a slot.
			if r := c.get(t, "/missing"); r.status != 404 {
				t.Fatalf("GET /missing: %d", r.status)
			}
			if tt.warm {
				if r := c.get(t, tt.target); r.status != 200 {
					t.Fatalf("GET %s before the fd table filled: %d", tt.target, r.status)
				}
			}
			const failing = 3
			restore := fillFDTable(t)
			var during []response
			for range failing {
				during = append(during, c.get(t, tt.target))
			}
			restore()

			for i, r := range during {
				if r.status != tt.want || string(r.body) != tt.body {
					t.Errorf("GET %s #%d with the fd table full: %d %q, want %d %q", tt.target, i, r.status, r.body, tt.want, tt.body)
				}
				if retry := r.header.Get("Retry-After"); (r.status == 503) != (retry != "") {
					t.Errorf("GET %s #%d: status %d with Retry-After %q", tt.target, i, r.status, retry)
				}
			}
			wantErrors, wantLines := int64(0), 0
			if tt.want == 503 {
				wantErrors, wantLines = failing, 1
			}
			if got := d.CacheStats().Errors; got != wantErrors {
				t.Errorf("CacheStats().Errors = %d, want %d", got, wantErrors)
			}
			lines := log.lines()
			if len(lines) != wantLines {
				t.Errorf("%d log lines, want %d:\n%s", len(lines), wantLines, strings.Join(lines, "\n"))
			}
			for _, l := range lines {
				if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "too many open files") || !strings.Contains(l, "status=503") {
					t.Errorf("log line %q does not say what failed and how it was answered", l)
				}
			}
			if r := c.get(t, tt.target); r.status != 200 {
				t.Errorf("GET %s with fds free again: %d, want 200", tt.target, r.status)
			}
		})
	}
}

// fillFDTable lowers RLIMIT_NOFILE to a little above the fds open now and
// opens /dev/null until the kernel refuses (EMFILE). The function it
// returns closes them and puts the limit back; the test's end does too.
func fillFDTable(t *testing.T) (restore func()) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	low := lim
	low.Cur = uint64(len(ents) + 8)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	var fillers []int
	var once sync.Once
	restore = func() {
		once.Do(func() {
			for _, fd := range fillers {
				unix.Close(fd)
			}
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
				t.Errorf("restoring RLIMIT_NOFILE: %v", err)
			}
		})
	}
	t.Cleanup(restore)
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EMFILE {
			return restore
		}
		if err != nil {
			restore()
			t.Fatalf("filling the fd table: %v", err)
		}
		fillers = append(fillers, fd)
	}
}

// keepAlive is one client connection that sends request after request,
// opened before a test takes the fds away.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, br: bufio.NewReader(c)}
}

func (k *keepAlive) get(t *testing.T, target string) response {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(k.c, "GET "+target+" HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// syncBuffer is a log destination the test reads while the server may
// write to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
