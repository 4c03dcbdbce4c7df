package soft_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

// waitErr waits until qp leaves RTS and returns its error.
func waitErr(t *testing.T, qp rdma.QP) error {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for qp.State() == rdma.QPStateRTS {
		if time.Now().After(deadline) {
			t.Fatalf("QP %d still in RTS", qp.Num())
		}
		time.Sleep(time.Millisecond)
	}
	return qp.Err()
}

// TestRemoteAccessErrors: every bad tagged access is refused with a
// Terminate, the data sink is not touched outside its rights, and the
// initiator learns of it as a remote access error.
func TestRemoteAccessErrors(t *testing.T) {
	const (
		regOff = 4096 // the exposed MR covers [regOff, regOff+regLen) of server memory
		regLen = 8192
	)
	cases := []struct {
		name   string
		read   bool
		access rdma.Access // rights of the exposed MR
		off    int         // offset of the access from the MR start
		n      int
		badKey bool
		code   string // expected Terminate text
	}{
		{"read/wrong-stag", true, rdma.AccessRemoteRead, 0, 100, true, "invalid STag"},
		{"read/out-of-range", true, rdma.AccessRemoteRead, regLen - 10, 100, false, "base or bounds"},
		{"read/before-start", true, rdma.AccessRemoteRead, -1, 100, false, "base or bounds"},
		{"read/no-rights", true, rdma.AccessLocalWrite | rdma.AccessRemoteWrite, 0, 100, false, "access rights"},
		{"write/wrong-stag", false, rdma.AccessLocalWrite | rdma.AccessRemoteWrite, 0, 100, true, "invalid STag"},
		{"write/out-of-range", false, rdma.AccessLocalWrite | rdma.AccessRemoteWrite, regLen - 10, 100, false, "base or bounds"},
		{"write/no-rights", false, rdma.AccessLocalWrite | rdma.AccessRemoteRead, 0, 100, false, "access rights"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkLeaks(t)
			cli, srv := pair(t, pairOpts{cfg: soft.Config{CRC: true}, recvs: 2})
			defer cli.close(t)
			defer srv.close(t)
			exposed, err := srv.pd.Register(srv.mem.Bytes()[regOff:regOff+regLen], c.access)
			if err != nil {
				t.Fatal(err)
			}
			defer exposed.Close()
			guard := bytes.Repeat([]byte{0xAB}, 3*regLen)
			copy(srv.mem.Bytes()[0:], guard)
			fill(cli.mem.Bytes()[:c.n], 9)

			rkey := exposed.RKey()
			if c.badKey {
				rkey ^= 0x5500
			}
			raddr := exposed.Addr() + uint64(int64(c.off))
			sge := []rdma.SGE{rdma.SGEOf(cli.mr, 0, c.n)}
			readLate := false
			if c.read {
				if err := cli.qp.PostRead(1, sge, raddr, rkey, 0); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := cli.qp.PostWrite(1, sge, raddr, rkey, 0); err != nil {
					t.Fatal(err)
				}
				// A Read behind the Write: it must not succeed, since the
				// peer terminated at the Write. The Terminate may even
				// beat the post.
				if err := cli.qp.PostRead(2, []rdma.SGE{rdma.SGEOf(cli.mr, 8192, 10)}, srv.mr.Addr(), srv.mr.RKey(), 0); err != nil {
					if !errors.Is(err, rdma.ErrQPState) {
						t.Fatal(err)
					}
					readLate = true
				}
			}
			cliErr, srvErr := waitErr(t, cli.qp), waitErr(t, srv.qp)
			for _, e := range []error{cliErr, srvErr} {
				if !errors.Is(e, rdma.ErrRemoteAccess) {
					t.Errorf("QP error %v does not match ErrRemoteAccess", e)
				}
				var te *soft.TermError
				if !errors.As(e, &te) || !bytes.Contains([]byte(te.Error()), []byte(c.code)) {
					t.Errorf("QP error %v, want a Terminate with %q", e, c.code)
				}
			}
			var sent, got *soft.TermError
			if errors.As(srvErr, &sent); sent == nil || !sent.Sent {
				t.Errorf("server did not send the Terminate: %v", srvErr)
			}
			if errors.As(cliErr, &got); got == nil || got.Sent {
				t.Errorf("client did not receive the Terminate: %v", cliErr)
			}
			if c.read {
				wc := wait(t, cli.cq, 1)[0]
				if wc.WRID != 1 || wc.Status != rdma.StatusRemAccessErr {
					t.Errorf("read completion %+v, want remote access error", wc)
				}
				// VendorErr carries the Terminate's layer/type/code word.
				if got != nil && wc.VendorErr>>28 != uint32(got.Layer) || wc.VendorErr>>24&0xf != uint32(got.Type) || wc.VendorErr>>16&0xff != uint32(got.Code) {
					t.Errorf("VendorErr %#x does not match %v", wc.VendorErr, got)
				}
			} else {
				n := 2
				if readLate {
					n = 1
				}
				wcs := wait(t, cli.cq, n)
				// iWARP has no acknowledgement: the Write completed when
				// TCP took it (siw does the same); the Read behind it is
				// flushed.
				if wcs[0].WRID != 1 || wcs[0].Status != rdma.StatusSuccess || (n == 2 && (wcs[1].WRID != 2 || wcs[1].Status != rdma.StatusWRFlushErr)) {
					t.Errorf("completions %+v, want write success then read flushed", wcs)
				}
				if !bytes.Equal(srv.mem.Bytes()[:len(guard)], guard) {
					t.Errorf("server memory changed by a refused write")
				}
			}
			// The server's posted receives are flushed.
			for _, wc := range wait(t, srv.cq, 2) {
				if wc.Status != rdma.StatusWRFlushErr || !wc.Op.IsRecv() {
					t.Errorf("server completion %+v, want flushed receive", wc)
				}
			}
		})
	}
}

// TestSendWithoutReceive: iWARP has no RNR retry; a Send that finds no
// receive is a Terminate.
func TestSendWithoutReceive(t *testing.T) {
	checkLeaks(t)
	cli, srv := pair(t, pairOpts{})
	defer cli.close(t)
	defer srv.close(t)
	if err := cli.qp.PostSend(1, []rdma.SGE{rdma.SGEOf(cli.mr, 0, 10)}, 0); err != nil {
		t.Fatal(err)
	}
	srvErr := waitErr(t, srv.qp)
	if !errors.Is(srvErr, rdma.ErrProtocol) || !bytes.Contains([]byte(srvErr.Error()), []byte("no buffer")) {
		t.Errorf("server error %v", srvErr)
	}
	cliErr := waitErr(t, cli.qp)
	if !errors.Is(cliErr, rdma.ErrProtocol) {
		t.Errorf("client error %v", cliErr)
	}
	if err := cli.qp.PostSend(2, nil, 0); !errors.Is(err, rdma.ErrQPState) {
		t.Errorf("post after error: %v", err)
	}
}

// TestPeerVanishes: the server goes away in the middle of large
// transfers; every outstanding request completes (flushed), nothing
// leaks.
func TestPeerVanishes(t *testing.T) {
	for _, side := range []string{"server-closes", "client-closes"} {
		t.Run(side, func(t *testing.T) {
			checkLeaks(t)
			o := pairOpts{memSize: 32 << 20, recvs: 4, sendDepth: 64}
			cli, srv := pair(t, o)
			victim, survivor := srv, cli
			if side == "client-closes" {
				victim, survivor = cli, srv
			}
			const n = 40
			for i := 0; i < n; i++ {
				var err error
				sge := []rdma.SGE{rdma.SGEOf(survivor.mr, 0, 8<<20)}
				if i%2 == 0 {
					err = survivor.qp.PostWrite(uint64(i), sge, victim.mr.Addr(), victim.mr.RKey(), 0)
				} else {
					err = survivor.qp.PostRead(uint64(i), sge, victim.mr.Addr()+(8<<20), victim.mr.RKey(), 0)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(5 * time.Millisecond)
			victim.close(t) // the peer vanishes: its QP, memory, device, all gone
			wcs := wait(t, survivor.cq, n+o.recvs)
			ids := map[uint64]bool{}
			flushed := 0
			for _, wc := range wcs {
				ids[wc.WRID] = true
				switch wc.Status {
				case rdma.StatusSuccess:
				case rdma.StatusWRFlushErr:
					flushed++
				default:
					t.Errorf("completion %+v", wc)
				}
			}
			if len(ids) != n+o.recvs || flushed == 0 {
				t.Errorf("%d distinct completions (%d flushed), want %d", len(ids), flushed, n+o.recvs)
			}
			if !errors.Is(survivor.qp.Err(), rdma.ErrConnLost) {
				t.Errorf("survivor error %v, want ErrConnLost", survivor.qp.Err())
			}
			survivor.close(t)
		})
	}
}

// TestManyQPs runs 32 connections at once, each moving its own data.
func TestManyQPs(t *testing.T) {
	checkLeaks(t)
	const nqp = 32
	const size = 256 << 10
	p := soft.New(soft.Config{CRC: true})
	o := pairOpts{memSize: 2 * nqp * size}
	o.defaults()
	srv, cli := setup(t, p, &o), setup(t, p, &o)
	ln, err := srv.dev.Listen("127.0.0.1:0", nqp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := func(e *endpoint) rdma.QPConfig {
		return rdma.QPConfig{PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq, MaxSendWR: 8, MaxRecvWR: 8, SignalAll: true}
	}
	srvQPs := make(chan rdma.QP, nqp)
	go func() {
		for i := 0; i < nqp; i++ {
			req, err := ln.Accept(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			qp, err := req.Accept(t.Context(), cfg(srv), nil)
			if err != nil {
				t.Error(err)
				return
			}
			srvQPs <- qp
		}
	}()
	var wg sync.WaitGroup
	cliQPs := make([]rdma.QP, nqp)
	errs := make(chan error, nqp)
	for i := range nqp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qp, err := cli.dev.Dial(ctx, ln.Addr().String(), cfg(cli), []byte{byte(i)})
			if err != nil {
				errs <- err
				return
			}
			cliQPs[i] = qp
			base := 2 * i * size
			fill(cli.mem.Bytes()[base:base+size], byte(i))
			sge := []rdma.SGE{rdma.SGEOf(cli.mr, base, size)}
			if err := qp.PostWrite(uint64(i), sge, srv.mr.Addr()+uint64(base), srv.mr.RKey(), 0); err != nil {
				errs <- err
				return
			}
			back := []rdma.SGE{rdma.SGEOf(cli.mr, base+size, size)}
			if err := qp.PostRead(uint64(i)|1<<32, back, srv.mr.Addr()+uint64(base), srv.mr.RKey(), 0); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[rdma.Opcode]int{}
	for _, wc := range wait(t, cli.cq, 2*nqp) {
		if wc.Status != rdma.StatusSuccess {
			t.Fatalf("completion %+v", wc)
		}
		seen[wc.Op]++
	}
	if seen[rdma.OpWrite] != nqp || seen[rdma.OpRead] != nqp {
		t.Fatalf("completions by opcode: %v", seen)
	}
	for i := range nqp {
		base := 2 * i * size
		if !bytes.Equal(cli.mem.Bytes()[base:base+size], cli.mem.Bytes()[base+size:base+2*size]) {
			t.Fatalf("QP %d: read back differs", i)
		}
	}
	for _, qp := range cliQPs {
		qp.Close()
	}
	for range nqp {
		(<-srvQPs).Close()
	}
	ln.Close()
	cli.close(t)
	srv.close(t)
}

// TestMemoryWindow: a window scopes an rkey to one range and one QP.
func TestMemoryWindow(t *testing.T) {
	checkLeaks(t)
	o := pairOpts{access: rdma.AccessLocalWrite | rdma.AccessRemoteWrite | rdma.AccessRemoteRead | rdma.AccessMWBind}
	cli, srv := pair(t, o)
	defer cli.close(t)
	defer srv.close(t)
	if c := srv.dev.Info().Caps; c&rdma.CapMemoryWindows == 0 || c&rdma.CapMWRangeChecked == 0 {
		t.Fatalf("caps %#x: soft windows exist and check their range (this test proves it)", c)
	}
	w, err := srv.pd.AllocMW()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fill(srv.mem.Bytes()[:65536], 5)
	rkey, err := srv.qp.BindMW(9, w, srv.mr, rdma.SGEOf(srv.mr, 4096, 1000), rdma.AccessRemoteRead, 0)
	if err != nil {
		t.Fatal(err)
	}
	if wc := wait(t, srv.cq, 1)[0]; wc.Op != rdma.OpBindMW || wc.Status != rdma.StatusSuccess {
		t.Fatalf("bind completion %+v", wc)
	}
	if w.RKey() != rkey || rkey == srv.mr.RKey() {
		t.Fatalf("window rkey %#x, MR rkey %#x, bind returned %#x", w.RKey(), srv.mr.RKey(), rkey)
	}
	// Inside the window: fine.
	if err := cli.qp.PostRead(1, []rdma.SGE{rdma.SGEOf(cli.mr, 0, 1000)}, srv.mr.Addr()+4096, rkey, 0); err != nil {
		t.Fatal(err)
	}
	if wc := wait(t, cli.cq, 1)[0]; wc.Status != rdma.StatusSuccess {
		t.Fatalf("read through window: %+v", wc)
	}
	if !bytes.Equal(cli.mem.Bytes()[:1000], srv.mem.Bytes()[4096:5096]) {
		t.Fatal("window read differs")
	}
	// One byte past the window, though inside the MR: refused.
	if err := cli.qp.PostRead(2, []rdma.SGE{rdma.SGEOf(cli.mr, 0, 1000)}, srv.mr.Addr()+4097, rkey, 0); err != nil {
		t.Fatal(err)
	}
	if wc := wait(t, cli.cq, 1)[0]; wc.Status != rdma.StatusRemAccessErr {
		t.Fatalf("read past window: %+v", wc)
	}
}

// TestCQNotification drives completions through the eventfd the way the
// writer stage will: arm, wait for the fd, consume, re-arm, drain.
func TestCQNotification(t *testing.T) {
	checkLeaks(t)
	cli, srv := pair(t, pairOpts{recvs: 8})
	defer cli.close(t)
	defer srv.close(t)
	if err := srv.cq.Arm(true); err != nil { // solicited only
		t.Fatal(err)
	}
	// An unsolicited Send must not raise the fd.
	if err := cli.qp.PostSend(1, []rdma.SGE{rdma.SGEOf(cli.mr, 0, 10)}, 0); err != nil {
		t.Fatal(err)
	}
	wait(t, cli.cq, 1)
	time.Sleep(20 * time.Millisecond)
	if n, _ := srv.cq.Consume(); n != 0 {
		t.Fatalf("unsolicited send raised %d events", n)
	}
	if err := cli.qp.PostSend(2, []rdma.SGE{rdma.SGEOf(cli.mr, 0, 10)}, rdma.SendSolicited); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var n int
	for n == 0 && time.Now().Before(deadline) {
		n, _ = srv.cq.Consume()
		time.Sleep(time.Millisecond)
	}
	if n != 1 {
		t.Fatalf("solicited send raised %d events", n)
	}
	buf := make([]rdma.Completion, 4)
	k, err := srv.cq.Poll(buf)
	if err != nil || k != 2 {
		t.Fatalf("poll: %d %v", k, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_ = srv.cq.Arm(false)
		_, _ = srv.cq.Consume()
		_, _ = srv.cq.Poll(buf)
	})
	if allocs != 0 {
		t.Errorf("arm/consume/poll allocates %.1f per round", allocs)
	}
}

func TestRejectAndErrors(t *testing.T) {
	checkLeaks(t)
	_, cli, ln := listening(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		req, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		if string(req.PrivateData()) != "hello" {
			t.Errorf("request private data %q", req.PrivateData())
		}
		_ = req.Reject([]byte("go away"))
	}()
	cfg := rdma.QPConfig{PD: cli.pd, SendCQ: cli.cq, RecvCQ: cli.cq, MaxSendWR: 4, MaxRecvWR: 4}
	_, err := cli.dev.Dial(ctx, ln.Addr().String(), cfg, []byte("hello"))
	var rej *rdma.RejectError
	if !errors.Is(err, rdma.ErrRejected) || !errors.As(err, &rej) || string(rej.PrivateData) != "go away" {
		t.Fatalf("dial: %v", err)
	}
	if _, err := cli.dev.Dial(ctx, "127.0.0.1:1", cfg, nil); err == nil {
		t.Fatal("dial to a closed port succeeded")
	} else if ve := (*rdma.VerbError)(nil); !errors.As(err, &ve) || ve.Verb != "rdma_connect" {
		t.Fatalf("dial to closed port: %v", err)
	}
	if err := cli.pd.Close(); !errors.Is(err, rdma.ErrBusy) {
		t.Fatalf("closing a PD with an MR: %v", err)
	}
	if _, err := soft.New(soft.Config{}).Open("mlx5_0"); !errors.Is(err, rdma.ErrUnknownDevice) {
		t.Fatalf("open unknown: %v", err)
	}
}

// TestRequestOutlivesItsListener: a request Accept handed out and
// nobody answered is refused by the listener's Close, as with the verbs
// provider: the dialer hears the rejection, and Accept or Reject on it
// afterwards return ErrClosed.
func TestRequestOutlivesItsListener(t *testing.T) {
	checkLeaks(t)
	srv, cli, ln := listening(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialed := dialing(ctx, cli, ln)
	req, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	srvCfg := rdma.QPConfig{PD: srv.pd, SendCQ: srv.cq, RecvCQ: srv.cq, MaxSendWR: 4, MaxRecvWR: 4}
	if qp, err := req.Accept(t.Context(), srvCfg, nil); !errors.Is(err, rdma.ErrClosed) {
		if qp != nil {
			qp.Close()
		}
		t.Errorf("Accept after the listener closed: %v, want ErrClosed", err)
	}
	if err := req.Reject(nil); !errors.Is(err, rdma.ErrClosed) {
		t.Errorf("Reject after the listener closed: %v, want ErrClosed", err)
	}
	if err := <-dialed; !errors.Is(err, rdma.ErrRejected) {
		t.Errorf("Dial to a listener closed with its request pending: %v, want ErrRejected", err)
	}
}

// TestAcceptEndsWithItsContext: a request accepted with a context that
// has ended, or that ends while Prepare runs, is refused: Accept returns
// the context's error with the QP freed, and the dialer hears the
// rejection. A live context accepts as before.
func TestAcceptEndsWithItsContext(t *testing.T) {
	checkLeaks(t)
	srv, cli, ln := listening(t)
	for _, tt := range []struct {
		name   string
		before bool // the context ends before Accept; else in Prepare
	}{{"ended before", true}, {"ends in Prepare", false}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dialed := dialing(ctx, cli, ln)
			req, err := ln.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			actx, acancel := context.WithCancel(ctx)
			if tt.before {
				acancel()
			}
			prepared := false
			cfg := rdma.QPConfig{PD: srv.pd, SendCQ: srv.cq, RecvCQ: srv.cq, MaxSendWR: 4, MaxRecvWR: 4,
				Prepare: func(rdma.QP) error { prepared = true; acancel(); return nil }}
			qp, err := req.Accept(actx, cfg, nil)
			if qp != nil {
				qp.Close()
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Accept: %v, want context.Canceled", err)
			}
			if prepared == tt.before {
				t.Errorf("Prepare ran: %v", prepared)
			}
			if err := <-dialed; !errors.Is(err, rdma.ErrRejected) {
				t.Errorf("Dial: %v, want ErrRejected", err)
			}
		})
	}
}

// TestHostileHandshake: garbage instead of an MPA request or reply ends
// the connection setup with an error, on both sides, and leaks nothing.
func TestHostileHandshake(t *testing.T) {
	checkLeaks(t)
	p := soft.New(soft.Config{MPATimeout: time.Second})
	o := pairOpts{}
	o.defaults()
	e := setup(t, p, &o)
	defer e.close(t)

	// A peer that sends garbage to our listener gets closed on.
	ln, err := e.dev.Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, garbage := range []string{"GET / HTTP/1.1\r\n\r\n", "MPA ID Req Frame\x00\x02\xff\xff", ""} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(garbage))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Errorf("listener answered %d bytes to garbage %q", n, garbage)
		}
		c.Close()
	}
	ln.Close()

	// A "server" that answers our MPA request with garbage fails Dial.
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	go func() {
		for {
			c, err := raw.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 512))
			c.Write([]byte("MPA ID Rep Frame\x00\x01\x00\x00")) // revision 1: no IRD/ORD
			c.Close()
		}
	}()
	cfg := rdma.QPConfig{PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq, MaxSendWR: 4, MaxRecvWR: 4}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.dev.Dial(ctx, raw.Addr().String(), cfg, nil); !errors.Is(err, rdma.ErrProtocol) {
		t.Fatalf("dial to a bad responder: %v", err)
	}
}

// TestFailedSetupLeavesNoCompletions: a QP that Dial or Accept does not
// return leaves nothing in the caller's CQs, though Prepare posted
// receives on it (rdma.QPConfig.Prepare). Flushed there, they would
// reach whoever polls the CQ, a loop sharing it with live QPs, under
// the ids Prepare gives every attempt's receives.
func TestFailedSetupLeavesNoCompletions(t *testing.T) {
	checkLeaks(t)
	srv, cli, ln := listening(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o := pairOpts{recvs: 4}
	o.defaults()
	prepFail := errors.New("prepare failed after posting")
	empty := func(what string, e *endpoint) {
		t.Helper()
		var buf [16]rdma.Completion
		if n, err := e.cq.Poll(buf[:]); n != 0 || err != nil {
			t.Errorf("%s: the CQ holds %d completions (%v), first %+v; want none", what, n, err, buf[0])
		}
	}
	for _, tc := range []struct {
		name   string
		answer func(rdma.ConnRequest)
		addr   string
	}{
		{"rejected", func(req rdma.ConnRequest) { _ = req.Reject(nil) }, ""},
		{"accept's Prepare fails", func(req rdma.ConnRequest) {
			cfg := srv.qpConfig(&o)
			post := cfg.Prepare
			cfg.Prepare = func(qp rdma.QP) error { return errors.Join(post(qp), prepFail) }
			if qp, err := req.Accept(ctx, cfg, nil); !errors.Is(err, prepFail) {
				if qp != nil {
					qp.Close()
				}
				t.Errorf("Accept with a failing Prepare: %v", err)
			}
		}, ""},
		{"closed port", nil, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr
			if tc.answer != nil {
				addr = ln.Addr().String()
				go func() {
					if req, err := ln.Accept(ctx); err == nil {
						tc.answer(req)
					}
				}()
			}
			qp, err := cli.dev.Dial(ctx, addr, cli.qpConfig(&o), nil)
			if err == nil {
				qp.Close()
				t.Fatal("Dial succeeded")
			}
			empty("the dialer", cli)
			empty("the listener's side", srv)
		})
	}
}
