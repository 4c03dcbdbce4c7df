package runtime

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/stages"
)

// seqHandler answers inline with the request's n, padded to size bytes,
// so that a client can tell each reply from the next.
type seqHandler struct{ size int }

func (h seqHandler) Inline(*stages.Request) bool { return true }

func (h seqHandler) ServeQuartet(w *processor.ResponseWriter, r *stages.Request) {
	n, _ := r.QueryInt("n")
	body := strconv.FormatInt(n, 10) + "\n" + strings.Repeat(".", h.size)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write([]byte(body))
}

// A loop that batches its replies' sends (writer/batch.go) must keep each
// connection's replies in order and whole, also when a client stops
// reading and its socket takes a reply only in part or not at all (a
// reader loop leaves the rest to the writer loop, a writer loop waits for
// EPOLLOUT, and either serves the others meanwhile), and when many
// connections' replies share one submission. Inline and staged, and
// inline with each reply written at once, for comparison.
func TestBatchedSendsKeepOrderWhenSocketsFill(t *testing.T) {
	for _, tc := range []struct {
		name            string
		batched, staged bool
	}{{"inline batched", true, false}, {"inline", false, false}, {"staged batched", true, true}} {
		batched, staged := tc.batched, tc.staged
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{Handler: seqHandler{size: replySize}, Readers: 1, Writers: 1, NoBatchedSends: !batched, NoInline: staged})
			const conns, perConn = 8, 1000 // 8 MB a connection: more than its sockets take unread
			var wg, sent sync.WaitGroup
			errs := make(chan error, conns)
			read := make(chan struct{})
			for c := range conns {
				wg.Add(1)
				sent.Add(1)
				go func() {
					defer wg.Done()
					errs <- pipelineAndCheck(s.Addr().String(), c, perConn, sent.Done, read)
				}()
			}
			sent.Wait()
			// The clients read nothing until the server has stopped making
			// progress: every socket full (or, if one ever were not, every
			// reply sent, which the checks below would show).
			progress := func() uint64 {
				st := s.Stats()
				return st.Processor.Count + st.Writer.Count + st.Batched
			}
			for last, since, start := progress(), time.Now(), time.Now(); time.Since(since) < 300*time.Millisecond && time.Since(start) < 20*time.Second; {
				time.Sleep(20 * time.Millisecond)
				if p := progress(); p != last {
					last, since = p, time.Now()
				}
			}
			close(read)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if !eventually(5*time.Second, func() bool { return s.openConns() == 0 }) {
				t.Fatalf("%d connections still open", s.openConns())
			}
			// Both ways a reply leaves: whole from its reader loop, and
			// finished by the writer loop once the client read.
			st := s.Stats()
			total := uint64(conns * perConn)
			switch {
			case staged && st.Inline != 0:
				t.Errorf("%d served inline with NoInline", st.Inline)
			case !staged && (st.Inline != total || st.Direct == 0 || st.Direct == total):
				t.Errorf("%d served inline, %d of them written whole by the reader loop; want all %d inline, some but not all direct", st.Inline, st.Direct, total)
			}
			switch {
			case !batched && st.Batched+st.SendBatches != 0:
				t.Errorf("NoBatchedSends, yet %d replies sent in %d batches", st.Batched, st.SendBatches)
			case !ringWorks():
			case batched && st.Batched == 0:
				t.Errorf("no reply sent in a batch")
			case staged && st.Batched >= total:
				// Those a full socket refused were finished after EPOLLOUT.
				t.Errorf("%d replies of %d sent whole in %d batches; want not all (the sockets filled)", st.Batched, total, st.SendBatches)
			}
			t.Logf("%d replies: %d written whole by the reader loop, %d of them in %d batches", total, st.Direct, st.Batched, st.SendBatches)
		})
	}
}

// replySize is a reply's body: small enough to be batched (one piece
// with its head), large enough to fill a socket soon.
const replySize = 8000

// pipelineAndCheck sends perConn requests at once, says so (sent), waits
// with nothing read until read is closed, then reads every reply and
// checks that they come whole and in order.
func pipelineAndCheck(addr string, id, perConn int, sent func(), read <-chan struct{}) error {
	// A small receive buffer, so that the server's socket fills within
	// the replies (loopback's would otherwise grow to megabytes).
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		sent()
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var req strings.Builder
	for i := range perConn {
		fmt.Fprintf(&req, "GET /seq?n=%d HTTP/1.1\r\nHost: x\r\n", i)
		if i == perConn-1 {
			req.WriteString("Connection: close\r\n")
		}
		req.WriteString("\r\n")
	}
	go io.WriteString(c, req.String()) // the server stops reading once its replies back up
	sent()
	<-read
	br := bufio.NewReader(c)
	for i := range perConn {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("conn %d, reply %d: %v", id, i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("conn %d, reply %d: %d, %v", id, i, resp.StatusCode, err)
		}
		if got, _, _ := strings.Cut(string(body), "\n"); got != strconv.Itoa(i) || len(body) != len(got)+1+replySize {
			return fmt.Errorf("conn %d: reply %d is for request %q (%d bytes)", id, i, got, len(body))
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("conn %d: after the last reply: %v, want EOF", id, err)
	}
	return nil
}

// ringWorks reports whether the kernel grants an io_uring here, as a
// server's reader loops ask for theirs (batchIO).
func ringWorks() bool {
	r, err := poll.NewRing(1)
	if err != nil {
		return false
	}
	r.Close()
	return true
}

// A reader loop that reads a turn's connections in one system call
// (reader/gather.go) must read from each exactly what read(2) would have:
// whole requests, heads that arrive in pieces, pipelined requests, heads
// larger than a read buffer, a FIN behind a request, garbage, and a reset,
// many connections at once on one loop so that turns find several ready.
// The same clients against a loop that reads each on its own, for
// comparison: the answers must not differ.
func TestBatchedReadsReadWhatReadWould(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			s := startServer(t, Config{Handler: seqHandler{size: 10}, Readers: 1, Writers: 1, NoBatchedReads: !batched})
			addr := s.Addr().String()
			const clients, rounds = 48, 40
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					kind := readKinds[c%len(readKinds)]
					if err := kind.run(addr, c, rounds); err != nil {
						errs <- fmt.Errorf("client %d (%s): %w", c, kind.name, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if !eventually(5*time.Second, func() bool { return s.openConns() == 0 }) {
				t.Fatalf("%d connections still open", s.openConns())
			}
			st := s.Stats()
			switch {
			case !batched && st.BatchedReads+st.ReadBatches != 0:
				t.Errorf("NoBatchedReads, yet %d reads made in %d batches", st.BatchedReads, st.ReadBatches)
			case !ringWorks():
			case batched && (st.ReadBatches == 0 || st.BatchedReads < 2*st.ReadBatches):
				t.Errorf("%d reads made in %d batches; want batches of two or more", st.BatchedReads, st.ReadBatches)
			}
			t.Logf("%d reads made in %d batches", st.BatchedReads, st.ReadBatches)
		})
	}
}

// readKinds are the ways TestBatchedReadsReadWhatReadWould's clients send.
var readKinds = []struct {
	name string
	run  func(addr string, id, rounds int) error
}{
	{"one at a time", func(addr string, id, rounds int) error {
		return exchangeRounds(addr, rounds, func(c net.Conn, n int) error {
			_, err := fmt.Fprintf(c, "GET /seq?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n)
			return err
		}, 1)
	}},
	{"head in pieces", func(addr string, id, rounds int) error {
		return exchangeRounds(addr, rounds, func(c net.Conn, n int) error {
			if _, err := fmt.Fprintf(c, "GET /seq?n=%d HTTP/1.1\r\nHo", n); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
			_, err := io.WriteString(c, "st: x\r\n\r\n")
			return err
		}, 1)
	}},
	{"pipelined", func(addr string, id, rounds int) error {
		return exchangeRounds(addr, rounds, func(c net.Conn, n int) error {
			var b strings.Builder
			for i := range 4 {
				fmt.Fprintf(&b, "GET /seq?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", 4*n+i)
			}
			_, err := io.WriteString(c, b.String())
			return err
		}, 4)
	}},
	{"head past a read buffer", func(addr string, id, rounds int) error {
		pad := strings.Repeat("p", 6000)
		return exchangeRounds(addr, rounds, func(c net.Conn, n int) error {
			_, err := fmt.Fprintf(c, "GET /seq?n=%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", n, pad)
			return err
		}, 1)
	}},
	{"FIN behind a request", func(addr string, id, rounds int) error {
		for n := range rounds / 4 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /seq?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n)
			c.(*net.TCPConn).CloseWrite()
			err = readSeq(bufio.NewReader(c), n, true)
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}},
	{"garbage", func(addr string, id, rounds int) error {
		for range rounds / 4 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "NOT HTTP AT ALL\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != 400 {
				return fmt.Errorf("garbage answered %d, want 400", resp.StatusCode)
			}
		}
		return nil
	}},
	{"reset", func(addr string, id, rounds int) error {
		for range rounds / 4 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			io.WriteString(c, "GET /seq?n=1 HTTP/1.1\r\nHo")
			c.(*net.TCPConn).SetLinger(0) // RST, not FIN
			c.Close()
		}
		return nil
	}},
}

// exchangeRounds sends rounds times with send on one keep-alive connection and
// reads the per replies each sends, numbered on from per×round.
func exchangeRounds(addr string, rounds int, send func(c net.Conn, round int) error, per int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for n := range rounds {
		if err := send(c, n); err != nil {
			return err
		}
		for i := range per {
			if err := readSeq(br, per*n+i, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// readSeq reads a seqHandler reply and checks that it answers request n;
// last: the server must close after it.
func readSeq(br *bufio.Reader, n int, last bool) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("reply %d: %w", n, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("reply %d: %d, %v", n, resp.StatusCode, err)
	}
	if got, _, _ := strings.Cut(string(body), "\n"); got != strconv.Itoa(n) {
		return fmt.Errorf("reply for request %q, want %d", got, n)
	}
	if last {
		if _, err := br.ReadByte(); err != io.EOF {
			return fmt.Errorf("after the last reply: %v, want EOF", err)
		}
	}
	return nil
}
