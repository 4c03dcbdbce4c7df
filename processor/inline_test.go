package processor

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// A handler served inline runs on an event loop, which must never wait on
// a client: with a client that reads nothing, its writes past the
// high-water mark and its WaitSent return at once (ErrWouldBlock), where a
// worker would wait for the client.
func TestInlineNeverWaitsOnTheClient(t *testing.T) {
	const high = 64 << 10
	waitErr := make(chan error, 1)
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		w.Write(bytes.Repeat([]byte("x"), 4*high))
		waitErr <- w.WaitSent()
	})
	hs := newHarness(t, Config{HighWater: high}, h, writerOpts{stall: true})
	in := hs.pool.NewInline(0)
	served := make(chan struct{})
	go func() {
		in.Serve(newRequest("GET", "/", 1, "")).ResumeKicks()
		close(served)
	}()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("inline Serve waited on a client that reads nothing")
	}
	if err := <-waitErr; !errors.Is(err, ErrWouldBlock) {
		t.Errorf("WaitSent inline: %v, want ErrWouldBlock", err)
	}
	if got := hs.fw.maxUnsent.Load(); got < 4*high {
		t.Errorf("%d bytes queued at most, want the whole %d-byte body", got, 4*high)
	}
	if in.Served() != 1 || hs.counters.Dequeued.Load() != 0 {
		t.Errorf("Served %d, stage Dequeued %d; want 1, 0 (Stats adds Served)", in.Served(), hs.counters.Dequeued.Load())
	}
	if hs.pool.Busy() != 0 {
		t.Errorf("Busy %d after an inline request: it holds no place", hs.pool.Busy())
	}
}
