//go:build verbs

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/quartet-server/quartet/rdma"
)

// QP is a connected RC queue pair with its cm_id and that id's own event
// channel.
type QP struct {
	dev      *Device
	pd       *PD
	scq, rcq *CQ
	ch       *channel
	id       *C.struct_rdma_cm_id
	qp       *C.struct_ibv_qp
	num      uint32
	priv     []byte
	local    net.Addr // taken at creation: id dies with the QP
	remote   net.Addr

	// Scatter lists are copied into C memory owned by the QP, one per
	// queue, so posts pass C only C pointers and allocate nothing.
	sendMu  sync.Mutex
	sendSGE *C.struct_ibv_sge
	maxSend int
	recvMu  sync.Mutex
	recvSGE *C.struct_ibv_sge
	maxRecv int

	// gone is set by destroy, holding sendMu, recvMu and life, before the
	// QP and its cm_id are freed. A post, a query or a disconnect checks
	// it under one of those locks and is refused: a caller that races
	// Close (a channel retired by one goroutine while another reposts a
	// receive) gets an error instead of a provider writing into rings
	// that destroy has unmapped.
	life sync.RWMutex
	gone bool

	// failed is set with err: posts check it first, because siw's user
	// space rings accept a post on a QP in ERROR and never complete it.
	failed atomic.Bool

	mu           sync.Mutex
	err          error // why the QP left RTS
	disconnected bool
	closed       bool

	stopWatch context.CancelFunc // ends the cm event goroutine (nil before watch)
	watchDone chan struct{}
}

var _ rdma.QP = (*QP)(nil)

// newQP creates the QP on id (rdma_create_qp) from cfg. On success the QP
// owns id and ch; on failure the caller still does.
func newQP(d *Device, ch *channel, id *C.struct_rdma_cm_id, cfg rdma.QPConfig) (_ *QP, err error) {
	pd, ok := cfg.PD.(*PD)
	scq, ok2 := cfg.SendCQ.(*CQ)
	rcq, ok3 := cfg.RecvCQ.(*CQ)
	if !ok || !ok2 || !ok3 {
		return nil, fmt.Errorf("%w: QPConfig needs a PD and CQs of the verbs provider", rdma.ErrInvalid)
	}
	if pd.dev != d || scq.dev != d || rcq.dev != d {
		return nil, fmt.Errorf("%w: PD and CQs must come from device %s", rdma.ErrInvalid, d.info.Name)
	}
	maxSend, maxRecv := max(cfg.MaxSendSGE, 1), max(cfg.MaxRecvSGE, 1)
	var attr C.struct_ibv_qp_init_attr
	attr.send_cq, attr.recv_cq = scq.cq, rcq.cq
	attr.qp_type = C.IBV_QPT_RC
	attr.cap.max_send_wr = C.uint32_t(max(cfg.MaxSendWR, 1))
	attr.cap.max_recv_wr = C.uint32_t(max(cfg.MaxRecvWR, 1))
	attr.cap.max_send_sge = C.uint32_t(maxSend)
	attr.cap.max_recv_sge = C.uint32_t(maxRecv)
	attr.cap.max_inline_data = C.uint32_t(max(cfg.MaxInline, 0))
	if cfg.SignalAll {
		attr.sq_sig_all = 1
	}
	if err := pd.ref(); err != nil {
		return nil, err
	}
	if err := d.ref(); err != nil {
		pd.unref()
		return nil, err
	}
	rc, cerr := C.rdma_create_qp(id, pd.pd, &attr)
	if rc != 0 && attr.cap.max_inline_data > 0 {
		// Some devices cap max_inline_data lower than asked; it is only
		// a hint, so retry without it rather than fail.
		attr.cap.max_inline_data = 0
		rc, cerr = C.rdma_create_qp(id, pd.pd, &attr)
	}
	if rc != 0 {
		pd.unref()
		d.unref()
		return nil, verbErr("rdma_create_qp", cerr)
	}
	qp := &QP{
		dev: d, pd: pd, scq: scq, rcq: rcq, ch: ch, id: id,
		qp:      C.q_id_qp(id),
		sendSGE: (*C.struct_ibv_sge)(C.calloc(C.size_t(maxSend), C.sizeof_struct_ibv_sge)),
		maxSend: maxSend,
		recvSGE: (*C.struct_ibv_sge)(C.calloc(C.size_t(maxRecv), C.sizeof_struct_ibv_sge)),
		maxRecv: maxRecv,
		local:   goAddr(C.q_src_addr(id)),
		remote:  goAddr(C.q_dst_addr(id)),
	}
	qp.num = uint32(qp.qp.qp_num)
	if err := scq.attach(qp); err != nil {
		qp.destroy()
		return nil, err
	}
	if err := rcq.attach(qp); err != nil {
		qp.destroy()
		return nil, err
	}
	return qp, nil
}

// discard destroys a QP that Dial or Accept is not returning. Its CQs
// drop its completions first: the flushes of the receives Prepare posted
// on it would otherwise reach whoever polls them (a writer loop sharing
// the CQ with other QPs) under work-request ids that Prepare gives the
// next attempt's QP too, where they would read as that QP's failure.
func (q *QP) discard() {
	q.scq.drop(q.num)
	if q.rcq != q.scq {
		q.rcq.drop(q.num)
	}
	q.destroy()
}

// destroy releases in reverse: event goroutine, CQ links, QP, cm_id,
// channel, scratch.
func (q *QP) destroy() error {
	if q.stopWatch != nil {
		q.stopWatch()
		<-q.watchDone
	}
	q.sendMu.Lock()
	q.recvMu.Lock()
	q.life.Lock()
	q.gone = true
	q.life.Unlock()
	q.recvMu.Unlock()
	q.sendMu.Unlock()
	q.scq.detach(q)
	q.rcq.detach(q)
	C.rdma_destroy_qp(q.id)
	rc, cerr := C.rdma_destroy_id(q.id)
	q.ch.close(nil)
	C.free(unsafe.Pointer(q.sendSGE))
	C.free(unsafe.Pointer(q.recvSGE))
	q.pd.unref()
	q.dev.unref()
	return rcErr("rdma_destroy_id", rc, cerr)
}

func (q *QP) Num() uint32          { return q.num }
func (q *QP) PrivateData() []byte  { return q.priv }
func (q *QP) LocalAddr() net.Addr  { return q.local }
func (q *QP) RemoteAddr() net.Addr { return q.remote }

// State queries the QP (ibv_query_qp); a closed QP is in ERROR.
func (q *QP) State() rdma.QPState {
	var attr C.struct_ibv_qp_attr
	var init C.struct_ibv_qp_init_attr
	q.life.RLock()
	rc := C.int(-1)
	if !q.gone {
		rc = C.ibv_query_qp(q.qp, &attr, C.IBV_QP_STATE, &init)
	}
	q.life.RUnlock()
	if rc != 0 {
		return rdma.QPStateError
	}
	st := rdma.QPState(attr.qp_state)
	if st == rdma.QPStateReset {
		// siw in Linux 6.1 answers ibv_query_qp without the state (it
		// reads as RESET, which a connected QP never is): derive it from
		// what this QP has seen instead.
		q.mu.Lock()
		failed := q.err != nil || q.disconnected
		q.mu.Unlock()
		if failed {
			return rdma.QPStateError
		}
		return rdma.QPStateRTS
	}
	return st
}

// Err is why the QP left RTS, or nil.
func (q *QP) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

func (q *QP) setErr(err error) {
	q.mu.Lock()
	q.setErrLocked(err)
	q.mu.Unlock()
}

// watch starts the goroutine that takes the connection's cm events once
// it is established. It waits in Go's runtime poller (no OS thread) and
// answers a peer's DISCONNECTED with rdma_disconnect, which moves the QP
// to ERROR: on InfiniBand and RoCE nothing else would, and the posted
// requests would wait forever instead of completing with
// StatusWRFlushErr, the signal the CQ's owner sees.
func (q *QP) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	q.stopWatch = cancel
	q.watchDone = make(chan struct{})
	go func() {
		defer close(q.watchDone)
		for {
			ev, err := q.ch.wait(ctx)
			if err != nil {
				if ctx.Err() == nil {
					q.setErr(fmt.Errorf("%w: rdma_get_cm_event: %w", rdma.ErrConnLost, err))
				}
				return
			}
			switch ev.kind {
			case C.RDMA_CM_EVENT_DISCONNECTED:
				q.mu.Lock()
				local := q.disconnected
				if !local {
					q.setErrLocked(fmt.Errorf("%w: peer disconnected", rdma.ErrConnLost))
				}
				q.disconnected = true
				q.mu.Unlock()
				if !local {
					C.rdma_disconnect(q.id)
				}
			case C.RDMA_CM_EVENT_DEVICE_REMOVAL:
				q.setErr(fmt.Errorf("%w: device removed", rdma.ErrConnLost))
				C.rdma_disconnect(q.id)
			}
		}
	}()
}

func (q *QP) setErrLocked(err error) {
	if q.err == nil {
		q.err = err
		q.failed.Store(true)
	}
}

// refuse is the error for a post on a QP known to have failed.
func (q *QP) refuse() error {
	return fmt.Errorf("%w: %w", rdma.ErrQPState, q.Err())
}

// errGone is the error for a post on a closed QP: ErrQPState, so a
// caller retires what it posted on, and ErrClosed, which says why.
var errGone = fmt.Errorf("%w: %w", rdma.ErrQPState, rdma.ErrClosed)

// postErr turns a failed post into an error; a QP that left RTS reports
// ErrQPState with the reason.
func (q *QP) postErr(verb string, rc C.int) error {
	err := rcErr(verb, rc, nil)
	if s := q.State(); s != rdma.QPStateRTS {
		return fmt.Errorf("%w (%s, state %s): %w", rdma.ErrQPState, q.reasonOr(err), s, err)
	}
	return err
}

func (q *QP) reasonOr(err error) error {
	if e := q.Err(); e != nil {
		return e
	}
	return err
}

// fillSGE copies sgl into the C scratch array.
func fillSGE(dst *C.struct_ibv_sge, max int, sgl []rdma.SGE) error {
	if len(sgl) > max {
		return fmt.Errorf("%w: %d SGEs, QP allows %d", rdma.ErrInvalid, len(sgl), max)
	}
	s := unsafe.Slice(dst, max)
	for i, e := range sgl {
		s[i].addr = C.uint64_t(e.Addr)
		s[i].length = C.uint32_t(e.Len)
		s[i].lkey = C.uint32_t(e.LKey)
	}
	return nil
}

func (q *QP) postSend(verb string, id uint64, op C.int, sgl []rdma.SGE, raddr uint64, rkey, imm uint32, flags rdma.SendFlags) error {
	if q.failed.Load() {
		return q.refuse()
	}
	q.sendMu.Lock()
	if q.gone {
		q.sendMu.Unlock()
		return errGone
	}
	if err := fillSGE(q.sendSGE, q.maxSend, sgl); err != nil {
		q.sendMu.Unlock()
		return err
	}
	rc := C.q_post_send(handle(q.qp), C.uint64_t(id), op, C.uint(flags), handle(q.sendSGE), C.int(len(sgl)),
		C.uint64_t(raddr), C.uint32_t(rkey), C.uint32_t(imm))
	q.sendMu.Unlock()
	if rc != 0 {
		return q.postErr(verb, rc)
	}
	return nil
}

// PostSend posts a Send.
func (q *QP) PostSend(id uint64, sgl []rdma.SGE, flags rdma.SendFlags) error {
	return q.postSend("ibv_post_send", id, C.IBV_WR_SEND, sgl, 0, 0, 0, flags)
}

// PostWrite posts an RDMA Write.
func (q *QP) PostWrite(id uint64, sgl []rdma.SGE, remoteAddr uint64, rkey uint32, flags rdma.SendFlags) error {
	return q.postSend("ibv_post_send", id, C.IBV_WR_RDMA_WRITE, sgl, remoteAddr, rkey, 0, flags)
}

// PostWriteImm posts an RDMA Write with immediate data.
func (q *QP) PostWriteImm(id uint64, sgl []rdma.SGE, remoteAddr uint64, rkey uint32, imm uint32, flags rdma.SendFlags) error {
	if q.dev.info.Caps&rdma.CapWriteImm == 0 {
		return fmt.Errorf("%w: write with immediate on %s", rdma.ErrNotSupported, q.dev.info.Transport)
	}
	return q.postSend("ibv_post_send", id, C.IBV_WR_RDMA_WRITE_WITH_IMM, sgl, remoteAddr, rkey, imm, flags)
}

// PostRead posts an RDMA Read.
func (q *QP) PostRead(id uint64, sgl []rdma.SGE, remoteAddr uint64, rkey uint32, flags rdma.SendFlags) error {
	return q.postSend("ibv_post_send", id, C.IBV_WR_RDMA_READ, sgl, remoteAddr, rkey, 0, flags)
}

// PostRecv posts a receive.
func (q *QP) PostRecv(id uint64, sgl []rdma.SGE) error {
	if q.failed.Load() {
		return q.refuse()
	}
	q.recvMu.Lock()
	if q.gone {
		q.recvMu.Unlock()
		return errGone
	}
	if err := fillSGE(q.recvSGE, q.maxRecv, sgl); err != nil {
		q.recvMu.Unlock()
		return err
	}
	rc := C.q_post_recv(handle(q.qp), C.uint64_t(id), handle(q.recvSGE), C.int(len(sgl)))
	q.recvMu.Unlock()
	if rc != 0 {
		return q.postErr("ibv_post_recv", rc)
	}
	return nil
}

// BindMW binds a type 2 window through the send queue.
func (q *QP) BindMW(id uint64, mw rdma.MW, mr rdma.MR, sge rdma.SGE, access rdma.Access, flags rdma.SendFlags) (uint32, error) {
	w, ok := mw.(*MW)
	m, ok2 := mr.(*MR)
	if !ok || !ok2 {
		return 0, fmt.Errorf("%w: BindMW needs an MW and MR of the verbs provider", rdma.ErrInvalid)
	}
	if q.dev.info.Caps&rdma.CapMemoryWindows == 0 {
		return 0, fmt.Errorf("%w: memory windows on %s", rdma.ErrNotSupported, q.dev.info.Name)
	}
	var rkey C.uint32_t
	// The window and the region stay open while the bind is posted
	// (their Close frees what the post reads); their locks, then the
	// QP's, in this order only.
	w.mu.Lock()
	defer w.mu.Unlock()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if w.closed || m.closed {
		return 0, fmt.Errorf("%w: BindMW with a closed window or region", rdma.ErrClosed)
	}
	q.sendMu.Lock()
	if q.gone {
		q.sendMu.Unlock()
		return 0, errGone
	}
	rc := C.q_post_bind_mw(q.qp, C.uint64_t(id), C.uint(flags), w.mw, m.mr,
		C.uint64_t(sge.Addr), C.uint64_t(sge.Len), C.int(access), &rkey)
	q.sendMu.Unlock()
	if rc != 0 {
		return 0, q.postErr("ibv_post_send(BIND_MW)", rc)
	}
	w.rkey.Store(uint32(rkey))
	return uint32(rkey), nil
}

// Disconnect starts an orderly disconnect (rdma_disconnect).
func (q *QP) Disconnect() error {
	q.mu.Lock()
	if q.disconnected || q.closed {
		q.mu.Unlock()
		return nil
	}
	q.disconnected = true
	q.mu.Unlock()
	// Under life: a Close racing this one must not free the id meanwhile.
	q.life.RLock()
	defer q.life.RUnlock()
	if q.gone {
		return nil
	}
	rc, cerr := C.rdma_disconnect(q.id)
	if rc != 0 && !isGone(cerr) {
		return verbErr("rdma_disconnect", cerr)
	}
	return nil
}

// isGone reports errnos of rdma_disconnect on a connection the peer
// already tore down: nothing left to do.
func isGone(err error) bool {
	en, ok := err.(syscall.Errno)
	return ok && (en == syscall.EINVAL || en == syscall.ENOTCONN)
}

// Close disconnects and destroys the QP, its cm_id and its channel.
func (q *QP) Close() error {
	derr := q.Disconnect()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	if err := q.destroy(); err != nil {
		return err
	}
	return derr
}
