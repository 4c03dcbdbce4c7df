package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Pipelined requests of every framing, cut into random segments at random
// moments, must each be answered in order with exactly their own body: this
// walks the reader through every buffer state (compaction, growth, preread,
// streaming, chunked carry-over into the next request).
func TestRandomSegmentationOfPipelinedRequests(t *testing.T) {
	s := startServer(t, Config{})
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed*7919))
			var raw bytes.Buffer
			var want []string
			for i := 0; i < 25; i++ {
				pad := strings.Repeat("h", rng.IntN(3000))
				switch rng.IntN(4) {
				case 0:
					fmt.Fprintf(&raw, "GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", i, pad)
					want = append(want, pattern(i))
				case 1, 2: // Content-Length, small (preread) or large (streamed)
					n := rng.IntN(5000)
					if rng.IntN(3) == 0 {
						n = 64<<10 + rng.IntN(200<<10)
					}
					body := randomBody(rng, n)
					fmt.Fprintf(&raw, "POST /echo HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\nContent-Length: %d\r\n\r\n%s", pad, n, body)
					want = append(want, body)
				default: // chunked, several chunks
					var body strings.Builder
					fmt.Fprintf(&raw, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
					for k := rng.IntN(5); k >= 0; k-- {
						part := randomBody(rng, 1+rng.IntN(9000))
						body.WriteString(part)
						fmt.Fprintf(&raw, "%x\r\n%s\r\n", len(part), part)
					}
					raw.WriteString("0\r\n\r\n")
					want = append(want, body.String())
				}
			}
			c := dial(t, s)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			errc := make(chan error, 1)
			go func() {
				b := raw.Bytes()
				for len(b) > 0 {
					n := min(len(b), 1+rng.IntN(6000))
					if _, err := c.Write(b[:n]); err != nil {
						errc <- err
						return
					}
					b = b[n:]
					if rng.IntN(4) == 0 {
						time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
					}
				}
				errc <- nil
			}()
			for i, w := range want {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || string(got) != w {
					t.Fatalf("response %d: status %d, %d bytes (want %d), err %v", i, resp.StatusCode, len(got), len(w), err)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func randomBody(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(rng.IntN(26))
	}
	return string(b)
}

// pattern is what /bytes?n=N sends.
func pattern(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return string(b)
}
