package soft

// Receive path (siw_qp_rx.c): one goroutine per QP reads the TCP stream
// and walks each FPDU through a state loop, rxHdr -> rxData ->
// rxTrailer, like siw_tcp_rx_data. The opcode's handler from rxHandlers
// validates the header and names where the payload goes; payload is read
// from the socket straight into registered memory when it is large.
//
// Every check that fails becomes a Terminate with the RFC 5040/5041/5044
// layer, type and code siw would send, and the QP goes to ERROR; the
// payload of a segment that fails a check is never placed. The peer is
// hostile until proven otherwise: lengths, MSNs, MOs, STags and TOs are
// all checked before a byte is written.

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/rdma"
)

var errPlacement = errors.New("soft: internal error: payload longer than its placement")

type rxState uint8

const (
	rxHdr     rxState = iota // reading the MPA length, control word and header
	rxData                   // placing the payload
	rxTrailer                // reading pad and CRC, then completing
)

const (
	// rxBufSize is rx.buf for a QP that carries small messages only.
	rxBufSize = 64 << 10
	// rxBigBufSize: rx.buf grows to this once a large payload arrives.
	// Each read then places the rest of the current payload directly
	// and pulls up to this much of what follows (the next FPDUs) into
	// rx.buf in the same system call. Copying those few FPDUs out of
	// the buffer costs less than a system call and a poller wakeup per
	// FPDU: measured on loopback, twice the throughput of reading the
	// next header alone, at the same CPU per byte.
	rxBigBufSize = 256 << 10
	// rxDirectMin: a payload piece at least this long is read from the
	// socket straight into its destination instead of via rx.buf.
	rxDirectMin = 4 << 10
)

type rxStream struct {
	r      io.Reader
	buf    []byte
	lo, hi int
	state  rxState
	h      hdr
	hb     [maxHdr]byte // raw header, attached to a Terminate
	hl     int
	rem    int // payload bytes of this FPDU still to place
	pay    int // payload bytes of this FPDU
	crc    uint32

	dst     [maxSGE][]byte
	ndst    int
	di, do  int
	regs    [maxSGE]*region
	held    [maxSGE]atomic.Pointer[region] // regs, for region.quiesce
	nregs   int
	discard bool
	scratch [256]byte

	msn [numQN]uint32 // next expected MSN per untagged queue

	// Send being received.
	recvActive bool
	recv       rqe
	recvBytes  uint64
	recvMSN    uint32

	rrespOff uint64 // bytes of the oldest Read placed so far
	termN    int

	// readv state: one system call places the rest of a payload and
	// pulls the next trailer and header into buf.
	rc      syscall.RawConn
	iov     [2][]byte
	niov    int
	rvN     int
	rvErr   error
	readvFn func(fd uintptr) bool // s.doReadv, bound once so reads allocate nothing
}

func (s *rxStream) init(r io.Reader) {
	s.r = r
	if s.buf == nil {
		s.buf = make([]byte, rxBufSize)
	}
	s.msn = [numQN]uint32{1, 1, 1}
	if sc, ok := r.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			s.rc = rc
			s.readvFn = s.doReadv
		}
	}
}

func (s *rxStream) doReadv(fd uintptr) bool {
	n, err := readv(int(fd), s.iov[:s.niov])
	if err == unix.EAGAIN {
		return false // let the runtime poller wait for data
	}
	s.rvN, s.rvErr = n, err
	return true
}

// readv reads into a, then b. Without a raw connection (tests) it is a
// plain Read into a.
func (s *rxStream) readv(a, b []byte) (int, error) {
	if s.rc == nil {
		return s.r.Read(a)
	}
	s.iov[0], s.iov[1], s.niov = a, b, 2
	if len(b) == 0 {
		s.niov = 1
	}
	s.rvN, s.rvErr = 0, nil
	err := s.rc.Read(s.readvFn)
	s.iov[0], s.iov[1] = nil, nil
	if err != nil {
		return 0, err
	}
	if s.rvErr != nil {
		return s.rvN, os.NewSyscallError("readv", s.rvErr)
	}
	if s.rvN == 0 {
		return 0, io.EOF
	}
	return s.rvN, nil
}

// rxHandler is one row of the opcode table: hdr validates a header and
// sets the payload destination, done runs after the CRC checked out.
type rxHandler struct {
	hdr  func(q *qp) *termInfo
	done func(q *qp) *termInfo
}

var rxHandlers = [numOpcodes]rxHandler{
	opWrite:     {(*qp).rxWriteHdr, nil},
	opReadReq:   {(*qp).rxReadReqHdr, nil},
	opReadResp:  {(*qp).rxReadRespHdr, (*qp).rxReadRespDone},
	opSend:      {(*qp).rxSendHdr, (*qp).rxSendDone},
	opSendInv:   {(*qp).rxSendHdr, (*qp).rxSendDone},
	opSendSE:    {(*qp).rxSendHdr, (*qp).rxSendDone},
	opSendSEInv: {(*qp).rxSendHdr, (*qp).rxSendDone},
	opTerminate: {(*qp).rxTermHdr, (*qp).rxTermDone},
}

// fill makes at least n bytes available in buf[lo:hi].
func (s *rxStream) fill(n int) error {
	for s.hi-s.lo < n {
		if s.lo > 0 && (s.lo == s.hi || len(s.buf)-s.lo < maxHdr+8) {
			s.hi = copy(s.buf, s.buf[s.lo:s.hi])
			s.lo = 0
		}
		k, err := s.readv(s.buf[s.hi:], nil)
		s.hi += k
		if err != nil && s.hi-s.lo < n {
			return err
		}
	}
	return nil
}

// rxLoop is the receive goroutine; it exits when the stream ends or the
// QP leaves RTS. tx's teardown waits for it before flushing.
func (q *qp) rxLoop() {
	defer close(q.rxDone)
	s := &q.rx
	for q.rts() {
		var t *termInfo
		var err error
		switch s.state {
		case rxHdr:
			t, err = q.rxHeader()
		case rxData:
			err = q.rxPlace()
		case rxTrailer:
			t, err = q.rxTrail()
		}
		if t != nil {
			s.releaseRegions()
			q.fail(&TermError{Layer: t.layer, Type: t.etype, Code: t.ecode, Sent: true}, t)
			return
		}
		if err != nil {
			s.releaseRegions()
			if q.rts() {
				q.fail(connErr(err), nil)
			}
			return
		}
	}
	s.releaseRegions()
}

func (s *rxStream) releaseRegions() {
	for i := 0; i < s.nregs; i++ {
		s.held[i].Store(nil)
		s.regs[i].release()
		s.regs[i] = nil
	}
	s.nregs = 0
	for i := range s.ndst {
		s.dst[i] = nil
	}
	s.ndst, s.di, s.do, s.discard = 0, 0, 0, false
}

// newTerm builds a Terminate; attach says how many bytes of the current
// header to attach (0: none) and with which flags.
func (q *qp) newTerm(layer, etype, ecode uint8, attach int, flags uint32) *termInfo {
	t := &termInfo{layer: layer, etype: etype, ecode: ecode}
	if attach > 0 && attach <= q.rx.hl {
		t.hdrLen = copy(t.hdr[:], q.rx.hb[:attach])
		t.flags = flags
	}
	return t
}

// taggedTerm is the Terminate for a failed check of a tagged access:
// DDP tagged-buffer errors, except access rights, which only RDMAP can
// express (as siw does).
func (q *qp) taggedTerm(ae accessErr) *termInfo {
	if ae == accessRights {
		return q.newTerm(layerRDMAP, rdmapEtypeRemoteProt, rdmapEcodeAccessRights, hdrTagged, termFlagM|termFlagD)
	}
	return q.newTerm(layerDDP, ddpEtypeTagged, ae.ddpCode(), hdrTagged, termFlagM|termFlagD)
}

func (q *qp) untaggedTerm(ecode uint8) *termInfo {
	return q.newTerm(layerDDP, ddpEtypeUntagged, ecode, hdrUntagged, termFlagM|termFlagD)
}

// rxHeader reads and checks one DDP/RDMAP header.
func (q *qp) rxHeader() (*termInfo, error) {
	s := &q.rx
	if err := s.fill(4); err != nil {
		return nil, err
	}
	b := s.buf[s.lo:s.hi]
	mpaLen := int(binary.BigEndian.Uint16(b))
	ctrl := binary.BigEndian.Uint16(b[2:])
	op := int(ctrl & rdmapOpMsk)
	s.hl = 0
	if ctrl&ddpVerMask != ddpVer1 {
		if ctrl&ddpTagged != 0 {
			return q.newTerm(layerDDP, ddpEtypeTagged, ddpEcodeTVersion, 0, 0), nil
		}
		return q.newTerm(layerDDP, ddpEtypeUntagged, ddpEcodeUTVersion, 0, 0), nil
	}
	if ctrl&rdmapVMask != rdmapVer1 {
		return q.newTerm(layerRDMAP, rdmapEtypeRemoteOp, rdmapEcodeVersion, 0, 0), nil
	}
	if op >= numOpcodes || pktinfos[op].tagged != (ctrl&ddpTagged != 0) {
		return q.newTerm(layerRDMAP, rdmapEtypeRemoteOp, rdmapEcodeOpcode, 0, 0), nil
	}
	info := &pktinfos[op]
	if mpaLen < info.hdrLen-mpaHdr {
		return q.newTerm(layerLLP, llpEtypeMPA, llpEcodeFPDUStart, 0, 0), nil
	}
	if err := s.fill(info.hdrLen); err != nil {
		return nil, err
	}
	s.hl = copy(s.hb[:], s.buf[s.lo:s.lo+info.hdrLen])
	s.lo += info.hdrLen
	s.h = hdr{}
	decodeHdr(s.hb[:s.hl], &s.h)
	s.pay = mpaLen - (info.hdrLen - mpaHdr)
	s.rem = s.pay
	if q.crc {
		s.crc = crc32.Update(0, castagnoli, s.hb[:s.hl])
	}
	if !info.tagged {
		if s.h.qn != info.qn {
			return q.untaggedTerm(ddpEcodeUTInvalidQN), nil
		}
	}
	if t := rxHandlers[op].hdr(q); t != nil {
		return t, nil
	}
	s.state = rxData
	return nil, nil
}

// rxPlace moves the payload of the current FPDU to its destination.
func (q *qp) rxPlace() error {
	s := &q.rx
	for s.rem > 0 {
		var d []byte
		if s.discard {
			d = s.scratch[:min(len(s.scratch), s.rem)]
		} else {
			for s.di < s.ndst && s.do == len(s.dst[s.di]) {
				s.di, s.do = s.di+1, 0
			}
			if s.di == s.ndst {
				// A handler named fewer bytes than the payload: a bug
				// here, never a reason to place anywhere else.
				return errPlacement
			}
			d = s.dst[s.di][s.do:]
			d = d[:min(len(d), s.rem)]
		}
		var n int
		switch {
		case s.hi > s.lo:
			n = copy(d, s.buf[s.lo:s.hi])
			s.lo += n
		case len(d) >= rxDirectMin:
			// Straight into place; what follows the payload (trailer,
			// next headers and payloads) lands in the empty buffer.
			s.lo, s.hi = 0, 0
			if len(s.buf) < rxBigBufSize {
				s.buf = make([]byte, rxBigBufSize) // once per QP
			}
			k, err := s.readv(d, s.buf)
			if k == 0 && err != nil {
				return err
			}
			n = min(k, len(d))
			s.hi = k - n
		default:
			if err := s.fill(1); err != nil {
				return err
			}
			continue
		}
		if q.crc {
			s.crc = crc32.Update(s.crc, castagnoli, d[:n])
		}
		s.rem -= n
		if !s.discard {
			s.do += n
		}
	}
	s.state = rxTrailer
	return nil
}

// rxTrail checks pad and CRC, releases the memory and completes.
func (q *qp) rxTrail() (*termInfo, error) {
	s := &q.rx
	pad := padLen(s.hl - mpaHdr + s.pay)
	if err := s.fill(pad + mpaCRCLen); err != nil {
		return nil, err
	}
	tr := s.buf[s.lo : s.lo+pad+mpaCRCLen]
	s.lo += pad + mpaCRCLen
	s.releaseRegions()
	if q.crc {
		c := crc32.Update(s.crc, castagnoli, tr[:pad])
		if c != binary.LittleEndian.Uint32(tr[pad:]) {
			return q.newTerm(layerLLP, llpEtypeMPA, llpEcodeCRC, 0, 0), nil
		}
	}
	s.state = rxHdr
	if done := rxHandlers[s.h.op].done; done != nil {
		return done(q), nil
	}
	return nil, nil
}

// addDst adds a placement target held through r.
func (s *rxStream) addDst(r *region, b []byte) {
	s.regs[s.nregs] = r
	s.held[s.nregs].Store(r)
	s.nregs++
	s.dst[s.ndst] = b
	s.ndst++
}

// rxWriteHdr: RDMA Write, tagged placement into the sink STag.
func (q *qp) rxWriteHdr() *termInfo {
	s := &q.rx
	if s.pay == 0 {
		// A zero-length Write places nothing; it is also the RTR frame
		// of RFC 6581 and carries STag 0. No check needed.
		return nil
	}
	r, b, ae := q.dev.mem.acquire(s.h.stag, q, s.h.to, uint64(s.pay), rdma.AccessRemoteWrite)
	if ae != accessOK {
		return q.taggedTerm(ae)
	}
	s.addDst(r, b)
	return nil
}

// rxReadReqHdr queues an inbound RDMA Read Request for tx to answer.
func (q *qp) rxReadReqHdr() *termInfo {
	s := &q.rx
	h := &s.h
	switch {
	case s.pay != 0 || !h.last():
		return q.newTerm(layerLLP, llpEtypeMPA, llpEcodeFPDUStart, 0, 0)
	case h.msn != s.msn[qnReadReq]:
		return q.untaggedTerm(ddpEcodeUTMSNRange)
	case h.mo != 0:
		return q.untaggedTerm(ddpEcodeUTInvalidMO)
	}
	if h.size > 0 {
		r, _, ae := q.dev.mem.acquire(h.srcSTag, q, h.srcTO, uint64(h.size), rdma.AccessRemoteRead)
		if ae != accessOK {
			return q.newTerm(layerRDMAP, rdmapEtypeRemoteProt, ae.rdmapCode(), hdrReadReq, termFlagM|termFlagD|termFlagR)
		}
		r.release()
	}
	q.mu.Lock()
	if q.irqTail-q.irqHead >= uint64(q.ird) {
		q.mu.Unlock()
		// More Reads outstanding than the IRD we advertised.
		return q.untaggedTerm(ddpEcodeUTMSNNoBuf)
	}
	q.irq[q.irqTail%uint64(len(q.irq))] = irqe{sinkSTag: h.sinkSTag, sinkTO: h.sinkTO, size: h.size, srcSTag: h.srcSTag, srcTO: h.srcTO}
	q.irqTail++
	q.mu.Unlock()
	s.msn[qnReadReq]++
	q.kick()
	return nil
}

// rxReadRespHdr places a Read Response segment into the sink of the
// oldest outstanding Read; responses arrive in request order.
func (q *qp) rxReadRespHdr() *termInfo {
	s := &q.rx
	q.mu.Lock()
	if len(q.orq) == 0 {
		q.mu.Unlock()
		return q.newTerm(layerRDMAP, rdmapEtypeRemoteOp, rdmapEcodeOpcode, hdrTagged, termFlagM|termFlagD)
	}
	sink := q.sq[q.orq[0]%uint64(len(q.sq))].sge[0]
	q.mu.Unlock()
	switch {
	case s.h.stag != sink.LKey:
		return q.taggedTerm(accessInvalidSTag)
	case s.h.to != sink.Addr+s.rrespOff || s.rrespOff+uint64(s.pay) > uint64(sink.Len):
		return q.taggedTerm(accessBaseBounds)
	}
	if s.pay == 0 {
		return nil
	}
	r, b, ae := q.localSlice(rdma.SGE{Addr: s.h.to, Len: uint32(s.pay), LKey: sink.LKey}, rdma.AccessLocalWrite)
	if ae != accessOK {
		return q.taggedTerm(ae)
	}
	s.addDst(r, b)
	return nil
}

func (q *qp) rxReadRespDone() *termInfo {
	s := &q.rx
	s.rrespOff += uint64(s.pay)
	if !s.h.last() {
		return nil
	}
	q.mu.Lock()
	w := &q.sq[q.orq[0]%uint64(len(q.sq))]
	if s.rrespOff != uint64(w.sge[0].Len) {
		q.mu.Unlock()
		return q.newTerm(layerRDMAP, rdmapEtypeRemoteOp, rdmapEcodeUnspecified, hdrTagged, termFlagM|termFlagD)
	}
	w.done, w.status = true, rdma.StatusSuccess
	q.orq = q.orq[:copy(q.orq, q.orq[1:])]
	q.completeSQ()
	q.mu.Unlock()
	s.rrespOff = 0
	q.kick() // an ORD slot is free
	return nil
}

// rxSendHdr: untagged placement into the receive at the head of the RQ.
func (q *qp) rxSendHdr() *termInfo {
	s := &q.rx
	h := &s.h
	if !s.recvActive {
		if h.msn != s.msn[qnSend] {
			return q.untaggedTerm(ddpEcodeUTMSNRange)
		}
		if h.mo != 0 {
			return q.untaggedTerm(ddpEcodeUTInvalidMO)
		}
		q.mu.Lock()
		if q.rqHead == q.rqTail {
			q.mu.Unlock()
			// No receive posted: iWARP has no RNR retry.
			return q.untaggedTerm(ddpEcodeUTMSNNoBuf)
		}
		s.recv = q.rq[q.rqHead%uint64(len(q.rq))]
		q.mu.Unlock()
		s.recvActive, s.recvBytes, s.recvMSN = true, 0, h.msn
	} else {
		if h.msn != s.recvMSN {
			return q.untaggedTerm(ddpEcodeUTMSNRange)
		}
		if uint64(h.mo) != s.recvBytes {
			return q.untaggedTerm(ddpEcodeUTInvalidMO)
		}
	}
	if s.recvBytes+uint64(s.pay) > s.recv.len {
		q.completeRecv(rdma.StatusLocLenErr, false)
		return q.untaggedTerm(ddpEcodeUTMsgTooLong)
	}
	// Map [recvBytes, recvBytes+pay) onto the receive's SGL.
	off, want := s.recvBytes, uint64(s.pay)
	for i := 0; i < s.recv.nsge && want > 0; i++ {
		sg := s.recv.sge[i]
		if off >= uint64(sg.Len) {
			off -= uint64(sg.Len)
			continue
		}
		n := min(uint64(sg.Len)-off, want)
		r, b, ae := q.localSlice(rdma.SGE{Addr: sg.Addr + off, Len: uint32(n), LKey: sg.LKey}, rdma.AccessLocalWrite)
		if ae != accessOK {
			// Our own receive buffer is bad: local error, the stream
			// cannot continue.
			q.completeRecv(rdma.StatusLocProtErr, false)
			return q.newTerm(layerRDMAP, rdmapEtypeCatastrophic, rdmapEcodeCatStream, 0, 0)
		}
		s.addDst(r, b)
		off, want = 0, want-n
	}
	return nil
}

func (q *qp) rxSendDone() *termInfo {
	s := &q.rx
	s.recvBytes += uint64(s.pay)
	if !s.h.last() {
		return nil
	}
	if op := s.h.op; op == opSendInv || op == opSendSEInv {
		if !q.invalidate(s.h.inval) {
			q.completeRecv(rdma.StatusRemInvReqErr, false)
			return q.newTerm(layerRDMAP, rdmapEtypeRemoteOp, rdmapEcodeCannotInval, hdrUntagged, termFlagM|termFlagD|termFlagR)
		}
	}
	q.completeRecv(rdma.StatusSuccess, s.h.op == opSendSE || s.h.op == opSendSEInv)
	s.msn[qnSend]++
	return nil
}

// invalidate handles Send with Invalidate: only memory windows bound to
// this QP can be invalidated remotely.
func (q *qp) invalidate(stag uint32) bool {
	r := q.dev.mem.lookup(stag)
	if r == nil || !r.isMW || r.qp != q {
		return false
	}
	r.closed.Store(true)
	return true
}

// completeRecv pops the receive being filled and completes it.
func (q *qp) completeRecv(st rdma.Status, solicited bool) {
	s := &q.rx
	q.mu.Lock()
	if s.recvActive && q.rqHead < q.rqTail {
		q.rqHead++
		wc := rdma.Completion{WRID: s.recv.id, QPNum: q.num, Status: st, Op: rdma.OpRecv}
		if st == rdma.StatusSuccess {
			wc.Bytes = uint32(s.recvBytes)
		}
		q.recvCQ.push(wc, solicited)
	}
	q.mu.Unlock()
	s.recvActive = false
}

// rxTermHdr keeps the attached headers of an inbound Terminate.
func (q *qp) rxTermHdr() *termInfo {
	s := &q.rx
	if s.pay <= len(s.scratch) {
		s.ndst = 1
		s.dst[0] = s.scratch[:s.pay]
	} else {
		s.discard = true
	}
	s.termN = min(s.pay, len(s.scratch))
	return nil
}

// rxTermDone: the peer terminated. A Terminate that names a Read
// Request fails the oldest outstanding Read with a remote error; the rest
// is flushed.
func (q *qp) rxTermDone() *termInfo {
	s := &q.rx
	layer, etype, ecode, flags, _ := decodeTermWord(s.h.term)
	e := &TermError{Layer: layer, Type: etype, Code: ecode}
	if flags&termFlagR != 0 && s.termN >= 4 {
		att := s.scratch[:s.termN]
		if int(binary.BigEndian.Uint16(att[2:])&rdmapOpMsk) == opReadReq {
			st := rdma.StatusRemOpErr
			if errors.Is(e, rdma.ErrRemoteAccess) {
				st = rdma.StatusRemAccessErr
			}
			q.mu.Lock()
			if len(q.orq) > 0 {
				rw := &q.sq[q.orq[0]%uint64(len(q.sq))]
				rw.done, rw.status = true, st
				rw.vendor = termWord(layer, etype, ecode, 0)
				q.orq = q.orq[:copy(q.orq, q.orq[1:])]
			}
			q.mu.Unlock()
		}
	}
	q.fail(e, nil)
	return nil
}

// Is maps a Terminate onto the rdma sentinels: protection errors are
// remote access errors, everything else a protocol error.
func (e *TermError) Is(target error) bool {
	switch target {
	case rdma.ErrRemoteAccess:
		return e.protection()
	case rdma.ErrProtocol:
		return !e.protection()
	}
	return false
}

func (e *TermError) protection() bool {
	switch e.Layer {
	case layerRDMAP:
		return e.Type == rdmapEtypeRemoteProt
	case layerDDP:
		return e.Type == ddpEtypeTagged && e.Code != ddpEcodeTVersion
	}
	return false
}
