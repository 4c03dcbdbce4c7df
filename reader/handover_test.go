package reader

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// loopPair is two reader loops of one stage, as the runtime wires them: a
// loop gives connections to the other, and a dispatched request is
// answered (written straight to the socket, as the writer would) and its
// connection returned to the loop its Conn names, with the path and the
// loop that dispatched it recorded.
type loopPair struct {
	loops  [2]*Loop
	served chan served
	hold   chan struct{} // while open, requests for /hold wait before they are answered
	wg     sync.WaitGroup
	runErr [2]chan error
}

type served struct {
	path string
	loop int
}

func newLoopPair(t *testing.T, opts ...func(i int, c *Config)) *loopPair {
	p := &loopPair{served: make(chan served, 64), hold: make(chan struct{})}
	for i := range p.loops {
		cfg := Config{
			Dispatch: func(r *stages.Request) bool {
				c, path := r.Conn, string(r.Path)
				p.served <- served{path, c.Reader}
				go func() {
					if path == "/hold" {
						<-p.hold
					}
					body := "ok " + path
					resp := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
					if _, err := unix.Write(c.FD, []byte(resp)); err != nil {
						t.Errorf("write: %v", err)
					}
					p.loops[c.Reader].Return(c, stages.FateKeepAlive)
				}()
				return true
			},
			Protocols: httpOnly(),
			Reject: func(c *stages.Conn, _ *stages.Request, err error) {
				t.Errorf("Reject(%v)", err)
				p.loops[c.Reader].Return(c, stages.FateClose)
			},
			Handover: func(from *Loop) *Loop {
				for _, o := range p.loops {
					if o != from && !o.Retiring() {
						return o
					}
				}
				return nil
			},
		}
		for _, o := range opts {
			o(i, &cfg)
		}
		l, err := New(i, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.loops[i] = l
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i, l := range p.loops {
		p.runErr[i] = make(chan error, 1)
		gatherEvery(l)
		l.checkCounts = true
		p.wg.Go(func() { p.runErr[i] <- l.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); p.wg.Wait(); expectNoDrift(t, p.loops[:]...) })
	return p
}

// adopt gives loop i a new connection and returns its client side.
func (p *loopPair) adopt(t *testing.T, i int) (net.Conn, *bufio.Reader) {
	client, fd := acceptedConn(t)
	if !p.loops[i].Adopt(&stages.Conn{ID: uint64(fd), FD: fd, Reader: i}) {
		t.Fatalf("loop %d refused a connection", i)
	}
	return client, bufio.NewReader(client)
}

// expect reads the response to path and checks which loop served it.
func (p *loopPair) expect(t *testing.T, br *bufio.Reader, path string, loop int) {
	t.Helper()
	select {
	case s := <-p.served:
		if s.path != path || s.loop != loop {
			t.Errorf("%s served by loop %d, want %s by loop %d", s.path, s.loop, path, loop)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was not dispatched", path)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "ok "+path {
		t.Errorf("%s: body %q", path, b)
	}
}

func get(t *testing.T, c net.Conn, paths ...string) {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		b.WriteString("GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for loop i's Run to return nil.
func (p *loopPair) waitExit(t *testing.T, i int) {
	t.Helper()
	select {
	case err := <-p.runErr[i]:
		if err != nil {
			t.Fatalf("loop %d: %v", i, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("retired loop %d did not return (holds %d)", i, p.loops[i].Open())
	}
}

// A retiring loop gives away every connection whatever it is doing, its
// fd open: an idle one, one halfway through a header, one whose request
// is out (it moves when it comes back, with the pipelined request behind
// it in its buffer). Each goes on at the other loop without the client
// noticing, and the retired loop returns once it holds none.
func TestRetireHandsConnectionsOver(t *testing.T) {
	p := newLoopPair(t)
	idle, idleR := p.adopt(t, 0)
	get(t, idle, "/first")
	p.expect(t, idleR, "/first", 0)

	partial, partialR := p.adopt(t, 0)
	if _, err := io.WriteString(partial, "GET /partial HTTP/1.1\r\nHo"); err != nil {
		t.Fatal(err)
	}

	out, outR := p.adopt(t, 0)
	get(t, out, "/hold", "/pipelined")
	select {
	case s := <-p.served:
		if s.path != "/hold" || s.loop != 0 {
			t.Fatalf("got %+v, want /hold at loop 0", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("/hold was not dispatched")
	}
	time.Sleep(20 * time.Millisecond) // the partial header has reached loop 0

	if !p.loops[0].Retire() {
		t.Fatal("Retire refused")
	}
	if !eventually(10*time.Second, func() bool { return p.loops[0].Open() == 1 }) {
		t.Fatalf("loop 0 holds %d, want 1 (the request out)", p.loops[0].Open())
	}
	if _, err := io.WriteString(partial, "st: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	p.expect(t, partialR, "/partial", 1)
	get(t, idle, "/second")
	p.expect(t, idleR, "/second", 1)

	close(p.hold) // /hold is answered, its connection returns to loop 0 and moves
	resp, err := http.ReadResponse(outR, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.expect(t, outR, "/pipelined", 1)
	p.waitExit(t, 0)
	if p.loops[0].Moved() != 3 || p.loops[1].Open() != 3 {
		t.Errorf("loop 0 moved %d, loop 1 holds %d; want 3 and 3", p.loops[0].Moved(), p.loops[1].Open())
	}
	if p.loops[0].Adopt(&stages.Conn{FD: -1}) {
		t.Error("a loop that has retired took a connection")
	}
	get(t, out, "/after")
	p.expect(t, outR, "/after", 1)
}

// A connection keeps its deadline when it moves, though each loop counts
// its timers from its own epoch: an idle connection given to a loop made
// seconds later still times out when it would have at home, not that
// many seconds later.
func TestMovedConnectionKeepsItsDeadline(t *testing.T) {
	const idle, gap = 500 * time.Millisecond, 3 * time.Second
	p := newLoopPair(t, func(i int, c *Config) {
		c.IdleTimeout, c.HeaderTimeout = idle, idle
		if i == 1 {
			time.Sleep(gap) // loop 1's epoch is gap after loop 0's
		}
	})
	client, _ := p.adopt(t, 0)
	adopted := time.Now()
	if !p.loops[0].Retire() {
		t.Fatal("Retire refused")
	}
	p.waitExit(t, 0)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read: %v, want EOF (closed by the idle timeout)", err)
	}
	if took := time.Since(adopted); took > idle+gap/2 {
		t.Errorf("the moved connection was closed %v after it arrived; its idle timeout is %v", took, idle)
	}
}

// Rebalance gives away as many connections as asked and no more; the
// loop keeps serving.
func TestRebalanceGivesSome(t *testing.T) {
	p := newLoopPair(t)
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 4 {
		c, br := p.adopt(t, 0)
		conns, readers = append(conns, c), append(readers, br)
	}
	if !eventually(10*time.Second, func() bool { return p.loops[0].Open() == 4 }) {
		t.Fatal("the connections did not arrive")
	}
	p.loops[0].Rebalance(2)
	if !eventually(10*time.Second, func() bool { return p.loops[1].Open() == 2 }) {
		t.Fatalf("loop 1 holds %d after a rebalance of 2", p.loops[1].Open())
	}
	time.Sleep(50 * time.Millisecond)
	if p.loops[0].Open() != 2 || p.loops[1].Open() != 2 || p.loops[0].Retiring() {
		t.Fatalf("loops hold %d and %d, want 2 and 2 with loop 0 serving", p.loops[0].Open(), p.loops[1].Open())
	}
	byLoop := map[int]int{}
	for i, c := range conns {
		get(t, c, "/x")
		select {
		case s := <-p.served:
			byLoop[s.loop]++
		case <-time.After(10 * time.Second):
			t.Fatal("not dispatched")
		}
		if _, err := http.ReadResponse(readers[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	if byLoop[0] != 2 || byLoop[1] != 2 {
		t.Errorf("served by loop: %v, want 2 each", byLoop)
	}
}

func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cond()
}
