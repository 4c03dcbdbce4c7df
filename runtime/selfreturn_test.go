package runtime

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A reader loop can be the last to let go of a response: one it served
// inline and wrote itself, or a refusal (a shed 503) whose writer was done
// before the loop let go. The connection's Return then comes from the
// loop's own goroutine, into its own queue, and must not wait for room
// that only this goroutine makes. With queues smaller than the
// connections (QueueCapacity also sizes the loops' queues), a burst of
// such responses wedged the loop: bench/reliability's TestOverload
// (--queue 32, 200 connections) left every connection unanswered once
// a full class queue refused, and the server never exited.
func TestLoopReturnsToItself(t *testing.T) {
	const conns = 128 // well above the queues' 8
	for _, tc := range []struct {
		name     string
		noInline bool
		shed     bool // admission refuses everything
		want     int
	}{
		{"served inline and written by the loop", false, false, http.StatusOK},
		{"shed by admission", true, true, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{Addr: "127.0.0.1:0", Readers: 1, Writers: 1, Processors: 1,
				QueueCapacity: 8, NoInline: tc.noInline, Handler: Builtin(nil)})
			if err != nil {
				t.Fatal(err)
			}
			s.tuner.period = time.Hour // nothing retunes the limits set below
			s.requests.SetWaitTarget(0)
			if tc.shed {
				s.requests.StartLimit(0, 1)
				for c := range s.requests.Classes() {
					s.requests.SetLimit(c, 0, 1)
				}
			}
			served := make(chan error, 1)
			go func() { served <- s.Serve(context.Background()) }()
			t.Cleanup(func() {
				// Shutdown too waits on the loops: a wedged one fails the
				// test here rather than hanging it.
				ctx, cancel := contextWithTimeout(10 * time.Second)
				defer cancel()
				go s.Shutdown(ctx)
				select {
				case err := <-served:
					if err != nil {
						t.Errorf("Serve: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Error("Serve did not return after Shutdown: a loop is wedged")
				}
			})

			cs := make([]net.Conn, conns)
			for i := range cs {
				c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				cs[i] = c
			}
			if !eventually(10*time.Second, func() bool { return s.Stats().Open == conns }) {
				t.Fatalf("%d of %d connections adopted", s.Stats().Open, conns)
			}
			// Every request at once, so that one turn of the loop finds
			// them all: more answers than its queue holds.
			for _, c := range cs {
				if _, err := c.Write([]byte("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
			}
			var mu sync.Mutex
			fails := map[string]int{}
			var wg sync.WaitGroup
			for _, c := range cs {
				wg.Go(func() {
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					what := ""
					switch {
					case err != nil:
						what = err.Error()
						if ne, ok := err.(net.Error); ok && ne.Timeout() {
							what = "no answer in 10 s"
						}
					case resp.StatusCode != tc.want:
						what = fmt.Sprintf("status %d", resp.StatusCode)
					}
					if what != "" {
						mu.Lock()
						fails[what]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(fails) > 0 {
				var b strings.Builder
				for what, n := range fails {
					fmt.Fprintf(&b, "; %d: %s", n, what)
				}
				t.Fatalf("of %d requests%s", conns, b.String())
			}
			// The connections are released once the clients go.
			for _, c := range cs {
				c.Close()
			}
			if !eventually(10*time.Second, func() bool { return s.Stats().Open == 0 }) {
				t.Errorf("%d connections still open after the clients closed", s.Stats().Open)
			}
		})
	}
}
