package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// waitLong bounds every wait: generous, since the machine may be loaded.
const waitLong = 60 * time.Second

// harness is an engine with one loop (run by GoSource) and a client
// endpoint with one buffer, both on the soft provider over loopback (or
// the device internal/rdmatest names).
type harness struct {
	e   *deliver.Engine
	ep  *deliver.Endpoint
	buf *deliver.Buffer
}

// newHarness starts both and, at cleanup, closes them and fails the
// test if the engine leaks: Close reports busy objects, and every live
// count must be back at zero.
func newHarness(t *testing.T, cfg deliver.Config, opTimeout time.Duration) *harness {
	t.Helper()
	cfg.Provider = rdmatest.Provider(t)
	cfg.Addr = rdmatest.Addr()
	e, err := deliver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.AttachLoop(0, deliver.GoSource); err != nil {
		t.Fatal(err)
	}
	ep, err := deliver.NewEndpoint(deliver.EndpointConfig{Provider: rdmatest.Provider(t), Addr: net.JoinHostPort(rdmatest.Host(), "0"), OpTimeout: opTimeout})
	if err != nil {
		t.Fatal(err)
	}
	buf, err := ep.NewBuffer(17 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ep.Close(); err != nil {
			t.Errorf("endpoint Close: %v", err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("engine Close: %v", err)
		}
		if st := e.Stats(); st.LiveMRs != 0 || st.LiveMWs != 0 || st.LiveQPs != 0 || st.LiveExposures != 0 || st.LivePDs != 0 || st.PooledMRs != 0 {
			t.Errorf("after Close: %+v", st)
		}
	})
	return &harness{e: e, ep: ep, buf: buf}
}

func (h *harness) expect(t *testing.T, op uint64) *deliver.Wait {
	t.Helper()
	w, err := h.ep.Expect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.For(op)
	return w
}

// outcome records a delivery's callbacks.
type outcome struct {
	ready, done chan error
}

func newOutcome() *outcome { return &outcome{ready: make(chan error, 1), done: make(chan error, 1)} }

func (o *outcome) notify() deliver.Notify {
	return deliver.Notify{
		Ready: func(err error) { o.ready <- err },
		Done:  func(err error) { o.done <- err },
	}
}

func wait(t *testing.T, c chan error, what string) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(waitLong):
		t.Fatalf("no %s in %v", what, waitLong)
		return nil
	}
}

func body(e *deliver.Engine, p []byte) *deliver.Body {
	b := e.NewBody()
	if err := b.AddHeap(p); err != nil {
		panic(err)
	}
	return b
}

// errInline is fetch's error when the transfer failed while the reply
// was held: the protocol would send the body inline in that reply.
var errInline = errors.New("the reply carries the body inline")

// fetch delivers p to the harness's client in mode and takes it as the
// client does: server-writes waits for the written message, client-reads
// reads the exposure and confirms it. It returns the receipt and what
// the client got.
func (h *harness) fetch(t *testing.T, mode deliver.Mode, p []byte, o *outcome) (deliver.Receipt, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	op := h.ep.NextOp()
	tg := deliver.Target{Mode: mode, Endpoint: h.ep.Addr(), Op: op}
	var w *deliver.Wait
	if mode == deliver.ModeServerWrites {
		tg.Buffer = h.buf.Region()
		w = h.expect(t, op)
		defer w.Cancel()
	}
	b := body(h.e, p)
	r, err := h.e.Deliver(0, tg, b, o.notify())
	if err != nil {
		b.Release()
		return r, nil, err
	}
	if r.Wait {
		if err := wait(t, o.ready, "Ready"); err != nil {
			// A protocol sends the body inline in this same reply.
			return r, nil, fmt.Errorf("%w: %w", errInline, err)
		}
	}
	switch {
	case len(p) == 0:
		return r, nil, nil
	case mode == deliver.ModeServerWrites:
		err = w.Await(ctx, r.Channel)
		return r, h.buf.Bytes()[:r.Written], err
	default:
		if err := h.ep.Read(ctx, r.Channel, op, r.Exposure, h.buf, false); err != nil {
			return r, nil, err
		}
		if n := h.e.Confirm(0, rdmatest.Addr(), 0, r.Channel, op, false); n != 1 {
			return r, nil, fmt.Errorf("confirm ended %d exposures", n)
		}
		return r, h.buf.Bytes()[:r.Exposure.Len], nil
	}
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}).Read(b)
	return b
}

// TestDeliverModes: every size arrives byte-exact in both modes under
// both signallings; every delivery hears Done exactly once, with nil;
// a reply waits for Ready exactly where the signalling says.
func TestDeliverModes(t *testing.T) {
	sizes := []int{0, 1, 4095, 4096, 65536 + 7, 1<<20 + 3, 16 << 20}
	for _, sig := range []deliver.Signalling{deliver.SignalEveryReply, deliver.SignalSparse} {
		t.Run(sig.String(), func(t *testing.T) {
			h := newHarness(t, deliver.Config{Signal: sig}, 10*time.Second)
			for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
				for _, n := range sizes {
					t.Run(fmt.Sprintf("%s/%d", mode, n), func(t *testing.T) {
						p := randomBytes(uint64(n), n)
						o := newOutcome()
						r, got, err := h.fetch(t, mode, p, o)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, p) {
							t.Fatalf("%d bytes delivered, %d different ones arrived", n, len(got))
						}
						// A client-reads reply waits for its window's bind; without
						// windows (siw) the exposure is an MR and there is none.
						wantWait := n > 0 && (mode == deliver.ModeClientReads && h.e.MemoryWindows() || mode == deliver.ModeServerWrites && sig == deliver.SignalEveryReply)
						if r.Wait != wantWait {
							t.Errorf("Wait %v, want %v", r.Wait, wantWait)
						}
						if err := wait(t, o.done, "Done"); err != nil {
							t.Errorf("Done: %v", err)
						}
						select {
						case err := <-o.done:
							t.Errorf("Done twice (%v)", err)
						case err := <-o.ready:
							t.Errorf("Ready without a wait, or twice (%v)", err)
						default:
						}
					})
				}
			}
		})
	}
}

// TestSparseRetiresFromTheHighWaterMark: signalled sparsely, a burst of
// server-writes units asks for a completion every SignalInterval units
// only, and each completion retires every unit before it; the tail of
// the burst is retired by one barrier once the channel is quiet. Every
// unit's staging memory is back in the pool afterwards.
func TestSparseRetiresFromTheHighWaterMark(t *testing.T) {
	const units, interval = 43, 8 // five full batches and a tail of three
	// The barrier comes ReclaimDelay after the last unit posted: a pause
	// that long between two units of the burst would post one in the
	// middle too. At 20 ms, CI's guest (sharing two cores with the rest of
	// CI) paused that long once in a few runs and the test saw 2 barriers.
	h := newHarness(t, deliver.Config{Signal: deliver.SignalSparse, SignalInterval: interval, ReclaimDelay: 300 * time.Millisecond}, 10*time.Second)
	// Warm the channel so the dial's completions are not counted.
	if _, _, err := h.fetch(t, deliver.ModeServerWrites, []byte("warm"), newOutcome()); err != nil {
		t.Fatal(err)
	}
	if !rdmatest.Eventually(waitLong, func() bool { return h.e.Stats().Written == 1 }) {
		t.Fatalf("warm-up unit not retired: %+v", h.e.Stats())
	}
	before := h.e.Stats()
	// The warm-up unit, unsignalled, was retired by a barrier, which is
	// counted by the time its unit is: once in 38 runs on siw0 the count
	// came after (posted, completed and retired before PostSend returned)
	// and the burst below seemed to have two.
	if before.Barriers != 1 {
		t.Fatalf("warm-up unit retired, %d barriers counted: %+v", before.Barriers, before)
	}
	var done atomic.Int32
	ws := make([]*deliver.Wait, units)
	ops := make([]uint64, units)
	var ch uint32
	for i := range units {
		ops[i] = h.ep.NextOp()
		ws[i] = h.expect(t, ops[i])
		defer ws[i].Cancel()
		b := body(h.e, randomBytes(uint64(i), 4096))
		r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeServerWrites, Endpoint: h.ep.Addr(), Op: ops[i], Buffer: h.buf.Region()}, b,
			deliver.Notify{
				Ready: func(error) { t.Errorf("Ready called for a unit that does not wait") },
				Done: func(err error) {
					if err != nil {
						t.Errorf("Done: %v", err)
					}
					done.Add(1)
				},
			})
		if err != nil || r.Wait {
			t.Fatalf("unit %d: %v, wait %v", i, err, r.Wait)
		}
		ch = r.Channel
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for i, w := range ws {
		if err := w.Await(ctx, ch); err != nil {
			t.Fatalf("unit %d's written message: %v", i, err)
		}
	}
	if !rdmatest.Eventually(waitLong, func() bool { return done.Load() == units }) {
		t.Fatalf("%d of %d units retired: %+v", done.Load(), units, h.e.Stats())
	}
	st := h.e.Stats()
	signaled, barriers := st.Signaled-before.Signaled, st.Barriers-before.Barriers
	t.Logf("%d units: %d completions (%d barriers)", units, signaled, barriers)
	// Every unit retired (above) by at most one completion per interval
	// and one for the tail: a barrier as a rule. Once on siw0 in CI the
	// tail fell on a signalled unit instead (6 completions, 0 barriers),
	// which retires it as well; so the barrier is bounded, not required.
	if signaled > units/interval+1 || barriers > 1 {
		t.Errorf("%d completions and %d barriers for %d units at interval %d; want at most %d and 1",
			signaled, barriers, units, interval, units/interval+1)
	}
	// Every staging buffer is back: in use are only the channel's message
	// area; the units' buffers sit in the pool.
	if st.LiveMRs != 1 || st.PooledMRs == 0 || st.Written != before.Written+units {
		t.Errorf("after the batch: %+v", st)
	}
}

// TestEveryReplySignalsEach: signalling every reply, each unit has its
// own completion and its reply waits for it.
func TestEveryReplySignalsEach(t *testing.T) {
	h := newHarness(t, deliver.Config{}, 10*time.Second)
	before := h.e.Stats()
	for i := range 10 {
		o := newOutcome()
		r, _, err := h.fetch(t, deliver.ModeServerWrites, randomBytes(uint64(i), 100), o)
		if err != nil || !r.Wait {
			t.Fatalf("unit %d: %v, wait %v", i, err, r.Wait)
		}
		wait(t, o.done, "Done")
	}
	if st := h.e.Stats(); st.Signaled-before.Signaled != 10 || st.Barriers != 0 {
		t.Errorf("10 replies: %d completions, %d barriers", st.Signaled-before.Signaled, st.Barriers)
	}
}

// TestSendQueueNeverFills: signalled sparsely with an interval, a byte
// threshold and a reclaim delay too large to matter, a stream longer
// than the send queue still posts: the engine signals before half the
// queue is unsignalled, so completions free its slots. The client keeps
// up to 200 written messages awaited at once, as a pipelining client
// would.
func TestSendQueueNeverFills(t *testing.T) {
	h := newHarness(t, deliver.Config{Signal: deliver.SignalSparse, SignalInterval: 1 << 20, SignalBytes: 1 << 40, ReclaimDelay: time.Hour}, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	const units, window = 3000, 200 // each unit is a Write and a Send: 6000 work requests, the queue holds 1024
	var done atomic.Int32
	var ws []*deliver.Wait
	var ch uint32
	for i := range units {
		if len(ws) == window {
			for _, w := range ws {
				if err := w.Await(ctx, ch); err != nil {
					t.Fatal(err)
				}
				w.Cancel()
			}
			ws = ws[:0]
		}
		op := h.ep.NextOp()
		ws = append(ws, h.expect(t, op))
		r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeServerWrites, Endpoint: h.ep.Addr(), Op: op, Buffer: h.buf.Region()}, body(h.e, []byte{byte(i)}),
			deliver.Notify{Done: func(error) { done.Add(1) }})
		if err != nil {
			t.Fatalf("unit %d: %v", i, err)
		}
		ch = r.Channel
	}
	for _, w := range ws {
		w.Cancel()
	}
	// Only the signalled units' completions retire anything here: the
	// tail after the last one waits for the next unit, or Close.
	const perSignal = 256 // half the queue, at two requests a unit
	if !rdmatest.Eventually(waitLong, func() bool { return done.Load() >= units-perSignal }) {
		t.Fatalf("%d of %d retired", done.Load(), units)
	}
	if st := h.e.Stats(); st.Signaled < units/perSignal || st.Signaled > units/perSignal+1 || st.Barriers != 0 {
		t.Errorf("%d completions, %d barriers for %d units", st.Signaled, st.Barriers, units)
	}
}

// TestConfirmCumulative: a cumulative confirmation ends every exposure
// of the channel up to its op id at once (the client's high-water mark),
// of its own connection only (two connections share the channel here),
// and none from another host.
func TestConfirmCumulative(t *testing.T) {
	h := newHarness(t, deliver.Config{}, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	const n = 8
	var ops [n]uint64
	var ch uint32
	var dones [n]*outcome
	owner := func(i int) uint64 { return uint64(1 + i%2) } // connections 1 and 2 interleaved
	for i := range n {
		ops[i] = h.ep.NextOp()
		dones[i] = newOutcome()
		b := body(h.e, randomBytes(uint64(i), 10000))
		r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeClientReads, Endpoint: h.ep.Addr(), Op: ops[i], Owner: owner(i)}, b, dones[i].notify())
		if err != nil {
			t.Fatal(err)
		}
		if r.Wait {
			wait(t, dones[i].ready, "Ready")
		}
		if err := h.ep.Read(ctx, r.Channel, ops[i], r.Exposure, h.buf, false); err != nil {
			t.Fatal(err)
		}
		ch = r.Channel
	}
	if got := h.e.Confirm(0, netip.MustParseAddr("192.0.2.7"), 1, ch, ops[n-1], true); got != 0 {
		t.Fatalf("a confirmation from another host ended %d exposures", got)
	}
	// Connection 1 through ops[5]: its exposures 0, 2 and 4.
	if got := h.e.Confirm(0, rdmatest.Addr(), 1, ch, ops[5], true); got != 3 {
		t.Fatalf("cumulative through op %d ended %d exposures, want 3", ops[5], got)
	}
	for _, i := range []int{0, 2, 4} {
		if err := wait(t, dones[i].done, "Done"); err != nil {
			t.Errorf("exposure %d: %v", i, err)
		}
	}
	if st := h.e.Stats(); st.LiveExposures != n-3 || st.Confirmed != 3 {
		t.Fatalf("after the batch: %+v", st)
	}
	if got := h.e.Confirm(0, rdmatest.Addr(), 1, ch, ops[7], false); got != 0 {
		t.Fatalf("connection 1 confirmed connection 2's op: %d", got)
	}
	if got := h.e.Confirm(0, rdmatest.Addr(), 1, ch, ops[6], false); got != 1 {
		t.Fatalf("single confirmation ended %d", got)
	}
	if got := h.e.Confirm(0, rdmatest.Addr(), 2, ch, ops[7], true); got != 4 {
		t.Fatalf("connection 2's cumulative ended %d, want 4", got)
	}
	if st := h.e.Stats(); st.LiveExposures != 0 || st.Confirmed != n {
		t.Fatalf("at the end: %+v", st)
	}
}

// TestLostWriteIsDetected: a Write the client's device refuses (a wrong
// key) is lost. The client detects it (its channel fails, or no written
// message comes in time); the server, depending on the race between its
// message and the client's Terminate, sees the unit fail (Ready and Done
// hear it) or complete (iWARP completes a Write when TCP takes it). A
// retry with a new op id on a new channel delivers.
func TestLostWriteIsDetected(t *testing.T) {
	for _, sig := range []deliver.Signalling{deliver.SignalEveryReply, deliver.SignalSparse} {
		t.Run(sig.String(), func(t *testing.T) {
			h := newHarness(t, deliver.Config{Signal: sig}, 3*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), waitLong)
			defer cancel()
			p := randomBytes(7, 1<<20)
			op := h.ep.NextOp()
			w := h.expect(t, op)
			defer w.Cancel()
			bad := h.buf.Region()
			bad.RKey ^= 0x5a5a00
			o := newOutcome()
			b := body(h.e, p)
			r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeServerWrites, Endpoint: h.ep.Addr(), Op: op, Buffer: bad}, b, o.notify())
			var srv error
			if err != nil {
				// Where the Write leaves inside the post (siw), the client's
				// Terminate can beat the written message's post: the server
				// knows at once, and the body would go inline. Still the
				// caller's.
				var fb *deliver.Fallback
				if !errors.As(err, &fb) || fb.Reason != deliver.ReasonPostFailed {
					t.Fatal(err)
				}
				b.Release()
				srv = err
				t.Logf("server: %v", err)
			} else {
				if err := w.Await(ctx, r.Channel); !errors.Is(err, deliver.ErrLost) {
					t.Fatalf("the client did not detect the loss: %v", err)
				}
				srv = wait(t, o.done, "Done")
				t.Logf("client: lost; server: %v", srv)
				if r.Wait {
					if err := wait(t, o.ready, "Ready"); (err == nil) != (srv == nil) {
						t.Errorf("Ready %v, Done %v", err, srv)
					}
				}
			}
			// Asked again, with a new op id, as a requester does until it gets
			// it: where the server saw success, its side of the channel lives
			// until the client's Terminate reaches it, and a retry that comes
			// first is lost too; the next goes on a new channel.
			for attempt := 2; ; attempt++ {
				r2, got, err := h.fetch(t, deliver.ModeServerWrites, p, newOutcome())
				var fb *deliver.Fallback
				if errors.Is(err, errInline) || errors.As(err, &fb) {
					t.Logf("attempt %d: the body goes inline (%v)", attempt, err)
					break
				}
				if err == nil && bytes.Equal(got, p) {
					if srv != nil && r2.Channel == r.Channel {
						t.Fatalf("the failed channel %d was used again", r.Channel)
					}
					break
				}
				if !errors.Is(err, deliver.ErrLost) || attempt == 4 {
					t.Fatalf("attempt %d: %v, %d bytes", attempt, err, len(got))
				}
				t.Logf("attempt %d lost too: %v", attempt, err)
			}
		})
	}
}

// TestRedialsAChannelThatFailedUnheard: a cached channel whose QP failed
// before its loop heard of it (a Terminate or a reset still on its way
// to the CQ; seen on siw as the first post on a channel refused) refuses
// the next post; the engine retires it and posts the delivery once more
// on a channel dialed then, so the client gets the body by RDMA, not
// inline because of an older failure. The refused channel's resources
// are released (the harness checks at Close).
func TestRedialsAChannelThatFailedUnheard(t *testing.T) {
	for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, deliver.Config{}, waitLong)
			if mode == deliver.ModeClientReads && !h.e.MemoryWindows() {
				t.Skip("client-reads without memory windows posts nothing at exposure")
			}
			p := randomBytes(11, 70<<10)
			r1, got, err := h.fetch(t, mode, p, newOutcome())
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("first delivery: %v, %d bytes", err, len(got))
			}
			if n := h.e.BreakChannels(0); n != 1 {
				t.Fatalf("broke %d channels, want the one", n)
			}
			r2, got, err := h.fetch(t, mode, p, newOutcome())
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("after the channel failed: %v, %d bytes", err, len(got))
			}
			if r2.Channel == r1.Channel {
				t.Fatalf("delivered on the failed channel %d", r1.Channel)
			}
			if st := h.e.Stats(); st.Redials != 1 || st.Dials != 2 || st.LiveQPs != 1 {
				t.Fatalf("stats %+v, want 1 redial, 2 dials, 1 live QP", st)
			}
		})
	}
}

// TestFileBodies: file regions go from the file cache's registration,
// in both modes: a whole file, a part of one, and heap and file mixed.
func TestFileBodies(t *testing.T) {
	h := newHarness(t, deliver.Config{}, 10*time.Second)
	data := randomBytes(9, 300000)
	p := filepath.Join(t.TempDir(), "f.bin")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
		for _, tc := range []struct {
			name string
			fill func(*deliver.Body)
			want []byte
		}{
			{"whole", func(b *deliver.Body) { b.AddFile(f, 0, int64(len(data))) }, data},
			{"part", func(b *deliver.Body) { b.AddFile(f, 1000, 5000) }, data[1000:6000]},
			{"mixed", func(b *deliver.Body) {
				b.AddHeap([]byte("head:"))
				b.AddFile(f, 10, 20)
				b.AddHeap([]byte(":tail"))
			}, append(append([]byte("head:"), data[10:30]...), ":tail"...)},
		} {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				b := h.e.NewBody()
				tc.fill(b)
				op := h.ep.NextOp()
				tg := deliver.Target{Mode: mode, Endpoint: h.ep.Addr(), Op: op, Buffer: h.buf.Region()}
				w := h.expect(t, op)
				defer w.Cancel()
				o := newOutcome()
				r, err := h.e.Deliver(0, tg, b, o.notify())
				if err != nil {
					t.Fatal(err)
				}
				if r.Wait {
					wait(t, o.ready, "Ready")
				}
				var got []byte
				if mode == deliver.ModeServerWrites {
					err = w.Await(ctx, r.Channel)
					got = h.buf.Bytes()[:r.Written]
				} else {
					w.Cancel()
					err = h.ep.Read(ctx, r.Channel, op, r.Exposure, h.buf, true) // HTTP's read-done message
					got = h.buf.Bytes()[:r.Exposure.Len]
				}
				if err != nil || !bytes.Equal(got, tc.want) {
					t.Fatalf("%v: %d bytes, want %d", err, len(got), len(tc.want))
				}
				if err := wait(t, o.done, "Done"); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	if st := h.e.Stats(); st.CacheMisses != 1 || st.CacheHits < 3 {
		t.Errorf("file cache: %+v", st)
	}
}

// TestFallbacks: what Deliver refuses, and that the body is then still
// the caller's (its Release frees it; nothing leaks, which the harness
// checks at Close).
func TestFallbacks(t *testing.T) {
	h := newHarness(t, deliver.Config{DialTimeout: time.Second, MaxStaging: 1 << 20}, 10*time.Second)
	closed := netip.AddrPortFrom(rdmatest.Addr(), 1)
	for _, tc := range []struct {
		name string
		w    int
		t    deliver.Target
		n    int
		want deliver.Reason
	}{
		{"no loop", 3, deliver.Target{Mode: deliver.ModeClientReads, Endpoint: h.ep.Addr(), Op: 1}, 10, deliver.ReasonNoRDMA},
		{"unreachable", 0, deliver.Target{Mode: deliver.ModeClientReads, Endpoint: closed, Op: 1}, 10, deliver.ReasonConnectFailed},
		{"buffer too small", 0, deliver.Target{Mode: deliver.ModeServerWrites, Endpoint: h.ep.Addr(), Op: 1, Buffer: deliver.Region{Addr: 1, RKey: 1, Len: 5}}, 10, deliver.ReasonBufferTooSmall},
		{"too large", 0, deliver.Target{Mode: deliver.ModeClientReads, Endpoint: h.ep.Addr(), Op: 1}, 1<<20 + 1, deliver.ReasonTooLarge},
		{"mode off", 0, deliver.Target{Endpoint: h.ep.Addr(), Op: 1}, 10, deliver.ReasonUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := h.e.NewBody()
			if tc.n > 1<<20 {
				b.AddFile(os.Stdin, 0, int64(tc.n)) // never read: refused by size first
			} else {
				b.AddHeap(make([]byte, tc.n))
			}
			_, err := h.e.Deliver(tc.w, tc.t, b, deliver.Notify{Done: func(error) { t.Error("Done after a fallback") }})
			var fb *deliver.Fallback
			if !errors.As(err, &fb) || fb.Reason != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
			b.Release()
		})
	}
}

// TestExpectIsBounded: an endpoint awaits at most MaxWrittenInFlight
// written messages at once, so servers can never send it more messages
// than it has receives posted (iWARP kills a connection whose Send finds
// none); the next Expect waits for a Cancel.
func TestExpectIsBounded(t *testing.T) {
	h := newHarness(t, deliver.Config{}, time.Second)
	ws := make([]*deliver.Wait, deliver.MaxWrittenInFlight)
	for i := range ws {
		ws[i] = h.expect(t, h.ep.NextOp())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w, err := h.ep.Expect(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Expect past the bound: %v, %v", w, err)
	}
	ws[0].Cancel()
	ws[0].Cancel() // twice: the credit goes back once
	w := h.expect(t, h.ep.NextOp())
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := h.ep.Expect(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a double Cancel gave back two credits: %v", err)
	}
	w.Cancel()
	for _, w := range ws[1:] {
		w.Cancel()
	}
}

// TestEndpointCloseWhileInUse: Close ends the waits under way with
// ErrEndpointClosed (not at their operation timeout, a minute here),
// lets Reads racing it finish before it destroys their QP and buffers,
// and leaves an endpoint that refuses further calls and closes again
// without harm.
func TestEndpointCloseWhileInUse(t *testing.T) {
	h := newHarness(t, deliver.Config{}, time.Minute)
	ep := h.ep
	payload := randomBytes(7, 64<<10)

	blocked := make(chan error, 3)
	go func() { // a channel id no server dialed
		blocked <- ep.Read(context.Background(), 999, ep.NextOp(), deliver.Region{Len: 1}, h.buf, false)
	}()
	go func() { // past the bound of awaited messages
		var ws []*deliver.Wait
		for range deliver.MaxWrittenInFlight {
			w, err := ep.Expect(context.Background())
			if err != nil {
				blocked <- err
				return
			}
			ws = append(ws, w)
		}
		_, err := ep.Expect(context.Background())
		for _, w := range ws {
			w.Cancel()
		}
		blocked <- err
	}()

	// Reads racing Close, each into a buffer of its own.
	var reads atomic.Int64
	readers := make(chan error, 4)
	for range 4 {
		go func() {
			buf, err := ep.NewBuffer(len(payload))
			if err != nil {
				readers <- err
				return
			}
			defer buf.Close()
			for {
				op := ep.NextOp()
				b, o := body(h.e, payload), newOutcome()
				r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeClientReads, Endpoint: ep.Addr(), Op: op}, b, o.notify())
				if err != nil {
					b.Release()
					readers <- fmt.Errorf("Deliver: %w", err)
					return
				}
				if r.Wait { // the window's bind must complete before the key works
					if err := <-o.ready; err != nil {
						readers <- fmt.Errorf("Deliver: %w", err)
						return
					}
				}
				if err := ep.Read(context.Background(), r.Channel, op, r.Exposure, buf, false); err != nil {
					readers <- err
					return
				}
				reads.Add(1)
				h.e.Confirm(0, rdmatest.Addr(), 0, r.Channel, op, false)
			}
		}()
	}
	for reads.Load() < 20 {
		select {
		case err := <-readers:
			t.Fatalf("a Read before Close: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	if err := ep.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i := range 2 {
		select {
		case err := <-blocked:
			if !errors.Is(err, deliver.ErrEndpointClosed) {
				t.Errorf("a wait cut short by Close: %v, want ErrEndpointClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 2 waits still blocked 10 s after Close", 2-i)
		}
	}
	for range 4 {
		// A Read that Close caught waiting or entering says so; a
		// Deliver that came after it falls back (no endpoint to dial).
		if err := <-readers; !errors.Is(err, deliver.ErrEndpointClosed) && !errors.Is(err, deliver.ErrLost) && !strings.HasPrefix(err.Error(), "Deliver: ") {
			t.Errorf("a Read racing Close: %v", err)
		}
	}
	t.Logf("%d reads before Close", reads.Load())

	if err := ep.Read(context.Background(), 1, ep.NextOp(), deliver.Region{Len: 1}, h.buf, false); !errors.Is(err, deliver.ErrEndpointClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := ep.NewBuffer(4096); !errors.Is(err, deliver.ErrEndpointClosed) {
		t.Errorf("NewBuffer after Close: %v", err)
	}
	if _, err := ep.Expect(context.Background()); !errors.Is(err, deliver.ErrEndpointClosed) {
		t.Errorf("Expect after Close: %v", err)
	}
	if err := h.buf.Close(); err != nil {
		t.Errorf("a Buffer's Close after the endpoint's: %v", err)
	}
	if err := ep.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A Buffer closed, by its own Close or its endpoint's, has no memory to
// give (nil Bytes, 0 Len, no Region) and cannot be read into, whoever
// asks, and whenever: callers racing the endpoint's Close get nil, not
// memory being unmapped (-race checks that too).
func TestBufferClosed(t *testing.T) {
	h := newHarness(t, deliver.Config{}, time.Second)
	ep := h.ep
	own, err := ep.NewBuffer(4096)
	if err != nil {
		t.Fatal(err)
	}
	if len(own.Bytes()) != 4096 || own.Len() != 4096 || own.Region().Len != 4096 {
		t.Fatalf("an open buffer: %d bytes, Len %d, region %+v", len(own.Bytes()), own.Len(), own.Region())
	}
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}
	closed := func(what string, b *deliver.Buffer) {
		t.Helper()
		if b.Bytes() != nil || b.Len() != 0 || b.Region() != (deliver.Region{}) {
			t.Errorf("%s: %d bytes, Len %d, region %+v; want none", what, len(b.Bytes()), b.Len(), b.Region())
		}
	}
	closed("after its Close", own)
	if err := ep.Read(t.Context(), 1, ep.NextOp(), deliver.Region{Len: 1}, own, false); !errors.Is(err, deliver.ErrBufferClosed) {
		t.Errorf("a Read into a closed buffer: %v, want ErrBufferClosed", err)
	}

	var readers sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				// Only the answers: the memory of a Bytes that came just
				// before Close may be gone by the time it is touched
				// ("it dies with Close").
				_, _, _ = h.buf.Bytes(), h.buf.Len(), h.buf.Region()
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	if err := ep.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	close(stop)
	readers.Wait()
	closed("after the endpoint's Close", h.buf)
}
