package reader

import (
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/stages"
)

// startLoop runs a reader loop with dispatch as its Dispatch until the
// test ends.
func startLoop(t *testing.T, dispatch func(*stages.Request) bool) *Loop {
	t.Helper()
	return startLoopWith(t, Config{Dispatch: dispatch})
}

// startLoopWith is startLoop with more of the Config set (the protocols
// and Reject are filled in).
func startLoopWith(t testing.TB, cfg Config) *Loop {
	t.Helper()
	cfg.Protocols = httpOnly()
	cfg.Reject = func(c *stages.Conn, req *stages.Request, err error) {
		t.Errorf("Reject(%v) on connection %d", err, c.ID)
	}
	loop, err := New(0, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, loop)
	return loop
}

// httpOnly is the protocol table of a server that speaks HTTP/1.1 alone.
func httpOnly() []stages.Protocol { return []stages.Protocol{http1.New(http1.Config{})} }

// runUntilCleanup runs loop until the test ends, its reads at a
// request's start gathered (gather.go) even one connection at a time,
// where the kernel grants an io_uring: every test that runs a loop so
// checks that a gathered read is what read would have returned. Every
// turn also checks the loop's counts by state against its table
// (checkCounts), and the test fails if they ever differed.
func runUntilCleanup(t testing.TB, loop *Loop) {
	gatherEvery(loop)
	loop.checkCounts = true
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { loop.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); expectNoDrift(t, loop) })
}

// expectNoDrift fails t if the counts by state of any of loops, which
// have returned from Run (their tables are the test's now), differ from
// their tables, or ever differed while they ran (checkCounts).
func expectNoDrift(t testing.TB, loops ...*Loop) {
	for _, l := range loops {
		l.checkDrift()
		if d := l.drift.Load(); d != nil {
			t.Errorf("connection counts by state drifted from the table: %s", *d)
		}
	}
}

// gatherEvery gives loop a ring and has it gather every read it can.
func gatherEvery(loop *Loop) {
	if ring, err := poll.NewRing(RingEntries); err == nil {
		loop.BatchReads(ring)
		loop.gatherMin = 1
	}
}

// waitFor polls cond for up to 10 s (the census is taken once a second).
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// A connection holds a request record (about 700 bytes, with its header
// array, read buffer and body pipe) only while a request is in hand: a
// connection waiting for its first request, or idle between keep-alive
// requests, gives it back to the loop, so that 10k idle connections cost
// 48-byte records rather than 704-byte ones.
func TestRequestRecordOnlyWhileARequestIsInHand(t *testing.T) {
	tests := []struct {
		name    string
		request string // sent, then answered with FateKeepAlive; "" sends nothing
		hold    bool   // keep the request out: the record stays
		want    int64  // connections holding a record afterwards
	}{
		{name: "silent new connection", want: 0},
		{name: "idle after a request", request: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", want: 0},
		{name: "idle after a preread body", request: "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", want: 0},
		{name: "idle after a streamed body", request: "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", want: 0},
		{name: "request out", request: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", hold: true, want: 1},
		{name: "partial header", request: "GET /a HTTP/1.1\r\nHo", want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dispatched := make(chan *stages.Request, 1)
			loop := startLoop(t, func(r *stages.Request) bool { dispatched <- r; return true })
			client, fd := acceptedConn(t)
			loop.Adopt(&stages.Conn{ID: 1, FD: fd})
			if tt.request != "" {
				if _, err := io.WriteString(client, tt.request); err != nil {
					t.Fatal(err)
				}
			}
			if tt.request != "" && tt.name != "partial header" {
				select {
				case r := <-dispatched:
					if _, err := io.Copy(io.Discard, r.Body); err != nil {
						t.Fatalf("body: %v", err)
					}
					if tt.hold {
						// Before the loop stops: it waits for what is out.
						t.Cleanup(func() { loop.Return(r.Conn, stages.FateClose) })
					} else {
						loop.Return(r.Conn, stages.FateKeepAlive)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the request was never dispatched")
				}
			}
			if !waitFor(func() bool {
				return loop.withWork.Load() == tt.want && loop.Census().Idle+loop.Census().Reading+loop.Census().Queued > 0
			}) {
				t.Fatalf("%d connections hold a request record, want %d", loop.withWork.Load(), tt.want)
			}
			if tt.hold || tt.request == "" || tt.want != 0 {
				return
			}
			// The record came back clean: the next request on the
			// connection parses as if it were the first.
			if _, err := io.WriteString(client, "GET /b HTTP/1.1\r\nHost: y\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-dispatched:
				if string(r.Path) != "/b" || string(r.Host) != "y" || r.Seq != 2 || len(r.Headers) != 1 || r.HasBody() {
					t.Errorf("second request: path %q host %q seq %d, %d headers, body %v", r.Path, r.Host, r.Seq, len(r.Headers), r.HasBody())
				}
				loop.Return(r.Conn, stages.FateKeepAlive)
			case <-time.After(10 * time.Second):
				t.Fatal("the second request was never dispatched")
			}
		})
	}
}

// Request records go from connection to connection through the loop's
// stash; one must never serve two connections at once. Many connections
// pipeline requests with bodies that name their connection; handlers on
// other goroutines read each body while the loop serves the others. A
// record handed to a second connection while out would show as a body or
// path of the wrong connection, as a record dispatched twice, or (with
// -race) as a data race between the handler and the loop.
func TestRequestRecordNeverSharedBetweenLiveConnections(t *testing.T) {
	const (
		conns    = 40
		requests = 25
	)
	var (
		mu       sync.Mutex
		inflight = map[*stages.Request]uint64{}
	)
	work := make(chan *stages.Request, conns)
	loop := startLoop(t, func(r *stages.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if other, ok := inflight[r]; ok {
			t.Errorf("request record of connection %d dispatched for connection %d while still out", other, r.Conn.ID)
		}
		inflight[r] = r.Conn.ID
		work <- r
		return true
	})
	served := make(chan uint64, conns*requests)
	var handlers sync.WaitGroup
	for range 4 {
		handlers.Go(func() {
			for r := range work {
				want := fmt.Sprintf("conn-%d-%s", r.Conn.ID, r.Path)
				body, err := io.ReadAll(r.Body)
				if err != nil || string(body) != want || string(r.Header("X-Conn")) != fmt.Sprint(r.Conn.ID) {
					t.Errorf("connection %d: body %q (%v), X-Conn %q; want body %q", r.Conn.ID, body, err, r.Header("X-Conn"), want)
				}
				id := r.Conn.ID
				mu.Lock()
				delete(inflight, r)
				mu.Unlock()
				loop.Return(r.Conn, stages.FateKeepAlive)
				served <- id
			}
		})
	}
	clients := make([]net.Conn, conns)
	for i := range clients {
		client, fd := acceptedConn(t)
		clients[i] = client
		loop.Adopt(&stages.Conn{ID: uint64(i + 1), FD: fd})
	}
	var writers sync.WaitGroup
	for i, client := range clients {
		writers.Go(func() {
			id := i + 1
			var b strings.Builder
			for j := range requests {
				path := fmt.Sprintf("/r%d", j)
				body := fmt.Sprintf("conn-%d-%s", id, path)
				if j%2 == 0 { // preread
					fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nX-Conn: %d\r\nContent-Length: %d\r\n\r\n%s", path, id, len(body), body)
				} else { // streamed through a pipe
					fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nX-Conn: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, id, len(body), body)
				}
				// Write in pieces, so that requests straddle reads and
				// connections go idle and busy again in between.
				if j%5 == 4 {
					if _, err := io.WriteString(client, b.String()); err != nil {
						t.Error(err)
						return
					}
					b.Reset()
					time.Sleep(time.Millisecond)
				}
			}
			if _, err := io.WriteString(client, b.String()); err != nil {
				t.Error(err)
			}
		})
	}
	writers.Wait()
	count := map[uint64]int{}
	for range conns * requests {
		select {
		case id := <-served:
			count[id]++
		case <-time.After(20 * time.Second):
			t.Fatalf("%d requests served of %d", len(count), conns*requests)
		}
	}
	close(work)
	handlers.Wait()
	for id := uint64(1); id <= conns; id++ {
		if count[id] != requests {
			t.Errorf("connection %d: %d requests served, want %d", id, count[id], requests)
		}
	}
	if !waitFor(func() bool { return loop.withWork.Load() == 0 && loop.Census().Idle == conns }) {
		t.Errorf("after the last response: %d connections hold a request record, %d idle; want 0 and %d",
			loop.withWork.Load(), loop.Census().Idle, conns)
	}
}

// A request's Dispatched is when the loop handed it on, not when the turn
// that read it began: a request read after a slow hand-off (an inline
// handler's) in the same turn must not count that hand-off as its own
// queue wait or service (clock).
func TestDispatchedIsTheHandOffNotTheTurn(t *testing.T) {
	const slow = 30 * time.Millisecond
	type seen struct {
		at   time.Time
		turn int64
	}
	var loop *Loop
	var n atomic.Int32
	got := make(chan seen, 2)
	gate, release := make(chan struct{}), make(chan struct{})
	loop = startLoop(t, func(r *stages.Request) bool {
		// Handed back when the test ends, so that the loop can stop.
		t.Cleanup(func() { loop.Return(r.Conn, stages.FateClose) })
		if r.Conn.ID == 3 {
			// Holds the loop in its turn while both requests are
			// written, so that its next wait returns them together.
			close(gate)
			<-release
			return true
		}
		got <- seen{r.Dispatched, loop.core.Counts().Turns}
		if n.Add(1) == 1 {
			time.Sleep(slow) // the first, served inline
		}
		return true
	})
	var clients []net.Conn
	for id := range uint64(3) {
		c, fd := acceptedConn(t)
		loop.Adopt(&stages.Conn{ID: id + 1, FD: fd})
		clients = append(clients, c)
	}
	const req = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(clients[2], req); err != nil {
		t.Fatal(err)
	}
	<-gate
	for _, c := range clients[:2] {
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond) // both on the wire before the loop waits again
	close(release)
	first, second := <-got, <-got
	if first.turn != second.turn {
		t.Fatalf("two requests ready before the loop's wait were read in turns %d and %d", first.turn, second.turn)
	}
	if gap := second.at.Sub(first.at); gap < slow {
		t.Fatalf("the request read after a %v hand-off in the same turn was dispatched %v after the first", slow, gap)
	}
}

// A stashed request record comes back as a fresh one would be: its
// request as Request.Reset leaves it (header array kept, emptied), the
// rest of the record zero but for what it keeps on purpose (the pipe's
// channel and timer, the parsers).
func TestStashedRecordIsLikeNew(t *testing.T) {
	l, err := New(0, Config{Protocols: httpOnly(), Dispatch: func(*stages.Request) bool { return true },
		Reject: func(*stages.Conn, *stages.Request, error) {}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := new(work)
	w.req.Reset()
	w.req.Method, w.req.Target, w.req.Host = []byte("POST"), []byte("/x"), []byte("h")
	w.req.Headers = append(w.req.Headers, stages.Header{Name: []byte("A"), Value: []byte("b")})
	w.req.ContentLength, w.req.Chunked, w.req.Close, w.req.Seq = 5, true, true, 9
	w.req.Received = time.Now()
	w.buf, w.start, w.end, w.hdrLen, w.consumed = make([]byte, 8), 1, 2, 3, 4
	w.feeding, w.remaining, w.bodyTotal, w.discarded, w.drained = true, 6, 7, 8, true
	w.carry, w.out, w.key = []byte("c"), 2, 11
	hdrs := cap(w.req.Headers)
	l.stashWork(w)
	got, ok := l.works.get()
	if !ok || got != w {
		t.Fatal("the stashed record did not come back")
	}
	if len(got.req.Headers) != 0 || cap(got.req.Headers) != hdrs {
		t.Errorf("headers: len %d cap %d, want 0 and %d", len(got.req.Headers), cap(got.req.Headers), hdrs)
	}
	var fresh stages.Request
	fresh.Reset()
	got.req.Headers, fresh.Headers = nil, nil
	if !reflect.DeepEqual(&got.req, &fresh) {
		t.Errorf("request after stash = %+v, want %+v", &got.req, &fresh)
	}
	got.req = stages.Request{}
	got.pipe.ready, got.pipe.timer, got.parsers = nil, nil, nil
	if !reflect.DeepEqual(got, &work{}) {
		t.Errorf("record after stash = %+v, want zero", got)
	}
}
