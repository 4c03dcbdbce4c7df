package rdmahttp

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// loop is the module's state for one writer loop: its CQ (a completion
// source of that loop) and the channels whose completions land there.
//
// Processors post work and register it in ops; the writer loop (onCQ)
// completes it. mu guards chans, byID, ops and every channel's exposures.
type loop struct {
	s    *Server
	idx  int
	cq   rdma.CQ
	srcs writer.Sources
	src  writer.SourceID
	wcs  []rdma.Completion // writer loop only

	mu     sync.Mutex
	chans  map[chanKey]*channel
	byID   map[uint32]*channel
	ops    map[uint64]*op
	nextWR uint64
	dials  singleflight.Group
}

// chanKey names a cached channel: a client endpoint, and whether the
// channel has a protection domain of its own.
type chanKey struct {
	ep       netip.AddrPort
	isolated bool
}

// channel is one RDMA connection from this loop to a client endpoint.
//
// An exposure without a memory window is a per-operation MR, and an MR's
// rkey works from every QP of its PD: in the server's PD, any client that
// learned or guessed a key could read another client's body. Such
// exposures therefore live on an isolated channel, whose QP, message area
// and exposures are in a PD of its own, holding nothing else. Windows
// (bound to one QP) and server-writes (the server exposes nothing) use the
// shared PD, where the file cache's registrations are.
type channel struct {
	id   uint32
	ep   netip.AddrPort
	key  chanKey
	pd   rdma.PD // the QP's: the server's, or its own when isolated
	qp   rdma.QP
	mem  *rdma.Memory // message area: receive slots, then send slots
	mr   rdma.MR
	next int  // next send slot; guarded by loop.mu
	dead bool // guarded by loop.mu: failed, out of the cache, disconnected
	// users counts processors posting on the channel (guarded by
	// loop.mu); the QP and message area are destroyed only when a dead
	// channel has none, so no post ever touches a destroyed QP.
	users  int
	closed bool
	exps   map[uint64]*exposure
	// fault is the first error completion seen on the channel (guarded
	// by loop.mu): a refused Write fails first, and the written message
	// behind it is only flushed, so this says what went wrong.
	fault rdma.Status
}

// opKind is what a signaled work request finishes.
type opKind uint8

const (
	opWritten opKind = iota + 1 // the written message after server-writes' Writes
	opBind                      // a window bind for client-reads
)

// op is one signaled work request a response waits for.
type op struct {
	kind    opKind
	ch      *channel
	hold    *stages.Hold
	posted  time.Time
	timer   *time.Timer // releases the hold if the completion never comes
	bytes   int64
	release func() // drops staging memory and cache references
	exp     *exposure
	// alt is the response with the body over TCP, for a transfer that
	// fails while the hold keeps the header back (server-writes); nil
	// when there is none.
	alt *processor.Alternative
}

// exposure is one client-reads grant: a window (or a per-operation MR)
// over exactly the body's bytes, alive until the client confirms, the
// timer fires or the channel dies.
type exposure struct {
	op      uint64
	ch      *channel
	mw      rdma.MW
	mr      rdma.MR // per-operation registration when there are no windows
	timer   *time.Timer
	granted time.Time
	release func()
}

// post registers o under a fresh work-request id and runs postFn with it;
// o is forgotten again if posting fails.
func (lp *loop) post(o *op, postFn func(id uint64) error) error {
	lp.mu.Lock()
	lp.nextWR++
	id := lp.nextWR
	o.posted = time.Now()
	lp.ops[id] = o
	o.timer = time.AfterFunc(lp.s.cfg.CompletionTimeout, func() { lp.expire(id) })
	lp.mu.Unlock()
	if err := postFn(id); err != nil {
		lp.mu.Lock()
		delete(lp.ops, id)
		lp.mu.Unlock()
		o.timer.Stop()
		return err
	}
	return nil
}

// expire runs when a posted request has had no completion for
// CompletionTimeout. Devices can lose completions (siw, after a
// Terminate, sometimes never completes the Write in flight), and a hold
// never released would hang the HTTP connection: end it (server-writes
// sends the body over TCP instead; a bind's response goes out and the
// client, failing its Read, retries), and kill the channel. The op and
// its memory stay registered until a completion or the QP's destruction
// (forgetOps), since the device may still use them until then.
func (lp *loop) expire(id uint64) {
	lp.mu.Lock()
	o := lp.ops[id]
	if o != nil && lp.chans[o.ch.key] == o.ch {
		delete(lp.chans, o.ch.key)
	}
	lp.mu.Unlock()
	if o == nil {
		return
	}
	lp.s.st.stuck.Add(1)
	lp.fail(o, "no completion in "+lp.s.cfg.CompletionTimeout.String())
	// A channel that lost a completion is not trusted again: killing it
	// flushes what it still has, and destroying its QP (forgetOps) frees
	// the memory of ops whose completions never come.
	lp.kill(o.ch)
}

// fail ends the hold of an op whose transfer failed (or never finished).
// Where an alternative was prepared, the header that announces the
// transfer is still held (the hold is ahead of it), so the response is
// diverted onto the body over TCP with X-RDMA-Fallback saying why, and
// the client needs no retry. Otherwise the hold is released: the
// response goes out as it is, and the client detects the loss.
func (lp *loop) fail(o *op, why string) {
	if o.hold == nil {
		return
	}
	if o.alt != nil {
		bs := o.alt.Render(func(h *processor.Header) {
			for _, name := range deliveryHeaders {
				h.Del(name)
			}
			h.Set(HeaderFallback, reasonRDMAFailed+": "+why)
		})
		// Counted before the divert, which may send the response at once:
		// a client that has it then sees it in the stats too.
		lp.s.st.fallbacks.Add(1)
		if o.hold.Divert(bs) {
			return
		}
		lp.s.st.fallbacks.Add(-1) // released (or diverted) by someone else first
	}
	o.hold.Release()
}

// deliveryHeaders are the response fields that describe an RDMA delivery;
// a diverted response drops them.
var deliveryHeaders = [...]string{HeaderMode, HeaderOp, HeaderChannel, HeaderWritten, HeaderRead}

// sendSlot returns the next send slot's SGE of ch with the message in it.
func (lp *loop) sendSlot(ch *channel, kind uint32, opID uint64) rdma.SGE {
	lp.mu.Lock()
	slot := recvSlots + ch.next
	ch.next = (ch.next + 1) % sendSlots
	lp.mu.Unlock()
	putMsg(ch.mem.Bytes()[slot*msgLen:], kind, opID)
	return rdma.SGEOf(ch.mr, slot*msgLen, msgLen)
}

// channel returns the cached connection to ep, dialing it if there is
// none (concurrent first requests share one dial), with a use the caller
// ends with releaseChannel.
func (lp *loop) channel(ep netip.AddrPort, isolated bool) (*channel, error) {
	ch, err := lp.lookupOrDial(chanKey{ep, isolated})
	if err != nil {
		return nil, err
	}
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if ch.dead {
		return nil, fmt.Errorf("rdmahttp: channel %d to %s failed", ch.id, ep)
	}
	ch.users++
	return ch, nil
}

// releaseChannel ends a use from channel; the last user of a dead
// channel destroys it.
func (lp *loop) releaseChannel(ch *channel) {
	lp.mu.Lock()
	ch.users--
	now := ch.dead && ch.users == 0 && !ch.closed
	if now {
		ch.closed = true
	}
	lp.mu.Unlock()
	if now {
		lp.closeChannel(ch)
	}
}

func (lp *loop) lookupOrDial(key chanKey) (*channel, error) {
	lp.mu.Lock()
	ch := lp.chans[key]
	lp.mu.Unlock()
	if ch != nil {
		return ch, nil
	}
	v, err, _ := lp.dials.Do(fmt.Sprint(key.ep, key.isolated), func() (any, error) {
		lp.mu.Lock()
		ch := lp.chans[key]
		lp.mu.Unlock()
		if ch != nil {
			return ch, nil
		}
		ch, err := lp.dial(key)
		if err != nil {
			return nil, err
		}
		lp.mu.Lock()
		lp.chans[key] = ch
		lp.byID[ch.id] = ch
		lp.mu.Unlock()
		return ch, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*channel), nil
}

// dial connects to a client's endpoint: message area, QP on this loop's
// CQ with its receives posted before the connection exists (iWARP has no
// RNR retry), the channel id in the private data.
func (lp *loop) dial(key chanKey) (_ *channel, err error) {
	s := lp.s
	s.st.dials.Add(1)
	ep := key.ep
	ch := &channel{id: s.nextCh.Add(1), ep: ep, key: key, pd: s.pd, exps: map[uint64]*exposure{}}
	if key.isolated {
		if ch.pd, err = s.dev.AllocPD(); err != nil {
			return nil, fmt.Errorf("ibv_alloc_pd: %w", err)
		}
		s.st.livePDs.Add(1)
		defer func() {
			if err != nil {
				ch.pd.Close()
				s.st.livePDs.Add(-1)
			}
		}()
	}
	if ch.mem, err = rdma.Alloc(msgArea); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ch.mem.Free()
		}
	}()
	if ch.mr, err = ch.pd.Register(ch.mem.Bytes(), rdma.AccessLocalWrite); err != nil {
		return nil, fmt.Errorf("ibv_reg_mr: %w", err)
	}
	s.st.liveMRs.Add(1)
	defer func() {
		if err != nil {
			ch.mr.Close()
			s.st.liveMRs.Add(-1)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	var sgl [1]rdma.SGE
	cfg := rdma.QPConfig{
		PD: ch.pd, SendCQ: lp.cq, RecvCQ: lp.cq,
		MaxSendWR: sqDepth, MaxRecvWR: recvSlots, MaxInline: msgLen,
		InitiatorDepth: 1, ResponderResources: s.info.MaxQPRdAtom,
		Prepare: func(qp rdma.QP) error {
			for i := 0; i < recvSlots; i++ {
				sgl[0] = rdma.SGEOf(ch.mr, i*msgLen, msgLen)
				if err := qp.PostRecv(recvID(ch.id, i), sgl[:]); err != nil {
					return err
				}
			}
			return nil
		},
	}
	ch.qp, err = s.dev.Dial(ctx, ep.String(), cfg, putPriv(ch.id))
	if err != nil {
		return nil, err
	}
	s.st.liveQPs.Add(1)
	return ch, nil
}

// onCQ is the writer loop's completion source: take the event, re-arm,
// then drain (the order of the CQ contract, so nothing is missed).
func (lp *loop) onCQ() {
	if _, err := lp.cq.Consume(); err != nil {
		return
	}
	_ = lp.cq.Arm(false)
	for {
		n, err := lp.cq.Poll(lp.wcs)
		if n == 0 || err != nil {
			return
		}
		for i := range lp.wcs[:n] {
			lp.complete(&lp.wcs[i])
		}
	}
}

// complete handles one completion in the writer loop.
func (lp *loop) complete(wc *rdma.Completion) {
	if wc.WRID&tagRecv != 0 {
		lp.received(wc)
		return
	}
	lp.mu.Lock()
	o := lp.ops[wc.WRID]
	if o != nil && o.kind == opWritten && lp.s.cfg.loseWrittenCompletions {
		lp.mu.Unlock()
		return
	}
	delete(lp.ops, wc.WRID)
	lp.mu.Unlock()
	if o == nil {
		// An unsignaled Write reports only failure: its channel is done.
		if wc.Status != rdma.StatusSuccess && wc.WRID&tagChan != 0 {
			if wc.Status != rdma.StatusWRFlushErr {
				lp.s.st.lost.Add(1)
			}
			lp.mu.Lock()
			ch := lp.byID[uint32(wc.WRID)]
			if ch != nil && ch.fault == rdma.StatusSuccess {
				ch.fault = wc.Status
			}
			lp.mu.Unlock()
			if ch != nil {
				lp.kill(ch)
			}
		}
		return
	}
	o.timer.Stop()
	ok := wc.Status == rdma.StatusSuccess
	lp.s.st.rdmaNanos.Add(int64(time.Since(o.posted)))
	switch o.kind {
	case opWritten:
		o.release() // the device is done; a diverted response keeps its own reference
		if ok {
			lp.s.st.written.Add(1)
			lp.s.st.writtenBytes.Add(o.bytes)
			break
		}
		lp.s.st.lost.Add(1)
		lp.mu.Lock()
		why := o.ch.fault
		lp.mu.Unlock()
		if why == rdma.StatusSuccess || why == rdma.StatusWRFlushErr {
			why = wc.Status
		}
		detail := why.String()
		if why == rdma.StatusWRFlushErr {
			if err := o.ch.qp.Err(); err != nil {
				detail += " (" + err.Error() + ")" // why the QP failed: a Terminate, a reset
			}
		}
		lp.kill(o.ch)
		// The header is still held: the body goes over TCP in its place.
		lp.fail(o, detail)
		return
	case opBind:
		if !ok {
			lp.s.st.lost.Add(1)
			lp.revoke(o.ch, o.exp.op, false)
			lp.kill(o.ch)
		}
	}
	if o.hold != nil {
		o.hold.Release() // the header goes out from this loop, now
	}
}

// received handles a receive completion: a read-done message revokes its
// exposure; the slot is posted again.
func (lp *loop) received(wc *rdma.Completion) {
	chID, slot := splitRecvID(wc.WRID)
	lp.mu.Lock()
	ch := lp.byID[chID]
	lp.mu.Unlock()
	if ch == nil {
		return // a flushed receive of a channel already torn down
	}
	if wc.Status != rdma.StatusSuccess {
		lp.kill(ch) // flushed: the client went away or broke the protocol
		return
	}
	if kind, opID, ok := parseMsg(ch.mem.Bytes()[slot*msgLen:]); ok && kind == msgReadDone {
		if lp.revoke(ch, opID, false) {
			lp.s.st.confirmed.Add(1)
		}
	}
	sgl := [1]rdma.SGE{rdma.SGEOf(ch.mr, slot*msgLen, msgLen)}
	if err := ch.qp.PostRecv(wc.WRID, sgl[:]); err != nil {
		lp.kill(ch)
	}
}

// addExposure records e on its channel, with its timer. It refuses (with
// the fallback reason) when the channel is dead, the op id is already
// exposed there, or the client already holds maxExposuresPerChannel
// unconfirmed exposures (a client that never confirms would otherwise pin
// registered memory without bound until the timeouts).
func (lp *loop) addExposure(e *exposure) string {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	switch {
	case e.ch.dead:
		return reasonPost + ": channel failed"
	case e.ch.exps[e.op] != nil:
		return reasonPost + ": op " + strconv.FormatUint(e.op, 10) + " already exposed"
	case len(e.ch.exps) >= maxExposuresPerChannel:
		return reasonTooManyExposures
	}
	e.ch.exps[e.op] = e
	e.granted = time.Now()
	lp.s.st.liveExposures.Add(1)
	lp.s.st.exposed.Add(1)
	ch, opID := e.ch, e.op
	e.timer = time.AfterFunc(lp.s.cfg.ExposureTimeout, func() {
		if lp.revoke(ch, opID, true) {
			lp.s.st.timedOut.Add(1)
		}
	})
	return ""
}

// revoke ends an exposure: the window is destroyed (or the per-operation
// MR deregistered), so its key dies, and its memory is let go. True if
// the exposure existed.
func (lp *loop) revoke(ch *channel, opID uint64, fromTimer bool) bool {
	lp.mu.Lock()
	e := ch.exps[opID]
	delete(ch.exps, opID)
	lp.mu.Unlock()
	if e == nil {
		return false
	}
	if !fromTimer && e.timer != nil {
		e.timer.Stop()
	}
	lp.s.st.exposureNanos.Add(int64(time.Since(e.granted)))
	lp.dropExposure(e)
	return true
}

func (lp *loop) dropExposure(e *exposure) {
	lp.discard(e)
	lp.s.st.liveExposures.Add(-1)
}

// discard releases an exposure's key and memory.
func (lp *loop) discard(e *exposure) {
	st := &lp.s.st
	if e.mw != nil {
		if e.mw.Close() == nil {
			st.liveMWs.Add(-1)
		}
	}
	if e.mr != nil {
		if e.mr.Close() == nil {
			st.liveMRs.Add(-1)
		}
	}
	e.release()
}

// kill retires a failed channel: out of the cache (the next request
// dials again), its exposures revoked, its QP closed. Completions still
// owed for its work requests arrive as flushes and release their ops.
func (lp *loop) kill(ch *channel) {
	lp.mu.Lock()
	if ch.dead {
		lp.mu.Unlock()
		return
	}
	ch.dead = true
	now := ch.users == 0 && !ch.closed
	if now {
		ch.closed = true
	}
	if lp.chans[ch.key] == ch {
		delete(lp.chans, ch.key)
	}
	delete(lp.byID, ch.id)
	exps := make([]*exposure, 0, len(ch.exps))
	for k, e := range ch.exps {
		exps = append(exps, e)
		delete(ch.exps, k)
	}
	lp.mu.Unlock()
	for _, e := range exps {
		e.timer.Stop()
		lp.dropExposure(e)
	}
	_ = ch.qp.Disconnect() // flushes what is outstanding; posts now fail
	if now {
		lp.closeChannel(ch)
	}
}

func (lp *loop) closeChannel(ch *channel) {
	st := &lp.s.st
	if ch.qp.Close() == nil {
		st.liveQPs.Add(-1)
		lp.forgetOps(ch)
	}
	if ch.mr.Close() == nil {
		st.liveMRs.Add(-1)
	}
	ch.mem.Free()
	// Its exposures were dropped when it died; a per-operation MR the
	// device still held would keep the PD busy, and Close reports that.
	if ch.key.isolated && ch.pd.Close() == nil {
		st.livePDs.Add(-1)
	}
}

// forgetOps ends the ops still registered on ch once its QP is destroyed:
// the device no longer uses their memory, and no completion will come
// for them (siw, after a Terminate, may never complete the Write in
// flight; one already in the CQ finds no op and is ignored). Without
// this their staging memory and cache references stayed until Close.
func (lp *loop) forgetOps(ch *channel) {
	lp.mu.Lock()
	var gone []*op
	for id, o := range lp.ops {
		if o.ch == ch {
			gone = append(gone, o)
			delete(lp.ops, id)
		}
	}
	why := "connection closed"
	if ch.fault != rdma.StatusSuccess {
		why += " after " + ch.fault.String()
	}
	lp.mu.Unlock()
	for _, o := range gone {
		o.timer.Stop()
		lp.s.st.lost.Add(1)
		if o.kind == opBind && o.exp != nil {
			lp.revoke(ch, o.exp.op, false)
		}
		lp.fail(o, why)
		if o.release != nil {
			o.release()
		}
	}
}

// close tears the loop down after its writer loop has stopped: every
// channel and exposure, the work still registered (flushed by the QP
// closes), and the CQ.
func (lp *loop) close() error {
	_ = lp.srcs.RemoveSource(lp.src) // the loop's poller may be gone already
	lp.mu.Lock()
	chans := make([]*channel, 0, len(lp.byID))
	for _, ch := range lp.byID {
		chans = append(chans, ch)
	}
	lp.mu.Unlock()
	for _, ch := range chans {
		lp.kill(ch)
	}
	// Drain what the closes flushed, then release ops nobody completed.
	for {
		n, _ := lp.cq.Poll(lp.wcs)
		if n == 0 {
			break
		}
		for i := range lp.wcs[:n] {
			lp.complete(&lp.wcs[i])
		}
	}
	lp.mu.Lock()
	ops := lp.ops
	lp.ops = map[uint64]*op{}
	lp.mu.Unlock()
	for _, o := range ops {
		o.timer.Stop()
		if o.release != nil {
			o.release()
		}
		if o.hold != nil {
			o.hold.Release()
		}
	}
	if err := lp.cq.Close(); err != nil {
		return fmt.Errorf("rdmahttp: writer %d: ibv_destroy_cq: %w", lp.idx, err)
	}
	return nil
}
