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
	ring := newSendRing(t)
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

// A Flush with one response queued writes it with writev, not the ring
// (a batch of one costs more than the call it replaces), and does with
// it what a ring's send would: a response the socket takes whole ends,
// one it takes part of is left for the writer loop. Neither counts as a
// batch.
func TestFlushWritesABatchOfOneDirectly(t *testing.T) {
	h := startLoopWith(t, Config{}, nil)
	ring := newSendRing(t)
	var left []*stages.Response
	d := new(Direct)
	d.EnableBatch(ring, BatchHooks{
		Serving: func(*stages.Conn) *stages.Conn { return nil },
		Left:    func(r *stages.Response) { left = append(left, r); r.ResumeKicks() },
	})
	defer d.Close()
	complete := func(fd int, b []byte) *stages.Response {
		r := h.response(fd)
		r.HoldKicks()
		if err := r.Append(heap(b), eos); err != nil {
			t.Fatal(err)
		}
		r.Done()
		return r
	}

	fd, client := tcpPair(t, 0, 0)
	small := pattern(6, 500)
	r := complete(fd, small)
	if d.WriteBatched(h.l, r) {
		t.Fatal("a small whole response left for the writer loop")
	}
	d.Flush()
	if got := readN(t, client, len(small)); !bytes.Equal(got, small) {
		t.Fatal("the client got other bytes than the response")
	}
	h.waitRecycled(r)
	if sent, batches := d.BatchCounts(); sent != 0 || batches != 0 || d.Ended() != 1 {
		t.Fatalf("sent %d in %d batches, ended %d; want 0, 0, 1", sent, batches, d.Ended())
	}

	// A socket that takes part: the rest is the writer loop's.
	fdFull, clientFull := tcpPair(t, 4096, 4096)
	big := pattern(7, 512<<10)
	rBig := complete(fdFull, big)
	if d.WriteBatched(h.l, rBig) {
		t.Fatal("a whole response within the budget not queued")
	}
	d.Flush()
	if len(left) != 1 || left[0] != rBig {
		t.Fatalf("left %d responses for the writer loop, want the big one", len(left))
	}
	// Left resumed its kicks, so the harness's writer loop sends the rest.
	if got := readN(t, clientFull, len(big)); !bytes.Equal(got, big) {
		t.Fatal("the client got other bytes than the response")
	}
	h.waitRecycled(rBig)
	if sent, batches := d.BatchCounts(); sent != 0 || batches != 0 || d.Ended() != 1 {
		t.Fatalf("sent %d in %d batches, ended %d; want 0, 0, 1", sent, batches, d.Ended())
	}
}

// newSendRing is a ring for a Direct's batch, or skips the test where the
// kernel refuses io_uring.
func newSendRing(t *testing.T) *poll.Ring {
	t.Helper()
	ring, err := poll.NewRing(4)
	if errors.Is(err, poll.ErrNoRing) {
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ring
}
