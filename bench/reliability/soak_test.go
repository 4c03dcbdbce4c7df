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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak: mixed traffic of every kind the server serves, for -soak (20 s
// in CI; `go test ./bench/reliability -run Soak -soak 10m -timeout 20m` is
// the long run), with every answer checked. No request may fail (admission
// control's 503 with Retry-After is retried, and must stay rare), and the
// server must hold steady: goroutines at their baseline, memory flat (the
// last quarter's peak RSS within a bound of the second quarter's), and
// everything given back at the end.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	const clients = 16
	s := startServer(t)
	tr := s.beginTrial(t, 5*time.Second)
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		served   atomic.Int64
		refused  atomic.Int64
		failed   atomic.Int64
		mu       sync.Mutex
		firstErr string
		kinds    [len(soakMix)]atomic.Int64
	)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := soakClient{addr: s.addr, rng: rand.New(rand.NewPCG(uint64(i), 42))}
			defer sc.close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k, err := sc.one()
				if errors.Is(err, errRefused) {
					// The exchange's other requests may be unanswered
					// on the connection: start afresh, as a client would.
					refused.Add(1)
					sc.close()
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = fmt.Sprintf("%s: %v", soakMix[k].name, err)
					}
					mu.Unlock()
					sc.close()
					continue
				}
				kinds[k].Add(1)
				served.Add(int64(soakMix[k].requests))
			}
		}()
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()

	var mix []string
	for k := range soakMix {
		mix = append(mix, fmt.Sprintf("%s %d", soakMix[k].name, kinds[k].Load()))
	}
	t.Logf("soak %v, %d clients: %d requests (%.0f/s), %d exchanges refused with 503, %d failed; exchanges: %s",
		d, clients, served.Load(), float64(served.Load())/d.Seconds(), refused.Load(), failed.Load(), strings.Join(mix, ", "))
	if failed.Load() > 0 {
		t.Errorf("%d exchanges failed; first: %s", failed.Load(), firstErr)
	}
	// Sixteen clients do not overload eight processors: refusals come only
	// from a machine loaded beside the test, and stay rare.
	if r, n := refused.Load(), served.Load(); r > n/100 {
		t.Errorf("%d exchanges refused with 503 for %d requests served: more than 1%%", r, n)
	}
	tr.mu.Lock()
	series := tr.series
	tr.mu.Unlock()
	checkSteady(t, tr.base, series, d, clients)
	tr.end(nil)
}

// checkSteady asserts that the soak's readings are flat, and the peak RSS
// of the last quarter no more than a quarter (at least 16 MiB) above the
// second quarter's, the first quarter being warm-up. The server has no
// goroutine per connection or request, so the goroutines outside the
// processor pool stay within goroutineSlack of the baseline throughout.
// The pool's may not: a handler parked on its client (an echo waiting for
// body bytes) keeps its goroutine while another takes its place, and that
// one waits as a spare once the parked handler is back. So the pool is
// held to a place, a spare per place, and a parked handler per client.
func checkSteady(t *testing.T, base resources, series []sample, d time.Duration, clients int) {
	t.Helper()
	var second, last, all resources
	minRSS := int64(-1)
	outside, poolOver := 0, 0
	for _, s := range series {
		all.goroutines = max(all.goroutines, s.goroutines)
		all.poolGoroutines = max(all.poolGoroutines, s.poolGoroutines)
		all.fds = max(all.fds, s.fds)
		outside = max(outside, s.goroutines-s.poolGoroutines)
		poolOver = max(poolOver, s.poolGoroutines-(2*s.poolSize+clients))
		switch {
		case s.at >= d/4 && s.at < d/2:
			second.rss = max(second.rss, s.rss)
		case s.at >= 3*d/4 && s.at <= d:
			last.rss = max(last.rss, s.rss)
		}
		if s.at >= d/4 && s.at <= d && (minRSS < 0 || s.rss < minRSS) {
			minRSS = s.rss
		}
	}
	baseOutside := base.goroutines - base.poolGoroutines
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	t.Logf("steady state, %d readings: RSS %s to %s after warm-up (second-quarter peak %s, last-quarter peak %s); goroutines at most %d (baseline %d), outside the processor pool at most %d (baseline %d), the pool's at most %d; fds at most %d",
		len(series), mib(minRSS), mib(max(second.rss, last.rss)), mib(second.rss), mib(last.rss),
		all.goroutines, base.goroutines, outside, baseOutside, all.poolGoroutines, all.fds)
	if len(series) < 4 {
		t.Errorf("only %d resource readings in %v", len(series), d)
		return
	}
	if outside > baseOutside+goroutineSlack {
		t.Errorf("goroutines outside the processor pool rose to %d from a baseline of %d", outside, baseOutside)
	}
	if poolOver > 0 {
		t.Errorf("the processor pool held %d goroutines more than 2 per place and 1 per client", poolOver)
	}
	if second.rss > 0 && last.rss > second.rss+max(16<<20, second.rss/4) {
		t.Errorf("memory grew: RSS peak %s in the second quarter, %s in the last", mib(second.rss), mib(last.rss))
	}
}

// soakMix is what a soak client does, by weight: every framing of
// request and response, keep-alive and not, pipelined, the sendfile path.
var soakMix = [...]struct {
	name     string
	weight   int
	requests int // per exchange
}{
	{"hello", 40, 1},
	{"bytes", 15, 1},
	{"echo", 15, 1},
	{"echo-chunked", 10, 1},
	{"pipelined", 8, 5},
	{"head", 5, 1},
	{"static", 5, 1},
	{"new-connection", 2, 1},
}

// soakClient is one soak client: a keep-alive connection, reopened after
// a failure, and a private random source.
type soakClient struct {
	addr string
	rng  *rand.Rand
	c    net.Conn
	br   *bufio.Reader
}

func (sc *soakClient) close() {
	if sc.c != nil {
		sc.c.Close()
		sc.c = nil
	}
}

// one runs one exchange of a kind drawn from soakMix and checks it.
func (sc *soakClient) one() (kind int, err error) {
	w := sc.rng.IntN(100)
	for kind = 0; w >= soakMix[kind].weight; kind++ {
		w -= soakMix[kind].weight
	}
	if soakMix[kind].name == "new-connection" {
		_, err := probeHello(sc.addr, 10*time.Second)
		return kind, err
	}
	if sc.c == nil {
		if sc.c, err = net.DialTimeout("tcp", sc.addr, 10*time.Second); err != nil {
			sc.c = nil
			return kind, err
		}
		sc.br = bufio.NewReader(sc.c)
	}
	sc.c.SetDeadline(time.Now().Add(15 * time.Second))
	switch soakMix[kind].name {
	case "hello":
		return kind, exchangeChecked(sc.c, sc.br, 0, sc.rng)
	case "bytes":
		return kind, exchangeChecked(sc.c, sc.br, 2, sc.rng)
	case "echo":
		return kind, exchangeChecked(sc.c, sc.br, 1, sc.rng)
	case "echo-chunked":
		var raw, want bytes.Buffer
		raw.WriteString("POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n")
		for range sc.rng.IntN(8) {
			chunk := make([]byte, 1+sc.rng.IntN(4<<10))
			for i := range chunk {
				chunk[i] = 'a' + byte(sc.rng.IntN(26))
			}
			fmt.Fprintf(&raw, "%x\r\n%s\r\n", len(chunk), chunk)
			want.Write(chunk)
		}
		raw.WriteString("0\r\n\r\n")
		resp, body, err := roundTrip(sc.c, sc.br, raw.String())
		if err == nil {
			err = refusal(resp)
		}
		if err == nil && (resp.StatusCode != 200 || !bytes.Equal(body, want.Bytes())) {
			err = fmt.Errorf("%d, %d bytes back for %d", resp.StatusCode, len(body), want.Len())
		}
		return kind, err
	case "pipelined":
		const hello = "GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n"
		if _, err := io.WriteString(sc.c, strings.Repeat(hello, 4)+"GET /bytes?n=3 HTTP/1.1\r\nHost: soak\r\n\r\n"); err != nil {
			return kind, err
		}
		for i, want := range []string{"Hello, World!", "Hello, World!", "Hello, World!", "Hello, World!", "abc"} {
			resp, body, err := roundTrip(sc.c, sc.br, "")
			if err == nil {
				err = refusal(resp)
			}
			if err != nil {
				return kind, fmt.Errorf("response %d: %w", i, err)
			}
			if resp.StatusCode != 200 || string(body) != want {
				return kind, fmt.Errorf("response %d: %d %q", i, resp.StatusCode, body)
			}
		}
		return kind, nil
	case "head":
		n := sc.rng.IntN(100000)
		resp, body, err := roundTrip(sc.c, sc.br, "HEAD /bytes?n="+strconv.Itoa(n)+" HTTP/1.1\r\nHost: soak\r\n\r\n")
		if err == nil {
			err = refusal(resp)
		}
		if err == nil && (resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(n)) {
			err = fmt.Errorf("%d, length %d, %d body bytes", resp.StatusCode, resp.ContentLength, len(body))
		}
		return kind, err
	default: // static: the sample site, through the file path (sendfile)
		resp, body, err := roundTrip(sc.c, sc.br, "GET /index.html HTTP/1.1\r\nHost: soak\r\n\r\n")
		if err == nil {
			err = refusal(resp)
		}
		if err == nil && (resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) || !bytes.Contains(body, []byte("<html"))) {
			err = fmt.Errorf("%d, %d bytes", resp.StatusCode, len(body))
		}
		return kind, err
	}
}
