package rdmahttp

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/runtime"
)

// TestWritersResizedDuringRDMA: writer loops removed and added while
// clients fetch by RDMA in both modes. A loop added takes the lowest
// free id, so it reuses the id of one removed before, and its stage-init
// attaches the engine's loop of that id again: the removed loop's
// stage-exit must have released it (its CQ, its poller registration, its
// channels). Writers go 2→1→2→1→3 by SetStageSize, each change complete
// and without error, and the controller, turned on again after, is
// still on (a loop count it cannot reach would turn it off); every
// request is answered byte-exact; once the server is shut down no
// goroutine and no fd is left. Signalled sparsely, units outlive their
// replies and await the barrier that reclaims them when their loop
// leaves; client-reads exposures await the client's read-done.
func TestWritersResizedDuringRDMA(t *testing.T) {
	for _, sig := range []deliver.Signalling{deliver.SignalEveryReply, deliver.SignalSparse} {
		t.Run(sig.String(), func(t *testing.T) { writersResizedDuringRDMA(t, sig) })
	}
}

func writersResizedDuringRDMA(t *testing.T, sig deliver.Signalling) {
	baseFDs, baseG := fdtest.Count(t), goruntime.NumGoroutine()
	log := &syncBuffer{}
	fx := start(t, Config{Signal: sig}, func(rc *runtime.Config) {
		rc.Logger = slog.New(slog.NewTextHandler(log, nil))
		rc.WritersMin, rc.WritersMax = 1, 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Two clients per mode, each fetching the files (but the 16 MiB one:
	// many small fetches make many resizes land among them) and a
	// generated body, round and round until told to stop.
	var (
		done   atomic.Int64
		byRDMA atomic.Int64
		quit   = make(chan struct{})
		wg     sync.WaitGroup
		errs   = make(chan error, 8)
	)
	var clients []*Client
	for i := 0; i < 4; i++ {
		c, err := NewClient(ClientConfig{Provider: rdmatest.Provider(t), Addr: net.JoinHostPort(rdmatest.Host(), "0"), BufferSize: 2 << 20})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		mode := deliver.ModeServerWrites
		if i%2 == 1 {
			mode = deliver.ModeClientReads
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				for _, n := range testSizes[:len(testSizes)-1] {
					select {
					case <-quit:
						return
					default:
					}
					name := fmt.Sprintf("f%d.bin", n)
					r, body, err := get(ctx, c, fx.url+"/"+name, mode)
					if err != nil {
						errs <- fmt.Errorf("%s %s: %v", mode, name, err)
						return
					}
					if sha256.Sum256(body) != sha256.Sum256(fx.files[name]) {
						errs <- fmt.Errorf("%s %s: %d bytes, not the file's (mode %s, fallback %q)", mode, name, len(body), r.Mode, r.Fallback)
						return
					}
					if r.Mode == mode {
						byRDMA.Add(1)
					}
					done.Add(1)
				}
				r, body, err := get(ctx, c, fx.url+"/bytes?n=200001", mode)
				if err != nil || len(body) != 200001 || !strings.HasPrefix(string(body), "abcdef") {
					errs <- fmt.Errorf("%s generated: %v, %d bytes, %+v", mode, err, len(body), r)
					return
				}
				done.Add(1)
			}
		}()
	}
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(quit); wg.Wait(); close(errs) }) }
	defer stopLoad() // a test that fails early leaves no client running
	// progress waits for the clients to finish n more requests, so each
	// resize happens with transfers under way.
	progress := func(n int64) {
		t.Helper()
		want := done.Load() + n
		if !rdmatest.Eventually(time.Minute, func() bool { return done.Load() >= want || len(errs) > 0 }) {
			t.Fatalf("no progress: %d requests done", done.Load())
		}
	}

	for _, n := range []int{1, 2, 1, 3} {
		progress(20)
		if err := fx.srv.SetStageSize(runtime.StageWriter, n); err != nil {
			t.Fatalf("SetStageSize(writer, %d): %v", n, err)
		}
		if z, _ := fx.srv.StageSize(runtime.StageWriter); z.Size != n {
			t.Fatalf("writers: %d, asked %d", z.Size, n)
		}
		// A removed loop stops once its last response is recycled, and
		// gives its CQ and its poller registration back as it does.
		if !rdmatest.Eventually(30*time.Second, func() bool {
			st := fx.mod.Stats()
			return st.LiveCQs == int64(n) && st.LiveSources == int64(n)
		}) {
			t.Fatalf("%d writers, engine %+v", n, fx.mod.Stats())
		}
	}
	// The controller, on again, samples every 100 ms and may move the
	// writers within 1..3 itself: ten periods under load.
	if err := fx.srv.SetStageAuto(runtime.StageWriter, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	progress(20)
	stopLoad()
	for err := range errs {
		t.Error(err)
	}
	if z, _ := fx.srv.StageSize(runtime.StageWriter); !z.Auto {
		t.Errorf("the writer controller was turned off: %+v", z)
	}
	for _, bad := range []string{"stage controller turned off", "stage resized short"} {
		if strings.Contains(log.String(), bad) {
			t.Errorf("the log says %q:\n%s", bad, log.String())
		}
	}
	if byRDMA.Load() == 0 {
		t.Errorf("no request of %d went by RDMA", done.Load())
	}
	// A reply is bound to its writer loop until recycled, so no delivery
	// may find its loop detached (that would be a fallback, no-rdma).
	if st := fx.mod.Stats(); st.Fallbacks != 0 {
		t.Errorf("%d fallbacks: %+v", st.Fallbacks, st)
	}
	t.Logf("%d requests, %d by RDMA, %d resizes by the controller; engine %+v", done.Load(), byRDMA.Load(),
		strings.Count(log.String(), `cause="controller`), fx.mod.Stats())

	for _, c := range clients {
		if err := c.Close(); err != nil {
			t.Errorf("client Close: %v", err)
		}
	}
	fx.stop()
	if !rdmatest.Eventually(10*time.Second, func() bool { return goruntime.NumGoroutine() <= baseG }) {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after shutdown\n%s", baseG, goruntime.NumGoroutine(), buf[:goruntime.Stack(buf, true)])
	}
	if !rdmatest.Eventually(5*time.Second, func() bool { return fdtest.Count(t) <= baseFDs }) {
		t.Errorf("fds: %d before, %d after shutdown", baseFDs, fdtest.Count(t))
	}
}

// syncBuffer is a log's destination that the server's goroutines write
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
