package soft

// Queue pairs (siw_qp.c): the queues, the state machine, completion
// order and teardown.
//
// Each connected QP owns one TCP connection and two goroutines: tx
// (tx.go) transmits send-queue work and Read Responses, rx (rx.go)
// parses inbound FPDUs. Both exit when the QP leaves RTS; tx is the
// reaper: it sends a pending Terminate, closes the connection, waits for
// rx to exit, and only then flushes the queues, so no buffer is touched
// after its flushed completion is visible.
//
// State transitions (rdma.QPState):
//
//	INIT  -> RTS    MPA exchange done (start)
//	INIT  -> ERROR  setup failed or QP closed before connecting
//	RTS   -> ERROR  Disconnect, Close, a Terminate sent or received,
//	                connection lost; everything outstanding is flushed
//	ERROR -> RESET  Close, after the goroutines exited
//
// Send-queue completions are delivered in posting order: a Send or
// Write is done when its last FPDU is handed to TCP (siw's rule: there
// is no acknowledgement in iWARP), a Read when its last Read Response
// segment is placed, and a later request never completes before an
// earlier Read (RFC 5040 section 5.5 ordering).

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// Work request kinds on the send queue.
const (
	wrSend = iota
	wrWrite
	wrRead
	wrBind
)

// wqe is one send-queue entry.
type wqe struct {
	id     uint64
	kind   uint8
	flags  rdma.SendFlags
	nsge   int
	sge    [maxSGE]rdma.SGE
	bytes  uint64 // total length of the SGL
	raddr  uint64
	rkey   uint32
	inline bool
	inl    [maxInline]byte

	// bind
	mw         *mw
	mr         *mr
	bindAccess rdma.Access
	bindKey    uint32

	done   bool // transmitted (send/write/bind) or fully answered (read)
	status rdma.Status
	vendor uint32 // Completion.VendorErr: the Terminate word that failed it
}

// rqe is one receive-queue entry.
type rqe struct {
	id   uint64
	nsge int
	sge  [maxSGE]rdma.SGE
	len  uint64
}

// irqe is one inbound Read Request waiting for its Read Response.
type irqe struct {
	sinkSTag uint32
	sinkTO   uint64
	size     uint32
	srcSTag  uint32
	srcTO    uint64
}

// termInfo is a Terminate to send: codes plus the offending header.
type termInfo struct {
	layer, etype, ecode uint8
	hdr                 [maxHdr]byte
	hdrLen              int // 0: no header attached
	flags               uint32
}

type qp struct {
	dev    *device
	pd     *pd
	num    uint32
	sendCQ *cq
	recvCQ *cq
	sigAll bool
	// maxSendSGE/maxRecvSGE are what the QP was created with: posting
	// more fails here as it would on a NIC.
	maxSendSGE, maxRecvSGE int

	state atomic.Uint32 // rdma.QPState

	conn     net.Conn
	crc      bool
	ird, ord int
	mulpdu   int // largest ULPDU we send (MPA length field)
	priv     []byte
	local    net.Addr
	remote   net.Addr

	mu        sync.Mutex
	err       error
	sq        []wqe
	sqHead    uint64   // oldest not completed
	sqTx      uint64   // next to transmit
	sqTail    uint64   // next free
	orq       []uint64 // sq positions of outstanding Reads, oldest first
	rq        []rqe
	rqHead    uint64
	rqTail    uint64
	irq       []irqe
	irqHead   uint64
	irqTail   uint64
	term      *termInfo // Terminate for tx to send before closing
	closing   bool      // Close is done: posts fail
	discarded bool      // never returned by Dial or Accept: flush completes nothing

	closeOnce atomic.Bool

	wake   chan struct{} // tx wakeup, capacity 1
	rxDone chan struct{}
	txDone chan struct{}

	rx rxStream
	tx txState
}

var _ rdma.QP = (*qp)(nil)

func newQP(d *device, cfg rdma.QPConfig) (*qp, error) {
	p, ok := cfg.PD.(*pd)
	if !ok || p == nil || p.dev != d {
		return nil, fmt.Errorf("%w: PD from another device or provider", rdma.ErrInvalid)
	}
	scq, ok1 := cfg.SendCQ.(*cq)
	rcq, ok2 := cfg.RecvCQ.(*cq)
	if !ok1 || !ok2 || scq.dev != d || rcq.dev != d {
		return nil, fmt.Errorf("%w: CQ from another device or provider", rdma.ErrInvalid)
	}
	if cfg.MaxSendWR <= 0 || cfg.MaxSendWR > maxQPWR || cfg.MaxRecvWR < 0 || cfg.MaxRecvWR > maxQPWR ||
		cfg.MaxSendSGE > maxSGE || cfg.MaxRecvSGE > maxSGE {
		return nil, &rdma.VerbError{Verb: "ibv_create_qp", Errno: einval}
	}
	q := &qp{
		dev:        d,
		pd:         p,
		num:        d.qpnum.Add(1),
		sendCQ:     scq,
		recvCQ:     rcq,
		sigAll:     cfg.SignalAll,
		maxSendSGE: max(cfg.MaxSendSGE, 1),
		maxRecvSGE: max(cfg.MaxRecvSGE, 1),
		sq:         make([]wqe, cfg.MaxSendWR),
		rq:         make([]rqe, max(cfg.MaxRecvWR, 1)),
		wake:       make(chan struct{}, 1),
		rxDone:     make(chan struct{}),
		txDone:     make(chan struct{}),
	}
	q.ird = clampRD(cfg.ResponderResources)
	q.ord = clampRD(cfg.InitiatorDepth)
	q.state.Store(uint32(rdma.QPStateInit))
	d.qpsMu.Lock()
	if d.qps == nil {
		d.qps = map[*qp]struct{}{}
	}
	d.qps[q] = struct{}{}
	d.qpsMu.Unlock()
	p.objs.Add(1)
	scq.qps.Add(1)
	rcq.qps.Add(1)
	d.objs.Add(1)
	return q, nil
}

func clampRD(n int) int {
	if n <= 0 || n > maxRD {
		return maxRD
	}
	return n
}

// start moves an INIT QP to RTS over conn after the MPA exchange and
// starts its goroutines. The goroutines are owned by the QP: Close waits
// for them.
func (q *qp) start(conn net.Conn, crc bool, ird, ord, mulpdu int, priv []byte) {
	q.mu.Lock()
	q.conn, q.crc, q.mulpdu, q.priv = conn, crc, mulpdu, priv
	q.local, q.remote = conn.LocalAddr(), conn.RemoteAddr()
	q.ird, q.ord = ird, ord
	q.irq = make([]irqe, max(ird, 1))
	q.orq = make([]uint64, 0, max(ord, 1))
	q.mu.Unlock()
	q.rx.init(conn)
	q.tx.init(q)
	q.state.Store(uint32(rdma.QPStateRTS))
	go q.rxLoop()
	go q.txLoop()
}

func (q *qp) Num() uint32          { return q.num }
func (q *qp) State() rdma.QPState  { return rdma.QPState(q.state.Load()) }
func (q *qp) PrivateData() []byte  { return q.priv }
func (q *qp) LocalAddr() net.Addr  { return q.local }
func (q *qp) RemoteAddr() net.Addr { return q.remote }
func (q *qp) String() string       { return fmt.Sprintf("soft QP %d %s", q.num, q.State()) }
func (q *qp) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
func (q *qp) rts() bool            { return q.State() == rdma.QPStateRTS }
func (q *qp) signaled(w *wqe) bool { return q.sigAll || w.flags&rdma.SendSignaled != 0 }

func (q *qp) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// postSQ validates and queues one send-queue entry. fill runs under the
// lock on the free slot.
func (q *qp) postSQ(id uint64, kind uint8, sgl []rdma.SGE, flags rdma.SendFlags, raddr uint64, rkey uint32) (*wqe, error) {
	if len(sgl) > q.maxSendSGE || (kind == wrRead && len(sgl) != 1) {
		return nil, fmt.Errorf("%w: %d SGEs (QP has %d; Reads take exactly 1)", rdma.ErrInvalid, len(sgl), q.maxSendSGE)
	}
	q.mu.Lock()
	if !q.rts() || q.closing {
		q.mu.Unlock()
		return nil, q.stateErr()
	}
	if q.sqTail-q.sqHead == uint64(len(q.sq)) {
		q.mu.Unlock()
		return nil, rdma.ErrQueueFull
	}
	w := &q.sq[q.sqTail%uint64(len(q.sq))]
	*w = wqe{id: id, kind: kind, flags: flags, nsge: len(sgl), raddr: raddr, rkey: rkey}
	var total uint64
	for i, s := range sgl {
		w.sge[i] = s
		total += uint64(s.Len)
	}
	w.bytes = total
	if flags&rdma.SendInline != 0 && kind != wrRead && total <= maxInline {
		if err := q.copyInline(w); err != nil {
			q.mu.Unlock()
			return nil, err
		}
	}
	q.sqTail++
	q.mu.Unlock()
	q.kick()
	return w, nil
}

// copyInline copies the payload now, so the caller may reuse it.
func (q *qp) copyInline(w *wqe) error {
	off := 0
	for i := 0; i < w.nsge; i++ {
		r, b, ae := q.localSlice(w.sge[i], 0)
		if ae != accessOK {
			return fmt.Errorf("%w: inline SGE %d: lkey %#x", rdma.ErrInvalid, i, w.sge[i].LKey)
		}
		off += copy(w.inl[off:], b)
		r.release()
	}
	w.inline = true
	return nil
}

func (q *qp) stateErr() error {
	if q.err != nil {
		return fmt.Errorf("%w: %w", rdma.ErrQPState, q.err)
	}
	return fmt.Errorf("%w (%s)", rdma.ErrQPState, q.State())
}

func (q *qp) PostSend(id uint64, sgl []rdma.SGE, flags rdma.SendFlags) error {
	_, err := q.postSQ(id, wrSend, sgl, flags, 0, 0)
	return err
}

func (q *qp) PostWrite(id uint64, sgl []rdma.SGE, raddr uint64, rkey uint32, flags rdma.SendFlags) error {
	_, err := q.postSQ(id, wrWrite, sgl, flags, raddr, rkey)
	return err
}

// PostWriteImm: RDMAP has no immediate data.
func (q *qp) PostWriteImm(uint64, []rdma.SGE, uint64, uint32, uint32, rdma.SendFlags) error {
	return fmt.Errorf("%w: RDMA Write with immediate on iWARP", rdma.ErrNotSupported)
}

func (q *qp) PostRead(id uint64, sgl []rdma.SGE, raddr uint64, rkey uint32, flags rdma.SendFlags) error {
	_, err := q.postSQ(id, wrRead, sgl, flags, raddr, rkey)
	return err
}

func (q *qp) BindMW(id uint64, m rdma.MW, r rdma.MR, sge rdma.SGE, access rdma.Access, flags rdma.SendFlags) (uint32, error) {
	w, ok1 := m.(*mw)
	mr, ok2 := r.(*mr)
	if !ok1 || !ok2 || w.pd != q.pd || mr.pd != q.pd {
		return 0, fmt.Errorf("%w: MW or MR from another PD or provider", rdma.ErrInvalid)
	}
	if access&rdma.AccessRemoteWrite != 0 && mr.access&rdma.AccessLocalWrite == 0 {
		return 0, fmt.Errorf("%w: remote write window over MR without local write", rdma.ErrInvalid)
	}
	key := w.nextKey()
	q.mu.Lock()
	if !q.rts() || q.closing {
		q.mu.Unlock()
		return 0, q.stateErr()
	}
	if q.sqTail-q.sqHead == uint64(len(q.sq)) {
		q.mu.Unlock()
		return 0, rdma.ErrQueueFull
	}
	e := &q.sq[q.sqTail%uint64(len(q.sq))]
	*e = wqe{id: id, kind: wrBind, flags: flags, nsge: 1, mw: w, mr: mr, bindAccess: access, bindKey: key}
	e.sge[0] = sge
	q.sqTail++
	q.mu.Unlock()
	q.kick()
	return key, nil
}

func (q *qp) PostRecv(id uint64, sgl []rdma.SGE) error {
	if len(sgl) > q.maxRecvSGE {
		return fmt.Errorf("%w: %d SGEs (QP has %d)", rdma.ErrInvalid, len(sgl), q.maxRecvSGE)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := q.State(); (s != rdma.QPStateRTS && s != rdma.QPStateInit) || q.closing {
		return q.stateErr()
	}
	if q.rqTail-q.rqHead == uint64(len(q.rq)) {
		return rdma.ErrQueueFull
	}
	e := &q.rq[q.rqTail%uint64(len(q.rq))]
	e.id, e.nsge, e.len = id, len(sgl), 0
	for i, s := range sgl {
		e.sge[i] = s
		e.len += uint64(s.Len)
	}
	q.rqTail++
	return nil
}

// localSlice resolves a local SGE to memory, checking its lkey, PD,
// bounds and rights (need: AccessLocalWrite for receives and Read sinks).
func (q *qp) localSlice(s rdma.SGE, need rdma.Access) (*region, []byte, accessErr) {
	r, b, ae := q.dev.mem.acquire(s.LKey, q, s.Addr, uint64(s.Len), need)
	if ae == accessOK && r.isMW {
		r.release()
		return nil, nil, accessInvalidSTag
	}
	return r, b, ae
}

// completeSQ delivers, in order, the completions of send-queue entries
// that are done. Caller holds q.mu.
func (q *qp) completeSQ() {
	for q.sqHead < q.sqTx {
		w := &q.sq[q.sqHead%uint64(len(q.sq))]
		if !w.done {
			return
		}
		if q.signaled(w) || w.status != rdma.StatusSuccess {
			wc := rdma.Completion{WRID: w.id, QPNum: q.num, Status: w.status, Op: sqOpcode[w.kind], VendorErr: w.vendor}
			if w.kind == wrRead && w.status == rdma.StatusSuccess {
				wc.Bytes = uint32(w.bytes)
			}
			q.sendCQ.push(wc, false)
		}
		w.mw, w.mr = nil, nil
		q.sqHead++
	}
}

var sqOpcode = [...]rdma.Opcode{wrSend: rdma.OpSend, wrWrite: rdma.OpWrite, wrRead: rdma.OpRead, wrBind: rdma.OpBindMW}

// fail moves the QP to ERROR with cause err (the first cause wins) and
// wakes tx to tear down; t, if set, is a Terminate to send first.
// Safe from any goroutine.
func (q *qp) fail(err error, t *termInfo) {
	q.mu.Lock()
	first := q.err == nil
	if first {
		q.err = err
		if t != nil {
			q.term = t
		}
	}
	wasRTS := q.rts()
	q.state.Store(uint32(rdma.QPStateError))
	q.mu.Unlock()
	if first && wasRTS {
		if t == nil {
			// Nothing more to send: unblock both goroutines now.
			_ = q.conn.SetDeadline(time.Now())
		} else {
			// Let tx finish the FPDU batch in flight and send the
			// Terminate, but do not wait forever for a peer that does
			// not read.
			_ = q.conn.SetReadDeadline(time.Now())
			_ = q.conn.SetWriteDeadline(time.Now().Add(termTimeout))
		}
	}
	q.kick()
}

// flush completes everything outstanding with WR_FLUSH_ERR (the blamed
// Read, if any, already carries its own status). Runs on tx after rx
// has exited, or on Close of a QP that never started.
func (q *qp) flush() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := q.sqHead; i < q.sqTail; i++ {
		w := &q.sq[i%uint64(len(q.sq))]
		if !w.done || w.status == rdma.StatusSuccess {
			w.status = rdma.StatusWRFlushErr
		}
		w.done = true
	}
	q.sqTx = q.sqTail
	q.orq = q.orq[:0]
	// Flushed requests always complete, signaled or not, as in verbs;
	// a discarded QP's complete to nobody.
	for q.sqHead < q.sqTail {
		w := &q.sq[q.sqHead%uint64(len(q.sq))]
		if !q.discarded {
			q.sendCQ.push(rdma.Completion{WRID: w.id, QPNum: q.num, Status: w.status, Op: sqOpcode[w.kind], VendorErr: w.vendor}, false)
		}
		w.mw, w.mr = nil, nil
		q.sqHead++
	}
	for ; q.rqHead < q.rqTail && !q.discarded; q.rqHead++ {
		e := &q.rq[q.rqHead%uint64(len(q.rq))]
		q.recvCQ.push(rdma.Completion{WRID: e.id, QPNum: q.num, Status: rdma.StatusWRFlushErr, Op: rdma.OpRecv}, false)
	}
	q.rqHead = q.rqTail
	q.irqHead = q.irqTail
}

// discard closes a QP that Dial or Accept is not returning (it never
// started): what Prepare posted on it is dropped, not flushed into the
// CQs, which are the caller's (rdma.QPConfig.Prepare).
func (q *qp) discard() {
	q.mu.Lock()
	q.discarded = true
	q.mu.Unlock()
	q.Close()
}

// Disconnect is the orderly close: no Terminate, the TCP connection is
// closed and everything outstanding is flushed.
func (q *qp) Disconnect() error {
	switch q.State() {
	case rdma.QPStateRTS:
		q.fail(rdma.ErrClosed, nil)
	case rdma.QPStateInit:
		q.mu.Lock()
		if q.err == nil {
			q.err = rdma.ErrClosed
		}
		q.state.Store(uint32(rdma.QPStateError))
		q.mu.Unlock()
	}
	return nil
}

// Close disconnects, waits for the QP's goroutines to exit and releases
// it. Completions already pushed stay on the CQs.
func (q *qp) Close() error {
	if q.closeOnce.Swap(true) {
		return nil
	}
	q.mu.Lock()
	started := q.conn != nil
	q.mu.Unlock()
	_ = q.Disconnect()
	if started {
		<-q.txDone
	} else {
		q.flush()
	}
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	q.state.Store(uint32(rdma.QPStateReset))
	q.dev.qpsMu.Lock()
	delete(q.dev.qps, q)
	q.dev.qpsMu.Unlock()
	q.pd.objs.Add(-1)
	q.sendCQ.qps.Add(-1)
	q.recvCQ.qps.Add(-1)
	q.dev.objs.Add(-1)
	return nil
}

// holds reports whether tx or rx currently holds r across I/O.
func (q *qp) holds(r *region) bool {
	for i := range q.tx.held {
		if q.tx.held[i].Load() == r {
			return true
		}
	}
	for i := range q.rx.held {
		if q.rx.held[i].Load() == r {
			return true
		}
	}
	return false
}
