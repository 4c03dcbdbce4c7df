package runtime

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// declared is a handler that declares /fast never blocks (processor.Inliner)
// and serves /block by waiting until the test releases it, reporting
// whether its client was seen gone meanwhile.
type declared struct {
	entered chan struct{}
	release chan struct{}
	sawGone atomic.Bool
}

func newDeclared() *declared {
	return &declared{entered: make(chan struct{}, 8), release: make(chan struct{})}
}

func (d *declared) Inline(r *stages.Request) bool { return strings.HasPrefix(string(r.Path), "/fast") }

// bigBody is what /fastbig answers: more than a socket takes at once.
var bigBody = strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB

func (d *declared) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	switch string(r.Path) {
	case "/fast":
		w.WriteString("fast")
		return
	case "/fastbig":
		w.WriteString(bigBody)
		return
	}
	d.entered <- struct{}{}
	select {
	case <-d.release:
	case <-time.After(10 * time.Second):
	}
	d.sawGone.Store(r.Conn.Gone())
	w.WriteString("slow")
}

// A request whose handler declares it never blocks is served on its reader
// loop (Stats.Inline counts it), and one whose handler may block still goes
// to a processor: while it blocks, the loop that read it serves other
// requests. Both are logged and counted in the processor stage; NoInline
// sends everything to the processors.
func TestInlineOnlyWhatIsDeclared(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noInline   bool
		wantInline uint64
	}{
		{"declared requests inline", false, 3},
		{"NoInline", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log syncBuffer
			logf, err := AccessLog(&log, CombinedIO)
			if err != nil {
				t.Fatal(err)
			}
			h := newDeclared()
			// One reader loop: a blocking handler run on it would stall
			// the /fast requests below.
			s := startServer(t, Config{Readers: 1, Writers: 1, Processors: 2, Handler: h, Log: logf, NoInline: tc.noInline})

			slow := dial(t, s)
			slowBr := bufio.NewReader(slow)
			if _, err := slow.Write([]byte("GET /block HTTP/1.1\r\nHost: t\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-h.entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the blocking handler never ran")
			}
			fast := dial(t, s)
			br := bufio.NewReader(fast)
			for i := range 3 {
				resp, body := exchange(t, fast, br, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", "GET")
				if resp.StatusCode != 200 || body != "fast" {
					t.Fatalf("request %d while a handler blocks: %d %q", i, resp.StatusCode, body)
				}
			}
			close(h.release)
			if resp, body := exchange(t, slow, slowBr, "", "GET"); resp.StatusCode != 200 || body != "slow" {
				t.Fatalf("blocked request: %d %q", resp.StatusCode, body)
			}
			if !eventually(5*time.Second, func() bool { return len(log.lines()) == 4 }) {
				t.Fatalf("access log has %d lines, want 4: %q", len(log.lines()), log.String())
			}
			for _, e := range parseLog(t, log.lines()) {
				if e.status != "200" || e.out == 0 {
					t.Errorf("log entry %+v: want status 200 and bytes out", e)
				}
			}
			st := s.Stats()
			if st.Inline != tc.wantInline {
				t.Errorf("Stats.Inline = %d, want %d", st.Inline, tc.wantInline)
			}
			if st.Processor.Enqueued != 4 || st.Processor.Dequeued != 4 || st.Processor.Count != 4 {
				t.Errorf("processor stage counted %d in, %d out, %d timed; want 4 each",
					st.Processor.Enqueued, st.Processor.Dequeued, st.Processor.Count)
			}
		})
	}
}

// A module whose InsertFilter may block keeps every request on the
// processors unless it says, per request, that it does not (Module.Inline).
func TestModuleInsertFilterGatesInline(t *testing.T) {
	filter := func(*stages.Request, *processor.ResponseWriter) {}
	for _, tc := range []struct {
		name   string
		mod    Module
		header string
		want   uint64
	}{
		{"no word from the module", Module{Name: "m", InsertFilter: filter}, "", 0},
		{"module allows", Module{Name: "m", InsertFilter: filter, Inline: func(r *stages.Request) bool { return r.Header("X-Block") == nil }}, "", 1},
		{"module refuses this request", Module{Name: "m", InsertFilter: filter, Inline: func(r *stages.Request) bool { return r.Header("X-Block") == nil }}, "X-Block: 1\r\n", 0},
		{"module without an InsertFilter", Module{Name: "m", Logger: func(*stages.Response) {}}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{Handler: newDeclared(), Modules: []Module{tc.mod}})
			c := dial(t, s)
			resp, body := exchange(t, c, bufio.NewReader(c), "GET /fast HTTP/1.1\r\nHost: t\r\n"+tc.header+"\r\n", "GET")
			if resp.StatusCode != 200 || body != "fast" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			if got := s.Stats().Inline; got != tc.want {
				t.Errorf("Stats.Inline = %d, want %d", got, tc.want)
			}
		})
	}
}

// Admission control refuses what would wait for a processor; a request
// served inline never waits for one, so it is served while the queue
// refuses everything.
func TestAdmissionOnlyForTheStagedPath(t *testing.T) {
	s := startUntuned(t, Config{Addr: "127.0.0.1:0", Processors: 1, Handler: newDeclared()})
	for c := range s.requests.Classes() {
		s.requests.SetLimit(c, 0, 3)
	}
	c := dial(t, s)
	br := bufio.NewReader(c)
	if resp, body := exchange(t, c, br, "GET /block HTTP/1.1\r\nHost: t\r\n\r\n", "GET"); resp.StatusCode != 503 {
		t.Fatalf("staged request with admission refusing everything: %d %q", resp.StatusCode, body)
	}
	if resp, body := exchange(t, c, br, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", "GET"); resp.StatusCode != 200 || body != "fast" {
		t.Fatalf("inline request: %d %q", resp.StatusCode, body)
	}
}

// A client that resets its connection is noticed on both paths: a
// blocked handler sees Conn.Gone, and either way the connection is
// released.
func TestClientGoneOnBothPaths(t *testing.T) {
	for _, path := range []string{"/fast", "/block"} {
		t.Run(path, func(t *testing.T) {
			h := newDeclared()
			s := startServer(t, Config{Readers: 1, Processors: 2, Handler: h})
			c := dial(t, s)
			if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			// Serving: the release below is seen by a running server.
			if !eventually(10*time.Second, func() bool { return s.Stats().Accepted == 1 }) {
				t.Fatal("the connection was never accepted")
			}
			if path == "/block" {
				select {
				case <-h.entered:
				case <-time.After(10 * time.Second):
					t.Fatal("the blocking handler never ran")
				}
			}
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			if path == "/block" {
				if !eventually(5*time.Second, func() bool {
					for _, r := range s.readers.live() {
						if r.HangUps() > 0 {
							return true
						}
					}
					return false
				}) {
					t.Fatal("the reader never saw the client go")
				}
				close(h.release)
				if !eventually(5*time.Second, h.sawGone.Load) {
					t.Error("the blocked handler did not see its client gone")
				}
			}
			if !eventually(5*time.Second, func() bool { return s.Stats().Open == 0 }) {
				t.Fatalf("%d connections still open after the client reset", s.Stats().Open)
			}
		})
	}
}

// The reader loop writes an inline request's response itself when the
// socket takes it whole (Stats.Direct), and hands the rest to the writer
// loop when it does not: a client that reads nothing for a while still gets
// every byte, in order, logged once with all of them.
func TestDirectWriteAndHandOver(t *testing.T) {
	var log syncBuffer
	logf, err := AccessLog(&log, CombinedIO)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Readers: 1, Writers: 1, Handler: newDeclared(), Log: logf})
	c := dial(t, s)
	br := bufio.NewReader(c)
	if resp, body := exchange(t, c, br, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", "GET"); resp.StatusCode != 200 || body != "fast" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	// Counted after the write, so the client may read first.
	if !eventually(5*time.Second, func() bool { st := s.Stats(); return st.Direct == 1 && st.Writer.Dequeued == 1 }) {
		st := s.Stats()
		t.Fatalf("after a small response: Direct %d, writer dequeued %d; want 1, 1", st.Direct, st.Writer.Dequeued)
	}

	slow := dialSmall(t, s, 4096)
	if _, err := slow.Write([]byte("GET /fastbig HTTP/1.1\r\nHost: t\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // reads nothing: the socket fills, the writer takes over
	slow.SetDeadline(time.Now().Add(20 * time.Second))
	resp, body := exchange(t, slow, bufio.NewReader(slow), "", "GET")
	if resp.StatusCode != 200 || body != bigBody {
		t.Fatalf("big response: %d, %d bytes, want %d", resp.StatusCode, len(body), len(bigBody))
	}
	// Still good on the first connection: the hand-over kept nothing of
	// the loop's.
	if resp, body := exchange(t, c, br, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", "GET"); resp.StatusCode != 200 || body != "fast" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	eventually(5*time.Second, func() bool { st := s.Stats(); return st.Direct == 2 && st.Writer.Dequeued == 3 })
	st := s.Stats()
	if st.Inline != 3 || st.Direct != 2 || st.Writer.Dequeued != 3 {
		t.Errorf("Inline %d, Direct %d, writer dequeued %d; want 3, 2 (the big one handed over), 3", st.Inline, st.Direct, st.Writer.Dequeued)
	}
	if !eventually(5*time.Second, func() bool { return len(log.lines()) == 3 }) {
		t.Fatalf("access log: %q", log.String())
	}
	var big bool
	for _, e := range parseLog(t, log.lines()) {
		if e.request == "GET /fastbig HTTP/1.1" {
			big = e.out > int64(len(bigBody))
		}
	}
	if !big {
		t.Errorf("the handed-over response is not logged with all its bytes: %q", log.String())
	}
	// Only the handed-over response was bound to the writer loop, and it
	// has been unbound: a retired writer would stop.
	s.writers.each(func(w *wloop) {
		if n := w.out.Load(); n != 0 {
			t.Errorf("writer %d has %d responses bound, want 0", w.ID(), n)
		}
	})
}

// A response a reader loop writes whole is bound to no writer loop, so
// the writer its connection last had may go meanwhile: the next one is
// still served inline (with the settings of a writer still there), and
// one the socket does not take whole is handed to a serving writer.
func TestInlineAfterItsWriterWent(t *testing.T) {
	s := startServer(t, Config{Readers: 1, Writers: 2, Handler: newDeclared()})
	// Two connections, given the two writers in turn as they are
	// accepted: one of them keeps the writer taken away below.
	var conns []net.Conn
	var brs []*bufio.Reader
	for range 2 {
		c := dial(t, s)
		conns, brs = append(conns, c), append(brs, bufio.NewReader(c))
		if resp, body := exchange(t, c, brs[len(brs)-1], "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", "GET"); resp.StatusCode != 200 || body != "fast" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	s.loopsMu.Lock()
	gone := s.writers.live()[0].ID()
	s.removeWriter()
	s.loopsMu.Unlock()
	if !eventually(5*time.Second, func() bool { return s.writers.at(gone) == nil }) {
		t.Fatalf("writer %d did not go", gone)
	}
	for i, c := range conns {
		for _, path := range []string{"/fast", "/fastbig", "/fast"} {
			resp, body := exchange(t, c, brs[i], "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n", "GET")
			if want := map[string]string{"/fast": "fast", "/fastbig": bigBody}[path]; resp.StatusCode != 200 || body != want {
				t.Fatalf("connection %d, %s: %d, %d bytes", i, path, resp.StatusCode, len(body))
			}
		}
	}
}

// A connection whose response its reader loop wrote itself comes back to
// the loop without crossing its queue (reader.Loop.ReturnOwn): the loop's
// queue sees only the connection's adoption, however many requests it
// sends, pipelined or not, and each is answered in order. Stats counts
// the hand-backs in the reader stage as if queued.
func TestInlineReturnSkipsQueue(t *testing.T) {
	s := startServer(t, Config{Readers: 1, Writers: 1, Processors: 1, Handler: newDeclared()})
	c := dial(t, s)
	br := bufio.NewReader(c)
	const one, pipelined = 20, 10
	for range one {
		if resp, body := exchange(t, c, br, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", "GET"); resp.StatusCode != 200 || body != "fast" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	// Pipelined: each next request is served from the buffer as the
	// loop takes the previous one's Return, itself added by the loop.
	if _, err := c.Write([]byte(strings.Repeat("GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", pipelined))); err != nil {
		t.Fatal(err)
	}
	for i := range pipelined {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "fast" {
			t.Fatalf("pipelined response %d: %d %q", i, resp.StatusCode, b)
		}
	}
	// The loop counts a response after the client can have read it.
	var st Stats
	if !eventually(5*time.Second, func() bool {
		st = s.Stats()
		return st.Direct == one+pipelined && st.Reader.Enqueued == 1+one+pipelined
	}) {
		t.Fatalf("Direct = %d, reader enqueued %d; want %d, %d: not every response written by the loop, or not every hand-back counted",
			st.Direct, st.Reader.Enqueued, one+pipelined, 1+one+pipelined)
	}
	if q := s.counters.reader.Snapshot("reader", 0, 0).Enqueued; q != 1 {
		t.Fatalf("reader queue took %d messages, want 1 (the adoption): Returns went through it", q)
	}
	if st.Reader.Enqueued != 1+one+pipelined || st.Reader.Dequeued != st.Reader.Enqueued {
		t.Fatalf("reader stage: enqueued %d, dequeued %d; want %d each (the adoption and every hand-back)",
			st.Reader.Enqueued, st.Reader.Dequeued, 1+one+pipelined)
	}
}
