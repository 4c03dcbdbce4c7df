//go:build linux

package writer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// seqpacketPair returns a SOCK_SEQPACKET socketpair: the first end
// non-blocking for the writer, the second for the test. Each writev on it
// is one record, so the records the test receives are the writer's
// syscalls.
func seqpacketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

// records reads every record waiting on fd.
func records(t *testing.T, fd int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return out
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

// Runs of heap buckets go out in one writev each, up to iovMax buckets;
// empty buckets take no iovec; metadata buckets end a run.
func TestHeapBucketsCoalesce(t *testing.T) {
	ones := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = 1
		}
		return s
	}
	const flush, hold = -1, -2
	tests := []struct {
		name    string
		buckets []int // sizes of heap buckets; flush, hold: metadata
		want    []int // sizes of the writevs
	}{
		{"one", []int{5}, []int{5}},
		{"three", []int{3, 400, 5}, []int{408}},
		{"empty buckets", []int{0, 3, 0, 0, 4, 0}, []int{7}},
		{"only empty", []int{0, 0}, nil},
		{"iovMax", ones(iovMax), []int{iovMax}},
		{"iovMax+1", ones(iovMax + 1), []int{iovMax, 1}},
		{"iovMax+1 with empties", append(append([]int{0}, ones(iovMax)...), 0, 0, 7), []int{iovMax, 7}},
		{"flush splits", []int{3, flush, 4}, []int{3, 4}},
		{"released hold", []int{3, hold, 4, 5}, []int{3, 9}},
	}
	h := startLoop(t, Config{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wfd, rfd := seqpacketPair(t)
			var bs []stages.Bucket
			var all []byte
			r := h.response(wfd)
			for j, size := range tt.buckets {
				switch size {
				case flush:
					bs = append(bs, stages.Bucket{Kind: stages.BucketFlush})
				case hold:
					hd := stages.NewHold(r)
					hd.Release()
					bs = append(bs, stages.Bucket{Kind: stages.BucketHold, Hold: hd})
				default:
					b := pattern(uint64(i*1000+j), size)
					all = append(all, b...)
					bs = append(bs, heap(b))
				}
			}
			if err := r.Append(append(bs, eos)...); err != nil {
				t.Fatal(err)
			}
			r.Done()
			e := h.log()
			h.waitRecycled(r)
			if e.err != nil || e.sent != int64(len(all)) {
				t.Fatalf("logged %d bytes, err %v; want %d, nil", e.sent, e.err, len(all))
			}
			if r.Fate() != stages.FateKeepAlive {
				t.Errorf("fate %v, want keep-alive", r.Fate())
			}
			recs := records(t, rfd)
			var sizes []int
			var got []byte
			for _, rec := range recs {
				sizes = append(sizes, len(rec))
				got = append(got, rec...)
			}
			if !equalInts(sizes, tt.want) {
				t.Errorf("writev sizes %v, want %v", sizes, tt.want)
			}
			if !bytes.Equal(got, all) {
				t.Errorf("bytes differ from what was appended")
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Heap and file buckets interleave on the wire in append order; file
// regions (several sendfile calls and loop turns each) come from the right
// offsets. A response without keep-alive ends with a FIN (lingering close).
func TestHeapAndFileBuckets(t *testing.T) {
	h := startLoop(t, Config{})
	content := pattern(1, 3<<20+17)
	f := tempFile(t, content)
	head, mid, tail := pattern(2, 100), pattern(3, 5), pattern(4, 70000)

	fd, client := tcpPair(t, 0, 0)
	r := h.response(fd)
	r.KeepAlive = false
	var want []byte
	want = append(want, head...)
	want = append(want, content[10:10+2<<20]...)
	want = append(want, mid...)
	want = append(want, content[:1]...)
	want = append(want, content[3<<20:]...)
	want = append(want, tail...)
	go func() {
		// Appended in pieces from another goroutine, as a handler would.
		r.Append(heap(head), stages.Bucket{Kind: stages.BucketFile, File: f, Off: 10, Len: 2 << 20}, heap(mid))
		r.Append(stages.Bucket{Kind: stages.BucketFile, File: f, Off: 0, Len: 1})
		r.Append(stages.Bucket{Kind: stages.BucketFile, File: f, Off: 3 << 20, Len: 17}, heap(tail), eos)
		r.Done()
	}()
	got := readN(t, client, len(want))
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes on the wire differ from the buckets (first difference at %d)", firstDiff(got, want))
	}
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the response: read %d, %v; want EOF (shutdown for lingering close)", n, err)
	}
	e := h.log()
	h.waitRecycled(r)
	if e.err != nil || e.sent != int64(len(want)) {
		t.Errorf("logged %d bytes, err %v; want %d, nil", e.sent, e.err, len(want))
	}
	if r.Fate() != stages.FateLinger {
		t.Errorf("fate %v, want linger", r.Fate())
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A file region the file cannot fill, or a file sendfile cannot read,
// aborts the response; the error says the file ended (ErrFileEnded,
// which Config.Trouble hears of) or names the syscall that failed.
func TestFileBucketErrors(t *testing.T) {
	troubles := make(chan error, 4)
	h := startLoop(t, Config{Trouble: func(_ *stages.Response, err error) { troubles <- err }})
	short := tempFile(t, []byte("short"))
	wo, err := os.OpenFile(t.TempDir()+"/wo", os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer wo.Close()
	tests := []struct {
		name    string
		b       stages.Bucket
		sent    int64
		syscall string
		errno   error
	}{
		{"region past EOF", stages.Bucket{Kind: stages.BucketFile, File: short, Off: 2, Len: 10}, 3, "", nil},
		{"write-only file", stages.Bucket{Kind: stages.BucketFile, File: wo, Off: 0, Len: 10}, 0, "sendfile", unix.EBADF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, client := tcpPair(t, 0, 0)
			r := h.response(fd)
			r.Append(tt.b, eos)
			r.Done()
			e := h.log()
			h.waitRecycled(r)
			if e.err == nil || e.sent != tt.sent {
				t.Fatalf("logged %d bytes, err %v; want %d and an error", e.sent, e.err, tt.sent)
			}
			if tt.syscall == "" {
				if !errors.Is(e.err, ErrFileEnded) || !strings.Contains(e.err.Error(), short.Name()) {
					t.Errorf("error %q: want ErrFileEnded naming the file", e.err)
				}
				select {
				case err := <-troubles:
					if err != e.err {
						t.Errorf("Trouble heard %v, want %v", err, e.err)
					}
				default:
					t.Error("Trouble was not told")
				}
			} else if len(troubles) > 0 {
				t.Errorf("Trouble told of %v, a failure that is not the file's", <-troubles)
			}
			var se *os.SyscallError
			if tt.syscall != "" && (!errors.As(e.err, &se) || se.Syscall != tt.syscall || !errors.Is(e.err, tt.errno)) {
				t.Errorf("error %#v, want a %s syscall error wrapping %v", e.err, tt.syscall, tt.errno)
			}
			if r.Fate() != stages.FateClose || !r.Aborted() {
				t.Errorf("fate %v, aborted %v; want close, aborted", r.Fate(), r.Aborted())
			}
			readN(t, client, int(tt.sent))
		})
	}
}

// A socket that fills up parks the response on a one-shot EPOLLOUT; the
// client reading resumes it, and every byte arrives once, in order.
func TestPartialWriteResumesOnEpollout(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 4096, 4096)
	body := pattern(5, 8<<20)
	r := h.response(fd)
	// Heap runs and file regions both go through EAGAIN.
	f := tempFile(t, body[4<<20:])
	bs := split(body[:4<<20], 64<<10)
	bs = append(bs, stages.Bucket{Kind: stages.BucketFile, File: f, Len: 4 << 20}, eos)
	if err := r.Append(bs...); err != nil {
		t.Fatal(err)
	}
	r.Done()
	h.waitStalled(r)
	if u := r.Unsent(); u <= 0 || u >= int64(len(body)) {
		t.Fatalf("stalled with %d bytes unsent of %d", u, len(body))
	}
	got := readN(t, client, len(body))
	if !bytes.Equal(got, body) {
		t.Fatalf("bytes differ (first difference at %d)", firstDiff(got, body))
	}
	e := h.log()
	h.waitRecycled(r)
	if e.err != nil || e.sent != int64(len(body)) || r.Unsent() != 0 {
		t.Errorf("logged %d bytes, err %v, %d unsent; want %d, nil, 0", e.sent, e.err, r.Unsent(), len(body))
	}
}

// The high-water mark: a producer ahead of a client that does not read
// blocks in WaitDrained until the writer has brought Unsent down to the low
// mark, so the response never holds much more than the high mark.
func TestHighWaterBlocksProducer(t *testing.T) {
	const (
		low   = 64 << 10
		high  = 512 << 10
		chunk = 128 << 10
		total = 4 << 20
	)
	h := startLoop(t, Config{LowWater: low})
	fd, client := tcpPair(t, 4096, 4096)
	body := pattern(6, total)
	r := h.response(fd)
	var waiting atomic.Bool
	var maxUnsent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for off := 0; off < total; off += chunk {
			if err := r.Append(heap(body[off : off+chunk])); err != nil {
				done <- err
				return
			}
			u := r.Unsent()
			if u > maxUnsent.Load() {
				maxUnsent.Store(u)
			}
			if u > high {
				waiting.Store(true)
				err := r.WaitDrained(low, waitLimit, nil)
				waiting.Store(false)
				if err != nil {
					done <- err
					return
				}
				if u := r.Unsent(); u > low {
					done <- errors.New("WaitDrained returned above the low mark")
					return
				}
			}
		}
		done <- r.Append(eos)
		r.Done()
	}()
	// Wait until the writer is parked on the full socket; then the producer
	// is blocked for good until the client reads.
	h.waitStalled(r)
	deadline := time.Now().Add(waitLimit)
	for !waiting.Load() {
		if time.Now().After(deadline) {
			t.Fatal("producer never reached the high-water mark")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("producer finished (%v) while the client read nothing", err)
	default:
	}
	if u := r.Unsent(); u <= low || u > high+chunk {
		t.Errorf("blocked producer with %d bytes unsent; want (%d, %d]", u, low, high+chunk)
	}
	got := readN(t, client, total)
	if err := <-done; err != nil {
		t.Fatalf("producer: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("bytes differ (first difference at %d)", firstDiff(got, body))
	}
	if m := maxUnsent.Load(); m > high+chunk {
		t.Errorf("unsent reached %d, more than high water + one chunk (%d)", m, high+chunk)
	}
	e := h.log()
	h.waitRecycled(r)
	if e.err != nil || e.sent != total {
		t.Errorf("logged %d bytes, err %v; want %d, nil", e.sent, e.err, total)
	}
}

// A client that never reads: the write timeout aborts the response, wakes
// its producer with ErrAborted, and the log has exactly the bytes the
// socket took, as the client proves by reading them all afterwards.
func TestWriteTimeoutLogsExactBytes(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h := startLoop(t, Config{WriteTimeout: timeout})
	fd, client := tcpPairOwned(t, 4096, 4096)
	body := pattern(7, 4<<20)
	r := h.response(fd)
	start := time.Now()
	r.Append(append(split(body, 256<<10), eos)...)
	e := h.log()
	if took := time.Since(start); took < timeout {
		t.Errorf("aborted after %v, before the %v write timeout", took, timeout)
	}
	if !errors.Is(e.err, stages.ErrWriteTimeout) || !r.Aborted() {
		t.Fatalf("logged err %v, aborted %v; want ErrWriteTimeout", e.err, r.Aborted())
	}
	if e.sent <= 0 || e.sent >= int64(len(body)) {
		t.Fatalf("logged %d bytes of %d", e.sent, len(body))
	}
	if err := r.WaitDrained(0, waitLimit, nil); !errors.Is(err, stages.ErrAborted) {
		t.Errorf("WaitDrained after abort: %v, want ErrAborted", err)
	}
	if err := r.Append(heap([]byte("more"))); !errors.Is(err, stages.ErrAborted) {
		t.Errorf("Append after abort: %v, want ErrAborted", err)
	}
	r.Done()
	h.waitRecycled(r)
	if r.Fate() != stages.FateReset {
		t.Errorf("fate %v, want reset: the kernel must drop what is still queued", r.Fate())
	}
	// The test owns the fd, as a reader loop would: reset the connection
	// as the fate says and count what really reached the client: the
	// bytes it had taken, then the reset.
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	client.SetReadDeadline(time.Now().Add(waitLimit))
	got, err := io.ReadAll(client)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read: %v, want the bytes and then a reset", err)
	}
	if int64(len(got)) != e.sent {
		t.Errorf("client received %d bytes, log says %d", len(got), e.sent)
	}
	if !bytes.Equal(got, body[:len(got)]) {
		t.Errorf("received bytes are not a prefix of the body")
	}
}

// A peer that resets the connection mid-response: the response is aborted
// with fate close and a syscall error, having logged no more than
// was written and no less than the client read.
func TestPeerResetAborts(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 4096, 4096)
	body := pattern(8, 8<<20)
	r := h.response(fd)
	r.Append(append(split(body, 1<<20), eos)...)
	const read = 64 << 10
	got := readN(t, client, read)
	if !bytes.Equal(got, body[:read]) {
		t.Fatal("first bytes differ")
	}
	client.SetLinger(0) // close sends RST
	client.Close()
	e := h.log()
	r.Done()
	h.waitRecycled(r)
	if !errors.Is(e.err, syscall.ECONNRESET) && !errors.Is(e.err, syscall.EPIPE) {
		t.Errorf("logged err %v, want ECONNRESET or EPIPE", e.err)
	}
	var se *os.SyscallError
	if !errors.As(e.err, &se) || se.Syscall != "writev" {
		t.Errorf("err %#v, want a writev syscall error", e.err)
	}
	if e.sent < read || e.sent >= int64(len(body)) {
		t.Errorf("logged %d bytes; the client read %d of %d", e.sent, read, len(body))
	}
	if r.Fate() != stages.FateClose || !r.Aborted() {
		t.Errorf("fate %v, aborted %v; want close, aborted", r.Fate(), r.Aborted())
	}
}

// A completion source releases a Hold: the writer stops at the hold, the
// callback runs on the loop goroutine when the eventfd fires, and the rest
// of the response goes out from the same loop right after.
func TestCompletionSourceReleasesHold(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 0, 0)
	pre, post := pattern(9, 1000), pattern(10, 300000)
	r := h.response(fd)
	hold := stages.NewHold(r)

	efd := newEventfd(t)
	type seen struct {
		gid           uint64
		sent, unsent  int64
		releasedFirst bool
	}
	fired := make(chan seen, 4)
	id, err := h.l.AddSource(efd, func() {
		drainEventfd(efd)
		// Loop goroutine: the writer-owned fields may be read here.
		fired <- seen{gid: goid(), sent: r.BytesSent, unsent: r.Unsent(), releasedFirst: hold.Released()}
		hold.Release()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.l.RemoveSource(id)

	r.Append(heap(pre), stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap(post), eos)
	r.Done()
	if got := readN(t, client, len(pre)); !bytes.Equal(got, pre) {
		t.Fatal("bytes before the hold differ")
	}
	fireEventfd(t, efd)
	var s seen
	select {
	case s = <-fired:
	case <-time.After(waitLimit):
		t.Fatal("completion callback did not run")
	}
	if s.releasedFirst || s.sent != int64(len(pre)) || s.unsent != int64(len(post)) {
		t.Fatalf("when the completion fired: released %v, %d sent, %d unsent; want false, %d, %d",
			s.releasedFirst, s.sent, s.unsent, len(pre), len(post))
	}
	if got := readN(t, client, len(post)); !bytes.Equal(got, post) {
		t.Fatal("bytes after the hold differ")
	}
	e := h.log()
	h.waitRecycled(r)
	if e.err != nil || e.sent != int64(len(pre)+len(post)) {
		t.Errorf("logged %d bytes, err %v; want %d", e.sent, e.err, len(pre)+len(post))
	}
	if e.gid != s.gid {
		t.Errorf("callback ran on goroutine %d, the loop logs on %d", s.gid, e.gid)
	}
	if s.gid == goid() {
		t.Errorf("callback ran on the test goroutine")
	}
	if len(fired) != 0 {
		t.Errorf("callback ran %d extra times for one completion", len(fired))
	}
}

// RemoveSource stops callbacks, even for an fd that stays readable; ids
// of removed sources are refused, also once their slot is reused.
func TestRemoveSource(t *testing.T) {
	h := startLoop(t, Config{})
	a, b := newEventfd(t), newEventfd(t)
	var na, nb atomic.Int32
	gotB := make(chan struct{}, 4)
	ida, err := h.l.AddSource(a, func() { drainEventfd(a); na.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	idb, err := h.l.AddSource(b, func() { drainEventfd(b); nb.Add(1); gotB <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	fireEventfd(t, a)
	h.inLoop(func() {}) // a's event, level-triggered, is collected by now
	if na.Load() != 1 {
		t.Fatalf("source a ran %d times, want 1", na.Load())
	}
	if err := h.l.RemoveSource(ida); err != nil {
		t.Fatal(err)
	}
	// a stays readable (nobody drains it now); b's callback proves the loop
	// has waited since.
	fireEventfd(t, a)
	fireEventfd(t, b)
	select {
	case <-gotB:
	case <-time.After(waitLimit):
		t.Fatal("source b did not run")
	}
	h.inLoop(func() {})
	if n := na.Load(); n != 1 {
		t.Errorf("removed source ran again (%d calls)", n)
	}
	if err := h.l.RemoveSource(ida); err == nil {
		t.Error("second RemoveSource succeeded")
	}
	c := newEventfd(t)
	idc, err := h.l.AddSource(c, func() { drainEventfd(c) })
	if err != nil {
		t.Fatal(err)
	}
	if idc.idx != ida.idx {
		t.Logf("slot not reused (%d, %d)", idc.idx, ida.idx)
	}
	if err := h.l.RemoveSource(ida); err == nil {
		t.Error("RemoveSource of a stale id succeeded after its slot was reused")
	}
	for _, id := range []SourceID{idb, idc} {
		if err := h.l.RemoveSource(id); err != nil {
			t.Error(err)
		}
	}
	if _, err := h.l.AddSource(-1, func() {}); err == nil || !strings.Contains(err.Error(), "fd -1") {
		t.Errorf("AddSource(-1): %v, want an error naming the fd", err)
	}
}

// An EPOLLOUT collected for a response that has finished since, or for a
// slot that now holds another response, changes nothing.
func TestStaleEpolloutIgnored(t *testing.T) {
	h := startLoop(t, Config{WriteTimeout: waitLimit})
	// Response 1 parks on EPOLLOUT and times out (the test shortens the
	// timeout once it has seen the stall): its one-shot registration stays
	// armed with its token.
	fd1, client1 := tcpPair(t, 4096, 4096)
	r1 := h.response(fd1)
	r1.Append(append(split(pattern(11, 2<<20), 256<<10), eos)...)
	r1.Done()
	h.waitStalled(r1)
	var slot1 int32
	var gen1 uint32
	h.inLoop(func() {
		slot1, gen1 = int32(r1.Record()), h.l.records[r1.Record()].gen
		h.l.cfg.WriteTimeout = time.Nanosecond
	})
	e1 := h.log()
	h.waitRecycled(r1)
	if !errors.Is(e1.err, stages.ErrWriteTimeout) {
		t.Fatalf("response 1: %v, want write timeout", e1.err)
	}

	// Response 2 takes the same slot and parks too (with the write timeout
	// long again, so that only the test ends it); now the stale token
	// becomes deliverable because client 1 reads.
	h.inLoop(func() { h.l.cfg.WriteTimeout = waitLimit })
	fd2, client2 := tcpPair(t, 4096, 4096)
	body2 := pattern(12, 2<<20)
	r2 := h.response(fd2)
	r2.Append(split(body2, 256<<10)...) // no EOS yet
	h.waitStalled(r2)
	var slot2 int32
	var gen2 uint32
	h.inLoop(func() { slot2, gen2 = int32(r2.Record()), h.l.records[r2.Record()].gen })
	if slot2 != slot1 || gen2 == gen1 {
		t.Fatalf("response 2 in slot %d gen %d, response 1 was in slot %d gen %d: want the slot reused", slot2, gen2, slot1, gen1)
	}
	client1.SetReadDeadline(time.Now().Add(waitLimit))
	if got := readN(t, client1, int(e1.sent)); !bytes.Equal(got, pattern(11, 2<<20)[:e1.sent]) {
		t.Fatal("client 1 bytes differ")
	}
	// Deliver the stale token by hand too, and a few impossible ones.
	h.inLoop(func() {
		h.l.writable(poll.MakeToken(poll.KindConn, gen1, int(slot1)))
		h.l.writable(poll.MakeToken(poll.KindConn, gen2, len(h.l.records)+5))
		if !h.l.records[slot2].waiting || h.l.records[slot2].resp != r2 {
			t.Error("a stale EPOLLOUT token resumed the slot's new response")
		}
	})
	select {
	case e := <-h.logs:
		t.Fatalf("a response was logged after stale events: %+v", e)
	default:
	}
	// The genuine event still works: client 2 reads, response 2 completes.
	r2.Append(eos)
	r2.Done()
	if got := readN(t, client2, len(body2)); !bytes.Equal(got, body2) {
		t.Fatal("client 2 bytes differ")
	}
	if e := h.log(); e.resp != r2 || e.err != nil || e.sent != int64(len(body2)) {
		t.Errorf("response 2 logged %d bytes, err %v", e.sent, e.err)
	}
	h.waitRecycled(r2)
}

// Generations grow by two per response in a slot; the EPOLLOUT token must
// carry them without touching the bits that mark the waker and completion
// sources, or a busy slot's EPOLLOUT is mistaken for one of those after
// 2^29 responses and the response stalls until the write timeout.
func TestEpolloutTokenGenerationWraps(t *testing.T) {
	for _, gen := range []uint32{1<<30 - 1, 1<<31 - 1, 3<<30 - 1, 1<<32 - 1} {
		t.Run("", func(t *testing.T) {
			h := startLoopWith(t, Config{WriteTimeout: waitLimit}, func(l *Loop) {
				l.records = []record{{gen: gen}}
				l.free = []int32{0}
			})
			fd, client := tcpPair(t, 4096, 4096)
			body := pattern(13, 1<<20)
			r := h.response(fd)
			r.Append(heap(body), eos)
			r.Done()
			h.waitStalled(r)
			got := readN(t, client, len(body))
			if !bytes.Equal(got, body) {
				t.Fatal("bytes differ")
			}
			if e := h.log(); e.err != nil {
				t.Errorf("generation %#x: %v", gen+1, e.err)
			}
			h.waitRecycled(r)
		})
	}
}

// Many producers on many connections through a tiny queue: the overflow
// list takes what the ring cannot, and every connection gets its own bytes.
func TestManyConnectionsTinyQueue(t *testing.T) {
	h := startLoop(t, Config{QueueCapacity: 2})
	const conns, parts = 16, 20
	type conn struct {
		r    *stages.Response
		c    *net.TCPConn
		want []byte
	}
	cs := make([]conn, conns)
	for i := range cs {
		fd, client := tcpPair(t, 0, 0)
		cs[i] = conn{r: h.response(fd), c: client, want: pattern(uint64(100+i), parts*1000)}
	}
	for i := range cs {
		go func(c conn) {
			for p := 0; p < parts; p++ {
				c.r.Append(heap(c.want[p*1000 : (p+1)*1000]))
			}
			c.r.Append(eos)
			c.r.Done()
		}(cs[i])
	}
	for i := range cs {
		cs[i].c.SetReadDeadline(time.Now().Add(waitLimit))
		got := make([]byte, len(cs[i].want))
		if _, err := io.ReadFull(cs[i].c, got); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if !bytes.Equal(got, cs[i].want) {
			t.Fatalf("conn %d: bytes differ", i)
		}
	}
	for range cs {
		if e := h.log(); e.err != nil || e.sent != parts*1000 {
			t.Errorf("logged %d bytes, err %v", e.sent, e.err)
		}
		<-h.recycled
	}
}

// Run returns after Stop once nothing is in flight, waiting for a held
// response first, and leaves no fd or goroutine behind.
func TestRunStopReleasesEverything(t *testing.T) {
	for _, how := range []string{"Stop", "cancel"} {
		t.Run(how, func(t *testing.T) {
			fd, client := tcpPair(t, 0, 0)
			goroutines := runtime.NumGoroutine()
			fds := fdtest.Count(t)

			l, err := New(1, Config{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := fdtest.Count(t); got != fds+2 {
				t.Errorf("New opened %d fds, want 2 (epoll, eventfd)", got-fds)
			}
			// Stop is tried with a context that never ends: Run must not
			// leave anything waiting on it.
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if how == "cancel" {
				ctx, cancel = context.WithCancel(context.Background())
			}
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- l.Run(ctx) }()

			h := &harness{t: t, l: l, recycled: make(chan *stages.Response, 1)}
			r := h.response(fd)
			hold := stages.NewHold(r)
			r.Append(heap([]byte("before")), stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap([]byte("after")), eos)
			r.Done()
			readN(t, client, len("before"))
			if how == "Stop" {
				l.Stop()
			} else {
				cancel()
			}
			// The loop still runs (it serves a completion callback) because
			// the held response has not finished.
			h.inLoop(func() {})
			select {
			case err := <-runErr:
				t.Fatalf("Run returned (%v) with a held response in flight", err)
			default:
			}
			hold.Release()
			if got := readN(t, client, len("after")); string(got) != "after" {
				t.Fatalf("after the hold: %q", got)
			}
			select {
			case err := <-runErr:
				if err != nil && how == "Stop" {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(waitLimit):
				t.Fatal("Run did not return after its last response")
			}
			h.waitRecycled(r)
			if got := fdtest.Count(t); got != fds {
				t.Errorf("%d fds open after Run returned, %d before New", got, fds)
			}
			deadline := time.Now().Add(waitLimit)
			for runtime.NumGoroutine() > goroutines {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<16)
					t.Fatalf("%d goroutines after Run returned, %d before:\n%s",
						runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// A kicked response with one heap bucket and EOS over a socketpair, end to
// end through the loop: the writer's steady state allocates nothing.
func BenchmarkWriterSmallResponse(b *testing.B) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := unix.SetNonblock(fds[0], true); err != nil {
		b.Fatal(err)
	}
	l, err := New(0, Config{}, &stages.StageCounters{})
	if err != nil {
		b.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- l.Run(context.Background()) }()
	defer func() {
		l.Stop()
		if err := <-runErr; err != nil {
			b.Error(err)
		}
	}()
	done := make(chan struct{}, 1)
	r := stages.NewResponse(l.Kick, func(*stages.Response) { done <- struct{}{} })
	c := &stages.Conn{ID: 1, FD: fds[0]}
	msg := []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!")
	buf := make([]byte, len(msg))
	bs := []stages.Bucket{{Kind: stages.BucketHeap, Data: msg}, {Kind: stages.BucketEOS}}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		r.Begin(c, nil, time.Time{})
		r.KeepAlive = true
		if err := r.Append(bs...); err != nil {
			b.Fatal(err)
		}
		r.Done()
		<-done
		if n, err := unix.Read(fds[1], buf); err != nil || n != len(msg) {
			b.Fatalf("read %d, %v", n, err)
		}
	}
}

// A completion callback may start responses from inside the loop, more
// than its queue holds: Kick spills to the overflow list instead of
// blocking the loop on its own queue.
func TestKickFromCompletionCallback(t *testing.T) {
	h := startLoop(t, Config{QueueCapacity: 2})
	const n = 10
	type pair struct {
		r      *stages.Response
		client *net.TCPConn
		want   []byte
	}
	ps := make([]pair, n)
	for i := range ps {
		fd, client := tcpPair(t, 0, 0)
		ps[i] = pair{h.response(fd), client, pattern(uint64(200+i), 5000)}
	}
	h.inLoop(func() {
		for _, p := range ps {
			p.r.Append(heap(p.want), eos)
			p.r.Done()
		}
		if d := h.l.QueueDepth(); d < n {
			t.Errorf("queue depth %d inside the loop, want the %d kicked responses", d, n)
		}
	})
	for i, p := range ps {
		got := make([]byte, len(p.want))
		p.client.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := io.ReadFull(p.client, got); err != nil || !bytes.Equal(got, p.want) {
			t.Fatalf("response %d: %v", i, err)
		}
	}
	for range ps {
		h.log()
		<-h.recycled
	}
}

// A hold released while the bytes before it wait for EPOLLOUT: the
// response resumes when the socket drains, and passes the hold.
func TestHoldReleasedWhileWaiting(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 4096, 4096)
	pre, post := pattern(14, 2<<20), pattern(15, 1000)
	r := h.response(fd)
	hold := stages.NewHold(r)
	r.Append(heap(pre), stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap(post), eos)
	r.Done()
	h.waitStalled(r)
	hold.Release()
	got := readN(t, client, len(pre)+len(post))
	if !bytes.Equal(got[:len(pre)], pre) || !bytes.Equal(got[len(pre):], post) {
		t.Fatal("bytes differ")
	}
	if e := h.log(); e.err != nil || e.sent != int64(len(got)) {
		t.Errorf("logged %d bytes, err %v", e.sent, e.err)
	}
	h.waitRecycled(r)
}

// The write timeout applies to a response whose client does not read, not
// to one stopped at an unreleased hold: that wait is the module's, and its
// own completion (or error) ends it.
func TestExpireSparesHeldResponses(t *testing.T) {
	h := startLoop(t, Config{WriteTimeout: time.Minute})
	heldFD, heldClient := tcpPair(t, 0, 0)
	stuckFD, _ := tcpPair(t, 4096, 4096)
	held := h.response(heldFD)
	hold := stages.NewHold(held)
	held.Append(heap([]byte("head")), stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap([]byte("tail")), eos)
	held.Done()
	readN(t, heldClient, 4)
	stuck := h.response(stuckFD)
	stuck.Append(heap(pattern(16, 2<<20)), eos)
	stuck.Done()
	h.waitStalled(stuck)
	// An hour later, as far as expire can tell.
	h.inLoop(func() { h.l.expire(time.Now().Add(time.Hour)) })
	e := h.log()
	if e.resp != stuck || !errors.Is(e.err, stages.ErrWriteTimeout) {
		t.Fatalf("expired %p (%v), want the stuck response %p with a write timeout", e.resp, e.err, stuck)
	}
	h.waitRecycled(stuck)
	if held.Aborted() {
		t.Fatal("the held response was aborted by the write timeout")
	}
	hold.Release()
	if got := readN(t, heldClient, 4); string(got) != "tail" {
		t.Fatalf("after the hold: %q", got)
	}
	if e := h.log(); e.resp != held || e.err != nil || e.sent != 8 {
		t.Errorf("held response logged %d bytes, err %v", e.sent, e.err)
	}
	h.waitRecycled(held)
}

// The stage counters see every kick, every dequeue and each response's
// service time; kicks of a queued response coalesce.
func TestCounters(t *testing.T) {
	h := startLoop(t, Config{})
	wfd, rfd := seqpacketPair(t)
	const n = 5
	for i := 0; i < n; i++ {
		r := h.response(wfd)
		r.Append(heap([]byte("x")), eos)
		r.Done()
		h.log()
		h.waitRecycled(r)
	}
	records(t, rfd)
	var snap stages.StageSnapshot
	h.inLoop(func() { snap = h.l.counters.Snapshot("writer", h.l.QueueDepth(), h.l.QueueCap()) })
	// The probe's own completion source does not count.
	if snap.Enqueued != n || snap.Dequeued != n || snap.Count != n {
		t.Errorf("enqueued %d, dequeued %d, service times %d; want %d each", snap.Enqueued, snap.Dequeued, snap.Count, n)
	}
	if snap.QueueCap != 1024 || snap.QueueDepth != 0 {
		t.Errorf("queue %d/%d, want 0/1024", snap.QueueDepth, snap.QueueCap)
	}
}

// Stop racing with the loop's way into epoll_wait is never lost: Run
// returns every time.
func TestStopRace(t *testing.T) {
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	for i := 0; i < rounds; i++ {
		l, err := New(0, Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		runErr := make(chan error, 1)
		go func() { runErr <- l.Run(context.Background()) }()
		// Sweep the moment of Stop across the loop's first turn.
		for spin := 0; spin < i%512; spin++ {
			spinSink.Add(1)
		}
		l.Stop()
		select {
		case err := <-runErr:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("round %d: Run did not return after Stop", i)
		}
	}
}

var spinSink atomic.Int64

// Successive responses on one keep-alive connection each park on EPOLLOUT:
// the first arms a new registration, the later ones re-arm the one-shot
// registration the first left behind.
func TestEpolloutRearmOnKeepAlive(t *testing.T) {
	h := startLoop(t, Config{})
	fd, client := tcpPair(t, 4096, 4096)
	for i := 0; i < 3; i++ {
		body := pattern(uint64(300+i), 1<<20)
		r := h.response(fd)
		r.Append(heap(body), eos)
		r.Done()
		h.waitStalled(r)
		if got := readN(t, client, len(body)); !bytes.Equal(got, body) {
			t.Fatalf("response %d: bytes differ", i)
		}
		if e := h.log(); e.err != nil || e.sent != int64(len(body)) {
			t.Fatalf("response %d: logged %d bytes, err %v", i, e.sent, e.err)
		}
		h.waitRecycled(r)
		if r.Fate() != stages.FateKeepAlive {
			t.Fatalf("response %d: fate %v", i, r.Fate())
		}
	}
}

// A kick that arrives after its response has finished (Append's kick can
// trail the writer, which may already have taken the EOS that Append put
// in) finds nothing to write and must not start a record: an empty record
// would never finish, and Run would never return after Stop.
func TestLateKickAfterFinish(t *testing.T) {
	h := startLoop(t, Config{})
	wfd, rfd := seqpacketPair(t)
	r := h.response(wfd)
	r.Append(heap([]byte("done")), eos)
	h.log()
	r.Done()
	h.waitRecycled(r)
	records(t, rfd)
	h.l.Kick(r) // the trailing kick
	// Two turns: the first probe may run before the queue is drained.
	h.inLoop(func() {})
	h.inLoop(func() {
		if h.l.active != 0 {
			t.Errorf("%d records active after a late kick of a finished response", h.l.active)
		}
	})
}

// Init runs on the loop goroutine before anything else and may register
// completion sources; its error ends Run and still releases the loop's fds.
func TestInit(t *testing.T) {
	t.Run("registers a source", func(t *testing.T) {
		efd := newEventfd(t)
		ran := make(chan uint64, 2)
		var initGID atomic.Uint64
		startLoop(t, Config{Init: func(s Sources) error {
			initGID.Store(goid())
			_, err := s.AddSource(efd, func() { drainEventfd(efd); ran <- goid() })
			return err
		}})
		fireEventfd(t, efd)
		select {
		case gid := <-ran:
			if gid != initGID.Load() {
				t.Errorf("callback on goroutine %d, Init on %d", gid, initGID.Load())
			}
		case <-time.After(waitLimit):
			t.Fatal("source registered by Init never ran")
		}
	})
	t.Run("error", func(t *testing.T) {
		fds := fdtest.Count(t)
		boom := errors.New("boom")
		l, err := New(3, Config{Init: func(Sources) error { return boom }}, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = l.Run(context.Background())
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "writer 3") {
			t.Errorf("Run: %v, want the Init error naming writer 3", err)
		}
		if got := fdtest.Count(t); got != fds {
			t.Errorf("%d fds after Run, %d before New", got, fds)
		}
		l.Stop() // after Run: a no-op
	})
}

// A kick that trails the EOS (Append kicks after unlocking, so the loop may
// already have sent what it appended) must not let the response be
// recycled while its queue entry is still to be served: the producer's
// pool may Begin the response again at once, and the loop would then read
// and take from a response in someone else's hands.
func TestTrailingKickDelaysRecycle(t *testing.T) {
	var target atomic.Pointer[stages.Response]
	h := startLoopWith(t, Config{}, func(l *Loop) {
		log := l.cfg.Log
		l.cfg.Log = func(r *stages.Response) {
			if target.Load() == r {
				l.Kick(r) // after the EOS was taken, before the loop lets go
			}
			log(r)
		}
	})
	wfd, rfd := seqpacketPair(t)
	for i := 0; i < 50; i++ {
		r := h.response(wfd)
		target.Store(r)
		r.Append(heap([]byte("done")), eos)
		r.Done()
		h.log()
		h.waitRecycled(r)
		// Recycled: reuse it at once, as a pool may.
		target.Store(nil)
		r.Begin(&stages.Conn{ID: 1000 + uint64(i), FD: wfd}, nil, time.Now())
		r.KeepAlive = true
		r.Append(heap([]byte("next")), eos)
		r.Done()
		if e := h.log(); e.resp != r || e.sent != 4 || e.err != nil {
			t.Fatalf("round %d: second use logged %d bytes, %v", i, e.sent, e.err)
		}
		h.waitRecycled(r)
		recs := records(t, rfd)
		if len(recs) != 2 || string(recs[0]) != "done" || string(recs[1]) != "next" {
			t.Fatalf("round %d: records %q", i, recs)
		}
	}
	h.inLoop(func() {})
	h.inLoop(func() {
		if h.l.active != 0 {
			t.Errorf("%d records active at the end", h.l.active)
		}
	})
}
