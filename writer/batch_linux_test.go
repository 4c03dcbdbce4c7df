package writer

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// WriteBatched queues what one writev would finish and sends it only at
// Flush; anything else it writes at once, and a connection's queued
// response goes out before the next response of the same connection.
func TestWriteBatchedQueuesWhatOneWritevFinishes(t *testing.T) {
	h := startLoopWith(t, Config{}, nil)
	ring, err := poll.NewRing(4)
	if errors.Is(err, poll.ErrNoRing) {
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var serving []*stages.Conn // what Serving was told, nil included
	var left []*stages.Response
	d := new(Direct)
	d.EnableBatch(ring, BatchHooks{
		Serving: func(c *stages.Conn) *stages.Conn { serving = append(serving, c); return nil },
		Left:    func(r *stages.Response) { left = append(left, r); r.ResumeKicks() },
	})
	defer d.Close()
	fdA, clientA := tcpPair(t, 0, 0)
	fdB, clientB := tcpPair(t, 0, 0)
	complete := func(fd int, bs ...stages.Bucket) *stages.Response {
		r := h.response(fd)
		r.HoldKicks()
		if err := r.Append(append(bs, eos)...); err != nil {
			t.Fatal(err)
		}
		r.Done()
		return r
	}
	queued := func(client interface{ SetReadDeadline(time.Time) error }, read func([]byte) (int, error)) bool {
		client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, _ := read(make([]byte, 1))
		client.SetReadDeadline(time.Time{})
		return n == 0
	}

	a1, b1 := pattern(1, 100), pattern(2, 300)
	rA := complete(fdA, heap(a1[:40]), heap(a1[40:]))
	rB := complete(fdB, heap(b1))
	if d.WriteBatched(h.l, rA) || d.WriteBatched(h.l, rB) {
		t.Fatal("a small whole response left for the writer loop")
	}
	if !queued(clientA, clientA.Read) {
		t.Fatal("a batched response was on the wire before Flush")
	}
	d.Flush()
	if got := readN(t, clientA, len(a1)); !bytes.Equal(got, a1) {
		t.Fatal("connection A got other bytes than its response")
	}
	if got := readN(t, clientB, len(b1)); !bytes.Equal(got, b1) {
		t.Fatal("connection B got other bytes than its response")
	}
	h.waitRecycled(rA)
	h.waitRecycled(rB)
	if sent, batches := d.BatchCounts(); sent != 2 || batches != 1 || d.Ended() != 2 {
		t.Fatalf("sent %d in %d batches, ended %d; want 2, 1, 2", sent, batches, d.Ended())
	}
	if len(serving) != 4 || serving[0] != rA.Conn && serving[0] != rB.Conn || serving[1] != nil {
		t.Fatalf("Serving was told %v, want each connection and then the previous (nil)", serving)
	}

	// Five pieces: more than a batched response may have, written at once.
	five := pattern(3, 50)
	r5 := complete(fdA, heap(five[:10]), heap(five[10:20]), heap(five[20:30]), heap(five[30:40]), heap(five[40:]))
	if d.WriteBatched(h.l, r5) {
		t.Fatal("left for the writer loop")
	}
	if got := readN(t, clientA, len(five)); !bytes.Equal(got, five) {
		t.Fatal("a five-piece response not written at once")
	}
	h.waitRecycled(r5)

	// The same connection twice: the first goes out before the second is
	// queued.
	x, y := pattern(4, 70), pattern(5, 80)
	rx, ry := complete(fdB, heap(x)), complete(fdB, heap(y))
	ry.Conn = rx.Conn // one connection (the harness makes one a response)
	d.WriteBatched(h.l, rx)
	d.WriteBatched(h.l, ry)
	if got := readN(t, clientB, len(x)); !bytes.Equal(got, x) {
		t.Fatal("the first response of the connection did not go first")
	}
	d.Flush()
	if got := readN(t, clientB, len(y)); !bytes.Equal(got, y) {
		t.Fatal("the second response of the connection")
	}
	h.waitRecycled(rx)
	h.waitRecycled(ry)
	if len(left) != 0 {
		t.Fatalf("%d responses left for the writer loop, none expected", len(left))
	}
}
