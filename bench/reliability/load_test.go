//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// validTraffic is well-behaved clients running beside a trial's abuse:
// keep-alive connections that ask for /hello, echo a body and fetch
// /bytes, checking every answer. The trial asserts that all of them were
// served.
type validTraffic struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	ok     atomic.Int64
	failed atomic.Int64
	// refused counts 503s with Retry-After: admission control's answer
	// when a request's class queues too long (the trial's stalled
	// /bytes responses share the valid /bytes requests' class). Not a
	// failure, if few; the client waits a moment and goes on.
	refused atomic.Int64

	mu       sync.Mutex
	firstErr string
}

func startValidTraffic(addr string, clients int) *validTraffic {
	v := &validTraffic{stop: make(chan struct{})}
	for i := range clients {
		v.wg.Add(1)
		go v.client(addr, uint64(i))
	}
	return v
}

func (v *validTraffic) client(addr string, seed uint64) {
	defer v.wg.Done()
	rng := rand.New(rand.NewPCG(seed, 16))
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-v.stop:
			return
		default:
		}
		if c == nil {
			var err error
			if c, err = net.DialTimeout("tcp", addr, 10*time.Second); err != nil {
				v.fail(err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			br = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if err := exchangeChecked(c, br, i%3, rng); errors.Is(err, errRefused) {
			v.refused.Add(1)
			time.Sleep(100 * time.Millisecond)
			continue
		} else if err != nil {
			v.fail(err)
			c.Close()
			c = nil
			continue
		}
		v.ok.Add(1)
	}
}

// exchangeChecked sends one request of the given kind and checks the
// whole answer: 0 GET /hello, 1 POST /echo of random bytes, 2 GET /bytes.
func exchangeChecked(c net.Conn, br *bufio.Reader, kind int, rng *rand.Rand) error {
	switch kind {
	case 0:
		resp, body, err := roundTrip(c, br, "GET /hello HTTP/1.1\r\nHost: valid\r\n\r\n")
		if err == nil {
			err = refusal(resp)
		}
		if err != nil {
			return fmt.Errorf("GET /hello: %w", err)
		}
		if resp.StatusCode != 200 || string(body) != "Hello, World!" {
			return fmt.Errorf("GET /hello: %d %q", resp.StatusCode, body)
		}
	case 1:
		payload := make([]byte, 1+rng.IntN(8<<10))
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		resp, body, err := roundTrip(c, br, "POST /echo HTTP/1.1\r\nHost: valid\r\nContent-Length: "+strconv.Itoa(len(payload))+"\r\n\r\n"+string(payload))
		if err == nil {
			err = refusal(resp)
		}
		if err != nil {
			return fmt.Errorf("POST /echo: %w", err)
		}
		if resp.StatusCode != 200 || !bytes.Equal(body, payload) {
			return fmt.Errorf("POST /echo: %d, %d bytes back for %d", resp.StatusCode, len(body), len(payload))
		}
	default:
		n := rng.IntN(256 << 10)
		resp, body, err := roundTrip(c, br, "GET /bytes?n="+strconv.Itoa(n)+" HTTP/1.1\r\nHost: valid\r\n\r\n")
		if err == nil {
			err = refusal(resp)
		}
		if err != nil {
			return fmt.Errorf("GET /bytes?n=%d: %w", n, err)
		}
		if resp.StatusCode != 200 || len(body) != n {
			return fmt.Errorf("GET /bytes?n=%d: %d with %d bytes", n, resp.StatusCode, len(body))
		}
	}
	return nil
}

// errRefused: admission control answered 503 with Retry-After.
var errRefused = errors.New("refused by admission control (503, Retry-After)")

// refusal is errRefused for admission control's answer: a correct one from
// a server whose queue-wait target a loaded machine (the race detector, a
// VM beside the tests) can pass, which a client retries.
func refusal(resp *http.Response) error {
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
		return errRefused
	}
	return nil
}

func (v *validTraffic) fail(err error) {
	v.failed.Add(1)
	v.mu.Lock()
	if v.firstErr == "" {
		v.firstErr = err.Error()
	}
	v.mu.Unlock()
}

// finish stops the clients and checks that every request was served.
func (v *validTraffic) finish(t *testing.T) {
	t.Helper()
	close(v.stop)
	v.wg.Wait()
	t.Logf("valid traffic beside the trial: %d requests served, %d refused with 503, %d failed", v.ok.Load(), v.refused.Load(), v.failed.Load())
	if v.failed.Load() > 0 {
		t.Errorf("%d valid requests failed; first: %s", v.failed.Load(), v.firstErr)
	}
	if r := v.refused.Load(); r > v.ok.Load()/20 {
		t.Errorf("%d valid requests refused for %d served: more than 5%%", r, v.ok.Load())
	}
	if v.ok.Load() == 0 {
		t.Errorf("no valid request was served")
	}
}

// TestOverload: many more blocking requests than processors, and more
// connections than the hand-off queues hold. Nothing may be dropped: every
// request is answered, and /hello (which queues behind the sleepers)
// within a generous bound. With admission control off, the queues push
// back: a full class queue stops the reader reading the connection, and
// every request is served in turn. With it on (the default), a full class
// queue refuses: what finds it full is answered with 503 and a
// Retry-After, and those 503s come from the reader loop, which must not
// wedge on the connections it gives back to itself (the hang that
// reverted 0ce8393 until the reader's send stopped waiting on itself).
func TestOverload(t *testing.T) {
	const (
		clients = 200
		sleep   = 20 * time.Millisecond
		hold    = 5 * time.Second
	)
	for _, tc := range []struct {
		name  string
		flags []string
		shed  bool // 503 with a Retry-After is an answer
	}{
		{"admission off: back-pressure", []string{"--queue", "32", "--queue-wait-target", "0"}, false},
		{"admission on: a full queue refuses", []string{"--queue", "32"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.flags...)
			tr := s.beginTrial(t, 10*time.Second)
			var res outcomes
			var served, shed atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			conns := dialMany(t, s.addr, clients)
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					br := bufio.NewReader(c)
					for {
						select {
						case <-stop:
							return
						default:
						}
						c.SetDeadline(time.Now().Add(30 * time.Second))
						resp, body, err := roundTrip(c, br, "GET /sleep?ms="+strconv.Itoa(int(sleep/time.Millisecond))+" HTTP/1.1\r\nHost: over\r\n\r\n")
						switch {
						case err != nil:
							res.add("error: " + errKind(err))
							return
						case tc.shed && resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
							shed.Add(1)
						case resp.StatusCode != 200 || string(body) != "OK\n":
							res.add(fmt.Sprintf("status %d", resp.StatusCode))
						default:
							served.Add(1)
						}
					}
				}()
			}
			time.Sleep(hold)
			close(stop)
			wg.Wait() // every request in flight is answered
			t.Logf("%d clients, /sleep?ms=%d, 8 processors, queues of 32: %d requests served in %v (%.0f/s), %d refused with 503%s",
				clients, sleep/time.Millisecond, served.Load(), hold, float64(served.Load())/hold.Seconds(), shed.Load(), nonEmpty("; failures: ", res.String()))
			if res.String() != "" {
				t.Errorf("requests not answered: %s", res.String())
			}
			if served.Load() < clients {
				t.Errorf("only %d requests served for %d clients", served.Load(), clients)
			}
			tr.end(func() { closeAll(conns) })
		})
	}
}

func nonEmpty(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

// TestResets: clients that reset their connection mid-header, mid-body
// and mid-response, by the thousand, while valid clients are served
// without a single failure; afterwards the server holds nothing of them.
func TestResets(t *testing.T) {
	n := scaled(6000)
	const workers = 32
	s := startServer(t)
	tr := s.beginTrial(t, 5*time.Second)
	valid := startValidTraffic(s.addr, 4)
	var res outcomes
	jobs := make(chan int)
	var wg sync.WaitGroup
	body := bytes.Repeat([]byte("b"), 16<<10)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for i := range jobs {
				c, err := net.DialTimeout("tcp", s.addr, 10*time.Second)
				if err != nil {
					res.add("dial: " + errKind(err))
					continue
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var kind string
				switch i % 3 {
				case 0:
					kind = "mid-header"
					_, err = io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: reset\r\nX-Half: ")
				case 1:
					kind = "mid-body"
					if _, err = io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: reset\r\nContent-Length: 1000000\r\n\r\n"); err == nil {
						_, err = c.Write(body)
					}
				case 2:
					kind = "mid-response"
					// The response has begun once bytes come: a 503 from
					// admission control (these stalled responses fill
					// their class's queue) is whole, and waiting for
					// 32 KiB of it would time out.
					if _, err = io.WriteString(c, "GET /bytes?n=10000000 HTTP/1.1\r\nHost: reset\r\n\r\n"); err == nil {
						_, err = io.ReadAtLeast(c, buf, 1)
					}
				}
				if err != nil {
					res.add(kind + " failed: " + errKind(err))
				} else {
					res.add(kind)
				}
				resetAll([]net.Conn{c})
			}
		}()
	}
	start := time.Now()
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d resets in %v: %s", n, time.Since(start).Round(time.Millisecond), res.String())
	// Each reset must have been made where it was meant to be: the
	// server took the header, the body's start, or answered the start
	// of the response.
	if res.n["mid-header"]+res.n["mid-body"]+res.n["mid-response"] != n {
		t.Errorf("not every reset came where it was meant to: %s", res.String())
	}
	valid.finish(t)
	tr.end(nil)
}

// TestShutdownUnderLoad: SIGTERM with requests in flight, more of them
// than processors: every one is answered before the server exits 0, and
// then nothing listens.
func TestShutdownUnderLoad(t *testing.T) {
	n := scaled(200)
	s := startServer(t, "--processors", "32")
	warmUp(t, s.addr)
	conns := dialMany(t, s.addr, n)
	defer closeAll(conns)
	var res outcomes
	var wg sync.WaitGroup
	for _, c := range conns {
		if _, err := io.WriteString(c, "GET /sleep?ms=500 HTTP/1.1\r\nHost: shutdown\r\n\r\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(stopTimeout))
			resp, body, err := roundTrip(c, bufio.NewReader(c), "")
			switch {
			case err != nil:
				res.add("lost: " + errKind(err))
			case resp.StatusCode != 200 || string(body) != "OK\n":
				res.add(fmt.Sprintf("status %d", resp.StatusCode))
			default:
				res.add("200")
			}
		}()
	}
	// Every request has reached the server once its connections are
	// counted (the census runs once a second) and the first answers are
	// still a moment away.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := s.resources()
		if err == nil && r.conns >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never held all %d connections: %v %v", n, r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, took, err := s.terminate()
	wg.Wait()
	t.Logf("SIGTERM with %d requests in flight (32 processors, 500 ms each): %s; exit %d after %v",
		n, res.String(), code, took.Round(time.Millisecond))
	if err != nil || code != 0 {
		t.Errorf("exit %d, %v\n%s", code, err, s.logText())
	}
	if !res.only("200") {
		t.Errorf("in-flight requests lost: %s", res.String())
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on %s after the server exited", s.addr)
	}
}
