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
			case !sendRingWorks():
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

// sendRingWorks reports whether the kernel grants an io_uring here, as a
// server's reader loops ask for one (batchSends).
func sendRingWorks() bool {
	r, err := poll.NewSendRing(1)
	if err != nil {
		return false
	}
	r.Close()
	return true
}
