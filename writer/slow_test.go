//go:build linux

package writer

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/stages"
)

// trickle reads size bytes every interval from c until stop is closed,
// then reports how much it read.
func trickle(c net.Conn, size int, interval time.Duration, stop <-chan struct{}) <-chan int {
	read := make(chan int, 1)
	go func() {
		buf := make([]byte, size)
		total := 0
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				read <- total
				return
			case <-tick.C:
			}
			c.SetReadDeadline(time.Now().Add(waitLimit))
			n, err := c.Read(buf)
			total += n
			if err != nil {
				read <- total
				return
			}
		}
	}()
	return read
}

// bigSendBuffer gives the server side of a pair a send buffer of about a
// megabyte (the kernel caps it at wmem_max): a full buffer of that size
// signals writable only after a third of it has drained.
func bigSendBuffer(t *testing.T, fd int) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20); err != nil {
		t.Fatal(err)
	}
}

// stalledResponse starts a response of size pattern bytes (and EOS) to a
// client with a small receive buffer, behind a large send buffer, and
// waits until the loop is blocked on the client.
func stalledResponse(t *testing.T, h *harness, size int) (*stages.Response, *net.TCPConn, []byte) {
	t.Helper()
	fd, client := tcpPair(t, 0, 4096)
	bigSendBuffer(t, fd)
	body := pattern(uint64(size), size)
	r := h.response(fd)
	r.Append(append(split(body, 256<<10), eos)...)
	r.Done()
	h.waitStalled(r)
	return r, client, body
}

// A client that reads steadily but slowly behind a large send buffer
// takes bytes for seconds without the socket ever turning writable; the
// writer sees that progress in the socket's send queue, and the write
// timeout (which is about a client that takes nothing) leaves it alone.
func TestWriteTimeoutCountsWhatTheClientTakes(t *testing.T) {
	const timeout = time.Second
	h := startLoop(t, Config{WriteTimeout: timeout, MinRate: -1})
	r, client, body := stalledResponse(t, h, 16<<20)
	// 40 KB/s: even the smallest send buffer the kernel allows here
	// (2 × 212992 bytes) needs 3.5 s of it to turn writable.
	stop := make(chan struct{})
	read := trickle(client, 1024, 25*time.Millisecond, stop)
	time.Sleep(4 * timeout)
	close(stop)
	got := <-read
	if r.Aborted() {
		t.Fatalf("a client reading %d bytes in %v was cut off by the %v write timeout: %v", got, 4*timeout, timeout, r.WriteErr)
	}
	rest := readN(t, client, len(body)-got)
	if e := h.log(); e.err != nil || e.sent != int64(len(body)) || string(rest[len(rest)-16:]) != string(body[len(body)-16:]) {
		t.Fatalf("logged %d bytes, err %v; want all %d", e.sent, e.err, len(body))
	}
	h.waitRecycled(r)
}

// The minimum rate: a client that takes less than MinRate per grace
// window is cut off with ErrTooSlow and a reset, although it never stops
// reading altogether (so the write timeout alone would keep it forever);
// a client above the rate is left alone.
func TestMinRate(t *testing.T) {
	const grace = 500 * time.Millisecond
	for _, tc := range []struct {
		name     string
		chunk    int           // the client reads this much...
		every    time.Duration // ...this often
		wantSlow bool
	}{
		{"trickle below the rate", 256, 50 * time.Millisecond, true},     // 5 KB/s
		{"steady above the rate", 8 << 10, 25 * time.Millisecond, false}, // 320 KB/s
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startLoop(t, Config{WriteTimeout: time.Minute, MinRate: 50_000, MinRateGrace: grace})
			r, client, _ := stalledResponse(t, h, 64<<20)
			stop := make(chan struct{})
			read := trickle(client, tc.chunk, tc.every, stop)
			if !tc.wantSlow {
				time.Sleep(8 * grace)
				close(stop)
				<-read
				if r.Aborted() {
					t.Fatalf("a client above the minimum rate was cut off: %v", r.WriteErr)
				}
				// End the response: the client goes away with unread data.
				client.Close()
				if e := h.log(); e.err == nil || errors.Is(e.err, ErrTooSlow) {
					t.Fatalf("after the client left: %v", e.err)
				}
				h.waitRecycled(r)
				return
			}
			defer func() { close(stop); <-read }()
			e := h.log()
			if !errors.Is(e.err, ErrTooSlow) {
				t.Fatalf("logged err %v, want ErrTooSlow", e.err)
			}
			h.waitRecycled(r)
			if r.Fate() != stages.FateReset {
				t.Errorf("fate %v, want reset", r.Fate())
			}
			if n := h.l.TooSlow(); n != 1 {
				t.Errorf("TooSlow() = %d, want 1", n)
			}
		})
	}
}

// After a burst of responses, the record table gives its memory back:
// trim cuts it to just past the highest record in use.
func TestTrimGivesBurstRecordsBack(t *testing.T) {
	h := startLoop(t, Config{})
	wfd, rfd := seqpacketPair(t)
	const burst = 1000
	var held []*stages.Response
	var holds []*stages.Hold
	for i := 0; i < burst; i++ {
		r := h.response(wfd)
		hold := stages.NewHold(r)
		r.Append(stages.Bucket{Kind: stages.BucketHold, Hold: hold}, heap([]byte("x")), eos)
		r.Done()
		held, holds = append(held, r), append(holds, hold)
	}
	// Keep the first response open: its record stays, and so does the
	// table up to it.
	grown := 0
	for deadline := time.Now().Add(waitLimit); grown < burst && time.Now().Before(deadline); {
		h.inLoop(func() { grown = h.l.active })
	}
	h.inLoop(func() { grown = len(h.l.records) })
	if grown < burst {
		for _, hold := range holds {
			hold.Release()
		}
		t.Fatalf("table has %d records with %d responses held", grown, burst)
	}
	for i := 1; i < burst; i++ {
		holds[i].Release()
		h.log()
		h.waitRecycled(held[i])
		if i%50 == 0 {
			records(t, rfd)
		}
	}
	records(t, rfd)
	var after int
	h.inLoop(func() {
		h.l.trim(time.Now().Add(time.Hour))
		after = len(h.l.records)
	})
	if after > minTrimRecords {
		t.Errorf("after the burst the table still has %d records (grown to %d), want at most %d", after, grown, minTrimRecords)
	}
	// The response still held survives the trim and finishes.
	holds[0].Release()
	if e := h.log(); e.resp != held[0] || e.err != nil {
		t.Fatalf("the held response: %v", e.err)
	}
	h.waitRecycled(held[0])
	records(t, rfd)
}
