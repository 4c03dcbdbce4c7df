package soft

// Transmit path (siw_qp_tx.c): one goroutine per QP turns send-queue
// entries and inbound Read Requests into FPDUs and writes them to TCP
// with writev, straight from the registered memory (no copy in user
// space).
//
// One message is transmitted whole before the next starts, as siw does
// (RFC 5041 allows interleaving, nobody needs it). Read Responses go
// first, but after txIRQBurst of them in a row while the send queue has
// work, one send-queue entry goes ("to avoid complete SQ starvation",
// siw_activate_tx).

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

const (
	// txBatchFPDUs is how many FPDUs one writev carries at most: with
	// 64 KiB FPDUs on loopback that is 1 MiB per system call, enough to
	// amortise the call without holding a large iovec.
	txBatchFPDUs = 16
	// txIOVs bounds the iovec: header + up to maxSGE+1 payload pieces +
	// trailer per FPDU.
	txIOVs = txBatchFPDUs * (maxSGE + 3)
	// txIRQBurst is how many Read Responses go before a waiting
	// send-queue entry gets a turn.
	txIRQBurst = 8
	// termTimeout bounds the wait to hand a Terminate to a peer that
	// does not read.
	termTimeout = 2 * time.Second
)

type txState struct {
	msn     [numQN]uint32
	hdrs    [txBatchFPDUs][maxHdr]byte
	trls    [txBatchFPDUs][8]byte
	iov     [txIOVs][]byte
	bufs    net.Buffers
	nfp     int
	pieces  [maxSGE][]byte
	regions [maxSGE]*region
	// held mirrors regions (and, in the last slot, a Read Response's
	// source) for region.quiesce, which looks from another goroutine.
	held   [maxSGE + 1]atomic.Pointer[region]
	burst  int
	broken bool // a write failed mid-FPDU: the stream is unusable
}

func (t *txState) init(q *qp) {
	t.bufs = t.iov[:0]
}

// txJob is the next thing tx transmits.
type txJob struct {
	w     *wqe
	rresp bool
	ir    irqe
}

// next picks the next job under q.mu; ok false means wait.
func (q *qp) next() (j txJob, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	sqReady := false
	var w *wqe
	if q.sqTx < q.sqTail {
		w = &q.sq[q.sqTx%uint64(len(q.sq))]
		switch {
		case w.kind == wrRead && len(q.orq) >= q.ord:
			// ORD reached: the Read waits for a response to come back.
		case w.flags&rdma.SendFence != 0 && len(q.orq) > 0:
			// Fenced behind outstanding Reads.
		default:
			sqReady = true
		}
	}
	if q.irqHead < q.irqTail && (!sqReady || q.tx.burst < txIRQBurst) {
		j.rresp, j.ir = true, q.irq[q.irqHead%uint64(len(q.irq))]
		q.irqHead++
		q.tx.burst++
		return j, true
	}
	q.tx.burst = 0
	if !sqReady {
		return j, false
	}
	if w.kind == wrRead {
		q.orq = append(q.orq, q.sqTx)
	}
	q.sqTx++
	j.w = w
	return j, true
}

func (q *qp) txLoop() {
	defer close(q.txDone)
	for q.rts() {
		j, ok := q.next()
		if !ok {
			<-q.wake
			continue
		}
		var err error
		if j.rresp {
			err = q.txReadResp(&j.ir)
		} else {
			err = q.txWQE(j.w)
		}
		if err != nil {
			q.fail(err, nil)
		}
	}
	q.teardown()
}

// teardown is the reaper: Terminate if one is pending and the stream is
// intact, close, wait for rx, flush.
func (q *qp) teardown() {
	q.mu.Lock()
	t := q.term
	q.term = nil
	q.mu.Unlock()
	if t != nil && !q.tx.broken {
		q.txTerminate(t)
	}
	_ = q.conn.Close()
	<-q.rxDone
	q.flush()
}

// txWQE transmits one send-queue entry and completes what can complete.
func (q *qp) txWQE(w *wqe) error {
	var err error
	status := rdma.StatusSuccess
	switch w.kind {
	case wrBind:
		if e := w.mw.bind(w.mr, q, w.sge[0].Addr, w.sge[0].Len, w.bindAccess, w.bindKey); e != nil {
			status = rdma.StatusMWBindErr
			err = e
		}
	case wrRead:
		// Check the sink now so a bad lkey fails locally, not as a
		// Terminate from our own receive path later.
		r, _, ae := q.localSlice(w.sge[0], rdma.AccessLocalWrite)
		if ae != accessOK {
			status = rdma.StatusLocProtErr
			err = errLocalProt
			break
		}
		r.release()
		q.tx.msn[qnReadReq]++
		b := q.tx.hdrs[0][:hdrReadReq]
		putUntagged(b, opReadReq, true, hdrReadReq-mpaHdr, 0, qnReadReq, q.tx.msn[qnReadReq], 0)
		be := binary.BigEndian
		be.PutUint32(b[20:], w.sge[0].LKey)
		be.PutUint64(b[24:], w.sge[0].Addr)
		be.PutUint32(b[32:], w.sge[0].Len)
		be.PutUint32(b[36:], w.rkey)
		be.PutUint64(b[40:], w.raddr)
		q.tx.appendFPDU(q, b, nil)
		if err := q.tx.flush(q); err != nil {
			return err
		}
		// Done when the response is placed (rx.go).
		return nil
	default:
		n := w.nsge
		if w.inline {
			q.tx.pieces[0] = w.inl[:w.bytes]
			n = 1
		} else {
			for i := 0; i < n; i++ {
				r, b, ae := q.localSlice(w.sge[i], 0)
				if ae != accessOK {
					q.tx.releaseRegions(i)
					status, err = rdma.StatusLocProtErr, errLocalProt
					break
				}
				q.tx.regions[i], q.tx.pieces[i] = r, b
				q.tx.held[i].Store(r)
			}
		}
		if err == nil {
			if w.kind == wrSend {
				op := opSend
				if w.flags&rdma.SendSolicited != 0 {
					op = opSendSE
				}
				q.tx.msn[qnSend]++
				err = q.tx.sendMsg(q, op, w.bytes, q.tx.pieces[:n], 0, 0, q.tx.msn[qnSend])
			} else {
				err = q.tx.sendMsg(q, opWrite, w.bytes, q.tx.pieces[:n], w.rkey, w.raddr, 0)
			}
			if !w.inline {
				q.tx.releaseRegions(n)
			}
			if err != nil {
				return err // the stream failed: fail() flushes this entry
			}
		}
	}
	q.mu.Lock()
	w.done, w.status = true, status
	if w.kind == wrRead {
		// Failed before the request went out: it was the last Read
		// next() put on the ORQ.
		q.orq = q.orq[:len(q.orq)-1]
	}
	q.completeSQ()
	q.mu.Unlock()
	return err
}

var errLocalProt = errors.New("soft: local protection error: bad lkey, rights or range in a work request")

func (t *txState) releaseRegions(n int) {
	for i := 0; i < n; i++ {
		if t.regions[i] != nil {
			t.held[i].Store(nil)
			t.regions[i].release()
			t.regions[i] = nil
		}
		t.pieces[i] = nil
	}
}

// txReadResp answers one inbound Read Request. The source was checked
// when the request arrived; it is checked again here because the MR may
// have been closed since (then it is a Terminate, as siw's in_tx case).
func (q *qp) txReadResp(ir *irqe) error {
	var r *region
	var src []byte
	if ir.size > 0 {
		var ae accessErr
		r, src, ae = q.dev.mem.acquire(ir.srcSTag, q, ir.srcTO, uint64(ir.size), rdma.AccessRemoteRead)
		if ae != accessOK {
			t := &termInfo{layer: layerRDMAP, etype: rdmapEtypeRemoteProt, ecode: ae.rdmapCode(), flags: termFlagM | termFlagD | termFlagR}
			t.hdrLen = hdrReadReq
			b := t.hdr[:hdrReadReq]
			putUntagged(b, opReadReq, true, hdrReadReq-mpaHdr, 0, qnReadReq, 0, 0)
			be := binary.BigEndian
			be.PutUint32(b[20:], ir.sinkSTag)
			be.PutUint64(b[24:], ir.sinkTO)
			be.PutUint32(b[32:], ir.size)
			be.PutUint32(b[36:], ir.srcSTag)
			be.PutUint64(b[40:], ir.srcTO)
			q.fail(&TermError{Layer: t.layer, Type: t.etype, Code: t.ecode, Sent: true}, t)
			return nil
		}
	}
	q.tx.pieces[0] = src
	if r != nil {
		q.tx.held[maxSGE].Store(r)
	}
	err := q.tx.sendMsg(q, opReadResp, uint64(ir.size), q.tx.pieces[:1], ir.sinkSTag, ir.sinkTO, 0)
	q.tx.pieces[0] = nil
	if r != nil {
		q.tx.held[maxSGE].Store(nil)
		r.release()
	}
	return err
}

// sendMsg segments one message of total bytes, gathered from pieces,
// into FPDUs of at most q.mulpdu and writes them. Tagged messages carry
// stag and the running TO; untagged ones msn and the running MO.
func (t *txState) sendMsg(q *qp, op int, total uint64, pieces [][]byte, stag uint32, to uint64, msn uint32) error {
	info := &pktinfos[op]
	maxPay := uint64(q.mulpdu - (info.hdrLen - mpaHdr))
	pi, po := 0, 0
	var off uint64
	for first := true; first || off < total; first = false {
		n := min(total-off, maxPay)
		last := off+n == total
		ulpdu := info.hdrLen - mpaHdr + int(n)
		h := t.hdrs[t.nfp][:info.hdrLen]
		if info.tagged {
			putTagged(h, op, last, ulpdu, stag, to+off)
		} else {
			putUntagged(h, op, last, ulpdu, 0, info.qn, msn, uint32(off))
		}
		start := len(t.bufs)
		t.bufs = append(t.bufs, h)
		for rem := int(n); rem > 0; {
			for po == len(pieces[pi]) {
				pi, po = pi+1, 0
			}
			seg := pieces[pi][po:]
			if len(seg) > rem {
				seg = seg[:rem]
			}
			t.bufs = append(t.bufs, seg)
			po += len(seg)
			rem -= len(seg)
		}
		t.finishFPDU(q, ulpdu, start)
		off += n
		if t.nfp == txBatchFPDUs || len(t.bufs) > txIOVs-(maxSGE+3) || last {
			if err := t.flush(q); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendFPDU adds one FPDU whose header is h (already filled) and whose
// payload is pay (may be nil).
func (t *txState) appendFPDU(q *qp, h, pay []byte) {
	start := len(t.bufs)
	t.bufs = append(t.bufs, h)
	if len(pay) > 0 {
		t.bufs = append(t.bufs, pay)
	}
	t.finishFPDU(q, len(h)-mpaHdr+len(pay), start)
}

// finishFPDU appends the pad and CRC trailer of the FPDU whose pieces
// start at bufs[start].
func (t *txState) finishFPDU(q *qp, ulpdu, start int) {
	pad := padLen(ulpdu)
	tr := t.trls[t.nfp][:pad+mpaCRCLen]
	clear(tr[:pad])
	var c uint32
	if q.crc {
		for _, b := range t.bufs[start:] {
			c = crc32.Update(c, castagnoli, b)
		}
		c = crc32.Update(c, castagnoli, tr[:pad])
	}
	binary.LittleEndian.PutUint32(tr[pad:], c)
	t.bufs = append(t.bufs, tr)
	t.nfp++
}

// flush writes the batch.
func (t *txState) flush(q *qp) error {
	if len(t.bufs) == 0 {
		return nil
	}
	_, err := t.bufs.WriteTo(q.conn)
	clear(t.iov[:])
	t.bufs = t.iov[:0]
	t.nfp = 0
	if err != nil {
		t.broken = true
		return connErr(err)
	}
	return nil
}

// txTerminate sends a Terminate (RFC 5040 section 4.8) with the
// offending header attached, laid out as siw_send_terminate does.
func (q *qp) txTerminate(ti *termInfo) {
	h := q.tx.hdrs[0][:hdrTerm]
	ulpdu := hdrTerm - mpaHdr + ti.hdrLen
	putUntagged(h, opTerminate, true, ulpdu, 0, qnTerminate, 1, 0)
	binary.BigEndian.PutUint32(h[20:], termWord(ti.layer, ti.etype, ti.ecode, ti.flags))
	var att []byte
	if ti.hdrLen > 0 {
		att = ti.hdr[:ti.hdrLen]
		if ti.flags&termFlagM != 0 {
			// The attached MPA length field carries the DDP segment
			// length instead (RFC 5040 section 4.8).
			l := binary.BigEndian.Uint16(att)
			op := int(binary.BigEndian.Uint16(att[2:]) & rdmapOpMsk)
			binary.BigEndian.PutUint16(att, l-uint16(pktinfos[op].hdrLen-mpaHdr))
		}
	}
	q.tx.appendFPDU(q, h, att)
	_ = q.conn.SetWriteDeadline(time.Now().Add(termTimeout))
	_ = q.tx.flush(q)
}

// connErr wraps a TCP error as a lost connection.
func connErr(err error) error {
	if errors.Is(err, rdma.ErrConnLost) {
		return err
	}
	return errors.Join(rdma.ErrConnLost, err)
}
