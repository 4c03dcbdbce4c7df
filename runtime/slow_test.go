package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// dialSmall opens a connection to s whose receive buffer is rcvbuf bytes
// (set before connect, so the advertised window is small from the start):
// a client that reads slowly, or not at all, then stalls the server at
// once instead of after megabytes.
func dialSmall(t testing.TB, s *Server, rcvbuf int) *net.TCPConn {
	t.Helper()
	c := dialSmallOwned(t, s, rcvbuf)
	t.Cleanup(func() { c.Close() })
	return c
}

// dialSmallOwned is dialSmall for a caller that closes the connection.
func dialSmallOwned(t testing.TB, s *Server, rcvbuf int) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c.(*net.TCPConn)
}

// tcpEntry is a socket's line in /proc/net/tcp: its state and the bytes
// queued for sending.
type tcpEntry struct {
	state   string
	txQueue int64
}

// serverSocket finds the server's end of client c in /proc/net/tcp: local
// port the server's, remote port c's own.
func serverSocket(t testing.TB, s *Server, c net.Conn) (tcpEntry, bool) {
	t.Helper()
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	sport := s.Addr().(*net.TCPAddr).Port
	cport := c.LocalAddr().(*net.TCPAddr).Port
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lp, rp := hexPort(f[1]), hexPort(f[2])
		if lp != sport || rp != cport {
			continue
		}
		tx, _, _ := strings.Cut(f[4], ":")
		q, _ := strconv.ParseInt(tx, 16, 64)
		return tcpEntry{state: f[3], txQueue: q}, true
	}
	return tcpEntry{}, false
}

func hexPort(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseInt(p, 16, 32)
	return int(n)
}

// A connection the server gives up on (the client stopped reading) is
// reset, not closed with FIN: the kernel drops the megabytes it still
// queues instead of feeding them to the client from an orphaned socket.
// What the client sees: the bytes it had taken, then a reset; what the
// server's kernel keeps: nothing.
func TestTimedOutConnectionIsReset(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"write timeout", Config{WriteTimeout: 300 * time.Millisecond, MinResponseRate: -1}},
		{"below the minimum rate", Config{MinResponseRate: 1 << 20, MinResponseRateGrace: 300 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.cfg)
			c := dialSmall(t, s, 4096)
			io.WriteString(c, "GET /bytes?n=200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
			if !eventually(10*time.Second, func() bool { return s.Stats().Slow.Resets == 1 }) {
				t.Fatalf("no reset: %+v", s.Stats().Slow)
			}
			if e, ok := serverSocket(t, s, c); ok && e.txQueue > 0 {
				t.Errorf("the server's socket lingers in state %s with %d bytes queued", e.state, e.txQueue)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client read %d bytes, then %v; want a reset", n, err)
			}
			if n >= 200000000 {
				t.Errorf("client received the whole response (%d bytes)", n)
			}
		})
	}
}

// A request body that stalls after some bytes gets a 408 when nothing of
// the response was sent, and the connection closes.
func TestStalledBodyGets408(t *testing.T) {
	s := startServer(t, Config{BodyTimeout: 300 * time.Millisecond})
	c := dial(t, s)
	br := bufio.NewReader(c)
	// Larger than PrereadBody: streamed to the handler, which echoes what
	// it gets (buffered, not yet committed) until the body stalls.
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789")
	resp, _ := exchange(t, c, br, "", "POST")
	if resp.StatusCode != 408 || !resp.Close {
		t.Fatalf("status %d, close %v; want 408 and close", resp.StatusCode, resp.Close)
	}
	expectClosed(t, c, br)
}

// The minimum body rate: a client that keeps sending, but slower than
// MinBodyRate after the grace, is cut off with a 408, although it never
// pauses long enough for the body timeout; one above the rate is served.
func TestBodyMinimumRate(t *testing.T) {
	s := startServer(t, Config{MinBodyRate: 4000, MinBodyRateGrace: 500 * time.Millisecond})
	for _, tc := range []struct {
		name     string
		chunk    int
		every    time.Duration
		want     int
		wantSlow uint64
	}{
		{"below the rate", 100, 100 * time.Millisecond, 408, 1},  // 1 KB/s
		{"above the rate", 8000, 100 * time.Millisecond, 200, 1}, // 80 KB/s
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 160000
			c := dial(t, s)
			br := bufio.NewReader(c)
			fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				chunk := strings.Repeat("b", tc.chunk)
				for sent := 0; sent < size; sent += tc.chunk {
					select {
					case <-stop:
						return
					case <-time.After(tc.every):
					}
					if _, err := io.WriteString(c, chunk[:min(tc.chunk, size-sent)]); err != nil {
						return
					}
				}
			}()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			resp, body := exchange(t, c, br, "", "POST")
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%d bytes), want %d", resp.StatusCode, len(body), tc.want)
			}
			if got := s.Stats().Slow.SlowBodies; got != tc.wantSlow {
				t.Errorf("slow bodies counted %d, want %d", got, tc.wantSlow)
			}
		})
	}
}

// Client gone: a net/http handler's context is cancelled when its client
// hangs up, as under net/http, and a request still queued when its client
// hangs up is never started.
func TestClientGone(t *testing.T) {
	release := make(chan struct{})
	var counted atomic.Int64
	ctxErr := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/wait", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			ctxErr <- r.Context().Err()
		case <-time.After(30 * time.Second):
			ctxErr <- errors.New("the handler waited its full time for a client that had gone")
		}
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) { <-release })
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) { counted.Add(1) })
	s := startServer(t, Config{Processors: 1, Handler: processor.Adapt(mux)})

	t.Run("context cancelled", func(t *testing.T) {
		c := dial(t, s)
		io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
		if !eventually(10*time.Second, func() bool { return s.Stats().Busy == 1 }) {
			t.Fatal("the handler did not start")
		}
		c.Close()
		select {
		case err := <-ctxErr:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("handler: %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the context was not cancelled when the client closed")
		}
	})

	t.Run("queued request dropped", func(t *testing.T) {
		// The previous case's handler may still be finishing: Busy == 1
		// below must be /block's, or before misses its enqueue and the
		// wait for /count's is satisfied by /block's.
		if !eventually(10*time.Second, func() bool { return s.Stats().Busy == 0 }) {
			t.Fatal("the previous handler did not finish")
		}
		busy := dial(t, s)
		io.WriteString(busy, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
		if !eventually(10*time.Second, func() bool { return s.Stats().Busy == 1 }) {
			t.Fatal("the blocking handler did not start")
		}
		before := s.Stats()
		queued := dial(t, s)
		io.WriteString(queued, "GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
		if !eventually(10*time.Second, func() bool { return s.Stats().Processor.Enqueued > before.Processor.Enqueued }) {
			t.Fatal("the second request was not queued")
		}
		queued.Close()
		if !eventually(10*time.Second, func() bool { return s.Stats().Slow.HangUps > before.Slow.HangUps }) {
			t.Fatal("the reader did not notice the client hang up")
		}
		close(release)
		br := bufio.NewReader(busy)
		if resp, _ := exchange(t, busy, br, "", "GET"); resp.StatusCode != 200 {
			t.Fatalf("the blocking request: %d", resp.StatusCode)
		}
		if !eventually(10*time.Second, func() bool { return s.Stats().Processor.Dropped == before.Processor.Dropped+1 }) {
			t.Fatalf("dropped %d, want %d", s.Stats().Processor.Dropped, before.Processor.Dropped+1)
		}
		// A live request after it still runs: the drop cost nothing else.
		c := dial(t, s)
		if resp, _ := exchange(t, c, bufio.NewReader(c), "GET /count HTTP/1.1\r\nHost: x\r\n\r\n", "GET"); resp.StatusCode != 200 {
			t.Fatalf("after the drop: %d", resp.StatusCode)
		}
		if n := counted.Load(); n != 1 {
			t.Errorf("/count ran %d times, want once (the queued request must not run)", n)
		}
		if !eventually(10*time.Second, func() bool { return s.Stats().Open == 2 }) {
			t.Errorf("%d connections open, want 2: the dropped one closed", s.Stats().Open)
		}
	})

	t.Run("pipelined then half-closed: served", func(t *testing.T) {
		c := dial(t, s)
		io.WriteString(c, "GET /count HTTP/1.1\r\nHost: x\r\n\r\nGET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		for i := 0; i < 2; i++ {
			if resp, _ := exchange(t, c, br, "", "GET"); resp.StatusCode != 200 {
				t.Fatalf("response %d: %d", i, resp.StatusCode)
			}
		}
	})
}

// TestPipelinedRequestQueuedWhenItsClientHalfCloses: a client pipelines
// two requests and half-closes while the second waits in the queue (the
// one place is taken by another connection's request). Its FIN says it
// has nothing more to send, not that it has gone: the second request is
// served. A request that came on its own and is followed by a FIN is
// taken for abandoned (TestClientGone's "queued request dropped").
func TestPipelinedRequestQueuedWhenItsClientHalfCloses(t *testing.T) {
	first, second := make(chan struct{}), make(chan struct{})
	started := make(chan string, 2)
	mux := http.NewServeMux()
	mux.HandleFunc("/first", func(w http.ResponseWriter, r *http.Request) { started <- "first"; <-first })
	mux.HandleFunc("/second", func(w http.ResponseWriter, r *http.Request) { started <- "second"; <-second })
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {})
	s := startServer(t, Config{Processors: 1, Handler: processor.Adapt(mux)})
	var freed [2]bool // a failing test must not leave a handler waiting
	free := func(i int) {
		if !freed[i] {
			freed[i] = true
			close([]chan struct{}{first, second}[i])
		}
	}
	defer free(0)
	defer free(1)

	c := dial(t, s)
	io.WriteString(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if got := <-started; got != "first" {
		t.Fatalf("%s started", got)
	}
	before := s.Stats()
	other := dial(t, s)
	io.WriteString(other, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	if !eventually(10*time.Second, func() bool { return s.Stats().Processor.Enqueued > before.Processor.Enqueued }) {
		t.Fatal("the other connection's request was not queued")
	}
	// /first ends; the place goes to /second, which was waiting, and the
	// pipelined /count is dispatched into the queue behind it.
	enq := s.Stats().Processor.Enqueued
	free(0)
	if got := <-started; got != "second" {
		t.Fatalf("%s started", got)
	}
	if !eventually(10*time.Second, func() bool { return s.Stats().Processor.Enqueued > enq }) {
		t.Fatal("the pipelined request was not queued")
	}
	c.(*net.TCPConn).CloseWrite()
	time.Sleep(100 * time.Millisecond) // for the FIN to reach the reader, which takes it at once
	free(1)
	br := bufio.NewReader(c)
	for _, path := range []string{"/first", "/count"} {
		if resp, _ := exchange(t, c, br, "", "GET"); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	if n := s.Stats().Slow.HangUps; n != before.Slow.HangUps {
		t.Errorf("%d hang-ups counted, want none", n-before.Slow.HangUps)
	}
}

// Connections are counted where their requests stand: waiting for a
// processor, running, parked on their client; none of them is "writing".
func TestConnectionStatesAreNamedAsTheyAre(t *testing.T) {
	release := make(chan struct{})
	h := processor.HandlerFunc(func(w *processor.ResponseWriter, r *stages.Request) {
		if string(r.Path) == "/block" {
			<-release
		}
		w.WriteString("ok")
	})
	s := startServer(t, Config{Processors: 1, Handler: Builtin(h)})
	defer close(release)
	reader := dialSmall(t, s, 4096)
	io.WriteString(reader, "GET /bytes?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n") // parks on back-pressure
	if !eventually(10*time.Second, func() bool { return s.Stats().Slow.Parked == 1 }) {
		t.Fatal("the slow reader's handler did not park")
	}
	block := dial(t, s)
	io.WriteString(block, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
	if !eventually(10*time.Second, func() bool { return s.Stats().Busy == 1 }) {
		t.Fatal("the blocking handler did not start")
	}
	queued := dial(t, s)
	io.WriteString(queued, "GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
	want := ConnStates{Queued: 1, Processing: 1, Parked: 1}
	var got ConnStates
	if !eventually(10*time.Second, func() bool { got = s.Stats().Conns; return got == want }) {
		t.Fatalf("connection states %+v, want %+v", got, want)
	}
}

// A client that reads steadily but slower than the server writes is served
// the whole response, however long that takes: the write timeout is about
// a client that takes nothing. Its handler waits on it (parked) for far
// longer than the write timeout without failing, because the writer sees
// the client take bytes from the socket's queue even while the socket
// stays unwritable.
func TestSteadySlowReaderIsServedWhole(t *testing.T) {
	const (
		size    = 20 << 20
		timeout = 2 * time.Second
	)
	s := startServer(t, Config{WriteTimeout: timeout})
	// A small receive window: on loopback (64 KiB segments) a large one
	// would show the server what the client reads only every 64 KiB.
	c := dialSmall(t, s, 4096)
	fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", size)
	br := bufio.NewReaderSize(c, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// 16 KB/s for three write timeouts: the handler, parked on
	// back-pressure, needs 12 s of it to reach the low-water mark, and the
	// socket turns writable rarely if ever.
	buf := make([]byte, 1600)
	got := 0
	for end := time.Now().Add(3 * timeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		n, err := io.ReadFull(resp.Body, buf)
		got += n
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	if st := s.Stats(); st.Slow.TimedOut != 0 || st.Slow.Resets != 0 {
		t.Fatalf("a reading client was cut off: %+v", st.Slow)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	rest, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got+int(rest) != size {
		t.Fatalf("received %d of %d body bytes: %v", got+int(rest), size, err)
	}
}
