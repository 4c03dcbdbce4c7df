package reader

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// pipedToy is the toy protocol with a window: its connections may have
// several requests in flight.
type pipedToy struct {
	*toyProtocol
	requests int
	bytes    int64
}

func (p pipedToy) Window() (int, int64) { return p.requests, p.bytes }

// pipedLoop runs a reader loop serving pipedToy connections; closed
// receives each connection the loop closes.
func pipedLoop(t *testing.T, proto pipedToy) (*Loop, chan *stages.Request, chan error, chan *stages.Conn) {
	closed := make(chan *stages.Conn, 4)
	loop, dispatched, rejected := framedLoopWith(t, proto.toyProtocol, 0, func(c *Config) {
		c.Protocols = []stages.Protocol{nil, proto}
		c.Closed = func(c *stages.Conn) { closed <- c }
	})
	return loop, dispatched, rejected, closed
}

// next is the next request dispatched, within 10 s.
func next(t *testing.T, dispatched chan *stages.Request) *stages.Request {
	t.Helper()
	select {
	case r := <-dispatched:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request dispatched")
		return nil
	}
}

// none checks that nothing more is dispatched for a while.
func none(t *testing.T, dispatched chan *stages.Request, why string) {
	t.Helper()
	select {
	case r := <-dispatched:
		t.Fatalf("request %d dispatched %s", r.Seq, why)
	case <-time.After(30 * time.Millisecond):
	}
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// A pipelined connection is read on while its requests are out, up to
// its window; each request keeps its own bytes (those of earlier ones
// are not moved or overwritten by later reads); an answer lets the next
// one go; a request that may not overtake waits for every earlier one.
func TestPipelinedWindow(t *testing.T) {
	big := bytes.Repeat([]byte("x"), DefaultReadBuffer) // pushes later frames past the first buffer
	tests := []struct {
		name     string
		requests int
		bytes    int64
		ordered  bool
		bodies   [][]byte
		first    int // dispatched before any answer
	}{
		{"window of three", 3, 1 << 20, false, [][]byte{[]byte("a"), []byte("b"), big, []byte("d"), []byte("e")}, 3},
		{"window of bytes", 16, 2*(4+DefaultReadBuffer) - 1, false, [][]byte{big, big, big}, 1},
		{"ordered", 8, 1 << 20, true, [][]byte{[]byte("a"), []byte("b"), []byte("c")}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop, dispatched, _, _ := pipedLoop(t, pipedToy{&toyProtocol{ordered: tt.ordered}, tt.requests, tt.bytes})
			client, fd := acceptedConn(t)
			c := &stages.Conn{ID: 1, FD: fd, Protocol: 1}
			loop.Adopt(c)
			var wire []byte
			for _, b := range tt.bodies {
				wire = append(wire, toyFrame(b)...)
			}
			go client.Write(wire)

			inFlight := map[int32]bool{}
			check := func(r *stages.Request) {
				t.Helper()
				if want := tt.bodies[r.Seq-1]; !bytes.Equal(r.BodyBytes, want) {
					t.Fatalf("request %d: %d body bytes, want %d", r.Seq, len(r.BodyBytes), len(want))
				}
				if r.Ticket == 0 || inFlight[r.Ticket] {
					t.Fatalf("request %d: ticket %d, in flight: %v", r.Seq, r.Ticket, inFlight)
				}
				if r.Follows != (len(inFlight) > 0) {
					t.Errorf("request %d: Follows %v with %d in flight", r.Seq, r.Follows, len(inFlight))
				}
				inFlight[r.Ticket] = true
			}
			var out []*stages.Request
			for range tt.first {
				r := next(t, dispatched)
				check(r)
				out = append(out, r)
			}
			none(t, dispatched, "past the window")
			sent := len(out)
			for len(out) > 0 {
				r := out[0]
				out = out[1:]
				// Its bytes are still its own, however far the
				// connection was read since.
				if want := tt.bodies[r.Seq-1]; !bytes.Equal(r.BodyBytes, want) {
					t.Fatalf("request %d's body changed while it was out", r.Seq)
				}
				delete(inFlight, r.Ticket)
				loop.Answered(c, r.Ticket, stages.FateKeepAlive)
				if sent < len(tt.bodies) {
					n := next(t, dispatched)
					check(n)
					out = append(out, n)
					sent++
				}
			}
			if sent != len(tt.bodies) {
				t.Fatalf("%d requests served, want %d", sent, len(tt.bodies))
			}
		})
	}
}

// The fd of a pipelined connection is closed only once every request in
// flight is answered, whether the client closed it (the requests' client
// is then gone) or the reader refused a request behind them.
func TestPipelinedCloseWaitsForAnswers(t *testing.T) {
	tests := []struct {
		name    string
		after   []byte // sent after the two good frames; nil: the client closes
		refused bool
	}{
		{"client closes", nil, false},
		{"malformed frame behind them", []byte{0xff, 0, 0, 0}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop, dispatched, rejected, closed := pipedLoop(t, pipedToy{&toyProtocol{}, 8, 1 << 20})
			client, fd := acceptedConn(t)
			c := &stages.Conn{ID: 1, FD: fd, Protocol: 1}
			loop.Adopt(c)
			client.Write(append(toyFrame([]byte("one")), toyFrame([]byte("two"))...))
			r1, r2 := next(t, dispatched), next(t, dispatched)
			if tt.after == nil {
				// A FIN is a half-close to a pipelined protocol: the client
				// still reads the answers to what it sent (halfCloseReads),
				// so it has not gone, and the requests are answered.
				client.Close()
				time.Sleep(30 * time.Millisecond)
				if c.Gone() {
					t.Fatal("a pipelined connection's FIN was taken for a client gone")
				}
			} else {
				// The refusal waits for the answers in flight (reject):
				// refused now, its shutdown of the sending side would cut
				// them off.
				client.Write(tt.after)
				time.Sleep(30 * time.Millisecond)
				select {
				case <-rejected:
					t.Fatal("refused before the answers in flight")
				default:
				}
				client.Close()
			}
			time.Sleep(30 * time.Millisecond)
			if !fdOpen(fd) {
				t.Fatal("fd closed with requests in flight")
			}
			loop.Answered(c, r1.Ticket, stages.FateKeepAlive)
			time.Sleep(30 * time.Millisecond)
			if !fdOpen(fd) {
				t.Fatal("fd closed with a request in flight")
			}
			loop.Answered(c, r2.Ticket, stages.FateKeepAlive)
			if tt.refused {
				select {
				case <-rejected: // framedLoop's Reject hands the connection back to linger
				case <-time.After(10 * time.Second):
					t.Fatal("never refused after the last answer")
				}
			}
			select {
			case got := <-closed:
				if got != c {
					t.Fatalf("closed %v, want %v", got, c)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("never closed after the last answer")
			}
			if !waitFor(func() bool { return loop.Open() == 0 && len(loop.heldFree) == len(loop.held) }) {
				t.Fatalf("open %d, held records %d of %d free", loop.Open(), len(loop.heldFree), len(loop.held))
			}
		})
	}
}

// An answer that ends the connection (the writer gave up on the client)
// closes it once the others are back, and those not yet taken by a
// processor are given back at once.
func TestPipelinedAnswerEndsConnection(t *testing.T) {
	for _, fate := range []stages.Fate{stages.FateClose, stages.FateReset, stages.FateLinger} {
		t.Run(fmt.Sprint(fate), func(t *testing.T) {
			loop, dispatched, _, closed := pipedLoop(t, pipedToy{&toyProtocol{}, 8, 1 << 20})
			client, fd := acceptedConn(t)
			c := &stages.Conn{ID: 1, FD: fd, Protocol: 1}
			loop.Adopt(c)
			client.Write(append(toyFrame([]byte("one")), toyFrame([]byte("two"))...))
			r1, r2 := next(t, dispatched), next(t, dispatched)
			loop.Answered(c, r1.Ticket, fate)
			if fate == stages.FateLinger {
				client.Close() // lingering waits for the client's FIN
			}
			time.Sleep(30 * time.Millisecond)
			if !fdOpen(fd) {
				t.Fatal("fd closed with a request in flight")
			}
			loop.Answered(c, r2.Ticket, stages.FateKeepAlive)
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("never closed after the last answer")
			}
		})
	}
}
