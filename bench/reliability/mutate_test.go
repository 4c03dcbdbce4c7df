//go:build linux

package reliability

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "TestMutatedRequests' random seed (0: from the clock; the test logs the one it used)")

// mutationBases are the well-formed requests mutations start from: every
// framing the server reads, and no endpoint a mutation could turn into a
// long wait (/sleep?ms=5 becomes ms=59999 easily).
var mutationBases = []string{
	"GET /hello HTTP/1.1\r\nHost: m\r\n\r\n",
	"GET /bytes?n=100 HTTP/1.1\r\nHost: m\r\nAccept: */*\r\nUser-Agent: mutant\r\n\r\n",
	"POST /echo HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"POST /echo HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\n, w\r\n0\r\nTrailer: v\r\n\r\n",
	"POST /echo HTTP/1.1\r\nHost: m\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
	"HEAD /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: m\r\n\r\n",
	"GET http://m:80/hello?x=%41 HTTP/1.1\r\nHost: other\r\n\r\n",
	"GET /hello HTTP/1.1\r\nHost: m\r\n\r\nGET /bytes?n=3 HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
	"\r\nGET /hello HTTP/1.1\r\nHost: m\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n",
}

// mutationFields are lines a mutation inserts: the classic smuggling and
// parser-confusion shapes.
var mutationFields = []string{
	"Transfer-Encoding: chunked", "Transfer-Encoding: gzip, chunked", "Transfer-Encoding : chunked",
	"Transfer-Encoding:\tchunked", "Transfer-Encoding: xchunked", "Content-Length: 5", "Content-Length: -1",
	"Content-Length: 1, 1", "Content-Length: 99999999999999999999", "Content-Length: 0x10",
	"Host: a", " folded", "\tfolded", "X: a\rb", "X\x00: y", ": novalue", "Expect: 100-continue",
	"Expect: 200-ok", "Connection: close", "Connection: keep-alive", "X-Long: " + strings.Repeat("L", 9000),
	"Trailer: Content-Length",
}

// mutationBytes are bytes worth inserting: line ends, separators,
// controls, high bytes, digits, hex.
const mutationBytes = "\r\n\r\n \t:;,/?%=\x00\x01\x7f\x80\xff0123456789abcdefABCDEFxHTP."

// mutate applies one to four random edits to base.
func mutate(rng *rand.Rand, base string) []byte {
	b := []byte(base)
	for range 1 + rng.IntN(4) {
		if len(b) == 0 {
			b = append(b, mutationBytes[rng.IntN(len(mutationBytes))])
			continue
		}
		i := rng.IntN(len(b))
		switch rng.IntN(9) {
		case 0: // replace a byte
			b[i] = mutationBytes[rng.IntN(len(mutationBytes))]
		case 1: // flip a bit
			b[i] ^= 1 << rng.IntN(8)
		case 2: // delete a run
			j := min(len(b), i+1+rng.IntN(8))
			b = append(b[:i], b[j:]...)
		case 3: // insert a run
			ins := make([]byte, 1+rng.IntN(8))
			for k := range ins {
				ins[k] = mutationBytes[rng.IntN(len(mutationBytes))]
			}
			b = append(b[:i], append(ins, b[i:]...)...)
		case 4: // truncate
			b = b[:i]
		case 5: // a CRLF becomes a bare LF or a bare CR
			if k := bytes.Index(b[i:], []byte("\r\n")); k >= 0 {
				if rng.IntN(2) == 0 {
					b = append(b[:i+k], b[i+k+1:]...)
				} else {
					b = append(b[:i+k+1], b[i+k+2:]...)
				}
			}
		case 6: // insert a nasty field after a line end
			if k := bytes.Index(b[i:], []byte("\r\n")); k >= 0 {
				at := i + k + 2
				f := mutationFields[rng.IntN(len(mutationFields))] + "\r\n"
				b = append(b[:at], append([]byte(f), b[at:]...)...)
			}
		case 7: // duplicate a line
			if k := bytes.Index(b[i:], []byte("\r\n")); k >= 0 {
				start := bytes.LastIndex(b[:i], []byte("\n")) + 1
				line := append([]byte(nil), b[start:i+k+2]...)
				b = append(b[:start], append(line, b[start:]...)...)
			}
		case 8: // change the version digits
			if k := bytes.Index(b, []byte("HTTP/1.")); k >= 0 && k+8 <= len(b) {
				b[k+5], b[k+7] = "0123456789"[rng.IntN(10)], "0123456789"[rng.IntN(10)]
			}
		}
	}
	return b
}

// TestMutatedRequests: thousands of mutated requests at a steady rate,
// each on its own connection, while valid clients are served without a
// single failure. Every answer the server gives must be a well-formed
// HTTP/1.x response; a mutated request may also be refused by a close or
// left waiting for bytes that will not come (the client gives up after
// mutantWait), but the server must not crash, log an error, or keep
// anything once the mutants are gone.
func TestMutatedRequests(t *testing.T) {
	n := scaled(3000)
	const (
		rate       = 400 // per second
		mutantWait = 3 * time.Second
		// The header timeout is short so that incomplete mutants are
		// answered (408) within mutantWait, but not so short that a
		// probe whose request segment the loopback had to retransmit
		// twice (200 ms, then 400 ms) is closed unanswered: that was
		// seen once in about 40 runs with 1 s.
		headerTimeout = 2 * time.Second
	)
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	s := startServer(t, "--header-timeout", headerTimeout.String())
	tr := s.beginTrial(t, 5*time.Second)
	valid := startValidTraffic(s.addr, 4)
	var res outcomes
	var mu sync.Mutex
	var malformed []string
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / rate)))
		req := mutate(rng, mutationBases[rng.IntN(len(mutationBases))])
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind, bad := sendMutant(s.addr, req, mutantWait)
			res.add(kind)
			if bad {
				mu.Lock()
				malformed = append(malformed, fmt.Sprintf("%s for %q", kind, req))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d mutated requests in %v: %s", n, time.Since(start).Round(time.Millisecond), res.String())
	if len(malformed) > 0 {
		t.Errorf("%d malformed answers; first: %s", len(malformed), malformed[0])
	}
	valid.finish(t)
	tr.end(nil)
}

// sendMutant sends req on a fresh connection and classifies the first
// answer; bad means the server said something that is not HTTP.
func sendMutant(addr string, req []byte, wait time.Duration) (kind string, bad bool) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "dial: " + errKind(err), true
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(req); err != nil {
		return "write: " + errKind(err), false // the server may refuse early and reset
	}
	method, _, _ := bytes.Cut(bytes.TrimLeft(req, "\r\n"), []byte(" "))
	br := bufio.NewReader(c)
	if _, err := br.Peek(1); err != nil {
		return "no answer: " + errKind(err), false
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: string(method)})
	if err != nil {
		return "malformed: " + err.Error(), true
	}
	if resp.StatusCode == 100 {
		// An interim answer; the final one may wait for a body the
		// mutant never sends.
		return "100 Continue", false
	}
	if !strings.HasPrefix(resp.Proto, "HTTP/1.") {
		return "malformed: " + resp.Proto, true
	}
	return fmt.Sprintf("%d", resp.StatusCode), false
}
