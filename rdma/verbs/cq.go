//go:build verbs

package verbs

/*
#include "shim.h"
// The hot-path helpers never call back into Go and keep no pointer, so
// cgo may skip the callback bookkeeping and let arguments stay on the
// stack (Go 1.22 directives).
#cgo nocallback q_poll
#cgo noescape q_poll
#cgo nocallback q_post_send
#cgo noescape q_post_send
#cgo nocallback q_post_recv
#cgo noescape q_post_recv
#cgo nocallback q_req_notify_cq
#cgo noescape q_req_notify_cq
*/
import "C"

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"unsafe"

	"github.com/quartet-server/quartet/rdma"
)

// maxDropped bounds CQ.dropped. A discarded QP's completions are the
// flushes of what Prepare posted on it, in the CQ once ibv_destroy_qp
// returns (or, at the latest, once its number is given out again), so a
// number needs its place only until the next poll; the bound keeps a
// device that never reuses numbers (rxe counts up) from growing the list
// with every failed Dial.
const maxDropped = 64

// maxCompletionsPerPoll bounds one ibv_poll_cq call: the C scratch arrays
// are this long, and a longer dst is served in several calls. 64 is
// enough to amortise the call and keeps the scratch within a few pages.
const maxCompletionsPerPoll = 64

// CQ is a completion queue with its own completion channel.
type CQ struct {
	dev *Device
	ch  *C.struct_ibv_comp_channel
	cq  *C.struct_ibv_cq
	// pollMu serialises polling: the scratch below, and the order of
	// completions, which attach's poll for a new QP must not split.
	pollMu sync.Mutex
	wc     *C.struct_ibv_wc // scratch for ibv_poll_cq, C memory
	out    *C.struct_q_wc   // flattened completions, C memory
	// taken: completions that attach polled early, handed out first.
	taken []rdma.Completion
	// dropped are the numbers of QPs that Dial or Accept destroyed
	// instead of returning (discard), newest last: their completions are
	// nobody's and are polled away, until the number is given to a new
	// QP (attach), or maxDropped later discards.
	dropped []uint32

	mu     sync.Mutex
	qps    map[uint32]*QP // attached QPs by number: error completions mark them
	closed bool           // set holding pollMu and mu: either guards a read
}

var _ rdma.CQ = (*CQ)(nil)

// CreateCQ creates a CQ of at least depth entries on its own completion
// channel, whose fd is switched to non-blocking.
func (d *Device) CreateCQ(depth int) (_ rdma.CQ, err error) {
	if depth <= 0 {
		return nil, fmt.Errorf("%w: CQ depth %d", rdma.ErrInvalid, depth)
	}
	if err := d.ref(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.unref()
		}
	}()
	ch, cerr := C.ibv_create_comp_channel(d.ctx)
	if ch == nil {
		return nil, verbErr("ibv_create_comp_channel", cerr)
	}
	defer func() {
		if err != nil {
			C.ibv_destroy_comp_channel(ch)
		}
	}()
	if rc, cerr := C.q_set_nonblock(ch.fd); rc != 0 {
		return nil, verbErr("fcntl(O_NONBLOCK) on completion channel", cerr)
	}
	cq, cerr := C.ibv_create_cq(d.ctx, C.int(depth), nil, ch, 0)
	if cq == nil {
		return nil, verbErr("ibv_create_cq", cerr)
	}
	wc := (*C.struct_ibv_wc)(C.calloc(maxCompletionsPerPoll, C.sizeof_struct_ibv_wc))
	out := (*C.struct_q_wc)(C.calloc(maxCompletionsPerPoll, C.sizeof_struct_q_wc))
	return &CQ{dev: d, ch: ch, cq: cq, wc: wc, out: out, qps: map[uint32]*QP{}}, nil
}

// Fd is the completion channel's fd.
func (c *CQ) Fd() int { return int(c.ch.fd) }

// Arm requests a notification for the next completion (ibv_req_notify_cq).
// After Close it returns ErrClosed (pollMu orders it against Close, as
// for Poll: the provider must not be handed a destroyed CQ).
func (c *CQ) Arm(solicitedOnly bool) error {
	s := C.int(0)
	if solicitedOnly {
		s = 1
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if c.closed {
		return rdma.ErrClosed
	}
	rc, err := C.q_req_notify_cq(handle(c.cq), s)
	return rcErr("ibv_req_notify_cq", rc, err)
}

// Consume takes every pending event (ibv_get_cq_event until EAGAIN) and
// acks them in one ibv_ack_cq_events, which takes a mutex: once per
// wakeup, not once per event.
func (c *CQ) Consume() (int, error) {
	n := 0
	var ferr error
	for {
		var evCQ *C.struct_ibv_cq
		var evCtx unsafe.Pointer
		rc, err := C.ibv_get_cq_event(c.ch, &evCQ, &evCtx)
		if rc != 0 {
			if !errors.Is(err, syscall.EAGAIN) {
				ferr = verbErr("ibv_get_cq_event", err)
			}
			break
		}
		n++
	}
	if n > 0 {
		C.ibv_ack_cq_events(c.cq, C.uint(n))
	}
	return n, ferr
}

// Poll moves up to len(dst) completions into dst (ibv_poll_cq); after
// Close it returns ErrClosed.
func (c *CQ) Poll(dst []rdma.Completion) (int, error) {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if c.closed { // written under pollMu too
		return 0, rdma.ErrClosed
	}
	got := copy(dst, c.taken)
	if c.taken = c.taken[got:]; len(c.taken) == 0 {
		c.taken = nil
	}
	n, err := c.pollLocked(dst[got:])
	return got + n, err
}

func (c *CQ) pollLocked(dst []rdma.Completion) (int, error) {
	got := 0
	for got < len(dst) {
		want := min(len(dst)-got, maxCompletionsPerPoll)
		n := int(C.q_poll(handle(c.cq), C.int(want), handle(c.wc), handle(c.out)))
		if n < 0 {
			return got, &rdma.VerbError{Verb: "ibv_poll_cq", Errno: syscall.EIO}
		}
		out := unsafe.Slice(c.out, n)
		for i := range out {
			w := &out[i]
			if len(c.dropped) > 0 && slices.Contains(c.dropped, uint32(w.qp_num)) {
				continue
			}
			dst[got] = rdma.Completion{
				WRID:      uint64(w.wr_id),
				QPNum:     uint32(w.qp_num),
				Bytes:     uint32(w.byte_len),
				Imm:       uint32(w.imm),
				VendorErr: uint32(w.vendor_err),
				Status:    rdma.Status(w.status),
				Op:        rdma.Opcode(w.opcode),
				HasImm:    w.has_imm != 0,
			}
			if dst[got].Status != rdma.StatusSuccess {
				c.fail(&dst[got])
			}
			got++
		}
		if n < want {
			break
		}
	}
	return got, nil
}

// fail records an error completion on its QP: verbs reports a QP's
// failure only through its completions and async events.
func (c *CQ) fail(wc *rdma.Completion) {
	c.mu.Lock()
	qp := c.qps[wc.QPNum]
	c.mu.Unlock()
	if qp == nil {
		return
	}
	var cause error
	switch wc.Status {
	case rdma.StatusRemAccessErr:
		cause = rdma.ErrRemoteAccess
	case rdma.StatusRetryExcErr, rdma.StatusRNRRetryExcErr, rdma.StatusRespTimeoutErr:
		cause = rdma.ErrConnLost
	case rdma.StatusWRFlushErr:
		// A flush is the consequence, not the cause; it is the only sign
		// of failure when the cause reached the QP some other way (an
		// iWARP Terminate after a Write that completed locally), so it is
		// recorded only if nothing else was.
		cause = errors.New("rdma/verbs: QP in ERROR, work requests flushed")
	default:
		cause = errors.New("rdma/verbs: work request failed")
	}
	qp.setErr(fmt.Errorf("%w: work request %#x completed with %s (vendor error %#x)",
		cause, wc.WRID, wc.Status, wc.VendorErr))
}

// attach links qp's number to it, for error completions to mark it.
//
// A destroyed QP's number is free for the next QP (siw gives out the
// lowest), and destroying a QP leaves its flushed work requests in the
// CQ: polled after a new QP took the number, they would mark the new QP
// failed. Every completion of the old QP is in the CQ once its number is
// given out again, so attach first polls what the CQ holds into c.taken,
// which Poll hands out first and in order, to nobody's account.
func (c *CQ) attach(qp *QP) error {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return rdma.ErrClosed
	}
	var buf [maxCompletionsPerPoll]rdma.Completion
	for {
		n, err := c.pollLocked(buf[:])
		c.taken = append(c.taken, buf[:n]...)
		if err != nil {
			return err
		}
		if n < len(buf) {
			break
		}
	}
	// What was left of a discarded QP of this number has just been
	// polled away; what comes from now on is the new QP's.
	c.dropped = slices.DeleteFunc(c.dropped, func(n uint32) bool { return n == qp.num })
	c.mu.Lock()
	c.qps[qp.num] = qp
	c.mu.Unlock()
	return nil
}

// drop makes the CQ poll away num's completions (see dropped); the QP of
// that number is about to be destroyed, and was never the caller's.
func (c *CQ) drop(num uint32) {
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if slices.Contains(c.dropped, num) {
		return
	}
	if len(c.dropped) == maxDropped {
		c.dropped = slices.Delete(c.dropped, 0, 1)
	}
	c.dropped = append(c.dropped, num)
}

func (c *CQ) detach(qp *QP) {
	c.mu.Lock()
	if c.qps[qp.num] == qp {
		delete(c.qps, qp.num)
	}
	c.mu.Unlock()
}

// Close destroys the CQ and its channel; ErrBusy while a QP uses it.
// Events not yet consumed are acked first: ibv_destroy_cq waits for them.
func (c *CQ) Close() error {
	c.pollMu.Lock() // not while attach polls
	defer c.pollMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if len(c.qps) > 0 {
		return fmt.Errorf("%w: CQ used by %d QPs", rdma.ErrBusy, len(c.qps))
	}
	if _, err := c.Consume(); err != nil {
		return err
	}
	if rc, err := C.ibv_destroy_cq(c.cq); rc != 0 {
		return rcErr("ibv_destroy_cq", rc, err)
	}
	if rc, err := C.ibv_destroy_comp_channel(c.ch); rc != 0 {
		return rcErr("ibv_destroy_comp_channel", rc, err)
	}
	C.free(unsafe.Pointer(c.wc))
	C.free(unsafe.Pointer(c.out))
	c.closed = true
	c.dev.unref()
	return nil
}
