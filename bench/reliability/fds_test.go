//go:build linux

package reliability

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOutOfFileDescriptors: the server's fd table fills up (its soft
// RLIMIT_NOFILE lowered from outside, then clients connect until it
// cannot accept). While it is full, a keep-alive client asking for a file
// gets 503 with Retry-After (not 404, which caches would keep as "gone"),
// the operator reads one line for the failing accepts and one for the
// failing opens, not one per failure, and the metrics count both. Once
// the clients leave, everything is served again: the client that waited,
// the connections that queued in the backlog, the file.
func TestOutOfFileDescriptors(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "file.txt"), []byte("the file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// No open-file cache: every request opens its file, as a large site's
	// cold files are.
	s := startServer(t, "--root", root, "--static-cache-entries", "0")
	s.expectErrors("quartet: accept failed", "quartet: static: cannot open a file")

	kept := dialHTTP(t, s.addr)
	if st, _ := kept.get(t, "/missing"); st != 404 { // an answer: the server holds the connection
		t.Fatalf("GET /missing: %d, want 404", st)
	}

	var lim unix.Rlimit
	if err := unix.Prlimit(s.pid(), unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		t.Skipf("prlimit: %v", err)
	}
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(s.pid()) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(fds) + 16) // a few connections more, and the table is full
	if err := unix.Prlimit(s.pid(), unix.RLIMIT_NOFILE, &low, nil); err != nil {
		t.Skipf("lowering the server's RLIMIT_NOFILE: %v", err)
	}
	full := time.Now()
	var fillers []net.Conn
	t.Cleanup(func() { closeAll(fillers) })
	deadline := time.Now().Add(20 * time.Second)
	for len(s.logged("quartet: accept failed")) == 0 {
		if time.Now().After(deadline) || len(fillers) > 1000 {
			t.Fatalf("%d connections and no accept failed; RLIMIT_NOFILE %d:\n%s", len(fillers), low.Cur, s.logText())
		}
		c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		fillers = append(fillers, c)
		time.Sleep(5 * time.Millisecond)
	}

	const asks = 3
	for range asks {
		st, h := kept.get(t, "/file.txt")
		if st != 503 || h.Get("Retry-After") == "" {
			t.Fatalf("GET /file.txt with the fd table full: %d, Retry-After %q; want 503 with one", st, h.Get("Retry-After"))
		}
	}
	// The server's stderr is read by a goroutine of the test: on a busy
	// machine the line may come a moment after the third 503 (a full
	// test run once found none yet).
	opens := s.logged("quartet: static: cannot open a file")
	for deadline := time.Now().Add(5 * time.Second); len(opens) == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		opens = s.logged("quartet: static: cannot open a file")
	}
	if len(opens) != 1 || !strings.Contains(opens[0], "too many open files") {
		t.Errorf("%d log lines for %d failed opens, want 1 saying why:\n%s", len(opens), asks, strings.Join(opens, "\n"))
	}

	// Leave; the server accepts what queued, finds it gone, and has fds again.
	closeAll(fillers)
	fillers = nil
	if err := unix.Prlimit(s.pid(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Errorf("restoring the server's RLIMIT_NOFILE: %v", err)
	}
	for {
		st, _ := kept.get(t, "/file.txt")
		if st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /file.txt after the clients left: %d, want 200 (within %v)", st, time.Until(deadline))
		}
		time.Sleep(10 * time.Millisecond)
	}
	fresh := dialHTTP(t, s.addr)
	if st, _ := fresh.get(t, "/file.txt"); st != 200 {
		t.Errorf("a new connection's GET /file.txt: %d, want 200", st)
	}

	accepts := s.logged("quartet: accept failed")
	if most := 2 + int(time.Since(full)/(10*time.Second)); len(accepts) > most {
		t.Errorf("%d log lines for failed accepts in %v, want at most %d (one, then one each 10 s)", len(accepts), time.Since(full).Round(time.Millisecond), most)
	}
	if !strings.Contains(accepts[0], "too many open files") || !strings.Contains(accepts[0], "failures=1") {
		t.Errorf("the first accept line does not say why: %s", accepts[0])
	}
	if n, err := s.metric("quartet_listener_accept_errors_total"); err != nil || n < 1 {
		t.Errorf("quartet_listener_accept_errors_total = %d (%v), want at least 1", n, err)
	}
	if n, err := s.metric("quartet_static_errors_total"); err != nil || n != asks {
		t.Errorf("quartet_static_errors_total = %d (%v), want %d", n, err, asks)
	}
}

// httpConn is one keep-alive client connection.
type httpConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialHTTP(t *testing.T, addr string) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{c: c, br: bufio.NewReader(c)}
}

// get sends one request and reads its response whole.
func (h *httpConn) get(t *testing.T, target string) (int, http.Header) {
	t.Helper()
	h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(h.c, "GET "+target+" HTTP/1.1\r\nHost: trial\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}
