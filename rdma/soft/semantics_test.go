package soft_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

// TestOrdering: completions come in posting order, and a Send posted
// after a Read does not complete before the Read's data is placed
// (RFC 5040 section 5.5); with ORD 2, eight Reads still all complete, in
// order.
func TestOrdering(t *testing.T) {
	checkLeaks(t)
	o := pairOpts{memSize: 16 << 20, recvs: 4}
	cli, srv := pair(t, o)
	defer cli.close(t)
	defer srv.close(t)
	fill(srv.mem.Bytes()[:8<<20], 4)
	const reads = 8
	for i := 0; i < reads; i++ {
		sge := []rdma.SGE{rdma.SGEOf(cli.mr, i<<20, 1<<20)}
		if err := cli.qp.PostRead(uint64(i), sge, srv.mr.Addr()+uint64(i)<<20, srv.mr.RKey(), 0); err != nil {
			t.Fatal(err)
		}
		if err := cli.qp.PostSend(uint64(100+i), []rdma.SGE{rdma.SGEOf(cli.mr, 15<<20, 8)}, 0); err != nil && i < 4 {
			t.Fatal(err)
		}
		if i == 3 {
			break // four Sends: as many receives as the server posted
		}
	}
	wcs := wait(t, cli.cq, 8)
	for i, wc := range wcs {
		want := uint64(i / 2)
		if i%2 == 1 {
			want += 100
		}
		if wc.WRID != want || wc.Status != rdma.StatusSuccess {
			t.Fatalf("completion %d is %+v, want id %d", i, wc, want)
		}
		if wc.Op == rdma.OpRead && !bytes.Equal(cli.mem.Bytes()[wc.WRID<<20:(wc.WRID+1)<<20], srv.mem.Bytes()[wc.WRID<<20:(wc.WRID+1)<<20]) {
			t.Fatalf("read %d: data not placed at its completion", wc.WRID)
		}
	}
}

// TestORDLimit: more Reads than the negotiated ORD wait in the send
// queue and complete in order.
func TestORDLimit(t *testing.T) {
	checkLeaks(t)
	srv, cli, ln := listening(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted := make(chan rdma.QP, 1)
	go func() {
		defer close(accepted)
		req, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		if got := req.Param().InitiatorDepth; got != 2 {
			t.Errorf("peer ORD %d, want 2", got)
		}
		qp, err := req.Accept(t.Context(), rdma.QPConfig{PD: srv.pd, SendCQ: srv.cq, RecvCQ: srv.cq, MaxSendWR: 4, MaxRecvWR: 4, ResponderResources: 1}, nil)
		if err == nil {
			accepted <- qp
		}
	}()
	var err error
	cli.qp, err = cli.dev.Dial(ctx, ln.Addr().String(), rdma.QPConfig{PD: cli.pd, SendCQ: cli.cq, RecvCQ: cli.cq, MaxSendWR: 16, MaxRecvWR: 4, SignalAll: true, InitiatorDepth: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv.qp = <-accepted; srv.qp == nil {
		t.Fatal("accept failed")
	}
	for i := 0; i < 12; i++ {
		if err := cli.qp.PostRead(uint64(i), []rdma.SGE{rdma.SGEOf(cli.mr, i*1000, 1000)}, srv.mr.Addr(), srv.mr.RKey(), 0); err != nil {
			t.Fatal(err)
		}
	}
	for i, wc := range wait(t, cli.cq, 12) {
		if wc.WRID != uint64(i) || wc.Status != rdma.StatusSuccess {
			t.Fatalf("completion %d: %+v", i, wc)
		}
	}
}

// TestFileBody is mod_rdma's client-reads case: the server maps a file
// read-only, registers it for remote read only, and the client
// RDMA-reads the body; the server also RDMA-writes the same mapping
// (server-writes case), straight from the page cache.
func TestFileBody(t *testing.T) {
	checkLeaks(t)
	cli, srv := pair(t, pairOpts{memSize: 4 << 20})
	defer cli.close(t)
	defer srv.close(t)
	body := make([]byte, 3<<20+123)
	fill(body, 77)
	path := filepath.Join(t.TempDir(), "index.html")
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fm, err := rdma.MapFile(f, 0, len(body))
	if err != nil {
		t.Fatal(err)
	}
	defer fm.Free()
	fmr, err := srv.pd.Register(fm.Bytes(), rdma.AccessRemoteRead)
	if err != nil {
		t.Fatal(err)
	}
	defer fmr.Close()
	// client-reads
	if err := cli.qp.PostRead(1, []rdma.SGE{rdma.SGEOf(cli.mr, 0, len(body))}, fmr.Addr(), fmr.RKey(), 0); err != nil {
		t.Fatal(err)
	}
	if wc := wait(t, cli.cq, 1)[0]; wc.Status != rdma.StatusSuccess || int(wc.Bytes) != len(body) {
		t.Fatalf("read %+v", wc)
	}
	if !bytes.Equal(cli.mem.Bytes()[:len(body)], body) {
		t.Fatal("client read a different body")
	}
	// server-writes
	clear(cli.mem.Bytes())
	if err := srv.qp.PostWrite(2, []rdma.SGE{rdma.SGEOf(fmr, 0, len(body))}, cli.mr.Addr(), cli.mr.RKey(), rdma.SendSignaled); err != nil {
		t.Fatal(err)
	}
	wait(t, srv.cq, 1)
	// A Read of 0 bytes behind the Write completes once it is placed.
	if err := srv.qp.PostRead(3, []rdma.SGE{rdma.SGEOf(srv.mr, 0, 0)}, cli.mr.Addr(), cli.mr.RKey(), rdma.SendSignaled); err != nil {
		t.Fatal(err)
	}
	wait(t, srv.cq, 1)
	if !bytes.Equal(cli.mem.Bytes()[:len(body)], body) {
		t.Fatal("server wrote a different body")
	}
}

// TestCQInPoller drives a CQ from a poller, as the writer stage's loop
// does: arm, wait, consume, re-arm, drain.
func TestCQInPoller(t *testing.T) {
	checkLeaks(t)
	cli, srv := pair(t, pairOpts{recvs: 16})
	defer cli.close(t)
	defer srv.close(t)
	p, err := poll.New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Add(srv.cq.Fd(), poll.Readable, poll.MakeToken(poll.KindSource, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := srv.cq.Arm(false); err != nil {
		t.Fatal(err)
	}
	const msgs = 16
	go func() {
		for i := 0; i < msgs; i++ {
			_ = cli.qp.PostSend(uint64(i), []rdma.SGE{rdma.SGEOf(cli.mr, 0, 100)}, 0)
			time.Sleep(time.Duration(i%3) * time.Millisecond)
		}
	}()
	got := 0
	var evs []poll.Event
	buf := make([]rdma.Completion, 4)
	for deadline := time.Now().Add(20 * time.Second); got < msgs; {
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d receives", got, msgs)
		}
		if evs, err = p.Wait(evs, time.Second); err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			continue
		}
		if _, err := srv.cq.Consume(); err != nil {
			t.Fatal(err)
		}
		if err := srv.cq.Arm(false); err != nil {
			t.Fatal(err)
		}
		for {
			k, err := srv.cq.Poll(buf)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				break
			}
			got += k
		}
	}
	wait(t, cli.cq, msgs)
}

// TestSteadyStateAllocs: posting, transmitting, receiving, placing and
// completing allocate nothing per operation once a connection runs.
func TestSteadyStateAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations process-wide")
	}
	cli, srv := pair(t, pairOpts{recvs: 1, cfg: soft.Config{CRC: true}})
	defer cli.close(t)
	defer srv.close(t)
	cw, err := rdma.NewWaiter(cli.cq)
	if err != nil {
		t.Fatal(err)
	}
	defer cw.Close()
	sw, err := rdma.NewWaiter(srv.cq)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	send := []rdma.SGE{rdma.SGEOf(cli.mr, 0, 100)}
	write := []rdma.SGE{rdma.SGEOf(cli.mr, 0, 256<<10)}
	recv := []rdma.SGE{rdma.SGEOf(srv.mr, len(srv.mem.Bytes())-4096, 4096)}
	read := []rdma.SGE{rdma.SGEOf(cli.mr, 512<<10, 64<<10)}
	buf := make([]rdma.Completion, 4)
	ctx := context.Background()
	need := func(w *rdma.Waiter, n int) {
		for n > 0 {
			k, err := w.Wait(ctx, buf)
			if err != nil {
				t.Fatal(err)
			}
			for _, wc := range buf[:k] {
				if wc.Status != rdma.StatusSuccess {
					t.Fatalf("completion %+v", wc)
				}
			}
			n -= k
		}
	}
	round := func() {
		if err := cli.qp.PostWrite(1, write, srv.mr.Addr(), srv.mr.RKey(), 0); err != nil {
			t.Fatal(err)
		}
		if err := cli.qp.PostRead(2, read, srv.mr.Addr(), srv.mr.RKey(), 0); err != nil {
			t.Fatal(err)
		}
		if err := cli.qp.PostSend(3, send, 0); err != nil {
			t.Fatal(err)
		}
		need(cw, 3)
		need(sw, 1)
		if err := srv.qp.PostRecv(4, recv); err != nil {
			t.Fatal(err)
		}
	}
	round()
	if allocs := testing.AllocsPerRun(200, round); allocs > 0.5 {
		t.Errorf("%.2f allocations per write+read+send round", allocs)
	}
}

// TestWriteThenSend is mod_rdma's server-writes step: the body goes by
// RDMA Write, the header by Send; when the Send's receive completes, the
// body is already in place.
func TestWriteThenSend(t *testing.T) {
	checkLeaks(t)
	cli, srv := pair(t, pairOpts{memSize: 8 << 20, recvs: 1, cfg: soft.Config{CRC: true}})
	defer cli.close(t)
	defer srv.close(t)
	body := cli.mem.Bytes()[:4<<20]
	fill(body, 42)
	if err := cli.qp.PostWrite(1, []rdma.SGE{rdma.SGEOf(cli.mr, 0, len(body))}, srv.mr.Addr(), srv.mr.RKey(), 0); err != nil {
		t.Fatal(err)
	}
	if err := cli.qp.PostSend(2, []rdma.SGE{rdma.SGEOf(cli.mr, 5<<20, 17)}, 0); err != nil {
		t.Fatal(err)
	}
	if wc := wait(t, srv.cq, 1)[0]; wc.Status != rdma.StatusSuccess || wc.Op != rdma.OpRecv {
		t.Fatalf("receive %+v", wc)
	}
	if !bytes.Equal(srv.mem.Bytes()[:len(body)], body) {
		t.Fatal("the Send arrived before the Write's data was placed")
	}
	wait(t, cli.cq, 2)
}
