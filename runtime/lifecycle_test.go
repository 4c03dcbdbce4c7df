package runtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

func TestHeaderTimeoutAnswers408(t *testing.T) {
	s := startServer(t, Config{HeaderTimeout: 200 * time.Millisecond})
	c := dial(t, s)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: x\r\n") // never finished
	start := time.Now()
	resp, _ := exchange(t, c, br, "", "GET")
	if resp.StatusCode != 408 {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("408 after %v, before the header timeout", d)
	}
	expectClosed(t, c, br)
	if n := s.Stats().Slow.SlowHeaders; n != 1 {
		t.Errorf("%d slow headers counted, want 1", n)
	}
}

func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	s := startServer(t, Config{IdleTimeout: 200 * time.Millisecond, HeaderTimeout: 300 * time.Millisecond})
	c := dial(t, s)
	br := bufio.NewReader(c)
	exchange(t, c, br, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	start := time.Now()
	expectClosed(t, c, br) // silently: an idle connection owes no answer
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
	// A connection that never sends anything is closed by the header timeout.
	c2 := dial(t, s)
	expectClosed(t, c2, bufio.NewReader(c2))
	// Neither was a slow client: nothing of a request had come.
	if n := s.Stats().Slow.SlowHeaders; n != 0 {
		t.Errorf("%d slow headers counted, want none", n)
	}
}

// Slowloris: many clients trickling headers must not take the only worker.
func TestSlowClientsDoNotHoldWorkers(t *testing.T) {
	s := startServer(t, Config{Processors: 1, HeaderTimeout: 30 * time.Second})
	var slow []net.Conn
	for i := 0; i < 50; i++ {
		c := dial(t, s)
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab") // body never completes
		slow = append(slow, c)
		c2 := dial(t, s)
		io.WriteString(c2, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ") // header never completes
		slow = append(slow, c2)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	resp, err := client.Get("http://" + s.Addr().String() + "/hello")
	if err != nil {
		t.Fatalf("a normal request behind 100 slow clients: %v", err)
	}
	resp.Body.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a normal request took %v behind slow clients", d)
	}
	if !eventually(time.Second, func() bool { return s.Stats().Busy == 0 }) {
		t.Fatalf("%d workers busy with slow clients", s.Stats().Busy)
	}
	for _, c := range slow {
		c.Close()
	}
}

// A response queued for a connection whose client has gone must never reach
// another connection, even one the kernel gave the same fd number.
func TestStaleResponseNeverReachesAReusedFD(t *testing.T) {
	release := make(chan struct{})
	h := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		if string(r.Path) == "/slow" {
			<-release
			w.WriteString("SECRET-FOR-THE-DEPARTED-CLIENT")
			return
		}
		fmt.Fprintf(w, "mine:%s", r.Header("X-Who"))
	})
	s := startServer(t, Config{Handler: h, Processors: 64, Readers: 1, Writers: 1})
	const departed = 20
	var gone []net.Conn
	for i := 0; i < departed; i++ {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		gone = append(gone, c)
	}
	// Every handler runs before its client leaves (a request still queued
	// when its client goes is dropped, and would have no response to go
	// astray).
	if !eventually(15*time.Second, func() bool { return s.Stats().Busy == departed }) {
		t.Fatalf("%d handlers running, want %d", s.Stats().Busy, departed)
	}
	for _, c := range gone {
		c.(*net.TCPConn).SetLinger(0) // reset: the server sees the peer gone at once
		c.Close()
	}
	// New connections arrive while the departed clients' responses are
	// pending; with fd numbers recycled they would collide.
	var conns []net.Conn
	var brs []*bufio.Reader
	for i := 0; i < 40; i++ {
		c := dial(t, s)
		conns = append(conns, c)
		brs = append(brs, bufio.NewReader(c))
	}
	close(release)
	time.Sleep(50 * time.Millisecond) // let the stale responses be written (and fail)
	for i, c := range conns {
		resp, body := exchange(t, c, brs[i], fmt.Sprintf("GET /who HTTP/1.1\r\nHost: x\r\nX-Who: %d\r\n\r\n", i), "GET")
		if want := fmt.Sprintf("mine:%d", i); body != want || resp.StatusCode != 200 {
			t.Fatalf("connection %d got %d %q, want %q", i, resp.StatusCode, body, want)
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if extra, _ := brs[i].Peek(1); len(extra) > 0 {
			rest, _ := io.ReadAll(brs[i])
			t.Fatalf("connection %d received bytes it never asked for: %q", i, string(extra)+string(rest))
		}
	}
}

func TestGracefulShutdownFinishesInFlightRequests(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Processors: 32, Handler: Builtin(nil)})
	if err != nil {
		t.Fatal(err)
	}
	fdsBefore := fdtest.Count(t)
	goroutinesBefore := runtime.NumGoroutine()
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()

	tr := &http.Transport{}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	const n = 24
	var wg sync.WaitGroup
	results := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + s.Addr().String() + "/sleep?ms=300")
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	if !eventually(15*time.Second, func() bool { return s.Stats().Busy == n }) {
		t.Fatalf("only %d of %d requests in flight", s.Stats().Busy, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "200 OK\n" {
			t.Errorf("in-flight request lost: %s", r)
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Errorf("still accepting after Shutdown")
	}
	tr.CloseIdleConnections()
	if !eventually(2*time.Second, func() bool { return fdtest.Count(t) <= fdsBefore }) {
		t.Errorf("fds: %d before, %d after shutdown", fdsBefore, fdtest.Count(t))
	}
	if !eventually(2*time.Second, func() bool { return runtime.NumGoroutine() <= goroutinesBefore }) {
		t.Errorf("goroutines: %d before, %d after shutdown", goroutinesBefore, runtime.NumGoroutine())
	}
}

// At MaxConns a connection waits in the backlog until another closes, and
// the log says the server is at its limit (once, not per connection), and
// when that is over.
func TestMaxConnsHoldsConnectionsInTheBacklog(t *testing.T) {
	var logged syncBuffer
	s := startServer(t, Config{MaxConns: 2, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	a, b := dial(t, s), dial(t, s)
	exchange(t, a, bufio.NewReader(a), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	exchange(t, b, bufio.NewReader(b), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	third := dial(t, s) // connects (kernel backlog) but is not accepted
	br := bufio.NewReader(third)
	io.WriteString(third, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if _, err := br.Peek(1); err == nil {
		t.Fatal("a third connection was served at MaxConns=2")
	}
	a.Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, body := exchange(t, third, br, "", "GET")
	if resp.StatusCode != 200 || body != "Hello, World!" {
		t.Fatalf("after a slot freed: %d %q", resp.StatusCode, body)
	}
	atLimit := "level=WARN msg=\"quartet: at the connection limit: new clients wait in the backlog until connections close\" max_conns=2"
	if !eventually(2*time.Second, func() bool { return strings.Contains(logged.String(), atLimit) }) {
		t.Errorf("no line saying the server is at its connection limit:\n%s", logged.String())
	}
	// Still at the limit (b and third are open) when it stops.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	over := regexp.MustCompile(`level=INFO msg="quartet: below the connection limit again \(at shutdown\)" lasted=\S+ max_conns=2`)
	if n, m := strings.Count(logged.String(), "at the connection limit:"), len(over.FindAllString(logged.String(), -1)); n != 1 || m != 1 {
		t.Errorf("%d lines at the limit and %d at its end, want one each:\n%s", n, m, logged.String())
	}
}

func TestCurlIsServed(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	s := startServer(t, Config{})
	base := "http://" + s.Addr().String()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{base + "/hello"}, "Hello, World!"},
		{[]string{"--http1.0", base + "/hello"}, "Hello, World!"},
		{[]string{"-d", "posted by curl", base + "/echo"}, "posted by curl"},
		{[]string{"-H", "Transfer-Encoding: chunked", "-d", "chunked by curl", base + "/echo"}, "chunked by curl"},
		{[]string{"-I", base + "/bytes?n=7"}, "Content-Length: 7"},
		{[]string{base + "/hello", base + "/bytes?n=3"}, "Hello, World!abc"}, // one connection, two requests
	}
	for _, tt := range tests {
		out, err := exec.Command(curl, append([]string{"-sS", "--max-time", "5"}, tt.args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v: %s", tt.args, err, out)
		}
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("curl %v: %q, want %q", tt.args, out, tt.want)
		}
	}
}
