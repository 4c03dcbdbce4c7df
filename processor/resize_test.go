package processor

import (
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// concurrency counts handlers running at once and remembers the most.
type concurrency struct{ now, most atomic.Int64 }

func (c *concurrency) enter() {
	n := c.now.Add(1)
	for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
	}
}

func (c *concurrency) leave() { c.now.Add(-1) }

// New places are filled only when there is work for them, and then run
// handlers at once; a pool that grew while idle starts no goroutine.
func TestGrowingAddsPlacesForQueuedWork(t *testing.T) {
	release := make(chan struct{}, 1)
	var c concurrency
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		c.enter()
		defer c.leave()
		<-release
		w.WriteString("ok")
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	hs.push(newRequest("GET", "/", 1, ""))
	release <- struct{}{}
	hs.result() // the pool runs: SetPlaces resizes it rather than setting how many Run starts
	if n, err := hs.pool.SetPlaces(6); n != 6 || err != nil {
		t.Fatalf("SetPlaces(6) = %d, %v", n, err)
	}
	if g := hs.pool.Goroutines(); g != 1 {
		t.Errorf("an idle pool grown to 6 places runs %d goroutines, want 1 (new places wait for work)", g)
	}
	for range 6 {
		hs.push(newRequest("GET", "/", 1, ""))
	}
	waitFor(t, "six handlers running", func() bool { return c.now.Load() == 6 })
	for range 6 {
		release <- struct{}{}
	}
	for range 6 {
		hs.result()
	}
	if want, have := hs.pool.Places(); want != 6 || have != 6 {
		t.Errorf("Places() = %d, %d; want 6, 6", want, have)
	}
}

// Retiring places lets every running handler finish, then runs no more
// handlers at once than the new number of places, and its goroutines exit.
func TestShrinkingFinishesRunningHandlers(t *testing.T) {
	release := make(chan struct{}, 64)
	var c concurrency
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		c.enter()
		defer c.leave()
		<-release
		w.Write(r.Target)
	})
	hs := newHarness(t, Config{Workers: 4}, h, writerOpts{})
	for i := range 4 {
		hs.push(newRequest("GET", fmt.Sprint("/first", i), 1, ""))
	}
	waitFor(t, "four handlers running", func() bool { return c.now.Load() == 4 })
	base := runtime.NumGoroutine()
	hs.pool.SetPlaces(1)
	for i := range 4 {
		hs.push(newRequest("GET", fmt.Sprint("/then", i), 1, ""))
	}
	c.most.Store(0)
	for range 8 {
		release <- struct{}{}
	}
	got := map[string]bool{}
	for range 8 {
		got[string(parse(t, hs.result(), "GET").body)] = true
	}
	if len(got) != 8 {
		t.Errorf("got %d distinct answers, want 8: %v", len(got), got)
	}
	// Once the four running at the resize were done, one at a time.
	if m := c.most.Load(); m > 4 {
		t.Errorf("%d handlers ran at once", m)
	}
	waitFor(t, "the retired places' goroutines to exit", func() bool {
		return hs.pool.Goroutines() == 1 && runtime.NumGoroutine() <= base-3
	}, func() string {
		want, have := hs.pool.Places()
		return fmt.Sprintf("places %d/%d, pool goroutines %d, goroutines %d (from %d)", want, have, hs.pool.Goroutines(), runtime.NumGoroutine(), base)
	})
	if want, have := hs.pool.Places(); want != 1 || have != 1 {
		t.Errorf("Places() = %d, %d; want 1, 1", want, have)
	}
	c.most.Store(0)
	for i := range 3 {
		hs.push(newRequest("GET", fmt.Sprint("/last", i), 1, ""))
	}
	for range 3 {
		release <- struct{}{}
	}
	for range 3 {
		hs.result()
	}
	if m := c.most.Load(); m != 1 {
		t.Errorf("%d handlers ran at once with one place", m)
	}
}

// A goroutine that gave its place to a resumer waits as a spare; a spare
// idle longer than RetireSpares' period exits, and one that is not stays.
func TestIdleSparesRetire(t *testing.T) {
	body := newClientBody()
	release := make(chan struct{})
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		if string(r.Path) == "/upload" {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
			return
		}
		<-release
		w.WriteString("busy done")
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	hs.push(streamed("/upload", body, 4))
	waitFor(t, "the upload parked", func() bool { return hs.pool.Parked() == 1 })
	hs.push(newRequest("GET", "/busy", 1, ""))
	waitFor(t, "the busy handler running", func() bool { return hs.pool.Busy() == 1 })
	body.data <- []byte("data")
	close(body.data)
	waitFor(t, "the upload waiting for a place", func() bool { return hs.pool.book.waiting.Load() == 1 })
	close(release) // the busy handler's goroutine hands its place to the upload and becomes a spare
	hs.result()
	hs.result()
	waitFor(t, "a spare", func() bool { return hs.pool.Goroutines() == 2 })
	if n := hs.pool.RetireSpares(time.Hour); n != 0 {
		t.Errorf("RetireSpares(1h) retired %d spares that waited less", n)
	}
	base := runtime.NumGoroutine()
	time.Sleep(20 * time.Millisecond)
	if n := hs.pool.RetireSpares(10 * time.Millisecond); n != 1 {
		t.Fatalf("RetireSpares(10ms) retired %d spares, want 1", n)
	}
	waitFor(t, "the spare's goroutine to exit", func() bool {
		return hs.pool.Goroutines() == 1 && runtime.NumGoroutine() <= base-1
	})
	if d := hs.do(newRequest("GET", "/upload", 1, "")); len(d.raw) == 0 {
		t.Errorf("the pool answered nothing after retiring its spare")
	}
}

// Requests keep flowing while the number of places changes every few
// milliseconds between 1 and 16, with handlers that sleep and handlers
// that park on their client: every request is answered, the pool never
// runs more handlers than the most places it had, and it ends with no
// more goroutines than places.
func TestResizingUnderLoad(t *testing.T) {
	const requests = 3000
	var c concurrency
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		c.enter()
		defer c.leave()
		if r.Query != nil {
			time.Sleep(200 * time.Microsecond)
		}
		w.Write(r.Target)
	})
	hs := newHarness(t, Config{Workers: 4}, h, writerOpts{})
	stop := make(chan struct{})
	var resizer sync.WaitGroup
	resizer.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			hs.pool.SetPlaces(1 + rng.IntN(16))
		}
	})
	answered := make(map[string]bool, requests)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range requests {
			res := hs.result()
			answered[string(parse(t, res, "GET").body)] = true
		}
	}()
	for i := range requests {
		target := fmt.Sprint("/r", i)
		if i%3 == 0 {
			target += "?sleep"
		}
		req := newRequest("GET", target, 1, "")
		for !hs.in.Push(req) {
			time.Sleep(50 * time.Microsecond)
		}
		hs.pool.Wake()
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("answered %d of %d requests", len(answered), requests)
	}
	close(stop)
	resizer.Wait()
	if len(answered) != requests {
		t.Errorf("answered %d distinct requests of %d", len(answered), requests)
	}
	if m := c.most.Load(); m > 16 {
		t.Errorf("%d handlers ran at once with at most 16 places", m)
	}
	hs.pool.SetPlaces(3)
	waitFor(t, "three places and no more goroutines", func() bool {
		want, have := hs.pool.Places()
		return want == 3 && have == 3 && hs.pool.Goroutines() <= 3
	})
}
