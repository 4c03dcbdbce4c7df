package deliver

import (
	"crypto/sha256"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

// TestFileChangeInvalidatesCache: a rewritten file is mapped anew; the
// old mapping stays for its user until put, then goes.
func TestFileChangeInvalidatesCache(t *testing.T) {
	dev, err := soft.New(soft.Config{}).Open("")
	if err != nil {
		t.Fatal(err)
	}
	pd, err := dev.AllocPD()
	if err != nil {
		t.Fatal(err)
	}
	var st stats
	c := newFileCache(pd, rdma.AccessMWBind, 4, &st)
	p := filepath.Join(t.TempDir(), "v.txt")
	os.WriteFile(p, []byte("version one"), 0o644)
	open := func() *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	e1, err := c.get(open())
	if err != nil {
		t.Fatal(err)
	}
	e1b, _ := c.get(open())
	if e1b != e1 || st.cacheMisses.Load() != 1 {
		t.Fatalf("second get missed the cache")
	}
	c.put(e1b)
	os.WriteFile(p, []byte("version two, longer"), 0o644)
	os.Chtimes(p, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	e2, err := c.get(open())
	if err != nil {
		t.Fatal(err)
	}
	if e2 == e1 || string(e2.mem.Bytes()) != "version two, longer" || e2.digest != sha256.Sum256([]byte("version two, longer")) {
		t.Fatalf("changed file served from the old mapping: %q", e2.mem.Bytes())
	}
	// (The old mapping is MAP_SHARED over the same inode, so its bytes
	// changed too: only replacing files by rename keeps old readers
	// consistent. What must hold is that it stays mapped for its user.)
	if st.liveMRs.Load() != 2 || e1.closed {
		t.Fatalf("old mapping released under its user (%d MRs)", st.liveMRs.Load())
	}
	c.put(e1)
	if st.liveMRs.Load() != 1 || !e1.closed {
		t.Fatalf("old mapping kept after its last user: %d MRs", st.liveMRs.Load())
	}
	c.put(e2)
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if err := pd.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
}

func newTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	if cfg.Provider == nil {
		cfg.Provider = soft.New(soft.Config{})
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestBodyOwnership: a body's staging memory and cache references are
// freed once, by whichever of its holders (the engine's unit, a reply's
// alternative) lets go last, and an extra release is caught.
func TestBodyOwnership(t *testing.T) {
	e := newTestEngine(t, Config{StagingPool: -1})
	defer func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	}()
	for _, order := range []string{"device first", "response first"} {
		t.Run(order, func(t *testing.T) {
			b := e.NewBody()
			if err := b.AddHeap([]byte("some bytes the device reads")); err != nil {
				t.Fatal(err)
			}
			if err := e.pool.register(b.stage); err != nil {
				t.Fatal(err)
			}
			b.Retain() // the response's, for its alternative
			device, response := b.Release, b.Cleanup
			first, second := device, response
			if order == "response first" {
				first, second = response, device
			}
			first()
			if b.stage == nil || e.Stats().LiveMRs != 1 {
				t.Fatal("freed while the other side may still read it")
			}
			second()
			if b.stage != nil || e.Stats().LiveMRs != 0 {
				t.Fatalf("not freed after both: %+v", e.Stats())
			}
			defer func() {
				if recover() == nil {
					t.Fatal("a third release went unnoticed")
				}
			}()
			b.Release()
		})
	}
}

// TestStagingPool: buffers come back to the pool and are reused, the
// idle total stays under its bound, large bodies are not pooled, and
// Close releases the idle ones.
func TestStagingPool(t *testing.T) {
	e := newTestEngine(t, Config{StagingPool: 64 << 10})
	b1, err := e.pool.get(5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(b1.bytes()) != 8192 || b1.mr == nil {
		t.Fatalf("class buffer of %d bytes, registered %v", len(b1.bytes()), b1.mr != nil)
	}
	e.pool.put(b1)
	if st := e.Stats(); st.PooledMRs != 1 || st.LiveMRs != 0 {
		t.Fatalf("after put: %+v", st)
	}
	b2, _ := e.pool.get(8000)
	if b2 != b1 {
		t.Fatal("a pooled buffer of the class was not reused")
	}
	big, _ := e.pool.get(5 << 20) // over the largest class
	if big.class != -1 || big.mr != nil || len(big.bytes()) != 5<<20 {
		t.Fatalf("large buffer: class %d, registered %v, %d bytes", big.class, big.mr != nil, len(big.bytes()))
	}
	e.pool.put(big)
	var held []*stageBuf
	for range 10 { // 10 x 32 KiB, over the 64 KiB bound
		b, _ := e.pool.get(32 << 10)
		held = append(held, b)
	}
	for _, b := range held {
		e.pool.put(b)
	}
	e.pool.put(b2)
	if st := e.Stats(); st.PooledMRs != 2 || st.LiveMRs != 0 || e.pool.idle > 64<<10 {
		t.Fatalf("pool over its bound: idle %d, %+v", e.pool.idle, st)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.PooledMRs != 0 || st.LiveMRs != 0 {
		t.Fatalf("after Close: %+v", st)
	}
}

// stubQP stands for a channel's QP in tests that drive the loop without
// a connection: it records the disconnect and the destruction.
type stubQP struct {
	rdma.QP
	disconnected, closed atomic.Bool
}

func (q *stubQP) Disconnect() error { q.disconnected.Store(true); return nil }
func (q *stubQP) Close() error      { q.closed.Store(true); return nil }
func (q *stubQP) Err() error        { return nil }

type stubMR struct{ rdma.MR }

func (stubMR) Close() error { return nil }

// stubChannel puts a channel with a stub QP in lp's cache, counted as
// dial counts one.
func stubChannel(lp *loop, id uint32) (*channel, *stubQP) {
	ep := netip.MustParseAddrPort("127.0.0.1:1")
	mem, err := rdma.Alloc(msgArea(serverRecvSlots, serverSendSlots))
	if err != nil {
		panic(err)
	}
	qp := &stubQP{}
	ch := &channel{id: id, ep: ep, key: chanKey{ep: ep}, qp: qp, mr: stubMR{}, mem: mem, exps: map[uint64]*exposure{}}
	ch.watch = time.AfterFunc(time.Hour, func() { lp.watchdog(ch) })
	ch.watch.Stop()
	ch.barrier = time.AfterFunc(time.Hour, func() { lp.reclaimIdle(ch) })
	ch.barrier.Stop()
	lp.e.st.liveQPs.Add(1)
	lp.e.st.liveMRs.Add(1)
	lp.chans[ch.key], lp.byID[ch.id] = ch, ch
	return ch, qp
}

func nopRegister(int, func()) (func() error, error) { return func() error { return nil }, nil }

// TestLostCompletionReleasesTheHold: a posted unit whose completion
// never comes (siw sometimes drops the one of a Write in flight at a
// Terminate) must not hang its reply: Ready hears the failure at the
// completion timeout and the channel is killed; once its QP is
// destroyed the device cannot touch the unit's memory, which is released
// then (and Done called), not only at Close.
func TestLostCompletionReleasesTheHold(t *testing.T) {
	e := newTestEngine(t, Config{CompletionTimeout: 100 * time.Millisecond})
	if err := e.AttachLoop(0, nopRegister); err != nil {
		t.Fatal(err)
	}
	lp := e.loopAt(0)
	ch, qp := stubChannel(lp, 1)
	b := e.NewBody()
	var ready, done atomic.Value
	u := &unit{kind: unitWrite, body: b, wait: true, notify: Notify{
		Ready: func(err error) { ready.Store(err) },
		Done:  func(err error) { done.Store(err) },
	}}
	if err := lp.post(ch, u, 1, func(uint64, bool) error { return nil }); err != nil { // posted, never completes
		t.Fatal(err)
	}
	if !rdmatest.Eventually(5*time.Second, func() bool { return ready.Load() != nil && done.Load() != nil }) {
		t.Fatalf("after the completion timeout: ready %v, done %v", ready.Load(), done.Load())
	}
	if err := ready.Load().(error); err.Error() != "no completion in 100ms" {
		t.Fatalf("Ready heard %q", err)
	}
	lp.mu.Lock()
	cached := lp.chans[ch.key] != nil
	lp.mu.Unlock()
	if cached || !qp.disconnected.Load() || !qp.closed.Load() {
		t.Fatalf("channel cached %v, disconnected %v, QP destroyed %v", cached, qp.disconnected.Load(), qp.closed.Load())
	}
	// The unit's Done comes from inside the kill, before the channel's
	// own memory is deregistered: the count reaches zero just after.
	settled := func() bool {
		st := e.Stats()
		return st.Stuck == 1 && st.LiveQPs == 0 && st.LiveMRs == 0 && st.Lost == 1
	}
	if !rdmatest.Eventually(5*time.Second, settled) {
		t.Fatalf("stats %+v", e.Stats())
	}
	if b.refs.Load() != 0 {
		t.Fatalf("the unit's body has %d references left", b.refs.Load())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCompletionDuringPost: a completion that retires a unit while the
// unit is still being posted (on siw a Write leaves inside its post, and
// the peer's Terminate can come back before the message behind it is
// posted) must not end the unit a second time: if the rest of the post
// fails, the caller hears only that (no Ready, no Done) and still owns
// the body; if it succeeds, the unit is finished once, with the
// completion's outcome.
func TestCompletionDuringPost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   rdma.Status
		postErr  error
		wantDone bool
	}{
		{"error completion, then the post fails", rdma.StatusRemAccessErr, rdma.ErrQPState, false},
		{"error completion, the post completes", rdma.StatusRemAccessErr, nil, true},
		{"success, the post completes", rdma.StatusSuccess, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEngine(t, Config{})
			if err := e.AttachLoop(0, nopRegister); err != nil {
				t.Fatal(err)
			}
			lp := e.loopAt(0)
			ch, _ := stubChannel(lp, 1)
			ch.users++ // the poster's use, as Deliver holds one
			b := e.NewBody()
			var ready, done atomic.Int32
			u := &unit{kind: unitWrite, body: b, wait: true, notify: Notify{
				Ready: func(error) { ready.Add(1) },
				Done:  func(error) { done.Add(1) },
			}}
			b.Retain() // the unit's, as write takes it
			err := lp.post(ch, u, 2, func(id uint64, _ bool) error {
				lp.complete(&rdma.Completion{WRID: id, Status: tc.status})
				return tc.postErr
			})
			if (err != nil) != (tc.postErr != nil) {
				t.Fatalf("post: %v", err)
			}
			if err != nil {
				b.Release() // the unit's: write drops it when the post fails
			}
			want := int32(0)
			if tc.wantDone {
				want = 1
			}
			if ready.Load() != want || done.Load() != want {
				t.Fatalf("Ready %d times, Done %d times, want %d", ready.Load(), done.Load(), want)
			}
			if got := b.refs.Load(); got != 1 {
				t.Fatalf("the body has %d references, want the caller's alone", got)
			}
			b.Release()
			lp.release(ch)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDetachFailsWhatCannotFinish: what is still in flight when a
// leaving loop's DetachTimeout is up, a unit whose completion the device
// lost and an exposure its client never confirms, is failed by the
// detach, not left to the watchdog or the exposure's timer (an hour
// here) of a loop that is gone: the channel is killed, the unit's memory
// released only once its QP is destroyed, the exposure revoked, and each
// Done hears ErrChannelClosed.
func TestDetachFailsWhatCannotFinish(t *testing.T) {
	e := newTestEngine(t, Config{CompletionTimeout: time.Hour, ExposureTimeout: time.Hour, DetachTimeout: 50 * time.Millisecond})
	if err := e.AttachLoop(0, nopRegister); err != nil {
		t.Fatal(err)
	}
	lp := e.loopAt(0)
	ch, qp := stubChannel(lp, 1)
	ub, xb := e.NewBody(), e.NewBody()
	var unitDone, expDone atomic.Value
	u := &unit{kind: unitWrite, body: ub, notify: Notify{Done: func(err error) { unitDone.Store(err) }}}
	if err := lp.post(ch, u, 1, func(uint64, bool) error { return nil }); err != nil { // posted, never completes
		t.Fatal(err)
	}
	x := &exposure{op: 9, ch: ch, body: xb, done: func(err error) { expDone.Store(err) }}
	if err := lp.addExposure(x); err != nil {
		t.Fatal(err)
	}
	lp.grant(x)

	t0 := time.Now()
	if err := e.DetachLoop(0); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took < 50*time.Millisecond {
		t.Errorf("DetachLoop gave the work %v, not its DetachTimeout", took)
	}
	for what, v := range map[string]*atomic.Value{"unit": &unitDone, "exposure": &expDone} {
		if err, _ := v.Load().(error); !errors.Is(err, ErrChannelClosed) {
			t.Errorf("%s: Done(%v), want ErrChannelClosed", what, err)
		}
	}
	if !qp.disconnected.Load() || !qp.closed.Load() || ub.refs.Load() != 0 || xb.refs.Load() != 0 {
		t.Errorf("disconnected %v, QP destroyed %v, body references %d and %d", qp.disconnected.Load(), qp.closed.Load(), ub.refs.Load(), xb.refs.Load())
	}
	if st := e.Stats(); st.LiveQPs != 0 || st.LiveMRs != 0 || st.LiveExposures != 0 || st.LiveCQs != 0 || st.LiveSources != 0 {
		t.Errorf("stats %+v", st)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDetachWithAChannelInUse: a caller still on one of the loop's
// channels (against the runtime's contract) keeps its QP, so the CQ
// under it cannot be destroyed: DetachLoop says so, the index is free
// for a new loop anyway, and Close releases the loop that was left once
// the caller has let go.
func TestDetachWithAChannelInUse(t *testing.T) {
	e := newTestEngine(t, Config{DetachTimeout: -1})
	if err := e.AttachLoop(0, nopRegister); err != nil {
		t.Fatal(err)
	}
	lp := e.loopAt(0)
	ch, qp := stubChannel(lp, 1)
	ch.users++ // a caller posting
	err := e.DetachLoop(0)
	if err == nil || !strings.Contains(err.Error(), "1 channels or dials still in use") {
		t.Fatalf("DetachLoop: %v", err)
	}
	if qp.closed.Load() || !qp.disconnected.Load() {
		t.Fatalf("the QP in use: destroyed %v, disconnected %v", qp.closed.Load(), qp.disconnected.Load())
	}
	if _, err := lp.use(ch.ep, false); !errors.Is(err, errLoopClosing) {
		t.Fatalf("use of a leaving loop: %v", err)
	}
	if err := e.AttachLoop(0, nopRegister); err != nil {
		t.Fatalf("AttachLoop after the detach: %v", err)
	}
	if st := e.Stats(); st.LiveCQs != 2 {
		t.Fatalf("stats %+v", st)
	}
	lp.release(ch) // the caller lets go: the dead channel is destroyed
	if !qp.closed.Load() {
		t.Fatal("the QP outlived its last user")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.LiveCQs != 0 || st.LiveQPs != 0 || st.LiveSources != 0 {
		t.Fatalf("after Close: %+v", st)
	}
}
