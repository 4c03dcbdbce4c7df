package deliver_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/rdmatest"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// countingSources is a Register (GoSource underneath) that counts the
// completion sources registered and not yet removed.
type countingSources struct{ live atomic.Int32 }

func (s *countingSources) register(fd int, fn func()) (func() error, error) {
	detach, err := deliver.GoSource(fd, fn)
	if err != nil {
		return nil, err
	}
	s.live.Add(1)
	return func() error { s.live.Add(-1); return detach() }, nil
}

// TestDetachLoop: a loop detached with RDMA work still in flight settles
// it, releases everything AttachLoop and the loop's deliveries made (its
// poller registration, CQ, channels, exposures, the units' staging
// memory), and a loop attached again at the same index delivers. Each
// case leaves different work behind its replies, as a writer loop
// removed while serving would:
//
//   - idle: nothing;
//   - sparse units: signalled sparsely, with no barrier due for an hour,
//     units written and answered but not retired: the detach posts the
//     barrier and retires them (Done nil), rather than failing them;
//   - read-done during the detach: a client-reads exposure the client
//     reads while the loop is leaving; its read-done message arrives in
//     the leaving loop's CQ, which the detach now drains itself;
//   - confirmed elsewhere: the messenger's confirmation comes through
//     Confirm, naming another writer loop (the connection's replies
//     moved when its loop left): it still finds the channel;
//   - never confirmed: the exposure is revoked at DetachTimeout (Done
//     ErrChannelClosed), and the client's Read then fails as lost, which
//     it answers by asking again.
func TestDetachLoop(t *testing.T) {
	// settleable is the DetachTimeout of cases whose work ends by itself:
	// far longer than it takes on a loaded machine, and DetachLoop must
	// return as soon as the work has ended, not at the timeout.
	const settleable = 20 * time.Second
	const n = 5
	payload := randomBytes(7, 70000)
	for _, tc := range []struct {
		name    string
		cfg     deliver.Config
		start   func(t *testing.T, h *harness, f *inflight)
		wantErr error // every Done's
		check   func(t *testing.T, h *harness, f *inflight, st deliver.Stats)
	}{
		{name: "idle", cfg: deliver.Config{}},
		{
			name: "sparse units await their barrier",
			cfg:  deliver.Config{Signal: deliver.SignalSparse, SignalInterval: 1000, ReclaimDelay: time.Hour, DetachTimeout: settleable},
			start: func(t *testing.T, h *harness, f *inflight) {
				for range n {
					op := h.ep.NextOp()
					w := h.expect(t, op)
					f.written = append(f.written, w)
					o := newOutcome()
					f.addDone(o.done)
					r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeServerWrites, Endpoint: h.ep.Addr(), Op: op, Buffer: h.buf.Region()},
						body(h.e, payload), deliver.Notify{Done: o.notify().Done})
					if err != nil || r.Wait {
						t.Fatalf("Deliver: %v, wait %v", err, r.Wait)
					}
					f.ch = r.Channel
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitLong)
				defer cancel()
				for i, w := range f.written {
					if err := w.Await(ctx, f.ch); err != nil {
						t.Fatalf("unit %d: %v", i, err)
					}
				}
				if st := h.e.Stats(); st.Written != 0 {
					t.Fatalf("units retired before the detach: %+v", st)
				}
			},
			check: func(t *testing.T, h *harness, f *inflight, st deliver.Stats) {
				if st.Written != n || st.Barriers != 1 || st.Lost != 0 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "read-done during the detach",
			cfg:  deliver.Config{DetachTimeout: settleable},
			start: func(t *testing.T, h *harness, f *inflight) {
				r := expose(t, h, payload, f)
				go func() {
					time.Sleep(50 * time.Millisecond) // the detach has begun
					f.late <- readExposure(h, r, true, payload)
				}()
			},
			check: func(t *testing.T, h *harness, f *inflight, st deliver.Stats) {
				if err := <-f.late; err != nil {
					t.Errorf("client: %v", err)
				}
				if st.Confirmed != 1 || st.TimedOut != 0 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "confirmed through another loop",
			cfg:  deliver.Config{DetachTimeout: settleable},
			start: func(t *testing.T, h *harness, f *inflight) {
				r := expose(t, h, payload, f)
				go func() {
					time.Sleep(50 * time.Millisecond)
					err := readExposure(h, r, false, payload)
					if err == nil && h.e.Confirm(3, rdmatest.Addr(), 0, r.Channel, r.op, false) != 1 {
						err = errors.New("Confirm ended no exposure")
					}
					f.late <- err
				}()
			},
			check: func(t *testing.T, h *harness, f *inflight, st deliver.Stats) {
				if err := <-f.late; err != nil {
					t.Errorf("client: %v", err)
				}
				if st.Confirmed != 1 {
					t.Errorf("stats %+v", st)
				}
			},
		},
		{
			name: "never confirmed",
			cfg:  deliver.Config{DetachTimeout: 100 * time.Millisecond},
			start: func(t *testing.T, h *harness, f *inflight) {
				r := expose(t, h, payload, f)
				go func() {
					<-f.late // after the detach
					f.late <- readExposure(h, r, true, payload)
				}()
			},
			wantErr: deliver.ErrChannelClosed,
			check: func(t *testing.T, h *harness, f *inflight, st deliver.Stats) {
				f.late <- nil
				if err := <-f.late; !errors.Is(err, deliver.ErrLost) {
					t.Errorf("the client's Read of a revoked exposure: %v, want ErrLost", err)
				}
				if st.Confirmed != 0 || st.Exposed != 1 {
					t.Errorf("stats %+v", st)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg, 5*time.Second)
			f := &inflight{late: make(chan error)}
			if tc.start != nil {
				tc.start(t, h, f)
			}
			for _, w := range f.written {
				defer w.Cancel()
			}
			t0 := time.Now()
			if err := h.e.DetachLoop(0); err != nil {
				t.Fatalf("DetachLoop: %v", err)
			}
			took := time.Since(t0)
			for i, d := range f.dones {
				select {
				case err := <-d:
					if !errors.Is(err, tc.wantErr) && err != tc.wantErr {
						t.Errorf("delivery %d: Done(%v), want %v", i, err, tc.wantErr)
					}
				default:
					t.Errorf("delivery %d: no Done by the end of DetachLoop", i)
				}
			}
			st := h.e.Stats()
			if st.LiveCQs != 0 || st.LiveSources != 0 || st.LiveQPs != 0 || st.LiveExposures != 0 || st.LiveMWs != 0 ||
				st.LiveMRs != 0 || st.LivePDs != 0 {
				t.Errorf("after DetachLoop (%v): %+v", took, st)
			}
			if h.e.Attached(0) {
				t.Errorf("loop 0 still attached")
			}
			if tc.check != nil {
				tc.check(t, h, f, st)
			}
			if tc.cfg.DetachTimeout == settleable && took >= settleable {
				t.Errorf("DetachLoop waited its whole DetachTimeout (%v) for work that ended", took)
			}

			// The index is free: a new loop attaches there and delivers.
			var src countingSources
			if err := h.e.AttachLoop(0, src.register); err != nil {
				t.Fatalf("AttachLoop again: %v", err)
			}
			if st := h.e.Stats(); st.LiveCQs != 1 || st.LiveSources != 1 || src.live.Load() != 1 {
				t.Errorf("after attaching again: %d sources, %+v", src.live.Load(), st)
			}
			for _, mode := range []deliver.Mode{deliver.ModeServerWrites, deliver.ModeClientReads} {
				r, got, err := h.fetch(t, mode, payload, newOutcome())
				if errors.Is(err, deliver.ErrLost) {
					// An operation may be lost: the requester finds out
					// and asks again (the engine's contract). On siw0
					// under TCG, about one run of the package in fifteen
					// lost the first server-writes after "read-done during
					// the detach" (no completion in the 5 s operation
					// timeout), which is not yet understood; the second
					// must arrive. The log keeps what the engine saw.
					t.Logf("%s after attaching again: %v on channel %d (engine: %+v); asking again", mode, err, r.Channel, h.e.Stats())
					_, got, err = h.fetch(t, mode, payload, newOutcome())
				}
				if err != nil || !bytes.Equal(got, payload) {
					t.Fatalf("%s after attaching again: %v, %d bytes", mode, err, len(got))
				}
			}
			if err := h.e.DetachLoop(0); err != nil {
				t.Fatal(err)
			}
			if st := h.e.Stats(); st.LiveCQs != 0 || st.LiveSources != 0 || src.live.Load() != 0 || st.LiveQPs != 0 {
				t.Errorf("after the second detach: %d sources, %+v", src.live.Load(), st)
			}
		})
	}
}

// inflight is what a TestDetachLoop case left on the loop.
type inflight struct {
	dones   []chan error    // each delivery's Done
	late    chan error      // the client's side, when it acts during the detach
	written []*deliver.Wait // server-writes' written messages
	ch      uint32
}

func (f *inflight) addDone(c chan error) { f.dones = append(f.dones, c) }

// exposed is a client-reads receipt and its op.
type exposed struct {
	deliver.Receipt
	op uint64
}

// expose makes a client-reads exposure of p on loop 0, its Done in f.
func expose(t *testing.T, h *harness, p []byte, f *inflight) exposed {
	t.Helper()
	op := h.ep.NextOp()
	o := newOutcome()
	f.addDone(o.done)
	r, err := h.e.Deliver(0, deliver.Target{Mode: deliver.ModeClientReads, Endpoint: h.ep.Addr(), Op: op}, body(h.e, p), o.notify())
	if err != nil {
		t.Fatal(err)
	}
	if r.Wait {
		if err := wait(t, o.ready, "Ready"); err != nil {
			t.Fatal(err)
		}
	}
	return exposed{r, op}
}

// readExposure is the client's Read (and, with readDone, its read-done
// message), checked against p.
func readExposure(h *harness, r exposed, readDone bool, p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := h.ep.Read(ctx, r.Channel, r.op, r.Exposure, h.buf, readDone); err != nil {
		return err
	}
	if !bytes.Equal(h.buf.Bytes()[:r.Exposure.Len], p) {
		return errors.New("the exposure's bytes differ")
	}
	return nil
}

// TestDetachLoopMisuse: calls that cannot be honoured are refused with
// an error that says why, and change nothing.
func TestDetachLoopMisuse(t *testing.T) {
	h := newHarness(t, deliver.Config{}, time.Second)
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"attach twice", func() error { return h.e.AttachLoop(0, deliver.GoSource) }, "loop 0 attached twice"},
		{"attach without register", func() error { return h.e.AttachLoop(1, nil) }, "register is nil"},
		{"detach a negative index", func() error { return h.e.DetachLoop(-1) }, "loop -1 is not attached"},
		{"detach an index never attached", func() error { return h.e.DetachLoop(7) }, "loop 7 is not attached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
			if st := h.e.Stats(); st.LiveCQs != 1 || st.LiveSources != 1 || !h.e.Attached(0) {
				t.Fatalf("changed: attached %v, %+v", h.e.Attached(0), st)
			}
		})
	}
	if err := h.e.DetachLoop(0); err != nil {
		t.Fatal(err)
	}
	if err := h.e.DetachLoop(0); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Fatalf("detached twice: %v", err)
	}
}
