package runtime

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
)

var resizeDuration = flag.Duration("resize-duration", 4*time.Second,
	"how long TestResizingUnderLoad changes the stages' sizes under load (issue 14 asks for 30s)")

func bufferLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// client is one keep-alive connection that sends requests one at a time.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func newClient(addr string) (*client, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &client{c: c, br: bufio.NewReader(c)}, nil
}

// get sends GET target and reads the whole response.
func (cl *client) get(target string) (*http.Response, string, error) {
	cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(cl.c, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target); err != nil {
		return nil, "", err
	}
	return cl.read("GET")
}

// read reads one whole response.
func (cl *client) read(method string) (*http.Response, string, error) {
	resp, err := http.ReadResponse(cl.br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

// exchangeAll sends raw (one request or several, pipelined) and reads a
// response for each of methods, in order.
func (cl *client) exchangeAll(raw string, methods ...string) ([]*http.Response, []string, error) {
	cl.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(cl.c, raw); err != nil {
		return nil, nil, err
	}
	var resps []*http.Response
	var bodies []string
	for _, m := range methods {
		resp, body, err := cl.read(m)
		if err != nil {
			return resps, bodies, err
		}
		resps, bodies = append(resps, resp), append(bodies, body)
	}
	return resps, bodies, nil
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func goroutinesSettle(base int) bool {
	return eventually(10*time.Second, func() bool { return goruntime.NumGoroutine() <= base })
}

// Every stage is resized every 200 ms, the processor pool to anything
// between 1 and 64 places and the reader and writer stages to 1 to 4
// loops, while keep-alive clients keep sending requests that block,
// requests that do not, requests with bodies and pipelined pairs: every
// request is answered with its body, no connection is dropped (each client
// keeps its one connection throughout), readers that leave hand their
// connections over, loops removed release their goroutine and their
// poller's and waker's fds, and once the clients are gone and the server
// shut down, no goroutine and no fd is left behind. (-resize-duration=30s
// runs issue 14's half minute.)
func TestResizingUnderLoad(t *testing.T) {
	baseFDs, baseG := fdtest.Count(t), goruntime.NumGoroutine()
	logger, log := bufferLogger()
	s, err := New(Config{Addr: "127.0.0.1:0", Readers: 2, ReadersMin: 1, ReadersMax: 4, Writers: 2, WritersMin: 1, WritersMax: 4,
		Processors: 8, ProcessorsMin: 1, ProcessorsMax: 64, QueueWaitTarget: -1, Logger: logger, Handler: Builtin(nil)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(t.Context()) }()
	for _, st := range []Stage{StageProcessor, StageReader, StageWriter} {
		if err := s.SetStageAuto(st, false); err != nil {
			t.Fatal(err)
		}
	}
	if !eventually(10*time.Second, s.Ready) {
		t.Fatal("the server did not become ready")
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err)
	}
	for i := range 48 {
		wg.Go(func() {
			cl, err := newClient(s.Addr().String())
			if err != nil {
				fail(err)
				return
			}
			defer cl.c.Close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				raw, want, methods := "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", []string{"Hello, World!"}, []string{"GET"}
				switch (i + n) % 5 {
				case 0, 2:
					raw, want = "GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n", []string{"OK\n"}
				case 3:
					body := strings.Repeat(strconv.Itoa(n%10), 1000+i)
					raw, want, methods = fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", len(body), body), []string{body}, []string{"POST"}
				case 4:
					raw += "GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n" // pipelined: the second waits in the read buffer
					want, methods = []string{"Hello, World!", "OK\n"}, []string{"GET", "GET"}
				}
				resps, bodies, err := cl.exchangeAll(raw, methods...)
				if err != nil {
					fail(fmt.Errorf("request %d on connection %d (%q): %w", n, i, raw[:16], err))
					return
				}
				for k := range resps {
					if resps[k].StatusCode != 200 || bodies[k] != want[k] {
						fail(fmt.Errorf("%q: %d %q", raw[:16], resps[k].StatusCode, bodies[k]))
						return
					}
				}
				ok.Add(int64(len(resps)))
			}
		})
	}
	// Every client connected, two loops per I/O stage: each loop holds two
	// fds (its poller and its waker), each connection one here and one in
	// the client.
	if !eventually(10*time.Second, func() bool { return s.openConns() == 48 }) {
		t.Fatalf("%d connections open, want 48", s.openConns())
	}
	// And the control loop's /proc/stat (Linux), open from its start.
	if !eventually(10*time.Second, func() bool { return fdtest.On(t, "/proc/stat") == 1 || goruntime.GOOS != "linux" }) {
		t.Fatalf("/proc/stat open %d times, want 1", fdtest.On(t, "/proc/stat"))
	}
	fdsAt2 := fdtest.Count(t)
	rng := rand.New(rand.NewPCG(14, 64))
	sizes := map[int]bool{}
	readers := map[*reader.Loop]bool{}
	loopChanges := 0
	// What loops did in batches is kept when they leave: the sums in
	// Stats never go back (they are Prometheus counters).
	var lastIO [4]uint64
	checkIO := func() {
		st := s.Stats()
		io := [4]uint64{st.Batched, st.SendBatches, st.BatchedReads, st.ReadBatches}
		for k := range io {
			if io[k] < lastIO[k] {
				t.Errorf("batch counts went back from %v to %v as loops came and went", lastIO, io)
			}
		}
		lastIO = io
	}
	deadline := time.Now().Add(*resizeDuration)
	for time.Now().Before(deadline) {
		n := 1 + rng.IntN(64)
		if err := s.SetStageSize(StageProcessor, n); err != nil {
			t.Fatalf("SetStageSize(%d): %v", n, err)
		}
		sizes[n] = true
		for _, st := range []Stage{StageReader, StageWriter} {
			was, _ := s.StageSize(st)
			n := 1 + rng.IntN(4)
			if err := s.SetStageSize(st, n); err != nil {
				t.Fatalf("SetStageSize(%s, %d): %v", st, n, err)
			}
			if n != was.Size {
				loopChanges++
			}
		}
		s.readers.each(func(r *reader.Loop) { readers[r] = true })
		for range 4 {
			checkIO()
			time.Sleep(50 * time.Millisecond)
		}
	}
	// One loop each, with the clients still connected: the loops removed
	// are gone from the tables once they have returned.
	for _, st := range []Stage{StageReader, StageWriter} {
		if err := s.SetStageSize(st, 1); err != nil {
			t.Fatal(err)
		}
	}
	s.readers.each(func(r *reader.Loop) { readers[r] = true })
	inTables := func() int {
		n := 0
		s.readers.each(func(*reader.Loop) { n++ })
		s.writers.each(func(*wloop) { n++ })
		return n
	}
	if !eventually(10*time.Second, func() bool { return inTables() == 2 }) {
		t.Errorf("%d loops in the tables after sizing both stages to 1, want 2", inTables())
	}
	// A loop's poller and waker, and its rings where the kernel grants
	// them (a reader loop's for reads and for sends, a writer loop's for
	// sends): a retired loop's go with it.
	loopsFDs := 4
	if ringWorks() {
		loopsFDs += 3
	}
	if n := fdtest.Count(t); n != fdsAt2-loopsFDs || s.openConns() != 48 {
		t.Errorf("%d fds and %d connections with one loop per I/O stage, want %d and 48 (%d fds with two loops each)", n, s.openConns(), fdsAt2-loopsFDs, fdsAt2)
	}
	time.Sleep(300 * time.Millisecond) // requests on the last loops, after the moves
	close(stop)
	wg.Wait()
	var moved uint64
	for r := range readers {
		moved += r.Moved()
	}
	t.Logf("%d requests answered while the pool took %d different sizes and loop counts changed %d times (%d connections moved between reader loops); %d failed",
		ok.Load(), len(sizes), loopChanges, moved, failed.Load())
	if moved == 0 {
		t.Error("no connection moved between reader loops")
	}
	if st := s.Snapshot(); st.Inline == 0 || st.Direct == 0 {
		t.Errorf("%d requests served inline, %d responses written directly: /hello should have been both, on whichever reader loops there were", st.Inline, st.Direct)
	}
	if n := strings.Count(log.String(), `msg="quartet: stage resized" stage=reader`); n < loopChanges/4 {
		t.Errorf("%d reader resizes logged for %d loop changes", n, loopChanges)
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() == 0 {
		t.Error("no request was answered")
	}
	if n := strings.Count(log.String(), `msg="quartet: stage resized" stage=processor`); n < len(sizes)/2 {
		t.Errorf("%d resizes logged for %d sizes set", n, len(sizes))
	}
	if !strings.Contains(log.String(), "cause=api") {
		t.Errorf("resizes not logged with their cause:\n%s", log.String())
	}
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !goroutinesSettle(baseG) {
		t.Errorf("goroutines: %d before, %d after shutdown", baseG, goruntime.NumGoroutine())
	}
	if !eventually(5*time.Second, func() bool { return fdtest.Count(t) <= baseFDs }) {
		t.Errorf("fds: %d before, %d after shutdown", baseFDs, fdtest.Count(t))
	}
}

// Under more load than the pool can serve, requests that would wait longer
// than the target are refused at once with 503 and Retry-After, on a
// connection that stays open; those admitted wait about the target at
// most; and a fast class is not starved by a slow one that holds every
// place: /hello stays well below the slow class's wait, never refused.
func TestOverloadShedsAndSparesTheFastClass(t *testing.T) {
	const (
		target = 800 * time.Millisecond
		slow   = 200 * time.Millisecond
	)
	var logged syncBuffer
	s := startServer(t, Config{Processors: 2, QueueWaitTarget: target, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	// Teach the server both routes (each earns its class by a success).
	warm, err := newClient(s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer warm.c.Close()
	for _, target := range []string{"/hello", fmt.Sprint("/sleep?ms=", slow.Milliseconds()), "/hello"} {
		if resp, _, err := warm.get(target); err != nil || resp.StatusCode != 200 {
			t.Fatalf("warm-up %s: %v %v", target, resp, err)
		}
	}

	// 40 clients in a closed loop on /sleep: 2 places serve 10/s, so the
	// queue would grow to 38 (3.8 s) without admission control. Admitted
	// latencies count once the class has a service time of its own: the
	// first burst arrives before, and is limited by a guess (see
	// unknownLimit), which admits all 40.
	stop := make(chan struct{})
	settled := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var admitted []time.Duration
	var shed, sameConn int
	var bad []string
	for range 40 {
		wg.Go(func() {
			cl, err := newClient(s.Addr().String())
			if err != nil {
				mu.Lock()
				bad = append(bad, err.Error())
				mu.Unlock()
				return
			}
			defer cl.c.Close()
			refused := false
			for {
				select {
				case <-stop:
					if refused {
						// The connection that got a 503 still carries a
						// request: /hello's class is not the one shed.
						resp, body, err := cl.get("/hello")
						mu.Lock()
						if err == nil && resp.StatusCode == 200 {
							sameConn++
						} else {
							bad = append(bad, fmt.Sprintf("/hello after a 503 on the same connection: %v %v %q", resp, err, body))
						}
						mu.Unlock()
					}
					return
				default:
				}
				start := time.Now()
				resp, body, err := cl.get(fmt.Sprint("/sleep?ms=", slow.Milliseconds()))
				took := time.Since(start)
				mu.Lock()
				switch {
				case err != nil:
					bad = append(bad, err.Error())
				case resp.StatusCode == 200:
					if start.After(settled) {
						admitted = append(admitted, took)
					}
					if refused {
						sameConn++ // a request served on a connection that got a 503 before
					}
				case resp.StatusCode == 503:
					shed++
					refused = true
					ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
					if err != nil || ra < 1 || resp.Close || !strings.Contains(body, "503") {
						bad = append(bad, fmt.Sprintf("503 with Retry-After %q, close %v, body %q", resp.Header.Get("Retry-After"), resp.Close, body))
					}
				default:
					bad = append(bad, fmt.Sprintf("status %d %q", resp.StatusCode, body))
				}
				mu.Unlock()
				if err != nil {
					return
				}
				if resp.StatusCode == 503 {
					time.Sleep(20 * time.Millisecond) // a client that backs off a little
				}
			}
		})
	}
	time.Sleep(time.Until(settled)) // let the first burst drain and the overload set in
	fast, err := newClient(s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fast.c.Close()
	var hello []time.Duration
	for range 20 {
		start := time.Now()
		resp, body, err := fast.get("/hello")
		if err != nil || resp.StatusCode != 200 || body != "Hello, World!" {
			t.Errorf("/hello during the overload: %v %v %q", resp, err, body)
			break
		}
		hello = append(hello, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	slices.Sort(admitted)
	slices.Sort(hello)
	pct := func(d []time.Duration, p float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[min(len(d)-1, int(float64(len(d))*p))]
	}
	t.Logf("slow class: %d admitted (p50 %v, p90 %v, max %v), %d shed, %d served on a connection after its 503; /hello p50 %v, max %v",
		len(admitted), pct(admitted, 0.5), pct(admitted, 0.9), pct(admitted, 1), shed, sameConn, pct(hello, 0.5), pct(hello, 1))
	if len(bad) > 0 {
		t.Errorf("%d bad answers; first: %s", len(bad), bad[0])
	}
	if shed == 0 {
		t.Error("no request was refused under 4x overload")
	}
	if sameConn == 0 {
		t.Error("no connection carried a request after its 503")
	}
	// Admitted requests wait about the target at most, plus their own
	// service time; twice that leaves room for a loaded machine.
	if p90 := pct(admitted, 0.9); p90 > 2*(target+slow) {
		t.Errorf("admitted requests' p90 %v, want under 2 × (%v + %v)", p90, target, slow)
	}
	// Without fair scheduling /hello would queue behind the slow class
	// (about the target); with it, it waits for one place to come free.
	if m := pct(hello, 0.5); m > target/2 {
		t.Errorf("/hello's median %v during the overload; the slow class's queue wait is %v", m, target)
	}
	st := s.Stats()
	var counted uint64
	for _, c := range st.Control.Classes {
		counted += c.Shed
		if c.Name == "hello" && c.Shed > 0 {
			t.Errorf("the fast class had %d requests refused", c.Shed)
		}
	}
	if counted != uint64(shed) {
		t.Errorf("Stats counts %d shed, the clients got %d 503s", counted, shed)
	}
	// The log tells the operator: a line when the refusals begin, and
	// one when they have stopped (episodeQuiet later) that counts them.
	mu.Unlock()
	overWithCount := regexp.MustCompile(`msg="quartet: overload over" lasted=\S+ refused=(\d+) admitted=\d+`)
	deadline := time.Now().Add(episodeQuiet + 5*time.Second)
	for len(overWithCount.FindAllString(logged.String(), -1)) < strings.Count(logged.String(), "quartet: overloaded:") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	began := strings.Count(logged.String(), "level=WARN msg=\"quartet: overloaded: refusing")
	var ended, refused int
	for _, m := range overWithCount.FindAllStringSubmatch(logged.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		ended++
		refused += n
	}
	if began == 0 || ended != began || refused != shed {
		t.Errorf("%d overload lines and %d end lines counting %d refused, for %d 503s; want as many ends as beginnings, counting them all:\n%s", began, ended, refused, shed, logged.String())
	}
	// The reader loops write the 503s they shed themselves, as they do
	// the responses they serve inline (shed.go): written directly beyond
	// the inline ones, unless a socket did not take one at once.
	if byReaders := st.Direct - min(st.Direct, st.Inline); shed > 0 && byReaders < uint64(shed)/2 {
		t.Errorf("%d responses written by the reader loops beyond the %d served inline, for %d 503s", byReaders, st.Inline, shed)
	}
}

// A refused request's body is read (or thrown away) so that its
// connection carries the next request; one that asked for 100-continue
// closes, since the bytes after it are unknowable.
func TestShedKeepsTheConnectionWhenFramingAllows(t *testing.T) {
	// NoInline: /hello declares it never blocks, and a request served on
	// its reader loop never queues, so admission would not see it.
	s := startUntuned(t, Config{Addr: "127.0.0.1:0", Processors: 1, Handler: Builtin(nil), NoInline: true})
	big := strings.Repeat("x", 100<<10) // streamed (over PrereadBody)
	for _, tc := range []struct {
		name, raw string
		keep      bool
	}{
		{"no body", "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", true},
		{"a small body", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", true},
		{"a large body", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, true},
		{"a chunked body", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true},
		{"Connection: close", "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", false},
		{"100-continue", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", false},
		{"HTTP/1.0", "GET /hello HTTP/1.0\r\nHost: t\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit := func(n, retry int64) {
				for c := range s.requests.Classes() {
					s.requests.SetLimit(c, n, retry)
				}
			}
			limit(0, 3) // every class refuses everything, Retry-After 3
			c := dial(t, s)
			br := bufio.NewReader(c)
			resp, body := exchange(t, c, br, tc.raw, "GET")
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "3" || !strings.HasPrefix(body, "503") {
				t.Fatalf("got %d, Retry-After %q, %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
			if resp.Close == tc.keep {
				t.Fatalf("Connection: close is %v, want %v", resp.Close, !tc.keep)
			}
			if !tc.keep {
				expectClosed(t, c, br)
				return
			}
			limit(-1, 0)
			resp, body = exchange(t, c, br, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", "GET")
			if resp.StatusCode != 200 || body != "Hello, World!" {
				t.Fatalf("next request on the connection: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// The controller grows the pool when blocking handlers make requests
// wait, with the cause and its inputs in the log, and retires the places
// once the load is gone.
func TestControllerSizesThePool(t *testing.T) {
	logger, log := bufferLogger()
	s := startServer(t, Config{ProcessorsMin: 1, ProcessorsMax: 256, Logger: logger})
	if z, _ := s.StageSize(StageProcessor); !z.Auto || z.Size != 1 {
		t.Fatalf("starts at %+v, want auto at 1", z)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			cl, err := newClient(s.Addr().String())
			if err != nil {
				return
			}
			defer cl.c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := cl.get("/sleep?ms=10"); err != nil {
					return
				}
			}
		})
	}
	grew := eventually(10*time.Second, func() bool {
		z, _ := s.StageSize(StageProcessor)
		return z.Size >= 64
	})
	close(stop)
	wg.Wait()
	z, _ := s.StageSize(StageProcessor)
	if !grew {
		t.Fatalf("64 clients of 10 ms handlers, and the pool has %d places\n%s", z.Size, log.String())
	}
	if !strings.Contains(log.String(), `cause="controller: demand"`) || !strings.Contains(log.String(), "arrival_rate=") {
		t.Errorf("growth not logged with its cause and inputs:\n%s", log.String())
	}
	if !eventually(15*time.Second, func() bool {
		z, _ := s.StageSize(StageProcessor)
		return z.Size == 1 && s.pool.Goroutines() <= 1
	}) {
		z, _ := s.StageSize(StageProcessor)
		t.Errorf("after the load, %d places and %d goroutines, want 1", z.Size, s.pool.Goroutines())
	}
	if !strings.Contains(log.String(), `cause="controller: idle"`) {
		t.Errorf("retirement not logged:\n%s", log.String())
	}
}

// The sizing API: what can change, what cannot, and the errors that say
// why.
func TestChangeStage(t *testing.T) {
	logger, log := bufferLogger()
	s := startServer(t, Config{ProcessorsMin: 2, ProcessorsMax: 32, Logger: logger})
	if !eventually(10*time.Second, s.Ready) {
		t.Fatal("the server did not become ready")
	}
	on, off := true, false
	for _, tc := range []struct {
		name    string
		stage   Stage
		change  StageChange
		want    StageSize
		wantErr string
	}{
		{"pin a size", StageProcessor, StageChange{Size: 16}, StageSize{StageProcessor, 16, 2, 32, false, true}, ""},
		{"a size outside the bounds", StageProcessor, StageChange{Size: 64}, StageSize{StageProcessor, 16, 2, 32, false, true}, "outside the bounds 2..32"},
		{"move the bounds with it", StageProcessor, StageChange{Size: 64, Max: 128}, StageSize{StageProcessor, 64, 2, 128, false, true}, ""},
		{"bounds that cross", StageProcessor, StageChange{Min: 200}, StageSize{StageProcessor, 64, 2, 128, false, true}, "minimum is above the maximum"},
		{"bounds below the size bring it inside", StageProcessor, StageChange{Max: 8}, StageSize{StageProcessor, 8, 2, 8, false, true}, ""},
		{"auto on", StageProcessor, StageChange{Auto: &on}, StageSize{StageProcessor, 8, 2, 8, true, true}, ""},
		{"a size with auto on is a starting point", StageProcessor, StageChange{Size: 4, Auto: &on}, StageSize{StageProcessor, 4, 2, 8, true, true}, ""},
		{"auto off", StageProcessor, StageChange{Auto: &off}, StageSize{StageProcessor, 4, 2, 8, false, true}, ""},
		{"readers: a count pins them", StageReader, StageChange{Size: 2, Max: 4}, StageSize{StageReader, 2, 1, 4, false, true}, ""},
		{"writers: add two", StageWriter, StageChange{Size: 3, Min: 1, Max: 3}, StageSize{StageWriter, 3, 1, 3, false, true}, ""},
		{"writers: back to one", StageWriter, StageChange{Size: 1}, StageSize{StageWriter, 1, 1, 3, false, true}, ""},
		{"writers: out of range", StageWriter, StageChange{Size: 2000}, StageSize{StageWriter, 1, 1, 3, false, true}, "must be 1..1024"},
		{"readers: auto on", StageReader, StageChange{Auto: &on}, StageSize{StageReader, 2, 1, 4, true, true}, ""},
		{"no such stage", Stage("listener"), StageChange{Size: 2}, StageSize{}, `no stage "listener"`},
		{"out of range", StageProcessor, StageChange{Size: 1 << 20}, StageSize{StageProcessor, 4, 2, 8, false, true}, "must be 1..65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ChangeStage(tc.stage, tc.change)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if tc.stage == StageReader || tc.stage == StageWriter {
				if n := s.loopCount(tc.stage); n != got.Size {
					t.Errorf("%d %s loops serve, the size says %d", n, tc.stage, got.Size)
				}
			}
		})
	}
	if !strings.Contains(log.String(), "cause=api") {
		t.Errorf("changes not logged with their cause:\n%s", log.String())
	}
	// Holders of retired places leave when they next look up from their
	// work (idle ones are woken to).
	if !eventually(10*time.Second, func() bool { want, have := s.pool.Places(); return want == 4 && have == 4 }) {
		want, have := s.pool.Places()
		t.Errorf("the pool aims at %d places and has %d; want 4", want, have)
	}
}

// Request classes: the first path segment, learnt from a served request,
// bounded, and never from failures.
func TestRouteClasses(t *testing.T) {
	for _, tc := range []struct{ path, seg string }{
		{"/hello", "hello"}, {"/a/b/c", "a"}, {"/", ""}, {"", ""}, {"*", "*"}, {"/sleep", "sleep"},
	} {
		if got := string(firstSegment([]byte(tc.path))); got != tc.seg {
			t.Errorf("firstSegment(%q) = %q, want %q", tc.path, got, tc.seg)
		}
	}
	logger, _ := bufferLogger()
	q := stages.NewClassQueue(8, nil)
	rc := newRouteClasses(q, logger)
	req := func(path string) *stages.Request { return &stages.Request{Path: []byte(path)} }
	rc.served(req("/missing"), 404)
	if rc.classify(req("/missing")) != 0 || q.Classes() != 1 {
		t.Fatal("a route that failed earned a class")
	}
	rc.served(req("/hello"), 0) // not committed yet: a 200
	rc.served(req("/hello/again"), 200)
	if c := rc.classify(req("/hello/x")); c != 1 {
		t.Fatalf("/hello/x is class %d, want 1", c)
	}
	for i := range 2 * stages.MaxClasses {
		rc.served(req(fmt.Sprint("/r", i)), 200)
	}
	if q.Classes() != stages.MaxClasses || len(rc.names()) != stages.MaxClasses {
		t.Fatalf("%d classes (%d names), want %d", q.Classes(), len(rc.names()), stages.MaxClasses)
	}
	if c := rc.classify(req("/r99")); c != 0 {
		t.Errorf("a route beyond the table is class %d, want 0 (other)", c)
	}
	if rc.names()[0] != "other" || rc.names()[1] != "hello" {
		t.Errorf("names %v", rc.names())
	}
}

// A loop whose stage-init fails is not added, and the server serves on
// with the loops it has: the error is the caller's, and Serve's is nil.
// The modules whose init had succeeded for it are unwound (their
// StageExit runs), so nothing they set up for the loop outlives it.
func TestAddLoopInitFails(t *testing.T) {
	refuse := errors.New("no room for another loop")
	var mu sync.Mutex
	held := map[StageInfo]int{} // inits less exits, by loop, of the module before the picky one
	key := func(info StageInfo) StageInfo { return StageInfo{Stage: info.Stage, Index: info.Index} }
	tally := Module{Name: "tally",
		StageInit: func(info StageInfo) error { mu.Lock(); held[key(info)]++; mu.Unlock(); return nil },
		StageExit: func(info StageInfo) { mu.Lock(); held[key(info)]--; mu.Unlock() },
	}
	mod := Module{Name: "picky", StageInit: func(info StageInfo) error {
		if info.Stage != StageProcessor && info.Index > 0 {
			return refuse
		}
		return nil
	}}
	s := startServer(t, Config{Readers: 1, ReadersMax: 2, Writers: 1, WritersMax: 2, Modules: []Module{tally, mod}})
	if !eventually(10*time.Second, s.Ready) {
		t.Fatal("the server did not become ready")
	}
	for _, st := range []Stage{StageReader, StageWriter} {
		z, err := s.ChangeStage(st, StageChange{Size: 2})
		if !errors.Is(err, refuse) || z.Size != 1 || s.loopCount(st) != 1 {
			t.Errorf("%s: %+v, %v; want size 1 and the init's error", st, z, err)
		}
	}
	cl, err := newClient(s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.c.Close()
	if resp, body, err := cl.get("/hello"); err != nil || resp.StatusCode != 200 || body != "Hello, World!" {
		t.Fatalf("after the failed adds: %v %v %q", resp, err, body)
	}
	// The failed loops have returned and left their ids free.
	if !eventually(10*time.Second, func() bool {
		return s.readers.at(1) == nil && s.writers.at(1) == nil
	}) {
		t.Error("a loop whose init failed still holds its id")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, st := range []Stage{StageReader, StageWriter} {
		if n := held[StageInfo{Stage: st, Index: 1}]; n != 0 {
			t.Errorf("%s 1: the tally module's init ran %d more times than its exit", st, n)
		}
		if n := held[StageInfo{Stage: st, Index: 0}]; n != 1 {
			t.Errorf("%s 0: tally holds %d, want 1 (serving)", st, n)
		}
	}
}

// The places admission judges a class's queue by: the pool's reach within
// the wait target while more places would drain it faster, the places it
// has when pinned or when the last backlog waited for CPU; a class not
// measured yet, by the pool's most places unless that backlog waited for
// CPU.
func TestAdmissionPlaces(t *testing.T) {
	for _, tc := range []struct {
		name               string
		size, most         int
		auto, cpuBound     bool
		ceiling            int
		wantUnknown, wantP int
	}{
		// 4 places ×4 a period for the five periods of 500 ms: 4096, at most 1024.
		{"auto, places bound", 4, 1024, true, false, 0, 1024, 1024},
		{"auto, a saturation ceiling", 4, 1024, true, false, 40, 1024, 40},
		{"auto, a ceiling below the size", 64, 1024, true, false, 40, 1024, 64},
		{"auto, near its most", 512, 1024, true, false, 0, 1024, 1024},
		{"auto, the backlog waited for CPU", 12, 1024, true, true, 0, 12, 12},
		{"pinned", 8, 8, false, false, 0, 8, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tu := &tuner{pool: control.NewPool(control.PoolConfig{}), adm: control.NewAdmission(500 * time.Millisecond), cpuBound: tc.cpuBound}
			unknown, plan := tu.admissionPlaces(tc.size, tc.most, tc.auto, tc.ceiling)
			if unknown != tc.wantUnknown || plan != tc.wantP {
				t.Errorf("unknown %d, plan %d; want %d, %d", unknown, plan, tc.wantUnknown, tc.wantP)
			}
		})
	}
}

// An overload episode is three kinds of line, whatever the number of
// refusals: its start, a reminder a minute while it lasts, and its end
// episodeQuiet after the last refusal, each with the counts so far.
func TestOverloadEpisodeLines(t *testing.T) {
	type period struct {
		at             time.Duration
		shed, admitted uint64
	}
	for _, tt := range []struct {
		name    string
		periods []period
		want    []string // the lines' messages and counts, in order
	}{
		{"no refusal, no line", []period{{0, 0, 5}, {time.Second, 0, 5}}, nil},
		{"a short episode", []period{{0, 0, 5}, {100 * time.Millisecond, 3, 2}, {200 * time.Millisecond, 4, 1},
			{time.Second, 0, 9}, {200*time.Millisecond + episodeQuiet, 0, 9}},
			[]string{`overloaded: refusing .* refused=3 admitted=2`, `overload over" lasted=100ms refused=7 admitted=21`}},
		{"a refusal within the quiet time keeps the episode", []period{{0, 1, 0}, {episodeQuiet - time.Millisecond, 1, 0},
			{2*episodeQuiet - 2*time.Millisecond, 0, 0}, {2*episodeQuiet - time.Millisecond, 0, 0}},
			[]string{`overloaded: refusing .* refused=1 admitted=0`, `overload over" lasted=4.999s refused=2 admitted=0`}},
		{"a long episode is reminded of", []period{{0, 10, 0}, {30 * time.Second, 10, 0}, {episodeReminder, 10, 0},
			{episodeReminder + time.Second, 10, 0}, {2*episodeReminder + time.Second, 5, 0}},
			[]string{`overloaded: refusing .* refused=10`, `still overloaded" for=1m0s refused=30 refused_since_last_line=20 admitted=0`,
				`still overloaded" for=2m1s refused=45 refused_since_last_line=15 admitted=0`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logged syncBuffer
			s := &Server{cfg: Config{QueueWaitTarget: time.Second, Logger: slog.New(slog.NewTextHandler(&logged, nil))}}
			start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
			for _, p := range tt.periods {
				s.noteOverload(start.Add(p.at), p.shed, p.admitted)
			}
			expectLines(t, &logged, tt.want)
		})
	}
}

// A burst that the pool grows to serve within the wait target is not
// refused, whatever the pool's size when it arrives: here 300 requests of
// 50 ms at once on a pool that idled back to its 2 places, which reaches
// 300 places in two periods. The sample that a burst's first request
// starts (kick) sees requests queued while places are free, because no
// worker has taken them yet; that was taken for a backlog that waits for
// CPU, and the burst was judged by the 2 places the pool had: 82% of 500
// such requests were refused while the admitted ones took 272 ms at
// most. And with places pinned and free, requests that free places will
// start at once are not refused, however long they take.
func TestBurstIsAdmittedWhileThePoolCanServeIt(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		warm   string
		burst  string
		n      int
		refuse int // at most
	}{
		{"self-sizing pool at its floor", Config{}, "/sleep?ms=50", "/sleep?ms=50", 300, 15},
		{"pinned, free places, long handlers", Config{Processors: 20}, "/sleep?ms=1000", "/sleep?ms=1000", 10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.cfg)
			warm, err := newClient(s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			for range 3 { // the class's service time, measured
				if resp, _, err := warm.get(tt.warm); err != nil || resp.StatusCode != 200 {
					t.Fatalf("warm-up: %v %v", resp, err)
				}
			}
			warm.c.Close()
			// Let the pool idle back to its floor and the period stretch.
			if !eventually(10*time.Second, func() bool { st, _ := s.StageSize(StageProcessor); return st.Size == 2 || !st.Auto }) {
				st, _ := s.StageSize(StageProcessor)
				t.Fatalf("pool still at %d places", st.Size)
			}
			time.Sleep(1500 * time.Millisecond)
			conns := make([]*client, tt.n)
			for i := range conns {
				if conns[i], err = newClient(s.Addr().String()); err != nil {
					t.Fatal(err)
				}
				defer conns[i].c.Close()
			}
			codes := make([]int, tt.n)
			var wg sync.WaitGroup
			for i, c := range conns {
				wg.Go(func() {
					resp, _, err := c.get(tt.burst)
					if err != nil {
						codes[i] = -1
						return
					}
					codes[i] = resp.StatusCode
				})
			}
			wg.Wait()
			refused := 0
			for _, code := range codes {
				switch code {
				case 200:
				case 503:
					refused++
				default:
					t.Fatalf("status %d", code)
				}
			}
			if refused > tt.refuse {
				t.Errorf("%d of %d refused, want at most %d", refused, tt.n, tt.refuse)
			}
		})
	}
}

// A loop count cannot change while the server does not serve, and the
// refused change changes nothing: before, it left the controller off, and
// the stage ran pinned at one loop for the server's whole run.
func TestChangeStageRefusedChangesNothing(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:0", Handler: Builtin(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, st := range []Stage{StageReader, StageWriter} {
		before, _ := s.StageSize(st)
		got, err := s.ChangeStage(st, StageChange{Size: 2})
		if !errors.Is(err, ErrNotServing) {
			t.Fatalf("%s: %v, want ErrNotServing", st, err)
		}
		after, _ := s.StageSize(st)
		if got != before || after != before {
			t.Errorf("%s: returned %+v, now %+v; was %+v", st, got, after, before)
		}
	}
}
