package soft_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/quartet-server/quartet/internal/fdtest"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/soft"
)

// endpoint is one side of a connection with everything it owns.
type endpoint struct {
	dev rdma.Device
	pd  rdma.PD
	cq  rdma.CQ
	qp  rdma.QP
	mem *rdma.Memory
	mr  rdma.MR
}

// pairOpts shapes a test connection.
type pairOpts struct {
	cfg       soft.Config // both sides
	memSize   int
	access    rdma.Access
	recvs     int // receives posted on each side before connecting
	recvSize  int // bytes per receive, carved from the end of mem
	sendDepth int
	// unsignaled: only requests posted with SendSignaled complete.
	unsignaled bool
}

func (o *pairOpts) defaults() {
	if o.memSize == 0 {
		o.memSize = 1 << 20
	}
	if o.access == 0 {
		o.access = rdma.AccessLocalWrite | rdma.AccessRemoteWrite | rdma.AccessRemoteRead
	}
	if o.sendDepth == 0 {
		o.sendDepth = 64
	}
	if o.recvSize == 0 {
		o.recvSize = 4096
	}
}

// setup allocates device, PD, CQ, memory and MR for one side.
func setup(t testing.TB, p *soft.Provider, o *pairOpts) *endpoint {
	t.Helper()
	e := &endpoint{}
	var err error
	if e.dev, err = p.Open(""); err != nil {
		t.Fatal(err)
	}
	if e.pd, err = e.dev.AllocPD(); err != nil {
		t.Fatal(err)
	}
	if e.cq, err = e.dev.CreateCQ(4096); err != nil {
		t.Fatal(err)
	}
	if e.mem, err = rdma.Alloc(o.memSize); err != nil {
		t.Fatal(err)
	}
	// Freed by its owner (close checks Free's munmap error). Looking for
	// the address in /proc/self/maps instead gave false alarms: after the
	// munmap the kernel hands the same range to the next anonymous mmap,
	// the race detector's or the Go runtime's.
	mem := e.mem
	t.Cleanup(func() {
		if mem.Len() != 0 {
			t.Errorf("memory of %d bytes not freed after the test", mem.Len())
		}
	})
	if e.mr, err = e.pd.Register(e.mem.Bytes(), o.access); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *endpoint) qpConfig(o *pairOpts) rdma.QPConfig {
	return rdma.QPConfig{
		PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq,
		MaxSendWR: o.sendDepth, MaxRecvWR: max(o.recvs, 16), MaxSendSGE: 4, MaxRecvSGE: 4,
		SignalAll: !o.unsignaled,
		Prepare: func(qp rdma.QP) error {
			for i := 0; i < o.recvs; i++ {
				off := o.memSize - (i+1)*o.recvSize
				if err := qp.PostRecv(uint64(1000+i), []rdma.SGE{rdma.SGEOf(e.mr, off, o.recvSize)}); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// close releases in reverse order of setup, checking every step.
func (e *endpoint) close(t testing.TB) {
	t.Helper()
	if e.qp != nil {
		if err := e.qp.Close(); err != nil {
			t.Errorf("qp close: %v", err)
		}
	}
	if err := e.mr.Close(); err != nil {
		t.Errorf("mr close: %v", err)
	}
	if err := e.cq.Close(); err != nil {
		t.Errorf("cq close: %v", err)
	}
	if err := e.pd.Close(); err != nil {
		t.Errorf("pd close: %v", err)
	}
	if err := e.dev.Close(); err != nil {
		t.Errorf("device close: %v", err)
	}
	if err := e.mem.Free(); err != nil {
		t.Errorf("free: %v", err)
	}
}

// pair connects a client and a server endpoint over loopback.
func pair(t testing.TB, o pairOpts) (cli, srv *endpoint) {
	t.Helper()
	o.defaults()
	p := soft.New(o.cfg)
	cli, srv = setup(t, p, &o), setup(t, p, &o)
	ln, err := srv.dev.Listen("127.0.0.1:0", 8)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		qp  rdma.QP
		err error
	}
	ch := make(chan res, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		qp, err := req.Accept(t.Context(), srv.qpConfig(&o), []byte("srv"))
		ch <- res{qp, err}
	}()
	cli.qp, err = cli.dev.Dial(ctx, ln.Addr().String(), cli.qpConfig(&o), []byte("cli"))
	if err != nil {
		t.Fatal("dial:", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal("accept:", r.err)
	}
	srv.qp = r.qp
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if got := string(cli.qp.PrivateData()); got != "srv" {
		t.Errorf("client sees private data %q, want srv", got)
	}
	if got := string(srv.qp.PrivateData()); got != "cli" {
		t.Errorf("server sees private data %q, want cli", got)
	}
	return cli, srv
}

// wait collects n completions from cq (failing after a timeout).
func wait(t testing.TB, cq rdma.CQ, n int) []rdma.Completion {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]rdma.Completion, 0, n)
	buf := make([]rdma.Completion, 16)
	for len(out) < n {
		k, err := rdma.Wait(ctx, cq, buf[:min(len(buf), n-len(out))])
		if err != nil {
			t.Fatalf("waiting for %d completions, have %d %+v: %v", n, len(out), out, err)
		}
		out = append(out, buf[:k]...)
	}
	return out
}

// resources is a snapshot of what a test could leak; the memory a test
// maps is checked in setup.
type resources struct {
	goroutines, fds int
}

func snapshot(t *testing.T) resources {
	return resources{runtime.NumGoroutine(), fdtest.Count(t)}
}

// checkLeaks fails the test if goroutines or fds outlive it.
func checkLeaks(t *testing.T) {
	before := snapshot(t)
	t.Cleanup(func() {
		var now resources
		for i := 0; i < 100; i++ {
			now = snapshot(t)
			if now.goroutines <= before.goroutines && now.fds <= before.fds {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if now.goroutines > before.goroutines {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after\n%s", before.goroutines, now.goroutines, buf[:runtime.Stack(buf, true)])
		}
		if now.fds > before.fds {
			t.Errorf("fds: %d before, %d after", before.fds, now.fds)
		}
	})
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>11)
	}
}

// listening sets up a server and a client side with default options on
// one provider, and a listener on the server's device; all are closed
// at the test's end (the listener first; closing it earlier is fine).
func listening(t *testing.T) (srv, cli *endpoint, ln rdma.Listener) {
	t.Helper()
	p := soft.New(soft.Config{})
	o := pairOpts{}
	o.defaults()
	srv, cli = setup(t, p, &o), setup(t, p, &o)
	t.Cleanup(func() { cli.close(t) })
	t.Cleanup(func() { srv.close(t) })
	ln, err := srv.dev.Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return srv, cli, ln
}

// dialing dials ln from cli in the background and sends Dial's error (a
// connection that came up is closed).
func dialing(ctx context.Context, cli *endpoint, ln rdma.Listener) <-chan error {
	dialed := make(chan error, 1)
	go func() {
		qp, err := cli.dev.Dial(ctx, ln.Addr().String(), rdma.QPConfig{PD: cli.pd, SendCQ: cli.cq, RecvCQ: cli.cq, MaxSendWR: 4, MaxRecvWR: 4}, nil)
		if qp != nil {
			qp.Close()
		}
		dialed <- err
	}()
	return dialed
}
