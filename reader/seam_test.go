package reader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// toyProtocol is the smallest framed protocol: a 4-byte big-endian body
// length, then the body; a first byte of 0xff is malformed. It shows the
// reader serves any protocol through the seam, not just HTTP/1.1 and the
// messenger.
type toyProtocol struct {
	resets atomic.Int32
	// kind is the plan of every body (BodyWhole when zero), and aliases
	// makes the head point req.Path into the buffer, as HTTP/1.1's does.
	kind    stages.BodyKind
	aliases bool
	// ordered: heads say their replies may not overtake (they may
	// otherwise; only a pipelined protocol's reader asks).
	ordered bool
}

type toyParser struct {
	p    *toyProtocol
	head [4]byte
}

var errToy = errors.New("toy: malformed")

func (p *toyProtocol) NewParser() stages.FrameParser { return &toyParser{p: p} }
func (p *toyProtocol) Serve(*stages.Response, *stages.Request) {
	panic("the reader never serves")
}
func (p *toyProtocol) Reject(*stages.Request, stages.Refusal) stages.Rejection {
	panic("the reader never frames")
}
func (p *toyProtocol) Wait() {}

func (t *toyParser) Head(buf []byte, req *stages.Request) (stages.Head, error) {
	if len(buf) > 0 && buf[0] == 0xff {
		return stages.Head{}, errToy
	}
	if len(buf) < 4 {
		return stages.Head{}, stages.ErrNeedMore
	}
	copy(t.head[:], buf)
	req.Frame = &t.head
	kind := t.p.kind
	if kind == stages.BodyNone {
		kind = stages.BodyWhole
	}
	if t.p.aliases {
		req.Path = buf[:4]
	}
	return stages.Head{Size: 4, Aliases: t.p.aliases, Overtake: !t.p.ordered, Body: stages.BodyPlan{Kind: kind, Length: int64(binary.BigEndian.Uint32(buf))}}, nil
}

func (t *toyParser) Reset() { t.p.resets.Add(1) }

func toyFrame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// framedLoop runs a reader loop that serves toy connections: dispatched
// requests and rejections arrive on the returned channels.
func framedLoop(t *testing.T, proto *toyProtocol, headerTimeout time.Duration) (*Loop, chan *stages.Request, chan error) {
	return framedLoopWith(t, proto, headerTimeout, nil)
}

// framedLoopWith is framedLoop with the loop's configuration adjusted by
// adjust (nil: none).
func framedLoopWith(t *testing.T, proto *toyProtocol, headerTimeout time.Duration, adjust func(*Config)) (*Loop, chan *stages.Request, chan error) {
	t.Helper()
	dispatched, rejected := make(chan *stages.Request, 16), make(chan error, 16)
	var loop *Loop
	cfg := Config{
		HeaderTimeout: headerTimeout,
		LingerTimeout: 100 * time.Millisecond,
		Protocols:     []stages.Protocol{nil, proto},
		Dispatch:      func(r *stages.Request) bool { dispatched <- r; return true },
		Reject: func(c *stages.Conn, _ *stages.Request, err error) {
			// As the runtime's writer would, after the error frame: the
			// connection comes back to linger and close. Off the loop's
			// goroutine, which Return must not block.
			rejected <- err
			go loop.Return(c, stages.FateLinger)
		},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	loop, err := New(0, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, loop)
	return loop, dispatched, rejected
}

// Bodies of every size are read whole before dispatch, in one write or
// dribbled, and aliased in BodyBytes; pipelined frames are dispatched one
// at a time, the next only once the connection is back.
func TestFramedBodies(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB: several reads and turns
	tests := []struct {
		name    string
		bodies  [][]byte
		dribble bool // one byte per write
	}{
		{"empty", [][]byte{{}}, false},
		{"small", [][]byte{[]byte("hello")}, false},
		{"dribbled", [][]byte{[]byte("hello, slowly")}, true},
		{"over the read buffer", [][]byte{bytes.Repeat([]byte{7}, DefaultReadBuffer+1)}, false},
		{"many reads", [][]byte{big}, false},
		{"pipelined", [][]byte{[]byte("one"), {}, []byte("three"), big, []byte("five")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop, dispatched, _ := framedLoop(t, &toyProtocol{}, 0)
			client, fd := acceptedConn(t)
			loop.Adopt(&stages.Conn{ID: 1, FD: fd, Protocol: 1})
			var wire []byte
			for _, b := range tt.bodies {
				wire = append(wire, toyFrame(b)...)
			}
			go func() {
				if !tt.dribble {
					client.Write(wire)
					return
				}
				for i := range wire {
					client.Write(wire[i : i+1])
					time.Sleep(time.Millisecond)
				}
			}()
			for i, want := range tt.bodies {
				select {
				case r := <-dispatched:
					if !bytes.Equal(r.BodyBytes, want) || r.Seq != uint64(i+1) || r.Frame == nil {
						t.Fatalf("frame %d: %d body bytes, seq %d; want %d bytes, seq %d", i, len(r.BodyBytes), r.Seq, len(want), i+1)
					}
					select {
					case r2 := <-dispatched:
						t.Fatalf("frame %d dispatched while frame %d was out", r2.Seq, r.Seq)
					case <-time.After(5 * time.Millisecond):
					}
					loop.Return(r.Conn, stages.FateKeepAlive)
				case <-time.After(10 * time.Second):
					t.Fatalf("frame %d never dispatched", i)
				}
			}
		})
	}
}

// A malformed head and a frame not all in within the header timeout go to
// Reject with the reason, and the connection is
// closed afterwards; an idle connection gives its parser back (Reset).
func TestFramedRejectsAndIdles(t *testing.T) {
	tests := []struct {
		name string
		send []byte
		want error // nil: served, then idle
	}{
		{"malformed", []byte{0xff, 1, 2, 3}, errToy},
		{"head cut short", []byte{0, 0}, stages.ErrHeadTimeout},
		{"body cut short", toyFrame([]byte("hello"))[:6], stages.ErrHeadTimeout},
		{"served, then idle", toyFrame([]byte("hi")), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proto := &toyProtocol{}
			loop, dispatched, rejected := framedLoop(t, proto, 200*time.Millisecond)
			client, fd := acceptedConn(t)
			loop.Adopt(&stages.Conn{ID: 1, FD: fd, Protocol: 1})
			client.Write(tt.send)
			if tt.want == nil {
				r := <-dispatched
				loop.Return(r.Conn, stages.FateKeepAlive)
				if !waitFor(func() bool { return loop.withWork.Load() == 0 && proto.resets.Load() == 1 && loop.Census().Idle == 1 }) {
					t.Fatalf("idle connection holds %d records, %d parser resets", loop.withWork.Load(), proto.resets.Load())
				}
				return
			}
			select {
			case err := <-rejected:
				if !errors.Is(err, tt.want) {
					t.Fatalf("Reject(%v), want %v", err, tt.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("never rejected")
			}
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := client.Read(make([]byte, 1)); err == nil {
				t.Fatal("bytes from a rejected connection")
			}
			if !waitFor(func() bool { return loop.Open() == 0 }) {
				t.Fatal("rejected connection not closed")
			}
		})
	}
}

// The reader carries out a head's body plan whatever the protocol: a
// counted body over PrereadBody streams to the handler, one over
// MaxBodyBytes is refused before dispatch, and a head that aliases the
// buffer is parsed again when the body makes the reader move its bytes.
func TestBodyPlans(t *testing.T) {
	small := []byte("hello")
	big := bytes.Repeat([]byte("x"), 3*DefaultReadBuffer)
	tests := []struct {
		name     string
		proto    *toyProtocol
		body     []byte
		streamed bool
		reject   error
	}{
		{"length, preread", &toyProtocol{kind: stages.BodyLength}, small, false, nil},
		{"length, streamed", &toyProtocol{kind: stages.BodyLength}, big, true, nil},
		{"length, too large", &toyProtocol{kind: stages.BodyLength}, bytes.Repeat([]byte("x"), 2<<10), false, stages.ErrBodyTooLarge},
		{"whole, larger than MaxBodyBytes", &toyProtocol{kind: stages.BodyWhole}, bytes.Repeat([]byte("x"), 2<<10), false, nil},
		{"aliased head, moved", &toyProtocol{kind: stages.BodyWhole, aliases: true}, big, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop, dispatched, rejected := framedLoopWith(t, tt.proto, 0, func(c *Config) {
				c.PrereadBody = DefaultReadBuffer
				if tt.proto.kind == stages.BodyLength {
					c.MaxBodyBytes = 1 << 10
					if tt.streamed {
						c.MaxBodyBytes = 1 << 20
					}
				} else {
					c.MaxBodyBytes = 1 << 10 // BodyWhole is the parser's to bound
				}
			})
			client, fd := acceptedConn(t)
			loop.Adopt(&stages.Conn{ID: 1, FD: fd, Protocol: 1})
			frame := toyFrame(tt.body)
			go client.Write(frame)
			select {
			case err := <-rejected:
				if !errors.Is(err, tt.reject) {
					t.Fatalf("Reject(%v), want %v", err, tt.reject)
				}
				return
			case r := <-dispatched:
				if tt.reject != nil {
					t.Fatal("dispatched, want a refusal")
				}
				_, parking := r.Body.(stages.ParkingReader)
				if parking != tt.streamed {
					t.Fatalf("streamed %v, want %v", parking, tt.streamed)
				}
				got, err := io.ReadAll(r.Body)
				if err != nil || !bytes.Equal(got, tt.body) || r.ContentLength != int64(len(tt.body)) {
					t.Fatalf("body of %d bytes (%v), ContentLength %d; want %d", len(got), err, r.ContentLength, len(tt.body))
				}
				if tt.proto.aliases && (!bytes.Equal(r.Path, frame[:4]) || tt.proto.resets.Load() == 0) {
					t.Fatalf("aliased head %q after %d resets, want %q parsed again", r.Path, tt.proto.resets.Load(), frame[:4])
				}
				loop.Return(r.Conn, stages.FateKeepAlive)
			case <-time.After(10 * time.Second):
				t.Fatal("neither dispatched nor refused")
			}
		})
	}
}
