package writer

import (
	"bytes"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// Direct ends a response it wrote whole even when that took the whole
// turn's budget (a body about the budget's size): handing it to the loop
// would wake the loop only to conclude it. With bytes still to write past
// the budget, the loop takes over and finishes them.
func TestDirectEndsWhatItWroteWhole(t *testing.T) {
	const budget = 1024
	for _, tc := range []struct {
		name       string
		file       bool // a file bucket after the heap ones: bytes ahead once the budget is spent
		wantDirect uint64
	}{
		{"written whole past the budget", false, 1},
		{"bytes ahead past the budget", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLoopWith(t, Config{}, func(l *Loop) { l.writeBudget = budget })
			fd, client := tcpPair(t, 0, 0)
			head, body := pattern(1, 100), pattern(2, 3*budget)
			want := append(append([]byte(nil), head...), body...)
			bs := []stages.Bucket{heap(head), heap(body)}
			if tc.file {
				tail := pattern(3, 2*budget)
				f := tempFile(t, tail)
				bs = append(bs, stages.Bucket{Kind: stages.BucketFile, File: f, Len: int64(len(tail))})
				want = append(want, tail...)
			}
			r, d := h.writeDirect(fd, bs...)
			if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
				t.Fatalf("client got %d bytes, not the %d written", len(got), len(want))
			}
			if e := h.log(); e.err != nil || e.sent != int64(len(want)) {
				t.Errorf("logged %d bytes sent, err %v; want %d", e.sent, e.err, len(want))
			}
			h.waitRecycled(r)
			if got := d.Ended(); got != tc.wantDirect {
				t.Errorf("Direct ended %d responses, want %d", got, tc.wantDirect)
			}
			if got := h.l.counters.Dequeued.Load(); got != 1-tc.wantDirect {
				t.Errorf("the loop dequeued %d responses, want %d", got, 1-tc.wantDirect)
			}
		})
	}
}

// A response's head and the file region after it leave in one TCP
// segment (writev's MSG_MORE), as nginx's tcp_nopush sends them, and a
// head with nothing after it (a HEAD request) is not held back.
func TestHeadAndFileInOneSegment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  int  // bytes of file after the head; 0: none
		split bool // the head in two buffers (sendmsg, not send)
	}{
		{"head and a 4 KiB file", 4096, false},
		{"head in two buffers and a file", 4096, true},
		{"head alone", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLoopWith(t, Config{}, nil)
			fd, client := tcpPair(t, 0, 0)
			head := pattern(1, 234)
			want := append([]byte(nil), head...)
			bs := []stages.Bucket{heap(head)}
			if tc.split {
				bs = []stages.Bucket{heap(head[:100]), heap(head[100:])}
			}
			if tc.file > 0 {
				body := pattern(2, tc.file)
				bs = append(bs, stages.Bucket{Kind: stages.BucketFile, File: tempFile(t, body), Len: int64(len(body))})
				want = append(want, body...)
			}
			before := dataSegsOut(t, fd)
			r, _ := h.writeDirect(fd, bs...)
			start := time.Now()
			if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
				t.Fatalf("client got %d bytes, not the %d written", len(got), len(want))
			}
			// Held back, the head would come only after the 200 ms
			// that Linux gives corked data.
			if d := time.Since(start); d > 150*time.Millisecond {
				t.Errorf("the response took %v to arrive", d)
			}
			if segs := dataSegsOut(t, fd) - before; segs != 1 {
				t.Errorf("the response left in %d segments, want 1", segs)
			}
			h.waitRecycled(r)
		})
	}
}

// writeDirect has a Direct write a response of bs and EOS on fd, complete
// and with its kicks held, as an inline server leaves it.
func (h *harness) writeDirect(fd int, bs ...stages.Bucket) (*stages.Response, *Direct) {
	h.t.Helper()
	r := h.response(fd)
	r.HoldKicks()
	if err := r.Append(append(bs, stages.Bucket{Kind: stages.BucketEOS})...); err != nil {
		h.t.Fatal(err)
	}
	r.Done()
	d := new(Direct)
	if d.Write(h.l, r) {
		r.ResumeKicks() // the rest goes to the writer loop, as the runtime hands it over
	}
	return r, d
}

// dataSegsOut is the number of data segments fd's socket has sent.
func dataSegsOut(t *testing.T, fd int) uint32 {
	t.Helper()
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatal(err)
	}
	return ti.Data_segs_out
}

// A large file region is sent corked (corkFileMin), and the cork is gone
// when its response ends, whether Direct wrote it all or handed the rest
// to the writer loop: a cork left on would hold the next response's last
// segment back for 200 ms.
func TestFileRegionUncorked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sndbuf int // the server's send buffer; small makes Direct hand over
		size   int
	}{
		{"written by Direct", 0, 4 * corkFileMin},
		{"handed to the loop", 4096, 4 * corkFileMin},
		// Less than corkFileMin left for the loop: it does not cork, so
		// it would not uncork either.
		{"handed to the loop, a little left", 4096, corkFileMin + 4<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLoopWith(t, Config{}, nil)
			fd, client := tcpPair(t, tc.sndbuf, tc.sndbuf)
			head, body := pattern(1, 200), pattern(2, tc.size)
			want := append(append([]byte(nil), head...), body...)
			r, d := h.writeDirect(fd, heap(head), stages.Bucket{Kind: stages.BucketFile, File: tempFile(t, body), Len: int64(len(body))})
			if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
				t.Fatalf("client got %d bytes, not the %d written", len(got), len(want))
			}
			h.waitRecycled(r)
			if ended, handed := d.Ended(), tc.sndbuf > 0; handed == (ended == 1) {
				t.Fatalf("Direct ended %d responses: the case did not happen", ended)
			}
			if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK); err != nil || v != 0 {
				t.Errorf("TCP_CORK is %d (%v) after the response, want 0", v, err)
			}
		})
	}
}

// A file region of corkFileMin or more goes corked from its first
// sendfile to its last byte, also when the socket is full after the first
// call, and when the region is larger than one call sends. (Corking only
// from a call cut short saved two setsockopt calls and cost 9% more CPU:
// see corkFileMin.)
func TestFileRegionCorkedFromItsFirstSend(t *testing.T) {
	for _, tc := range []struct {
		name      string
		buf, size int
	}{
		{"the socket full after a call", 4096, 4 * corkFileMin},
		{"larger than a call", 0, maxSendfileChunk + corkFileMin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, client := tcpPair(t, tc.buf, tc.buf)
			body := pattern(3, tc.size)
			rec := &record{buckets: []stages.Bucket{{Kind: stages.BucketFile, File: tempFile(t, body), Len: int64(len(body))}}}
			var memo residentMemo
			got := make(chan []byte, 1)
			go func() {
				client.SetReadDeadline(time.Now().Add(waitLimit))
				b := make([]byte, len(body))
				n, _ := io.ReadFull(client, b)
				got <- b[:n]
			}()
			corkOf := func() int {
				v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			sent, calls := int64(0), 0
			for deadline := time.Now().Add(waitLimit); sent < int64(len(body)); {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d bytes sent", sent, len(body))
				}
				n, err := sendFile(fd, rec, &memo)
				if err != nil && err != unix.EAGAIN {
					t.Fatal(err)
				}
				calls++
				sent += n
				if sent < int64(len(body)) && (!rec.corked || corkOf() != 1) {
					t.Fatalf("after sendfile %d (%d of %d bytes sent): not corked", calls, sent, len(body))
				}
				if err == unix.EAGAIN {
					time.Sleep(time.Millisecond)
				}
			}
			if calls < 2 {
				t.Errorf("sent in %d call: the case did not happen", calls)
			}
			if corkOf() != 0 || rec.corked {
				t.Errorf("still corked after the region's last byte")
			}
			if b := <-got; !bytes.Equal(b, body) {
				t.Fatalf("client got %d bytes, not the %d sent", len(b), len(body))
			}
		})
	}
}
