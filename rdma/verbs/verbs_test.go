//go:build verbs

package verbs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quartet-server/quartet/rdma"
	"golang.org/x/sys/unix"
)

// These tests need a real RDMA device; vm/ci.sh runs them in the QEMU
// guest on soft-iWARP (siw0) and Soft-RoCE (rxe0). Elsewhere they skip.

// TestMain checks that the tests release every PD, MR, CQ, QP and cm_id:
// it compares the kernel's per-device resource counts (rdma resource
// show) before and after, while the process still lives, since exiting
// would release everything anyway. Both counts follow a warmUp, so that
// librdmacm's own per-device state is the same in both whatever the last
// test left it in.
func TestMain(m *testing.M) {
	if os.Getenv(hiddenDevEnv) == "1" {
		os.Exit(hiddenDevChild())
	}
	warmUp()
	before, haveTool := resources()
	code := m.Run()
	if code == 0 && haveTool && before != "" {
		warmUp()
		after, _ := resources()
		if after != before {
			fmt.Fprintf(os.Stderr, "FAIL: RDMA resources leaked:\nbefore:\n%safter:\n%s", before, after)
			code = 1
		} else {
			fmt.Printf("rdma resources after the tests equal those before:\n%s", after)
		}
	}
	os.Exit(code)
}

// warmUp opens and closes every device once: librdmacm keeps a context
// and a PD per device once it has used the device, and those are its
// own, not leaks of the code under test. It lets the PD go when the last
// rdma_cm id on the device does (a test that only lists devices, whose
// addresses it finds by binding ids, releases it), and takes it again at
// the next use: hence a warmUp before each count.
func warmUp() {
	infos, _ := New().Devices()
	for _, info := range infos {
		if dev, err := New().Open(info.Name); err == nil {
			dev.Close()
		}
	}
}

func resources() (string, bool) {
	out, err := exec.Command("rdma", "resource", "show").Output()
	if err != nil {
		return "", false
	}
	return string(out), true
}

// testDevice is one device under test with the address rdma_cm maps to it.
type testDevice struct {
	name string
	addr netip.Addr
}

func testDevices(t testing.TB) []testDevice {
	t.Helper()
	infos, err := New().Devices()
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	var devs []testDevice
	for _, info := range infos {
		if len(info.Addrs) == 0 {
			continue
		}
		devs = append(devs, testDevice{info.Name, info.Addrs[0]})
	}
	if len(devs) == 0 {
		t.Skip("no RDMA device with an IP address (run the tests in the VM: bash vm/ci.sh)")
	}
	return devs
}

// run runs f once per device, as a subtest named after it.
func run(t *testing.T, f func(t *testing.T, td testDevice)) {
	for _, td := range testDevices(t) {
		t.Run(td.name, func(t *testing.T) { f(t, td) })
	}
}

// side is one end of a connection: its own PD, CQ and QP.
type side struct {
	pd rdma.PD
	cq rdma.CQ
	qp rdma.QP
	w  *waiter
}

type pair struct {
	dev      rdma.Device
	cli, srv side
}

const (
	testQueueDepth = 64
	testTimeout    = 60 * time.Second
)

// connect opens td and connects two QPs on it through rdma_cm, each with
// its own PD and CQ, exchanging private data both ways.
func connect(t testing.TB, td testDevice, recvs int) *pair {
	t.Helper()
	dev, err := New().Open(td.name)
	if err != nil {
		t.Fatalf("Open(%s): %v", td.name, err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("device Close: %v", err)
		}
	})
	p := &pair{dev: dev}
	p.cli = newSide(t, dev)
	t.Cleanup(func() { // before the device's, and whether or not dial succeeds
		closeSide(t, "client", p.cli)
		if p.srv.pd != nil {
			closeSide(t, "server", p.srv)
		}
	})
	p.srv = newSide(t, dev)
	cli, srv, priv := p.dial(t, td,
		func(qp rdma.QP) error { return postRecvs(qp, p.cli, recvs) },
		func(qp rdma.QP) error { return postRecvs(qp, p.srv, recvs) })
	p.cli.qp, p.srv.qp = cli, srv
	if got := string(priv); !strings.HasPrefix(got, "hello from client") {
		t.Errorf("server got private data %q", got)
	}
	if got := string(cli.PrivateData()); !strings.HasPrefix(got, "hello from server") {
		t.Errorf("client got private data %q", got)
	}
	if s := cli.State(); s != rdma.QPStateRTS {
		t.Errorf("client QP state %s, want RTS", s)
	}
	return p
}

// dial connects a client QP on p.cli to a server QP on p.srv through a
// listener of its own; prepare posts each side's receives. It returns
// the private data the server got.
func (p *pair) dial(t testing.TB, td testDevice, cliPrep, srvPrep func(rdma.QP) error) (cli, srv rdma.QP, priv []byte) {
	t.Helper()
	l, err := p.dev.Listen(net.JoinHostPort(td.addr.String(), "0"), 4)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	type accepted struct {
		qp   rdma.QP
		priv []byte
		err  error
	}
	done := make(chan accepted, 1)
	go func() {
		req, err := l.Accept(ctx)
		if err != nil {
			done <- accepted{err: err}
			return
		}
		priv := append([]byte(nil), req.PrivateData()...)
		cfg := qpConfig(p.srv)
		cfg.Prepare = srvPrep
		qp, err := req.Accept(ctx, cfg, []byte("hello from server"))
		done <- accepted{qp, priv, err}
	}()
	cfg := qpConfig(p.cli)
	cfg.Prepare = cliPrep
	cli, err = p.dev.Dial(ctx, l.Addr().String(), cfg, []byte("hello from client"))
	if err != nil {
		cancel() // no connection request is coming: end the Accept now
	}
	a := <-done
	if err != nil {
		if a.qp != nil {
			a.qp.Close()
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			logRefused(t, l.Addr(), a.err)
		}
		t.Fatalf("Dial: %v", err)
	}
	if a.err != nil {
		t.Fatalf("Accept: %v", a.err)
	}
	return cli, a.qp, a.priv
}

// logRefused logs what the guest's TCP stack held when a Dial to a
// listener of the test's own was refused. On iWARP the refusal is a
// reset answering the connection's SYN (siw connects its kernel socket
// synchronously inside rdma_connect), which should not happen while the
// listener stands. It happened about once in twenty CI runs until these
// logs showed why: no socket in LISTEN on the port, and the TIME_WAIT of
// a connection to it that the dialing side had closed, the trace of a
// signal interrupting siw's connect (see q_connect and
// TestDialIsNotDisturbedBySignals).
// Should it come back, the same logs tell the cause.
func logRefused(t testing.TB, addr net.Addr, acceptErr error) {
	t.Helper()
	t.Logf("Dial to %s refused; the listener's Accept returned %v", addr, acceptErr)
	_, port, _ := net.SplitHostPort(addr.String())
	for _, args := range [][]string{
		{"ss", "-tanoie", "sport = :" + port + " or dport = :" + port},
		{"ss", "-tan"},
		{"nstat", "-az", "TcpAttemptFails", "TcpOutRsts", "TcpEstabResets", "TcpExtListenDrops",
			"TcpExtListenOverflows", "TcpExtTCPReqQFullDrop", "TcpExtTW*", "TcpExtTCPAbortOn*"},
		{"dmesg", "--notime", "--level", "err,warn"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		t.Logf("%s (err %v):\n%s", strings.Join(args, " "), err, out)
	}
}

// recvBufSize is the size of each receive buffer posted by postRecvs.
const recvBufSize = 4096

// postRecvs posts n receives into the side's receive area, which the
// first call registers: a Dial runs its Prepare again for each attempt
// (rdma.QPConfig.Prepare), and every attempt posts into the same area.
func postRecvs(qp rdma.QP, s side, n int) error {
	if n == 0 {
		return nil
	}
	if s.w.recvMR == nil {
		mem, err := rdma.Alloc(n * recvBufSize)
		if err != nil {
			return err
		}
		mr, err := s.pd.Register(mem.Bytes(), rdma.AccessLocalWrite)
		if err != nil {
			mem.Free()
			return err
		}
		s.w.recvMR, s.w.recvMem = mr, mem
	}
	for i := 0; i < n; i++ {
		if err := qp.PostRecv(uint64(1000+i), []rdma.SGE{rdma.SGEOf(s.w.recvMR, i*recvBufSize, recvBufSize)}); err != nil {
			return err
		}
	}
	return nil
}

func newSide(t testing.TB, dev rdma.Device) side {
	t.Helper()
	pd, err := dev.AllocPD()
	if err != nil {
		t.Fatalf("AllocPD: %v", err)
	}
	cq, err := dev.CreateCQ(2 * testQueueDepth)
	if err != nil {
		pd.Close()
		t.Fatalf("CreateCQ: %v", err)
	}
	return side{pd: pd, cq: cq, w: newWaiter(t, cq)}
}

func qpConfig(s side) rdma.QPConfig {
	return rdma.QPConfig{
		PD: s.pd, SendCQ: s.cq, RecvCQ: s.cq,
		MaxSendWR: testQueueDepth, MaxRecvWR: testQueueDepth,
		SignalAll: true,
	}
}

// closeSide releases in reverse of creation: QP, receive MR, CQ, PD.
func closeSide(t testing.TB, name string, s side) {
	t.Helper()
	if s.qp != nil {
		if err := s.qp.Close(); err != nil {
			t.Errorf("%s QP Close: %v", name, err)
		}
	}
	s.w.close()
	if s.w.recvMR != nil {
		if err := s.w.recvMR.Close(); err != nil {
			t.Errorf("%s MR Close: %v", name, err)
		}
		s.w.recvMem.Free()
	}
	if err := s.cq.Close(); err != nil {
		t.Errorf("%s CQ Close: %v", name, err)
	}
	if err := s.pd.Close(); err != nil {
		t.Errorf("%s PD Close: %v", name, err)
	}
}

// waiter waits for completions with epoll on the CQ's completion-channel
// fd, following the CQ protocol: arm once, then on each wakeup consume
// the event, re-arm, and poll until empty. It never busy-polls.
type waiter struct {
	epfd    int
	cq      rdma.CQ
	buf     []rdma.Completion
	pending []rdma.Completion
	wakeups int

	recvMR  rdma.MR // the side's receive area, if any (released with it)
	recvMem *rdma.Memory
}

func newWaiter(t testing.TB, cq rdma.CQ) *waiter {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatalf("epoll_create1: %v", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(cq.Fd())}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, cq.Fd(), &ev); err != nil {
		t.Fatalf("epoll_ctl: %v", err)
	}
	if err := cq.Arm(false); err != nil {
		t.Fatalf("Arm: %v", err)
	}
	return &waiter{epfd: epfd, cq: cq, buf: make([]rdma.Completion, 16)}
}

func (w *waiter) close() { unix.Close(w.epfd) }

// next returns the next completion, failing the test after timeout.
func (w *waiter) next(t *testing.T, timeout time.Duration) rdma.Completion {
	t.Helper()
	c, ok := w.tryNext(t, timeout)
	if !ok {
		k, _ := w.cq.Poll(w.buf)
		t.Fatalf("no completion within %v (QP hung); a poll without an event finds %d: %v", timeout, k, w.buf[:k])
	}
	return c
}

// tryNext returns the next completion, or false after timeout.
func (w *waiter) tryNext(t *testing.T, timeout time.Duration) (rdma.Completion, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(w.pending) == 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return rdma.Completion{}, false
		}
		var evs [1]unix.EpollEvent
		n, err := unix.EpollWait(w.epfd, evs[:], int(left/time.Millisecond)+1)
		if err != nil && err != unix.EINTR {
			t.Fatalf("epoll_wait: %v", err)
		}
		if n == 0 {
			continue
		}
		w.wakeups++
		if _, err := w.cq.Consume(); err != nil {
			t.Fatalf("Consume: %v", err)
		}
		if err := w.cq.Arm(false); err != nil {
			t.Fatalf("Arm: %v", err)
		}
		for {
			k, err := w.cq.Poll(w.buf)
			if err != nil {
				t.Fatalf("Poll: %v", err)
			}
			w.pending = append(w.pending, w.buf[:k]...)
			if k < len(w.buf) {
				break
			}
		}
	}
	c := w.pending[0]
	w.pending = w.pending[1:]
	return c, true
}

// expect waits for a successful completion of wr id with opcode op.
func (w *waiter) expect(t *testing.T, id uint64, op rdma.Opcode) rdma.Completion {
	t.Helper()
	c := w.next(t, testTimeout)
	if c.Status != rdma.StatusSuccess || c.WRID != id || c.Op != op {
		t.Fatalf("completion %+v (status %s), want wr %d op %s success", c, c.Status, id, op)
	}
	return c
}

// region is registered non-Go memory.
type region struct {
	mem *rdma.Memory
	mr  rdma.MR
}

func newRegion(t testing.TB, pd rdma.PD, n int, acc rdma.Access) region {
	t.Helper()
	mem, err := rdma.Alloc(n)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", n, err)
	}
	mr, err := pd.Register(mem.Bytes(), acc)
	if err != nil {
		mem.Free()
		t.Fatalf("Register(%d): %v", n, err)
	}
	t.Cleanup(func() {
		if err := mr.Close(); err != nil {
			t.Errorf("MR Close: %v", err)
		}
		mem.Free()
	})
	return region{mem, mr}
}

var remoteErrTimeout = 5 * time.Second

const accAll = rdma.AccessLocalWrite | rdma.AccessRemoteWrite | rdma.AccessRemoteRead

func TestDevices(t *testing.T) {
	infos, err := New().Devices()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range infos {
		t.Logf("%s: %s guid %016x caps %b addrs %v ports %+v max_qp %d max_qp_wr %d max_mr_size %d ird %d ord %d",
			d.Name, d.Transport, d.NodeGUID, d.Caps, d.Addrs, d.Ports, d.MaxQP, d.MaxQPWR, d.MaxMRSize, d.MaxQPRdAtom, d.MaxQPInitRdAtom)
	}
	run(t, func(t *testing.T, td testDevice) {
		dev, err := New().OpenByAddr(td.addr)
		if err != nil {
			t.Fatalf("OpenByAddr(%v): %v", td.addr, err)
		}
		defer dev.Close()
		if dev.Info().Name != td.name {
			t.Errorf("OpenByAddr(%v) opened %s, want %s", td.addr, dev.Info().Name, td.name)
		}
		if _, err := New().Open("nosuchdev0"); !errors.Is(err, rdma.ErrUnknownDevice) {
			t.Errorf("Open(nosuchdev0) = %v, want ErrUnknownDevice", err)
		}
	})
}

func TestSendRecv(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 8)
		src := newRegion(t, p.cli.pd, recvBufSize, rdma.AccessLocalWrite)
		for i, n := range []int{1, 17, 1000, recvBufSize} {
			msg := src.mem.Bytes()[:n]
			fill(msg, uint64(i))
			if err := p.cli.qp.PostSend(uint64(i), []rdma.SGE{rdma.SGEOf(src.mr, 0, n)}, 0); err != nil {
				t.Fatalf("PostSend: %v", err)
			}
			p.cli.w.expect(t, uint64(i), rdma.OpSend)
			c := p.srv.w.next(t, testTimeout)
			if c.Status != rdma.StatusSuccess || c.Op != rdma.OpRecv || c.WRID != uint64(1000+i) || int(c.Bytes) != n {
				t.Fatalf("recv completion %+v, want wr %d RECV %d bytes", c, 1000+i, n)
			}
			got := p.srv.w.recvMem.Bytes()[i*recvBufSize : i*recvBufSize+n]
			if !bytes.Equal(got, msg) {
				t.Fatalf("send of %d bytes: data differs", n)
			}
		}
		t.Logf("epoll wakeups: client %d, server %d", p.cli.w.wakeups, p.srv.w.wakeups)
	})
}

// TestNewQPIsNotFailedByItsNumbersOldCompletions: a QP destroyed with
// receives outstanding leaves their flushes in its CQ, and siw gives its
// number to the next QP created. Polled after that, the flushes must not
// mark the new QP failed: its sends are posted and complete.
func TestNewQPIsNotFailedByItsNumbersOldCompletions(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 4)
		oldNum := p.cli.qp.Num()
		for _, s := range []*side{&p.cli, &p.srv} {
			if err := s.qp.Close(); err != nil {
				t.Fatalf("QP Close: %v", err)
			}
			s.qp = nil
		}
		// The receive areas stay registered; the new QPs post into them.
		repost := func(s side, base uint64) func(rdma.QP) error {
			return func(qp rdma.QP) error {
				for i := range 4 {
					if err := qp.PostRecv(base+uint64(i), []rdma.SGE{rdma.SGEOf(s.w.recvMR, i*recvBufSize, recvBufSize)}); err != nil {
						return err
					}
				}
				return nil
			}
		}
		p.cli.qp, p.srv.qp, _ = p.dial(t, td, repost(p.cli, 2000), repost(p.srv, 2000))
		t.Logf("the closed client QP was %d, the new one is %d", oldNum, p.cli.qp.Num())
		src := newRegion(t, p.cli.pd, 64, rdma.AccessLocalWrite)
		copy(src.mem.Bytes(), "after the old QP")
		for i := range 3 {
			if err := p.cli.qp.PostSend(uint64(i), []rdma.SGE{rdma.SGEOf(src.mr, 0, 16)}, 0); err != nil {
				t.Fatalf("send %d on the new QP: %v", i, err)
			}
			awaitSkippingFlushes(t, p.cli.w, uint64(i), rdma.OpSend)
			c := awaitSkippingFlushes(t, p.srv.w, 2000+uint64(i), rdma.OpRecv)
			if c.Bytes != 16 {
				t.Fatalf("receive of %d bytes, want 16", c.Bytes)
			}
		}
	})
}

// TestClosedQPRefuses: a QP used while and after it is closed (a channel
// retired by one goroutine while another reposts a receive or queries
// it) refuses with ErrClosed, and never hands the provider a destroyed
// QP: siw and rxe post into rings that destroy has unmapped, and the
// process dies of a signal in the provider's library.
func TestClosedQPRefuses(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 0)
		src := newRegion(t, p.cli.pd, 64, rdma.AccessLocalWrite)
		dst := newRegion(t, p.srv.pd, 64, accAll)
		sgl := []rdma.SGE{rdma.SGEOf(src.mr, 0, 64)}
		qp := p.cli.qp
		local, remote := qp.LocalAddr().String(), qp.RemoteAddr().String()

		// Four goroutines post, query and disconnect while Close runs.
		// Posts beyond the queues' depth fail (ENOMEM) before Close:
		// only the absence of a crash and the errors after it count.
		closed := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-closed:
						return
					default:
					}
					switch (g + i) % 4 {
					case 0:
						_ = qp.PostRecv(uint64(i), sgl)
					case 1:
						_ = qp.PostWrite(uint64(i), sgl, dst.mr.Addr(), dst.mr.RKey(), 0)
					case 2:
						_ = qp.State()
					case 3:
						_ = qp.Disconnect()
					}
				}
			}()
		}
		time.Sleep(10 * time.Millisecond)
		if err := qp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		close(closed)
		wg.Wait()

		for name, err := range map[string]error{
			"PostRecv":  qp.PostRecv(1, sgl),
			"PostSend":  qp.PostSend(2, sgl, 0),
			"PostWrite": qp.PostWrite(3, sgl, dst.mr.Addr(), dst.mr.RKey(), 0),
			"PostRead":  qp.PostRead(4, sgl, dst.mr.Addr(), dst.mr.RKey(), 0),
		} {
			if !errors.Is(err, rdma.ErrClosed) || !errors.Is(err, rdma.ErrQPState) {
				t.Errorf("%s after Close: %v, want ErrClosed and ErrQPState", name, err)
			}
		}
		if s := qp.State(); s != rdma.QPStateError {
			t.Errorf("State after Close: %s, want ERROR", s)
		}
		if err := qp.Disconnect(); err != nil {
			t.Errorf("Disconnect after Close: %v", err)
		}
		if err := qp.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if l, r := qp.LocalAddr().String(), qp.RemoteAddr().String(); l != local || r != remote {
			t.Errorf("addresses after Close %s -> %s, want %s -> %s", l, r, local, remote)
		}
	})
}

// TestClosedCQRefuses: Poll and Arm after Close refuse with ErrClosed
// rather than hand the provider a destroyed CQ; Close again is harmless.
func TestClosedCQRefuses(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		dev, err := New().Open(td.name)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		cq, err := dev.CreateCQ(4)
		if err != nil {
			t.Fatal(err)
		}
		if err := cq.Arm(false); err != nil {
			t.Fatalf("Arm: %v", err)
		}
		if err := cq.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if n, err := cq.Poll(make([]rdma.Completion, 4)); n != 0 || !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("Poll after Close: %d, %v", n, err)
		}
		if err := cq.Arm(false); !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("Arm after Close: %v", err)
		}
		if err := cq.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// awaitSkippingFlushes waits for wr id's successful completion, passing
// over the flushed work requests of QPs closed before.
func awaitSkippingFlushes(t *testing.T, w *waiter, id uint64, op rdma.Opcode) rdma.Completion {
	t.Helper()
	for {
		c := w.next(t, testTimeout)
		if c.Status == rdma.StatusWRFlushErr && c.WRID != id {
			continue
		}
		if c.Status != rdma.StatusSuccess || c.WRID != id || c.Op != op {
			t.Fatalf("completion %+v (status %s), want wr %d op %s success", c, c.Status, id, op)
		}
		return c
	}
}

// transferSizes runs 1 B to 16 MiB, with odd sizes that straddle pages
// and the transports' segment sizes.
var transferSizes = []int{1, 2, 63, 4096, 4097, 65537, 1 << 20, 16 << 20}

func TestWriteRead(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 0)
		maxN := transferSizes[len(transferSizes)-1]
		src := newRegion(t, p.cli.pd, maxN, accAll)
		back := newRegion(t, p.cli.pd, maxN, accAll)
		dst := newRegion(t, p.srv.pd, maxN+64, accAll)
		for i, n := range transferSizes {
			off := i % 7 // unaligned remote offsets too
			fill(src.mem.Bytes()[:n], uint64(n))
			raddr := dst.mr.Addr() + uint64(off)
			if err := p.cli.qp.PostWrite(uint64(2*i), []rdma.SGE{rdma.SGEOf(src.mr, 0, n)}, raddr, dst.mr.RKey(), 0); err != nil {
				t.Fatalf("PostWrite(%d): %v", n, err)
			}
			p.cli.w.expect(t, uint64(2*i), rdma.OpWrite)
			// A Write completes at the writer when it is sent (iWARP) or
			// acknowledged (RoCE); reading the same range back through
			// the QP orders after it, so the read checks the placement.
			clear(back.mem.Bytes()[:n])
			if err := p.cli.qp.PostRead(uint64(2*i+1), []rdma.SGE{rdma.SGEOf(back.mr, 0, n)}, raddr, dst.mr.RKey(), 0); err != nil {
				t.Fatalf("PostRead(%d): %v", n, err)
			}
			c := p.cli.w.expect(t, uint64(2*i+1), rdma.OpRead)
			if int(c.Bytes) != n && c.Bytes != 0 {
				t.Errorf("read of %d reports %d bytes", n, c.Bytes)
			}
			if !bytes.Equal(dst.mem.Bytes()[off:off+n], src.mem.Bytes()[:n]) {
				t.Fatalf("RDMA Write of %d bytes: remote data differs", n)
			}
			if !bytes.Equal(back.mem.Bytes()[:n], src.mem.Bytes()[:n]) {
				t.Fatalf("RDMA Read of %d bytes: data differs", n)
			}
		}
		t.Logf("epoll wakeups: client %d for %d operations", p.cli.w.wakeups, 2*len(transferSizes))
	})
}

func TestWriteImm(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 2)
		src := newRegion(t, p.cli.pd, 4096, accAll)
		dst := newRegion(t, p.srv.pd, 4096, accAll)
		fill(src.mem.Bytes(), 7)
		err := p.cli.qp.PostWriteImm(1, []rdma.SGE{rdma.SGEOf(src.mr, 0, 4096)}, dst.mr.Addr(), dst.mr.RKey(), 0xfeedf00d, 0)
		if p.dev.Info().Caps&rdma.CapWriteImm == 0 {
			if !errors.Is(err, rdma.ErrNotSupported) {
				t.Fatalf("PostWriteImm on %s = %v, want ErrNotSupported", p.dev.Info().Transport, err)
			}
			t.Skipf("%s has no immediate data (%s)", td.name, p.dev.Info().Transport)
		}
		if err != nil {
			t.Fatalf("PostWriteImm: %v", err)
		}
		p.cli.w.expect(t, 1, rdma.OpWrite)
		c := p.srv.w.next(t, testTimeout)
		if c.Status != rdma.StatusSuccess || c.Op != rdma.OpRecvWriteImm || !c.HasImm || c.Imm != 0xfeedf00d || c.Bytes != 4096 {
			t.Fatalf("completion %+v, want RECV_RDMA_WITH_IMM imm 0xfeedf00d 4096 bytes", c)
		}
		if !bytes.Equal(dst.mem.Bytes(), src.mem.Bytes()) {
			t.Fatal("write with immediate: data differs")
		}
	})
}

// TestRemoteAccessError: an RDMA operation under a wrong rkey, or past
// the end of the region, must fail and leave the QP in ERROR with the
// reason reported, within a bounded time: never a hang.
//
// RoCE answers a bad Write with a NAK, so the Write itself completes with
// a remote access error. iWARP completes a Write locally once it is sent
// and the responder answers with a Terminate that tears the connection
// down: the failure shows as flushed requests, the peer's disconnect, and
// the QP state. (Linux 6.1 siw sometimes leaves the in-flight Write with
// no completion at all after the Terminate; the QP still reports ERROR,
// which is what the test then requires.)
func TestRemoteAccessError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		read  bool
		rkey  func(mr rdma.MR) uint32
		extra int // bytes past the end of the region
	}{
		{"write-wrong-rkey", false, func(mr rdma.MR) uint32 { return mr.RKey() ^ 0x5a5a00 }, 0},
		{"write-out-of-range", false, func(mr rdma.MR) uint32 { return mr.RKey() }, 4096},
		{"read-wrong-rkey", true, func(mr rdma.MR) uint32 { return mr.RKey() ^ 0x5a5a00 }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, func(t *testing.T, td testDevice) {
				p := connect(t, td, 0)
				iwarp := p.dev.Info().Transport == rdma.TransportIWARP
				src := newRegion(t, p.cli.pd, 8192, accAll)
				dst := newRegion(t, p.srv.pd, 4096, accAll)
				sgl := []rdma.SGE{rdma.SGEOf(src.mr, 0, 4096)}
				raddr, rkey := dst.mr.Addr()+uint64(tc.extra), tc.rkey(dst.mr)
				var err error
				if tc.read {
					err = p.cli.qp.PostRead(1, sgl, raddr, rkey, 0)
				} else {
					err = p.cli.qp.PostWrite(1, sgl, raddr, rkey, 0)
				}
				if err != nil {
					t.Fatalf("post: %v", err)
				}
				// A request behind the bad one: on iWARP it is the one
				// that shows the failure (flushed), on RoCE it is flushed.
				perr := p.cli.qp.PostRead(2, []rdma.SGE{rdma.SGEOf(src.mr, 4096, 16)}, dst.mr.Addr(), dst.mr.RKey(), 0)
				var statuses []rdma.Status
				for i := 0; i < 2 && (i == 0 || perr == nil); i++ {
					c, ok := p.cli.w.tryNext(t, remoteErrTimeout)
					if !ok {
						if !iwarp {
							t.Fatalf("no completion within %v (QP hung)", remoteErrTimeout)
						}
						t.Logf("no completion %d within %v (siw left it in flight)", i+1, remoteErrTimeout)
						break
					}
					statuses = append(statuses, c.Status)
				}
				t.Logf("completion statuses %v; post behind it: %v", statuses, perr)
				if !iwarp || tc.read {
					if len(statuses) == 0 || statuses[0] != rdma.StatusRemAccessErr && !(iwarp && statuses[0] != rdma.StatusSuccess) {
						t.Errorf("bad request completed with %v, want %s", statuses, rdma.StatusRemAccessErr)
					}
				}
				// The QP's failure must be visible, within a bounded time.
				deadline := time.Now().Add(remoteErrTimeout)
				for p.cli.qp.State() != rdma.QPStateError && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if s := p.cli.qp.State(); s != rdma.QPStateError {
					t.Fatalf("client QP state %s after a failed request, want ERROR", s)
				}
				qerr := p.cli.qp.Err()
				t.Logf("QP.Err: %v", qerr)
				if qerr == nil {
					t.Fatal("QP.Err is nil after the QP failed")
				}
				if !iwarp && !errors.Is(qerr, rdma.ErrRemoteAccess) {
					t.Errorf("QP.Err = %v, want ErrRemoteAccess", qerr)
				}
				if err := p.cli.qp.PostSend(3, []rdma.SGE{rdma.SGEOf(src.mr, 0, 1)}, 0); !errors.Is(err, rdma.ErrQPState) {
					t.Errorf("post on a failed QP: %v, want ErrQPState", err)
				}
			})
		})
	}
}

func TestMemoryWindow(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 0)
		if p.dev.Info().Caps&rdma.CapMemoryWindows == 0 {
			if _, err := p.srv.pd.AllocMW(); !errors.Is(err, rdma.ErrNotSupported) {
				t.Errorf("AllocMW without CapMemoryWindows = %v, want ErrNotSupported", err)
			}
			t.Skipf("%s does not support memory windows", td.name)
		}
		src := newRegion(t, p.cli.pd, 8192, accAll)
		dst := newRegion(t, p.srv.pd, 8192, accAll|rdma.AccessMWBind)
		mw, err := p.srv.pd.AllocMW()
		if err != nil {
			t.Fatalf("AllocMW: %v", err)
		}
		defer mw.Close()
		rkey, err := p.srv.qp.BindMW(9, mw, dst.mr, rdma.SGEOf(dst.mr, 4096, 1024), rdma.AccessRemoteWrite|rdma.AccessRemoteRead, rdma.SendSignaled)
		if err != nil {
			t.Fatalf("BindMW: %v", err)
		}
		p.srv.w.expect(t, 9, rdma.OpBindMW)
		fill(src.mem.Bytes()[:1024], 3)
		if err := p.cli.qp.PostWrite(1, []rdma.SGE{rdma.SGEOf(src.mr, 0, 1024)}, dst.mr.Addr()+4096, rkey, 0); err != nil {
			t.Fatalf("PostWrite through window: %v", err)
		}
		p.cli.w.expect(t, 1, rdma.OpWrite)
		if !bytes.Equal(dst.mem.Bytes()[4096:5120], src.mem.Bytes()[:1024]) {
			t.Fatal("write through window: data differs")
		}
		// Inside the MR but outside the window's range should be refused;
		// rxe in Linux 6.1 checks only the underlying MR's range for a
		// window rkey, so this is logged, not required.
		if err := p.cli.qp.PostWrite(2, []rdma.SGE{rdma.SGEOf(src.mr, 0, 1024)}, dst.mr.Addr()+6144, rkey, 0); err != nil {
			t.Fatalf("PostWrite: %v", err)
		}
		c := p.cli.w.next(t, testTimeout)
		t.Logf("write outside the window's range: %s", c.Status)
		if c.Status != rdma.StatusSuccess {
			return
		}
		// Deallocating the window invalidates its rkey.
		if err := mw.Close(); err != nil {
			t.Fatalf("MW Close: %v", err)
		}
		if err := p.cli.qp.PostWrite(3, []rdma.SGE{rdma.SGEOf(src.mr, 0, 1024)}, dst.mr.Addr()+4096, rkey, 0); err != nil {
			t.Fatalf("PostWrite: %v", err)
		}
		if c := p.cli.w.next(t, testTimeout); c.Status != rdma.StatusRemAccessErr {
			t.Fatalf("write through a deallocated window: %s, want %s", c.Status, rdma.StatusRemAccessErr)
		}
		// A bind of the closed window, or onto a closed region, refuses:
		// their Close freed what the post would read.
		if _, err := p.srv.qp.BindMW(10, mw, dst.mr, rdma.SGEOf(dst.mr, 0, 1024), rdma.AccessRemoteRead, rdma.SendSignaled); !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("BindMW of a closed window: %v, want ErrClosed", err)
		}
		mw2, err := p.srv.pd.AllocMW()
		if err != nil {
			t.Fatalf("AllocMW: %v", err)
		}
		defer mw2.Close()
		gone := newRegion(t, p.srv.pd, 4096, accAll|rdma.AccessMWBind)
		if err := gone.mr.Close(); err != nil {
			t.Fatalf("MR Close: %v", err)
		}
		if _, err := p.srv.qp.BindMW(11, mw2, gone.mr, rdma.SGEOf(gone.mr, 0, 1024), rdma.AccessRemoteRead, rdma.SendSignaled); !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("BindMW onto a closed region: %v, want ErrClosed", err)
		}
	})
}

// TestDialPortCollided pins which Dial failures another port may cure:
// those of the bind and connect of iWARP's kernel socket, and no others.
func TestDialPortCollided(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&rdma.VerbError{Verb: "rdma_connect", Errno: syscall.EADDRINUSE}, true},
		{&rdma.VerbError{Verb: "rdma_connect", Errno: syscall.EADDRNOTAVAIL}, true},
		{fmt.Errorf("dial: %w", &rdma.VerbError{Verb: "rdma_connect", Errno: syscall.EADDRNOTAVAIL}), true},
		{&rdma.VerbError{Verb: "rdma_connect", Errno: syscall.ECONNREFUSED}, false},
		{&rdma.VerbError{Verb: "rdma_resolve_addr", Errno: syscall.ETIMEDOUT}, false},
		{context.DeadlineExceeded, false},
		{rdma.ErrInvalid, false},
	} {
		if got := dialPortCollided(tc.err); got != tc.want {
			t.Errorf("dialPortCollided(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestReject(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		dev, err := New().Open(td.name)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		cli := newSide(t, dev)
		defer closeSide(t, "client", cli)
		l, err := dev.Listen(net.JoinHostPort(td.addr.String(), "0"), 1)
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		defer l.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		go func() {
			if req, err := l.Accept(ctx); err == nil {
				req.Reject([]byte("go away"))
			}
		}()
		_, err = dev.Dial(ctx, l.Addr().String(), qpConfig(cli), []byte("let me in"))
		var rej *rdma.RejectError
		if !errors.Is(err, rdma.ErrRejected) || !errors.As(err, &rej) {
			t.Fatalf("Dial to a rejecting listener: %v, want ErrRejected", err)
		}
		if !strings.HasPrefix(string(rej.PrivateData), "go away") {
			t.Errorf("reject private data %q", rej.PrivateData)
		}
		// Nothing listens on port 1: the connect must fail, not hang.
		_, err = dev.Dial(ctx, net.JoinHostPort(td.addr.String(), "1"), qpConfig(cli), nil)
		if err == nil {
			t.Fatal("Dial to a closed port succeeded")
		}
		t.Logf("dial to a closed port: %v", err)

		// Closing a listener wakes an Accept parked on it.
		l2, err := dev.Listen(net.JoinHostPort(td.addr.String(), "0"), 1)
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := l2.Accept(context.Background())
			errc <- err
		}()
		time.Sleep(100 * time.Millisecond)
		if err := l2.Close(); err != nil {
			t.Errorf("listener Close: %v", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, rdma.ErrClosed) {
				t.Errorf("Accept after Close: %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Accept still blocked 10 s after the listener was closed")
		}
	})
}

// listening opens td's device with a client side, a server side and a
// listener on the device, all closed when the test ends.
func listening(t *testing.T, td testDevice) (dev rdma.Device, cli, srv side, l rdma.Listener) {
	t.Helper()
	dev, err := New().Open(td.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	cli, srv = newSide(t, dev), newSide(t, dev)
	t.Cleanup(func() { closeSide(t, "client", cli) })
	t.Cleanup(func() { closeSide(t, "server", srv) })
	if l, err = dev.Listen(net.JoinHostPort(td.addr.String(), "0"), 1); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return dev, cli, srv, l
}

// dialing dials l from cli in the background and sends Dial's error (a
// connection that came up is closed).
func dialing(ctx context.Context, dev rdma.Device, l rdma.Listener, cli side) <-chan error {
	dialed := make(chan error, 1)
	go func() {
		qp, err := dev.Dial(ctx, l.Addr().String(), qpConfig(cli), nil)
		if qp != nil {
			qp.Close()
		}
		dialed <- err
	}()
	return dialed
}

// TestRequestOutlivesItsListener: a connect request accepted from a
// listener that is then closed (an endpoint closing while a server
// dials it) is rejected and destroyed by the listener's Close; Accept
// and Reject on it afterwards refuse with ErrClosed instead of handing
// librdmacm an id whose event channel is gone, and the dialer hears the
// rejection. TestMain's resource count shows the id released.
func TestRequestOutlivesItsListener(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		dev, cli, srv, l := listening(t, td)
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		dialed := dialing(ctx, dev, l, cli)
		req, err := l.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		local, remote := req.LocalAddr().String(), req.RemoteAddr().String()
		if err := l.Close(); err != nil {
			t.Errorf("listener Close: %v", err)
		}
		if qp, err := req.Accept(t.Context(), qpConfig(srv), nil); !errors.Is(err, rdma.ErrClosed) {
			if qp != nil {
				qp.Close()
			}
			t.Errorf("Accept of a request after its listener closed: %v, want ErrClosed", err)
		}
		if err := req.Reject(nil); !errors.Is(err, rdma.ErrClosed) {
			t.Errorf("Reject after the listener closed: %v, want ErrClosed", err)
		}
		if l, r := req.LocalAddr().String(), req.RemoteAddr().String(); l != local || r != remote {
			t.Errorf("addresses after Close %s <- %s, want %s <- %s", l, r, local, remote)
		}
		if err := <-dialed; !errors.Is(err, rdma.ErrRejected) {
			t.Errorf("Dial to a listener closed with its request pending: %v, want ErrRejected", err)
		}
	})
}

// TestAcceptEndsWithItsContext: a request accepted with a context that
// has ended, or that ends while Prepare runs (after the QP exists, before
// rdma_accept), is rejected: Accept returns the context's error, the
// dialer hears the rejection, and TestMain's resource count shows the QP
// and cm_id released.
func TestAcceptEndsWithItsContext(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		dev, cli, srv, l := listening(t, td)
		for _, before := range []bool{true, false} {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			dialed := dialing(ctx, dev, l, cli)
			req, err := l.Accept(ctx)
			if err != nil {
				cancel()
				t.Fatalf("Accept: %v", err)
			}
			actx, acancel := context.WithCancel(ctx)
			if before {
				acancel()
			}
			prepared := false
			cfg := qpConfig(srv)
			cfg.Prepare = func(rdma.QP) error { prepared = true; acancel(); return nil }
			qp, err := req.Accept(actx, cfg, nil)
			if qp != nil {
				qp.Close()
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("context ended before Accept %v: Accept: %v, want context.Canceled", before, err)
			}
			if prepared == before {
				t.Errorf("context ended before Accept %v: Prepare ran: %v", before, prepared)
			}
			if err := <-dialed; !errors.Is(err, rdma.ErrRejected) {
				t.Errorf("context ended before Accept %v: Dial: %v, want ErrRejected", before, err)
			}
			cancel()
		}
	})
}

// fill writes a reproducible pseudo-random pattern.
func fill(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

// TestFileRegion registers a read-only file mapping (rdma.MapFile), the
// way response bodies are served without a copy: the peer RDMA-Reads the
// file's pages, and the file is also the local source of an RDMA Write.
func TestFileRegion(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 0)
		const n = 3*4096 + 123
		body := make([]byte, n)
		fill(body, 42)
		// The guest's / is 9p under overlayfs, whose pages cannot be
		// pinned long-term (ibv_reg_mr: EFAULT); a body file lives on a
		// real filesystem, tmpfs here.
		dir := t.TempDir()
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			dir = "/dev/shm"
		}
		f, err := os.CreateTemp(dir, "quartet-body")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := f.Write(append(make([]byte, 100), body...)); err != nil {
			t.Fatal(err)
		}
		mem, err := rdma.MapFile(f, 100, n) // an offset that is not page aligned
		if err != nil {
			t.Fatalf("MapFile: %v", err)
		}
		defer mem.Free()
		region := mem.Bytes()
		fileMR, err := p.srv.pd.Register(region, rdma.AccessRemoteRead)
		if errors.Is(err, syscall.EFAULT) {
			// Linux 6.1 will not pin read-only MAP_SHARED file pages
			// (rdma/API-REQUESTS.md, 2); a read-only private mapping of
			// the same file registers.
			t.Logf("Register(rdma.MapFile mapping): %v; retrying with MAP_PRIVATE", err)
			priv, merr := unix.Mmap(int(f.Fd()), 0, 16384, unix.PROT_READ, unix.MAP_PRIVATE)
			if merr != nil {
				t.Fatalf("mmap: %v", merr)
			}
			defer unix.Munmap(priv)
			region = priv[100 : 100+n]
			fileMR, err = p.srv.pd.Register(region, rdma.AccessRemoteRead)
		}
		if err != nil {
			t.Fatalf("Register(file mapping): %v", err)
		}
		defer fileMR.Close()
		sink := newRegion(t, p.cli.pd, n, accAll)
		if err := p.cli.qp.PostRead(1, []rdma.SGE{rdma.SGEOf(sink.mr, 0, n)}, fileMR.Addr(), fileMR.RKey(), 0); err != nil {
			t.Fatalf("PostRead: %v", err)
		}
		p.cli.w.expect(t, 1, rdma.OpRead)
		if !bytes.Equal(sink.mem.Bytes(), body) {
			t.Fatal("RDMA Read of a file mapping: data differs")
		}
		clear(sink.mem.Bytes())
		if err := p.srv.qp.PostWrite(2, []rdma.SGE{rdma.SGEOf(fileMR, 0, n)}, sink.mr.Addr(), sink.mr.RKey(), 0); err != nil {
			t.Fatalf("PostWrite from the file: %v", err)
		}
		p.srv.w.expect(t, 2, rdma.OpWrite)
		// The write's completion means sent (iWARP) or acknowledged
		// (RoCE); a read of the sink through the client's QP orders after
		// its placement on the client side only on RoCE, so wait on the
		// data itself, bounded.
		deadline := time.Now().Add(testTimeout)
		for !bytes.Equal(sink.mem.Bytes(), body) {
			if time.Now().After(deadline) {
				t.Fatal("RDMA Write from a file mapping: data differs")
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// TestBatchPoll fills the CQ with more completions than one ibv_poll_cq
// batch and takes them with one Poll into a larger slice: all in posting
// order, with their ids and byte counts.
func TestBatchPoll(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		p := connect(t, td, 0)
		const k = testQueueDepth // every send queue slot in flight
		src := newRegion(t, p.cli.pd, k, accAll)
		dst := newRegion(t, p.srv.pd, k, accAll)
		for i := 0; i < k; i++ {
			if err := p.cli.qp.PostRead(uint64(i), []rdma.SGE{rdma.SGEOf(src.mr, i, 1)}, dst.mr.Addr()+uint64(i), dst.mr.RKey(), 0); err != nil {
				t.Fatalf("PostRead %d: %v", i, err)
			}
		}
		if err := p.cli.qp.PostRead(k, []rdma.SGE{rdma.SGEOf(src.mr, 0, 1)}, dst.mr.Addr(), dst.mr.RKey(), 0); !errors.Is(err, rdma.ErrQueueFull) {
			t.Logf("post beyond the send queue depth: %v (the device may round the depth up)", err)
		}
		// Wait until everything is there, then take it in one Poll.
		deadline := time.Now().Add(testTimeout)
		got := make([]rdma.Completion, 0, k+1)
		buf := make([]rdma.Completion, 2*maxCompletionsPerPoll)
		for len(got) < k && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			n, err := p.cli.cq.Poll(buf)
			if err != nil {
				t.Fatalf("Poll: %v", err)
			}
			got = append(got, buf[:n]...)
		}
		if len(got) < k {
			t.Fatalf("%d of %d completions", len(got), k)
		}
		for i := 0; i < k; i++ {
			if c := got[i]; c.Status != rdma.StatusSuccess || c.WRID != uint64(i) || c.Op != rdma.OpRead {
				t.Fatalf("completion %d: %+v", i, c)
			}
		}
	})
}

// A registration the locked-memory limit refuses says so, with the
// figures, instead of a bare "cannot allocate memory". With
// RLIMIT_MEMLOCK at 1 MiB, registering 4 MiB on a thread without
// CAP_IPC_LOCK (the guest runs the tests as root) is rdma.ErrMemlock on
// every device, and 64 KiB still registers; with the capability, rxe
// (ib_umem_get) lets it lift the limit, and siw, which counts its pages
// against the limit whatever the capability, refuses again, the error
// saying that the capability did not help.
func TestRegisterOverMemlock(t *testing.T) {
	run(t, func(t *testing.T, td testDevice) {
		dev, err := New().Open(td.name)
		if err != nil {
			t.Fatalf("Open(%s): %v", td.name, err)
		}
		defer dev.Close()
		pd, err := dev.AllocPD()
		if err != nil {
			t.Fatal(err)
		}
		defer pd.Close()
		big, err := rdma.Alloc(4 << 20)
		if err != nil {
			t.Fatal(err)
		}
		defer big.Free()
		small, err := rdma.Alloc(64 << 10)
		if err != nil {
			t.Fatal(err)
		}
		defer small.Free()

		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
			t.Fatal(err)
		}
		low := lim
		low.Cur = 1 << 20
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &low); err != nil {
			t.Skipf("lowering RLIMIT_MEMLOCK: %v", err)
		}
		defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim)

		honoursCap := !strings.HasPrefix(td.name, "siw")
		for _, withCap := range []bool{false, true} {
			errs := registerOnThread(pd, withCap, big, small)
			bigErr, smallErr := errs[0], errs[1]
			var me *rdma.MemlockError
			switch {
			case withCap && honoursCap:
				if bigErr != nil {
					t.Errorf("with CAP_IPC_LOCK, registering 4 MiB over a 1 MiB limit: %v; the capability lifts it here", bigErr)
				}
			case !errors.Is(bigErr, rdma.ErrMemlock) || !errors.As(bigErr, &me) || me.Limit != 1<<20 || me.Asked != 4<<20 ||
				me.CapIPCLock != withCap || !errors.Is(bigErr, syscall.ENOMEM) || !strings.Contains(bigErr.Error(), "RLIMIT_MEMLOCK"):
				t.Errorf("CAP_IPC_LOCK %v: registering 4 MiB over a 1 MiB RLIMIT_MEMLOCK: %v; want rdma.ErrMemlock saying so", withCap, bigErr)
			}
			if smallErr != nil {
				t.Errorf("CAP_IPC_LOCK %v: registering 64 KiB within the limit: %v", withCap, smallErr)
			}
		}
	})
}

// registerOnThread registers each of mems on one thread, without
// CAP_IPC_LOCK unless withCap, and closes what registered. Capabilities
// are per thread: the goroutine locks its thread and never gives it back
// (it ends with the goroutine), so the dropped capability goes with it.
func registerOnThread(pd rdma.PD, withCap bool, mems ...*rdma.Memory) []error {
	done := make(chan []error)
	go func() {
		goruntime.LockOSThread()
		errs := make([]error, len(mems))
		defer func() { done <- errs }()
		if !withCap {
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var caps [2]unix.CapUserData
			err := unix.Capget(&hdr, &caps[0])
			if err == nil {
				caps[0].Effective &^= 1 << unix.CAP_IPC_LOCK
				err = unix.Capset(&hdr, &caps[0])
			}
			if err != nil {
				errs[0] = fmt.Errorf("dropping CAP_IPC_LOCK: %w", err)
				return
			}
		}
		for i, m := range mems {
			mr, err := pd.Register(m.Bytes(), rdma.AccessLocalWrite)
			if errs[i] = err; err == nil {
				mr.Close()
			}
		}
	}()
	return <-done
}

// hiddenDevEnv makes the test binary, run again by
// TestNoDeviceWhenDevIsHidden in a mount namespace of its own, hide
// /dev/infiniband under an empty tmpfs, as a container started without
// --device does, and print what the provider says.
const hiddenDevEnv = "QUARTET_VERBS_TEST_HIDDEN_DEV"

func hiddenDevChild() int {
	if err := unix.Mount("none", "/dev/infiniband", "tmpfs", 0, ""); err != nil {
		fmt.Println("mount:", err)
		return 2
	}
	p := New()
	devs, derr := p.Devices()
	d, oerr := p.Open("")
	if d != nil {
		d.Close()
	}
	var ne *rdma.NoDeviceError
	fmt.Printf("devices: %d %v\nopen: %v\nexplained: %v\n", len(devs), derr, oerr,
		errors.As(oerr, &ne) && errors.Is(oerr, rdma.ErrNoDevice) && errors.Is(derr, rdma.ErrNoDevice))
	return 0
}

// With /dev/infiniband out of its mount namespace, libibverbs sees no
// device and says no more; the provider says the kernel has them and
// which node it could not open.
func TestNoDeviceWhenDevIsHidden(t *testing.T) {
	// The kernel's device names, not testDevices: this process's own
	// librdmacm state is not this test's to change (TestMain compares the
	// kernel's resource counts, librdmacm's cached PDs among them, before
	// and after all the tests).
	entries, _ := os.ReadDir("/sys/class/infiniband")
	if len(entries) == 0 {
		t.Skip("no RDMA device (run the tests in the VM: bash vm/ci.sh)")
	}
	if os.Geteuid() != 0 {
		t.Skip("a mount namespace needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hiddenDevEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"devices: 0 rdma: no RDMA device: the kernel has ", "open: rdma: no RDMA device: the kernel has ",
		"/dev/infiniband/uverbs", "no such file or directory", "PrivateDevices=no", "explained: true"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	for _, e := range entries {
		if !strings.Contains(text, e.Name()) {
			t.Errorf("the error does not name %s:\n%s", e.Name(), text)
		}
	}
}
