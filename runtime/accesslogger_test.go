package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

func loggedResponse() *stages.Response {
	return &stages.Response{Req: &stages.Request{Method: []byte("GET"), Target: []byte("/x"), Minor: 1}, Status: 200}
}

// closableBuffer is an output the caller closes after moving the log off
// it, as a rotated file is: a Write after Close fails, so a line flushed
// to it late is a line lost.
type closableBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	closed bool
}

func (c *closableBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, os.ErrClosed
	}
	return c.b.Write(p)
}

func (c *closableBuffer) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// Every line logged by concurrent writer loops reaches an output, whole
// and once, while the log is moved from output to output under them and
// each old one is closed the moment SetOutput returns; the flusher runs
// throughout (the lines pass AccessLogFlushBytes many times over).
func TestAccessLoggerKeepsEveryLineAcrossOutputs(t *testing.T) {
	var logged syncBuffer
	outs := []*closableBuffer{{}}
	l, err := NewAccessLogger(outs[0], Combined, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const loops, each = 8, 4000
	var wg sync.WaitGroup
	for range loops {
		wg.Go(func() {
			r := loggedResponse()
			for range each {
				l.Log(r)
			}
		})
	}
	for range 5 {
		time.Sleep(time.Millisecond)
		next := &closableBuffer{}
		if err := l.SetOutput(next, Combined); err != nil {
			t.Fatal(err)
		}
		outs[len(outs)-1].Close()
		outs = append(outs, next)
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, o := range outs {
		for _, line := range strings.Split(strings.TrimSuffix(o.b.String(), "\n"), "\n") {
			if line == "" {
				continue
			}
			if !strings.Contains(line, `"GET /x HTTP/1.1" 200 - "-" "-"`) {
				t.Fatalf("output %d: a broken line %q", i, line)
			}
			total++
		}
	}
	if total != loops*each {
		t.Errorf("%d lines in %d outputs, want %d", total, len(outs), loops*each)
	}
	if s := logged.String(); s != "" {
		t.Errorf("logged:\n%s", s)
	}
}

// An output that takes nothing (a stalled disk) never holds the writer
// loops: Log returns at once, the lines past AccessLogMaxPending are
// dropped, and the log says how many once the flusher gets a word in.
func TestAccessLoggerStalledOutputDropsAndSays(t *testing.T) {
	stall := &stalledWriter{release: make(chan struct{})}
	var logged syncBuffer
	l, err := NewAccessLogger(stall, Combined, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r := loggedResponse()
	line := len(AppendAccessLog(nil, Combined, r, time.Now()))
	// Enough for the flusher to take one buffer into the stalled Write,
	// and for the next to fill and overflow.
	n := 2*(AccessLogMaxPending/line) + 1000
	for range n {
		l.Log(r) // must not block: the test would hang here
	}
	close(stall.release)
	l.Close()
	want := `level=ERROR msg="quartet: access log: lines lost" output=*runtime.stalledWriter err="the output took no lines while 4 MiB of them gathered (a stalled disk)" lines=`
	if !strings.Contains(logged.String(), want) {
		t.Errorf("no line about the dropped lines:\n%s", logged.String())
	}
	written := bytes.Count(stall.got.Bytes(), []byte("\n"))
	if written == 0 || written >= n {
		t.Errorf("%d of %d lines written: want some, and fewer than all", written, n)
	}
}

type stalledWriter struct {
	release chan struct{}
	got     bytes.Buffer
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.got.Write(p)
}

// An output that refuses every write (a full disk): Close returns its
// error, and the log has one line for all the lines lost, naming the file.
func TestAccessLoggerFailedWritesAreReportedOnce(t *testing.T) {
	var logged syncBuffer
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip(err)
	}
	defer full.Close()
	l, err := NewAccessLogger(full, Combined, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r := loggedResponse()
	for range 5 {
		l.Log(r)
	}
	if err := l.Flush(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Flush: %v, want ENOSPC", err)
	}
	for range 5 {
		l.Log(r)
	}
	if err := l.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close: %v, want ENOSPC", err)
	}
	lines := logged.lines()
	if len(lines) != 1 || !strings.Contains(lines[0], `level=ERROR msg="quartet: access log: lines lost" output=/dev/full err="write /dev/full: no space left on device" lines=5`) {
		t.Errorf("for 10 lost lines, logged %q; want one line for the first five (the rest wait for the next interval)", lines)
	}
}

func TestAccessLoggerLifecycle(t *testing.T) {
	if _, err := NewAccessLogger(io.Discard, "common", nil); err == nil || !strings.Contains(err.Error(), `"combinedio"`) {
		t.Fatalf("unknown format: %v", err)
	}
	goroutines := goruntime.NumGoroutine()
	var out syncBuffer
	l, err := NewAccessLogger(nil, Combined, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := loggedResponse()
	l.Log(r) // no output yet: not kept
	if err := l.SetOutput(&out, "common"); err == nil {
		t.Error("SetOutput took an unknown format")
	}
	if err := l.SetOutput(&out, CombinedIO); err != nil {
		t.Fatal(err)
	}
	l.Log(r)
	l.Log(r)
	// Close writes the lines at once, not at the next tick.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(out.lines()); got != 2 {
		t.Errorf("%d lines after Close, want 2", got)
	}
	if !strings.HasSuffix(out.lines()[0], " 0 0") {
		t.Errorf("line %q: want combinedio's %%I %%O", out.lines()[0])
	}
	l.Log(r) // after Close: not kept
	if err := l.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	if got := len(out.lines()); got != 2 {
		t.Errorf("%d lines after a Log that followed Close, want 2", got)
	}
	if !eventually(2*time.Second, func() bool { return goruntime.NumGoroutine() <= goroutines }) {
		t.Errorf("goroutines: %d before, %d after Close", goroutines, goruntime.NumGoroutine())
	}
}

// A server logging through an AccessLogger: each response's line is in the
// output once Serve has returned and Close has been called, and the lines
// of a quiet server reach the output within AccessLogFlushEvery or so,
// without Close.
func TestAccessLoggerServesAServer(t *testing.T) {
	var out syncBuffer
	l, err := NewAccessLogger(&out, CombinedIO, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Addr: "127.0.0.1:0", Handler: Builtin(nil), Log: l.Log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	get := func(path string) {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://%s%s", s.Addr(), path))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/hello")
	if !eventually(5*time.Second, func() bool { return len(out.lines()) == 1 }) {
		t.Fatalf("%d lines a while after one response, want 1", len(out.lines()))
	}
	const n = 50
	for range n {
		get("/hello")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	es := parseLog(t, out.lines())
	if len(es) != n+1 {
		t.Fatalf("%d lines for %d responses", len(es), n+1)
	}
	for _, e := range es {
		if e.request != "GET /hello HTTP/1.1" || e.status != "200" || e.out == 0 {
			t.Fatalf("line %+v", e)
		}
	}
}

func BenchmarkAccessLoggerLog(b *testing.B) {
	l, err := NewAccessLogger(io.Discard, CombinedIO, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	req := &stages.Request{Method: []byte("GET"), Target: []byte("/index.html"), Minor: 1}
	req.Headers = append(req.Headers, stages.Header{Name: []byte("User-Agent"), Value: []byte("curl/8.5.0")})
	r := &stages.Response{Req: req, Status: 200, BytesSent: 1200, HeaderBytes: 200}
	b.ReportAllocs()
	for b.Loop() {
		l.Log(r)
	}
}
