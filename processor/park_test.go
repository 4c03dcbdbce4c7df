package processor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/stages"
)

// clientBody is a request body whose bytes arrive when the test sends
// them, as the reader's streaming pipe does: a Read with nothing buffered
// waits, telling its Parker.
type clientBody struct {
	data chan []byte // closed: EOF
	err  error       // returned after data closes, instead of EOF, if set
	buf  []byte
}

func newClientBody() *clientBody { return &clientBody{data: make(chan []byte, 16)} }

func (b *clientBody) Read(p []byte) (int, error) { return b.ReadParking(p, nil) }

func (b *clientBody) ReadParking(p []byte, pk stages.Parker) (int, error) {
	if len(b.buf) == 0 {
		var chunk []byte
		var ok bool
		select {
		case chunk, ok = <-b.data:
		default:
			if pk != nil {
				pk.Park()
			}
			chunk, ok = <-b.data
			if pk != nil {
				pk.Unpark()
			}
		}
		if !ok {
			if b.err != nil {
				return 0, b.err
			}
			return 0, io.EOF
		}
		b.buf = chunk
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// streamed is a POST whose body comes from b, with a declared length.
func streamed(target string, b *clientBody, length int) *stages.Request {
	r := newRequest("POST", target, 1, "")
	r.ContentLength = int64(length)
	r.Body = b
	return r
}

// statusErr is a body error that carries its status, as the reader's do.
type statusErr int

func (e statusErr) Error() string   { return "body failed with " + http.StatusText(int(e)) }
func (e statusErr) HTTPStatus() int { return int(e) }

// Handlers waiting on their client give their places back: with every
// place taken by a parked handler, other requests still run, and the
// parked ones finish once their clients catch up.
func TestParkedHandlersFreeTheirPlaces(t *testing.T) {
	const workers = 2
	for _, tc := range []struct {
		name string
		// slow returns a request whose handler will wait on its client,
		// and a function that lets the client catch up.
		slow func(unstall chan struct{}) (*stages.Request, func())
	}{
		{"back-pressure: the client does not read", func(unstall chan struct{}) (*stages.Request, func()) {
			return newRequest("GET", "/big", 1, ""), func() {}
		}},
		{"request body: the client does not send", func(chan struct{}) (*stages.Request, func()) {
			b := newClientBody()
			return streamed("/upload", b, 5), func() { b.data <- []byte("hello"); close(b.data) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unstall := make(chan struct{})
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				switch string(r.Path) {
				case "/big":
					big := bytes.Repeat([]byte("x"), 64<<10)
					for i := 0; i < 32; i++ { // 2 MiB: far past the high-water mark
						if _, err := w.Write(big); err != nil {
							return
						}
					}
				case "/upload":
					body, err := io.ReadAll(r.Body)
					if err != nil {
						return
					}
					w.Write(body)
				default:
					hello(w, r)
				}
			})
			hs := newHarness(t, Config{Workers: workers, HighWater: 256 << 10},
				h, writerOpts{stallTarget: "/big", unstall: unstall})
			var catchUp []func()
			for range workers {
				req, f := tc.slow(unstall)
				hs.push(req)
				catchUp = append(catchUp, f)
			}
			waitFor(t, "both handlers parked", func() bool { return hs.pool.Parked() == workers })
			if b := hs.pool.Busy(); b != 0 {
				t.Errorf("Busy %d with every handler parked, want 0", b)
			}
			for range 3 {
				if p := parse(t, hs.do(newRequest("GET", "/hello", 1, "")), "GET"); string(p.body) != "Hello, World!" {
					t.Fatalf("with the places parked: %d %q", p.resp.StatusCode, p.body)
				}
			}
			close(unstall)
			for _, f := range catchUp {
				f()
			}
			for range workers {
				if res := hs.result(); res.status != 200 {
					t.Errorf("a parked handler's response: status %d", res.status)
				}
			}
			waitFor(t, "no handler parked", func() bool { return hs.pool.Parked() == 0 && hs.pool.Busy() == 0 })
			if n := hs.pool.ParkRefused(); n != 0 {
				t.Errorf("%d parks refused", n)
			}
		})
	}
}

// A parked handler whose client has caught up takes a place again before
// it goes on: never more than Workers handlers run at once.
func TestUnparkedHandlerWaitsForAPlace(t *testing.T) {
	body := newClientBody()
	release := make(chan struct{})
	var running, most atomic.Int64
	enter := func() {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
	}
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		enter()
		defer running.Add(-1)
		if string(r.Path) == "/upload" {
			running.Add(-1) // waiting on the client is not running
			b, err := io.ReadAll(r.Body)
			enter()
			if err != nil {
				return
			}
			w.Write(b)
			return
		}
		<-release // a handler busy with its own work
		w.WriteString("busy done")
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	hs.push(streamed("/upload", body, 4))
	waitFor(t, "the upload parked", func() bool { return hs.pool.Parked() == 1 })
	hs.push(newRequest("GET", "/busy", 1, ""))
	waitFor(t, "the busy handler running", func() bool { return hs.pool.Busy() == 1 })
	body.data <- []byte("data")
	close(body.data)
	// The upload's client has caught up, but the only place is taken.
	select {
	case res := <-hs.fw.results:
		t.Fatalf("a response (%q) before the busy handler let its place go", res.raw)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if p := parse(t, hs.result(), "GET"); string(p.body) != "busy done" {
		t.Fatalf("first response %q, want the busy handler's", p.body)
	}
	if p := parse(t, hs.result(), "POST"); string(p.body) != "data" {
		t.Fatalf("second response %q, want the upload's", p.body)
	}
	if m := most.Load(); m != 1 {
		t.Errorf("%d handlers ran at once with one place", m)
	}
}

// Beyond MaxParked a handler waits on its client holding its place, and
// the refusal is counted.
func TestMaxParkedBoundsParking(t *testing.T) {
	bodies := []*clientBody{newClientBody(), newClientBody()}
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		if r.HasBody() {
			io.Copy(io.Discard, r.Body)
		}
		hello(w, r)
	})
	hs := newHarness(t, Config{Workers: 2, MaxParked: 1}, h, writerOpts{})
	hs.push(streamed("/a", bodies[0], 1))
	hs.push(streamed("/b", bodies[1], 1))
	waitFor(t, "one parked, one refused", func() bool {
		return hs.pool.Parked() == 1 && hs.pool.ParkRefused() >= 1 && hs.pool.Busy() == 1
	})
	// One place is free (the parked handler's): /hello still runs.
	parse(t, hs.do(newRequest("GET", "/hello", 1, "")), "GET")
	for _, b := range bodies {
		b.data <- []byte("x")
		close(b.data)
	}
	hs.result()
	hs.result()
}

// A handler that returns (or aborts) after its request body failed,
// without having committed a response, answers the body's own status; one
// that committed, or chose an error status itself, keeps what it did.
func TestBodyErrorAnswersItsStatus(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		handler   func(w *ResponseWriter, r *stages.Request)
		want      int
		committed bool // the handler had committed before the error
	}{
		{"echo that returns: 408", statusErr(408), echoUntilError(false), 408, false},
		{"echo that aborts: 408", statusErr(408), echoUntilError(true), 408, false},
		{"too large: 413", statusErr(413), echoUntilError(false), 413, false},
		{"an error without a status: 400", io.ErrUnexpectedEOF, echoUntilError(false), 400, false},
		{"the handler's own error status stays", statusErr(408), func(w *ResponseWriter, r *stages.Request) {
			if _, err := io.ReadAll(r.Body); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}, 503, false},
		{"committed before the error: cut short", statusErr(408), func(w *ResponseWriter, r *stages.Request) {
			w.Header().Set("Content-Length", "10")
			w.WriteString("12345")
			w.Flush()
			io.ReadAll(r.Body)
		}, 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var committed atomic.Bool
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				tc.handler(w, r)
				committed.Store(w.Committed())
			})
			hs := newHarness(t, Config{}, h, writerOpts{})
			b := newClientBody()
			b.err = tc.err
			b.data <- []byte("some body bytes")
			close(b.data)
			res := hs.do(streamed("/echo", b, 1000))
			if res.status != tc.want {
				t.Fatalf("status %d, want %d\nraw %q", res.status, tc.want, res.raw)
			}
			if res.keepAlive {
				t.Errorf("keep-alive after a failed body")
			}
			if committed.Load() != tc.committed {
				t.Errorf("Committed() = %v when the handler returned, want %v", committed.Load(), tc.committed)
			}
			if !tc.committed {
				p := parse(t, res, "POST")
				if !p.resp.Close {
					t.Errorf("no Connection: close on the %d", tc.want)
				}
			}
		})
	}
}

// echoUntilError copies the body into the response until the body fails,
// then returns, or aborts as net/http handlers do.
func echoUntilError(abort bool) func(w *ResponseWriter, r *stages.Request) {
	return func(w *ResponseWriter, r *stages.Request) {
		if _, err := io.Copy(w, r.Body); err != nil && abort {
			panic(http.ErrAbortHandler)
		}
	}
}

// Committed says whether the final header block is in the stream: not
// while the body is buffered, yes after Flush or past the buffer.
func TestCommitted(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(w *ResponseWriter)
		want bool
	}{
		{"nothing written", func(w *ResponseWriter) {}, false},
		{"status only", func(w *ResponseWriter) { w.WriteHeader(201) }, false},
		{"a small body", func(w *ResponseWriter) { w.WriteString("small") }, false},
		{"flushed", func(w *ResponseWriter) { w.WriteString("x"); w.Flush() }, true},
		{"past the buffer", func(w *ResponseWriter) { w.Write(make([]byte, maxBuffered+1)) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got, before atomic.Bool
			h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
				before.Store(w.Committed())
				tc.do(w)
				got.Store(w.Committed())
			})
			hs := newHarness(t, Config{}, h, writerOpts{})
			hs.do(newRequest("GET", "/", 1, ""))
			if before.Load() || got.Load() != tc.want {
				t.Errorf("Committed: %v before, %v after; want false, %v", before.Load(), got.Load(), tc.want)
			}
		})
	}
}

// A request whose client hung up before it started is dropped: no
// handler runs, nothing reaches the writer, the response is recycled at
// once with the connection closed, and the stage counts it.
func TestGoneClientsRequestIsDropped(t *testing.T) {
	var ran atomic.Int64
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) { ran.Add(1); hello(w, r) })
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	req := newRequest("GET", "/hello", 1, "")
	req.Conn.HangUp()
	hs.push(req)
	waitFor(t, "the request dropped", func() bool { return hs.counters.Dropped.Load() == 1 && hs.recycled.Load() == 1 })
	// The pool goes on with the next request.
	parse(t, hs.do(newRequest("GET", "/hello", 1, "")), "GET")
	if n := ran.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (only for the live client)", n)
	}
	if n := hs.counters.Dequeued.Load(); n != 2 {
		t.Errorf("dequeued %d, want 2", n)
	}
}

// The phase a request's connection reports follows its handler: running,
// parked while it waits on the client, running again, writing once it
// returned.
func TestPhases(t *testing.T) {
	body := newClientBody()
	phases := make(chan stages.Phase, 4)
	h := HandlerFunc(func(w *ResponseWriter, r *stages.Request) {
		phases <- r.Conn.Phase()
		io.ReadAll(r.Body)
		phases <- r.Conn.Phase()
		w.WriteString("ok")
	})
	hs := newHarness(t, Config{Workers: 1}, h, writerOpts{})
	req := streamed("/", body, 2)
	req.Conn.SetPhase(stages.PhaseQueued)
	hs.push(req)
	if ph := <-phases; ph != stages.PhaseRunning {
		t.Errorf("in the handler: %v", ph)
	}
	waitFor(t, "parked", func() bool { return req.Conn.Phase() == stages.PhaseParked })
	body.data <- []byte("ok")
	close(body.data)
	if ph := <-phases; ph != stages.PhaseRunning {
		t.Errorf("after the wait: %v", ph)
	}
	hs.result()
	// The writer may see the response's end before the worker, which sets
	// the phase after the end and before it lets go of the response
	// (pool.go: the connection cannot go back to its reader before that).
	waitFor(t, "writing after the handler", func() bool { return req.Conn.Phase() == stages.PhaseWriting },
		func() string { return req.Conn.Phase().String() })
}

// Adapt: the request's context is cancelled when the client hangs up, as
// under net/http, so a handler waiting on it stops at once.
func TestAdaptContextCancelledWhenClientGoes(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	h := Adapt(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(30 * time.Second):
			ended <- errors.New("the context outlived its client by 30 s")
		}
	}))
	hs := newHarness(t, Config{}, h, writerOpts{})
	req := newRequest("GET", "/wait", 1, "")
	hs.push(req)
	<-started
	req.Conn.HangUp()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context was not cancelled when its client hung up")
	}
	hs.result()
}

func waitFor(t *testing.T, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, s := range state {
				what += "; " + s()
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
