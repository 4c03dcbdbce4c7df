//go:build linux

package writer

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// waitHeld polls, in the loop, until r is stopped at an unreleased hold.
func (h *harness) waitHeld(r *stages.Response) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		held := false
		h.inLoop(func() {
			rec, ok := h.record(r)
			held = ok && rec.held
		})
		if held {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("response never stopped at its hold within %v", waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// expectQuiet fails if the client receives anything more within a short
// while: a diverted tail must not leak out after the alternative.
func expectQuiet(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	if n, err := c.Read(b[:]); n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after the alternative: %d more bytes, %v", n, err)
	}
}

// A diverted hold replaces what was queued after it, up to EOS, with its
// alternative (heap and file buckets), whether the tail reached the
// writer before the divert, after it, or partly each; EOS still ends the
// response, and the log counts exactly the bytes the client received.
func TestDivertedHoldReplacesTail(t *testing.T) {
	pre := pattern(20, 5000)
	altHeap, altFile := pattern(21, 70000), pattern(22, 300000)
	tail := pattern(23, 200000)
	for _, tc := range []struct {
		name string
		// before is appended with the hold, after (then EOS) once the
		// hold has been diverted.
		before, after []stages.Bucket
	}{
		{"tail and EOS before the divert", []stages.Bucket{heap(tail), eos}, nil},
		{"tail before, EOS after", []stages.Bucket{heap(tail[:1000])}, []stages.Bucket{heap(tail[1000:])}},
		{"everything after the divert", nil, []stages.Bucket{heap(tail[:10]), heap(tail[10:])}},
		{"nothing after the hold but EOS", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLoop(t, Config{})
			fd, client := tcpPair(t, 0, 0)
			f := tempFile(t, append(bytes.Repeat([]byte{'x'}, 100), altFile...))
			r := h.response(fd)
			hold := stages.NewHold(r)
			r.Append(append([]stages.Bucket{heap(pre), {Kind: stages.BucketHold, Hold: hold}}, tc.before...)...)
			if got := readN(t, client, len(pre)); !bytes.Equal(got, pre) {
				t.Fatal("bytes before the hold differ")
			}
			h.waitHeld(r)
			if !hold.Divert([]stages.Bucket{heap(altHeap), {Kind: stages.BucketFile, File: f, Off: 100, Len: int64(len(altFile))}}) {
				t.Fatal("Divert lost to nobody")
			}
			want := append(append([]byte(nil), altHeap...), altFile...)
			if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
				t.Fatal("alternative differs")
			}
			if len(tc.before) == 0 || tc.before[len(tc.before)-1].Kind != stages.BucketEOS {
				r.Append(append(tc.after, eos)...)
			}
			r.Done()
			e := h.log()
			h.waitRecycled(r)
			if e.err != nil || e.sent != int64(len(pre)+len(want)) {
				t.Errorf("logged %d bytes, err %v; the client got %d", e.sent, e.err, len(pre)+len(want))
			}
			if r.Unsent() != 0 {
				t.Errorf("%d bytes left unsent", r.Unsent())
			}
			expectQuiet(t, client)
		})
	}
}

// The divert races the producer: Divert (from a completion, say) and the
// producer's last Append run at once, on one keep-alive connection, many
// times. Each response is exactly its head and its alternative, never a
// byte of the dropped tail.
func TestDivertRacesEOS(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 0, 0)
	tail := bytes.Repeat([]byte{'T'}, 3000)
	for i := 0; i < 100; i++ {
		head := []byte("head-")
		alt := pattern(uint64(i), 1+i*97)
		r := h.response(fd)
		hold := stages.NewHold(r)
		r.Append(heap(head), stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap(tail[:i]))
		done := make(chan struct{})
		go func() {
			defer close(done)
			hold.Divert([]stages.Bucket{heap(alt)})
		}()
		r.Append(heap(tail[i:]), eos)
		r.Done()
		<-done
		want := append(head, alt...)
		if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("response %d: got %q..., want %q...", i, got[:min(len(got), 16)], want[:min(len(want), 16)])
		}
		e := h.log()
		h.waitRecycled(r)
		if e.err != nil || e.sent != int64(len(want)) || r.Unsent() != 0 {
			t.Fatalf("response %d: logged %d bytes (err %v), %d unsent; want %d", i, e.sent, e.err, r.Unsent(), len(want))
		}
	}
	expectQuiet(t, client)
}

// A diverted hold whose alternative is larger than the socket takes at
// once: the writer resumes it on EPOLLOUT like any other bytes.
func TestDivertedAlternativeWaitsForEpollout(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 4096, 4096)
	r := h.response(fd)
	hold := stages.NewHold(r)
	r.Append(stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap([]byte("dropped")), eos)
	r.Done()
	h.waitHeld(r)
	alt := pattern(30, 3<<20)
	hold.Divert(split(alt, 1<<20))
	if got := readN(t, client, len(alt)); !bytes.Equal(got, alt) {
		t.Fatal("alternative differs")
	}
	if e := h.log(); e.err != nil || e.sent != int64(len(alt)) {
		t.Errorf("logged %d bytes, err %v", e.sent, e.err)
	}
	h.waitRecycled(r)
	expectQuiet(t, client)
}
