package soft

// Connection management (siw_cm.c): the MPA request/reply exchange of
// RFC 5044 with the enhanced connection setup of RFC 6581, as siw and
// the kernel's iWARP CM speak it.
//
// Private data travels in the MPA frames unchanged (rdma_cm adds no
// header on iWARP); with MPA revision 2 the four bytes of IRD/ORD come
// first and are hidden from the application, as siw_cm_upcall does.
//
// Passive side states of one incoming connection:
//
//	AWAIT_MPAREQ  (handshake goroutine reads the request, MPATimeout)
//	RECVD_MPAREQ  (queued for Listener.Accept; the eventfd counts it)
//	RDMA_MODE     (ConnRequest.Accept sent the reply, the QP runs)
//	CLOSED        (rejected, timed out, or the listener closed)

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/rdma"
)

// readMPA reads one MPA request (wantReply false) or reply frame.
func readMPA(c net.Conn, wantReply bool) (mpaRR, error) {
	var buf [mpaRRLen + mpaMaxPrivData + mpaV2Len]byte
	if _, err := io.ReadFull(c, buf[:mpaRRLen]); err != nil {
		return mpaRR{}, err
	}
	_, pdLen, err := parseMPAHeader(buf[:mpaRRLen], wantReply)
	if err != nil {
		return mpaRR{}, err
	}
	if _, err := io.ReadFull(c, buf[mpaRRLen:mpaRRLen+pdLen]); err != nil {
		return mpaRR{}, err
	}
	return parseMPA(buf[:mpaRRLen+pdLen], wantReply)
}

// mulpdu is the largest ULPDU to send on c: one FPDU per TCP segment
// (RFC 5044 section 5.2: MULPDU from the EMSS), unless Config.MaxULPDU
// says otherwise.
func (p *Provider) mulpdu(c net.Conn) int {
	if p.cfg.MaxULPDU > 0 {
		return max(min(p.cfg.MaxULPDU, maxULPDU), minULPDU)
	}
	mss := 1460
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG); err == nil && v > 0 {
					mss = v
				}
			})
		}
	}
	// 2 + ULPDU + pad must be a multiple of 4 and leave 4 for the CRC.
	u := (mss-mpaCRCLen)&^3 - mpaHdr
	return max(min(u, maxULPDU), minULPDU)
}

func (p *Provider) mpaTimeout() time.Duration {
	if p.cfg.MPATimeout > 0 {
		return p.cfg.MPATimeout
	}
	return defaultMPATimeout
}

// termFrame is a Terminate FPDU without attached header, for failures
// during connection setup.
func termFrame(crc bool, layer, etype, ecode uint8) []byte {
	b := make([]byte, hdrTerm, hdrTerm+mpaCRCLen)
	putUntagged(b, opTerminate, true, hdrTerm-mpaHdr, 0, qnTerminate, 1, 0)
	binary.BigEndian.PutUint32(b[20:], termWord(layer, etype, ecode, 0))
	var c uint32
	if crc {
		c = crc32.Checksum(b, castagnoli)
	}
	return binary.LittleEndian.AppendUint32(b, c)
}

// Dial is the active side: TCP connect, MPA request, MPA reply, RTS.
func (d *device) Dial(ctx context.Context, addr string, cfg rdma.QPConfig, priv []byte) (_ rdma.QP, err error) {
	if d.closed.Load() {
		return nil, rdma.ErrClosed
	}
	if len(priv) > mpaMaxPrivData-mpaV2Len {
		return nil, fmt.Errorf("%w: %d bytes of private data (max %d)", rdma.ErrInvalid, len(priv), mpaMaxPrivData-mpaV2Len)
	}
	q, err := newQP(d, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			q.discard()
		}
	}()
	if cfg.Prepare != nil {
		if err := cfg.Prepare(q); err != nil {
			return nil, err
		}
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &rdma.VerbError{Verb: "rdma_connect", Errno: errnoOf(err, unix.ECONNREFUSED)}
	}
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	deadline := time.Now().Add(d.prov.mpaTimeout())
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	// Cancellation while blocked in the exchange: unblock it.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	req := mpaRR{rev: 2, enhanced: true, ird: uint16(q.ird), ord: uint16(q.ord), priv: priv}
	if d.prov.cfg.CRC {
		req.bits |= mpaFlagCRC
	}
	if _, err := conn.Write(appendMPA(nil, req)); err != nil {
		return nil, fmt.Errorf("soft: send MPA request: %w", connErr(err))
	}
	rep, err := readMPA(conn, true)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("soft: MPA reply: %w", errors.Join(rdma.ErrProtocol, err))
	}
	if rep.bits&mpaFlagReject != 0 {
		return nil, &rdma.RejectError{PrivateData: rep.priv}
	}
	crc := rep.bits&mpaFlagCRC != 0
	switch {
	case rep.bits&mpaFlagMarkers != 0:
		return nil, fmt.Errorf("%w: peer wants MPA markers", rdma.ErrNotSupported)
	case d.prov.cfg.CRC && !crc:
		return nil, fmt.Errorf("%w: peer refused the MPA CRC it must use (RFC 5044 7.1)", rdma.ErrProtocol)
	case rep.rev < 2 || !rep.enhanced:
		// We asked for RFC 6581; the responder must answer in kind.
		return nil, fmt.Errorf("%w: MPA reply revision %d without IRD/ORD", rdma.ErrProtocol, rep.rev)
	}
	repIRD, repORD := int(rep.ird&mpaV2IRDORDMask), int(rep.ord&mpaV2IRDORDMask)
	if repORD > q.ird {
		_, _ = conn.Write(termFrame(crc, layerLLP, llpEtypeMPA, llpEcodeInsufficientRD))
		return nil, fmt.Errorf("%w: peer ORD %d exceeds our IRD %d", rdma.ErrProtocol, repORD, q.ird)
	}
	ord := min(q.ord, max(repIRD, 1))
	_ = conn.SetDeadline(time.Time{})
	q.start(conn, crc, q.ird, ord, d.prov.mulpdu(conn), rep.priv)
	return q, nil
}

// errnoOf extracts an errno from a network error, or returns def.
func errnoOf(err error, def unix.Errno) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return def
}

type listener struct {
	dev  *device
	ln   net.Listener
	efd  int // eventfd in semaphore mode: one count per queued request
	reqs chan *connReq
	done chan struct{}
	wg   sync.WaitGroup // accept loop and handshakes

	mu      sync.Mutex
	closed  bool
	shaking map[net.Conn]struct{} // connections still in AWAIT_MPAREQ
	out     map[*connReq]struct{} // handed out by Accept, not yet answered
	one     [8]byte
}

var _ rdma.Listener = (*listener)(nil)

func (d *device) Listen(addr string, backlog int) (rdma.Listener, error) {
	if d.closed.Load() {
		return nil, rdma.ErrClosed
	}
	if backlog <= 0 {
		backlog = 128
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &rdma.VerbError{Verb: "rdma_listen", Errno: errnoOf(err, unix.EADDRNOTAVAIL)}
	}
	efd, err := newEventfd(true)
	if err != nil {
		ln.Close()
		return nil, err
	}
	l := &listener{dev: d, ln: ln, efd: efd, reqs: make(chan *connReq, backlog), done: make(chan struct{}), shaking: map[net.Conn]struct{}{}, out: map[*connReq]struct{}{}}
	binary.NativeEndian.PutUint64(l.one[:], 1)
	d.objs.Add(1)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

func (l *listener) Fd() int        { return l.efd }
func (l *listener) Addr() net.Addr { return l.ln.Addr() }

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		l.shaking[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.handshake(c)
	}
}

// handshake reads one MPA request and queues it for Accept.
func (l *listener) handshake(c net.Conn) {
	defer l.wg.Done()
	_ = c.SetDeadline(time.Now().Add(l.dev.prov.mpaTimeout()))
	rr, err := readMPA(c, false)
	l.mu.Lock()
	delete(l.shaking, c)
	if err != nil || l.closed {
		l.mu.Unlock()
		c.Close()
		return
	}
	r := &connReq{l: l, conn: c, rr: rr}
	if rr.bits&mpaFlagMarkers != 0 {
		l.mu.Unlock()
		_ = r.Reject(nil) // markers: not supported, as siw
		return
	}
	select {
	case l.reqs <- r:
		_, _ = unix.Write(l.efd, l.one[:])
		l.mu.Unlock()
	default:
		l.mu.Unlock()
		_ = r.Reject(nil) // backlog full
	}
}

func (l *listener) Accept(ctx context.Context) (rdma.ConnRequest, error) {
	select {
	case r := <-l.reqs:
		var b [8]byte
		_, _ = unix.Read(l.efd, b[:])
		l.mu.Lock()
		if l.closed {
			// Close came between the channel and here, and did not see
			// the request queued or handed out.
			l.mu.Unlock()
			_ = r.Reject(nil)
			return nil, rdma.ErrClosed
		}
		l.out[r] = struct{}{}
		l.mu.Unlock()
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, rdma.ErrClosed
	}
}

// Close stops listening, cuts handshakes short, rejects queued requests
// and waits for its goroutines.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	for c := range l.shaking {
		_ = c.SetDeadline(time.Now())
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	for {
		select {
		case r := <-l.reqs:
			_ = r.Reject(nil)
			continue
		default:
		}
		break
	}
	// The requests Accept handed out and nobody answered are refused
	// too, as by the verbs provider (where their ids die with the
	// listener's channel); Accept or Reject on them says ErrClosed.
	l.mu.Lock()
	out := l.out
	l.out = nil
	l.mu.Unlock()
	for r := range out {
		r.mu.Lock()
		mine := !r.used // not one an Accept is answering already
		if mine {
			r.used, r.gone = true, true
		}
		r.mu.Unlock()
		if mine {
			_ = r.reject(nil)
		}
	}
	unix.Close(l.efd)
	l.dev.objs.Add(-1)
	return err
}

// connReq is a connection in RECVD_MPAREQ.
type connReq struct {
	l    *listener
	conn net.Conn
	rr   mpaRR
	mu   sync.Mutex
	used bool
	gone bool // refused by the listener's Close
}

var _ rdma.ConnRequest = (*connReq)(nil)

func (r *connReq) PrivateData() []byte  { return r.rr.priv }
func (r *connReq) LocalAddr() net.Addr  { return r.conn.LocalAddr() }
func (r *connReq) RemoteAddr() net.Addr { return r.conn.RemoteAddr() }
func (r *connReq) Param() rdma.ConnParam {
	if !r.rr.enhanced {
		return rdma.ConnParam{}
	}
	return rdma.ConnParam{ResponderResources: int(r.rr.ird & mpaV2IRDORDMask), InitiatorDepth: int(r.rr.ord & mpaV2IRDORDMask)}
}

func (r *connReq) take() error {
	r.l.mu.Lock()
	delete(r.l.out, r)
	r.l.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone {
		return fmt.Errorf("%w: the listener was closed", rdma.ErrClosed)
	}
	if r.used {
		return fmt.Errorf("%w: connection request already accepted or rejected", rdma.ErrInvalid)
	}
	r.used = true
	return nil
}

// reply builds our MPA reply to the request.
func (r *connReq) reply(priv []byte, reject bool, ird, ord int) (mpaRR, bool) {
	req := r.rr
	crc := req.bits&mpaFlagCRC != 0 || r.l.dev.prov.cfg.CRC
	rep := mpaRR{reply: true, rev: max(req.rev, 1), priv: priv}
	if crc {
		rep.bits |= mpaFlagCRC
	}
	if reject {
		rep.bits |= mpaFlagReject
	}
	if req.enhanced {
		rep.enhanced = true
		rep.ird, rep.ord = uint16(ird), uint16(ord)
		if req.ird&mpaV2PeerToPeer != 0 {
			// RFC 6581 peer-to-peer: pick the RTR frame, a zero-length
			// Write if offered (siw's preference), else a zero-length Read.
			rep.ird |= mpaV2PeerToPeer
			if req.ord&mpaV2WriteRTR == 0 && req.ord&mpaV2ReadRTR != 0 {
				rep.ord |= mpaV2ReadRTR
			} else {
				rep.ord |= mpaV2WriteRTR
			}
		}
	}
	return rep, crc
}

// Accept creates the QP, sends the MPA reply and starts the QP.
func (r *connReq) Accept(ctx context.Context, cfg rdma.QPConfig, priv []byte) (_ rdma.QP, err error) {
	if err := r.take(); err != nil {
		return nil, err
	}
	fail := func(err error) (rdma.QP, error) {
		rep, _ := r.reply(nil, true, 0, 0)
		_ = r.conn.SetDeadline(time.Now().Add(time.Second))
		_, _ = r.conn.Write(appendMPA(nil, rep))
		r.conn.Close()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return fail(fmt.Errorf("soft: accept: %w", err))
	}
	limit := mpaMaxPrivData
	if r.rr.enhanced {
		limit -= mpaV2Len
	}
	if len(priv) > limit {
		return fail(fmt.Errorf("%w: %d bytes of private data (max %d)", rdma.ErrInvalid, len(priv), limit))
	}
	q, err := newQP(r.l.dev, cfg)
	if err != nil {
		return fail(err)
	}
	if cfg.Prepare != nil {
		if err := cfg.Prepare(q); err != nil {
			q.discard()
			return fail(err)
		}
	}
	if err := ctx.Err(); err != nil {
		q.discard()
		return fail(fmt.Errorf("soft: accept: %w", err))
	}
	// RFC 6581 negotiation: our ORD may not exceed the initiator's IRD;
	// our IRD should cover the initiator's ORD (siw refuses otherwise).
	ird, ord := q.ird, q.ord
	if r.rr.enhanced {
		peerIRD, peerORD := int(r.rr.ird&mpaV2IRDORDMask), int(r.rr.ord&mpaV2IRDORDMask)
		ord = min(ord, peerIRD)
		ird = min(max(ird, peerORD), maxRD)
	}
	rep, crc := r.reply(priv, false, ird, ord)
	_ = r.conn.SetDeadline(time.Now().Add(r.l.dev.prov.mpaTimeout()))
	stop := context.AfterFunc(ctx, func() { _ = r.conn.SetDeadline(time.Unix(1, 0)) })
	_, err = r.conn.Write(appendMPA(nil, rep))
	if !stop() {
		// ctx ended meanwhile: its past deadline may land on the
		// connection at any moment, so the QP cannot have it.
		q.discard()
		r.conn.Close()
		return nil, fmt.Errorf("soft: accept: %w", ctx.Err())
	}
	if err != nil {
		q.discard()
		r.conn.Close()
		return nil, fmt.Errorf("soft: send MPA reply: %w", connErr(err))
	}
	_ = r.conn.SetDeadline(time.Time{})
	q.start(r.conn, crc, ird, max(ord, 1), r.l.dev.prov.mulpdu(r.conn), r.rr.priv)
	return q, nil
}

// Reject sends an MPA reply with the Reject bit and closes.
func (r *connReq) Reject(priv []byte) error {
	if err := r.take(); err != nil {
		return err
	}
	return r.reject(priv)
}

func (r *connReq) reject(priv []byte) error {
	if len(priv) > mpaMaxPrivData-mpaV2Len {
		priv = priv[:mpaMaxPrivData-mpaV2Len]
	}
	rep, _ := r.reply(priv, true, 0, 0)
	_ = r.conn.SetDeadline(time.Now().Add(time.Second))
	_, err := r.conn.Write(appendMPA(nil, rep))
	r.conn.Close()
	if err != nil {
		return fmt.Errorf("soft: send MPA reject: %w", connErr(err))
	}
	return nil
}
