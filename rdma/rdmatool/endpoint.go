package rdmatool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// endpoint is one side of a tool connection: device, PD, one CQ for both
// queues (and the Waiter that sleeps on its fd), one registered area, and
// the QP once connected. Built in one straight line by newEndpoint and
// released in reverse by close.
type endpoint struct {
	dev    rdma.Device
	pd     rdma.PD
	cq     rdma.CQ
	waiter *rdma.Waiter
	mem    *rdma.Memory
	mr     rdma.MR
	qp     rdma.QP
	buf    []rdma.Completion
	pend   []rdma.Completion

	// spin: wait for completions by busy polling the CQ instead of
	// sleeping on its fd (perftest's default, perf without -e). The
	// spinning goroutine is locked to its OS thread: preempted (every
	// 10 ms) it could resume on another M, a thread the kernel may start
	// on the CPU where the device's own work or the peer's spinner runs,
	// where a C poller like perftest is one thread the kernel places once.
	// In the guest, both ends spinning, locking took siw's 64 KiB Read
	// bandwidth from 114-141 to 154-212 MiB/s (perftest 180-230) and
	// Write from 215-233 to 231-350. It also yields once every few
	// milliseconds (slice.go), which keeps the runtime's sysmon asleep.
	spin  bool
	spins int
	slice *sliceKeeper // set with spin
}

// openDevice opens the device that owns host (or the provider's default
// device when host is empty or unspecified).
func openDevice(p rdma.Provider, host string) (rdma.Device, error) {
	if host == "" {
		return p.Open("")
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if lerr != nil || len(ips) == 0 {
			return nil, fmt.Errorf("resolving %q: %w", host, lerr)
		}
		ip = ips[0]
	}
	if ip.IsUnspecified() {
		return p.Open("")
	}
	return p.OpenByAddr(ip)
}

// newEndpoint opens the device for host and sets it up (setup).
func newEndpoint(p rdma.Provider, host string, cqDepth, size int) (*endpoint, error) {
	dev, err := openDevice(p, host)
	if err != nil {
		return nil, fmt.Errorf("opening device: %w", err)
	}
	e := &endpoint{dev: dev}
	if err := e.setup(cqDepth, size); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// setup creates the PD, a CQ of cqDepth entries and one registered area
// of size bytes on the endpoint's device; the caller closes e on error.
func (e *endpoint) setup(cqDepth, size int) (err error) {
	e.buf = make([]rdma.Completion, 32)
	if e.pd, err = e.dev.AllocPD(); err != nil {
		return err
	}
	if e.cq, err = e.dev.CreateCQ(cqDepth); err != nil {
		return err
	}
	if e.waiter, err = rdma.NewWaiter(e.cq); err != nil {
		return err
	}
	if e.mem, err = rdma.Alloc(size); err != nil {
		return err
	}
	e.mr, err = e.pd.Register(e.mem.Bytes(), rdma.AccessLocalWrite|rdma.AccessRemoteRead|rdma.AccessRemoteWrite)
	return err
}

// close releases in reverse of creation; every step tolerates a nil.
func (e *endpoint) close() error {
	var errs []error
	if e.qp != nil {
		errs = append(errs, e.qp.Close())
	}
	if e.mr != nil {
		errs = append(errs, e.mr.Close())
	}
	if e.mem != nil {
		errs = append(errs, e.mem.Free())
	}
	if e.waiter != nil {
		errs = append(errs, e.waiter.Close())
	}
	if e.cq != nil {
		errs = append(errs, e.cq.Close())
	}
	if e.pd != nil {
		errs = append(errs, e.pd.Close())
	}
	if e.dev != nil {
		errs = append(errs, e.dev.Close())
	}
	return errors.Join(errs...)
}

// startSpinning switches e to busy polling (perftest's way): the calling
// goroutine owns its thread (pinPoller) and keeps its time slices short.
func (e *endpoint) startSpinning() {
	e.spin = true
	e.slice = newSliceKeeper()
}

// posted records a post on a busy-polling endpoint.
func (e *endpoint) posted() {
	if e.spin {
		e.slice.did(slicePost)
	}
}

// errDisconnected: the peer went away (the QP left RTS and its requests
// were flushed), which ends a server normally.
var errDisconnected = errors.New("quartet rdma: peer disconnected")

// stateCheck is how often a waiting tool looks at the QP state: a peer's
// disconnect does not always produce a completion, only a QP state
// change, and contexts have no fd.
const stateCheck = 200 * time.Millisecond

// spinCheck is how many empty polls a busy-polling endpoint makes between
// looks at its context and QP state (a cgo call or syscall each).
const spinCheck = 1 << 16

// wait returns at least one completion into dst (failed ones included),
// busy polling the CQ when e.spin and otherwise sleeping on its fd. A QP
// that left RTS with no completion left to return is errDisconnected.
func (e *endpoint) wait(ctx context.Context, dst []rdma.Completion) (int, error) {
	if e.spin {
		for {
			n, err := e.cq.Poll(dst)
			if n > 0 || err != nil {
				return n, err
			}
			e.slice.did(1)
			if e.spins++; e.spins%spinCheck == 0 {
				if err := ctx.Err(); err != nil {
					return 0, err
				}
				if n, err := e.qpGone(dst); n > 0 || err != nil {
					return n, err
				}
			}
		}
	}
	// Poll before arming a timeout: a completion often is already there
	// (on rxe a Read completes inside ibv_post_send), and a context with
	// a timer per request cost rxe0's -e Read latency 16 of 49 us.
	if n, err := e.cq.Poll(dst); n > 0 || err != nil {
		return n, err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, stateCheck)
		n, err := e.waiter.Wait(wctx, dst)
		cancel()
		if n > 0 {
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return 0, err
		}
		if n, err := e.qpGone(dst); n > 0 || err != nil {
			return n, err
		}
	}
}

// qpGone looks at the QP once it has left RTS (a peer's disconnect does
// not always produce a completion): completions still on the CQ come
// first, then errDisconnected.
func (e *endpoint) qpGone(dst []rdma.Completion) (int, error) {
	if e.qp == nil || e.qp.State() != rdma.QPStateError {
		return 0, nil
	}
	if n, err := e.cq.Poll(dst); n > 0 || err != nil {
		return n, err
	}
	return 0, fmt.Errorf("%w: %v", errDisconnected, e.qp.Err())
}

// next returns the next completion. A flushed request or a QP that left
// RTS returns errDisconnected; any other failed completion is an error
// naming its status.
func (e *endpoint) next(ctx context.Context) (rdma.Completion, error) {
	for len(e.pend) == 0 {
		n, err := e.wait(ctx, e.buf)
		if err != nil {
			return rdma.Completion{}, err
		}
		e.pend = append(e.pend, e.buf[:n]...)
	}
	c := e.pend[0]
	e.pend = e.pend[1:]
	switch c.Status {
	case rdma.StatusSuccess:
		return c, nil
	case rdma.StatusWRFlushErr:
		return c, errDisconnected
	}
	return c, fmt.Errorf("quartet rdma: work request %d failed: %s (vendor error %#x)", c.WRID, c.Status, c.VendorErr)
}

// await returns the next completion of opcode op, skipping the
// completions of other requests (e.g. the Send before a Recv).
func (e *endpoint) await(ctx context.Context, op rdma.Opcode) (rdma.Completion, error) {
	for {
		c, err := e.next(ctx)
		if err != nil || c.Op == op {
			return c, err
		}
	}
}
