package deliver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/quartet-server/quartet/rdma"
)

// loop is the engine's state for one writer loop: its CQ (a completion
// source of that loop) and the channels whose completions land there.
//
// Callers (processors) post units on channels; the loop (onCQ) retires
// them. mu guards chans, byID and every channel's queue, counters and
// exposures; a channel's postMu orders its posts and comes before mu.
// Once the loop is being released (close, from DetachLoop or Close) the
// goroutine releasing it takes the loop goroutine's part.
type loop struct {
	e     *Engine
	idx   int
	cq    rdma.CQ
	wcs   []rdma.Completion // loop goroutine only
	batch []*unit           // loop goroutine only: units one completion retires

	mu     sync.Mutex
	detach func() error // removes the CQ's fd from the loop's poller; nil once done
	chans  map[chanKey]*channel
	byID   map[uint32]*channel // every channel not yet destroyed, dead ones included
	dials  singleflight.Group
	// closing: the loop is being released; use gives no channel.
	// entering counts callers of use between that check and holding a
	// channel (a dial may take DialTimeout): the CQ cannot be destroyed
	// under a QP one of them is about to make.
	closing  bool
	entering int
	cqClosed bool
	// ending counts exposures revoke has taken out of their channel and
	// not yet released and reported (Done): settle and close wait for
	// them, so that a detach returns with every Done heard and every key
	// and registration gone.
	ending int
}

func newLoop(e *Engine, idx int, cq rdma.CQ) *loop {
	return &loop{e: e, idx: idx, cq: cq, chans: map[chanKey]*channel{}, byID: map[uint32]*channel{},
		wcs: make([]rdma.Completion, completionsPerPoll)}
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
// rkey works from every QP of its PD: in the engine's PD, any client that
// learned or guessed a key could read another client's body. Such
// exposures therefore live on an isolated channel, whose QP, message area
// and exposures are in a PD of its own, holding nothing else. Windows
// (bound to one QP) and server-writes (the server exposes nothing) use the
// shared PD, where the file cache's and the staging pool's registrations
// are.
//
// Units are numbered per channel in the order they are posted (RDS's
// monotonically increasing operation ids, on the server's side; the
// client's own op ids travel in the messages and name exposures). A
// queue pair completes its send queue in order, so a successful
// completion of unit S means every unit up to S is done: the channel's
// high-water mark, from which the loop retires them all at once.
type channel struct {
	id  uint32
	ep  netip.AddrPort
	key chanKey
	pd  rdma.PD // the QP's: the engine's, or its own when isolated
	qp  rdma.QP
	mem *rdma.Memory // message area: receive slots, then send slots
	mr  rdma.MR

	// postMu is held while a unit takes its sequence number and posts
	// its work requests, so units reach the send queue in sequence order.
	// It also guards next and sgl.
	postMu sync.Mutex
	next   int // next send slot
	sgl    [1]rdma.SGE

	// Guarded by loop.mu.
	dead bool // failed, out of the cache, disconnected
	// users counts callers posting on the channel; the QP and message
	// area are destroyed only when a dead channel has none, so no post
	// ever touches a destroyed QP.
	users  int
	closed bool
	exps   map[uint64]*exposure
	// fault is the first error completion seen on the channel: a refused
	// Write fails first and what follows is only flushed, so this says
	// what went wrong.
	fault rdma.Status
	seq   uint64    // the last sequence number given
	q     unitQueue // posted and not retired, in sequence order
	// Sparse signalling: what was posted since the last signalled request.
	unsigUnits, unsigWRs int
	unsigBytes           int64
	lastPost             time.Time
	watch, barrier       *time.Timer
	watching, reclaiming bool
}

// unitKind is what a unit carries.
type unitKind uint8

const (
	unitWrite   unitKind = iota + 1 // server-writes: the Writes and the written message behind them
	unitBind                        // client-reads through a window: the bind
	unitBarrier                     // sparse signalling: a signalled message that retires an idle channel's units
)

// unit is one delivery's work requests on a channel: RDS's compound
// operation, the RDMA and the small message behind it, which the client
// sees whole or not at all (it trusts the message, which RC ordering
// places after the bytes). Every work request of a unit carries the
// unit's sequence number in its id.
type unit struct {
	seq      uint64
	kind     unitKind
	ch       *channel
	signaled bool
	wait     bool // the caller holds its reply for Ready
	told     bool // Ready has been called (guarded by loop.mu)
	// posting is set while the poster's postFn runs (guarded by
	// loop.mu): a completion that retires the unit meanwhile (on siw a
	// Write leaves inside its post, and the peer's Terminate can come back
	// before the message behind it is posted) only marks it retired, with
	// retireErr; the poster finishes it, or, if its post failed, drops it
	// and reports the failure, so the unit ends exactly once.
	posting   bool
	retired   bool
	retireErr error
	posted    time.Time
	bytes     int64
	body      *Body     // unitWrite: the unit's reference
	exp       *exposure // unitBind
	notify    Notify
}

// unitQueue is a FIFO of units that reuses its array.
type unitQueue struct {
	s    []*unit
	head int
}

func (q *unitQueue) len() int     { return len(q.s) - q.head }
func (q *unitQueue) front() *unit { return q.s[q.head] }
func (q *unitQueue) back() *unit  { return q.s[len(q.s)-1] }
func (q *unitQueue) push(u *unit) {
	if q.head > 0 && q.head == len(q.s) {
		q.s, q.head = q.s[:0], 0
	} else if q.head >= 64 && 2*q.head >= len(q.s) {
		n := copy(q.s, q.s[q.head:])
		clear(q.s[n:])
		q.s, q.head = q.s[:n], 0
	}
	q.s = append(q.s, u)
}
func (q *unitQueue) pop() *unit {
	u := q.s[q.head]
	q.s[q.head] = nil
	q.head++
	return u
}
func (q *unitQueue) popBack() *unit {
	u := q.s[len(q.s)-1]
	q.s[len(q.s)-1] = nil
	q.s = q.s[:len(q.s)-1]
	return u
}

// exposure is one client-reads grant: a window (or a per-operation MR)
// over exactly the body's bytes, alive until the client confirms, the
// timer fires or the channel dies.
type exposure struct {
	op      uint64 // the client's op id
	owner   uint64 // Target.Owner
	ch      *channel
	mw      rdma.MW
	mr      rdma.MR // per-operation registration when there are no windows
	body    *Body   // the exposure's reference
	timer   *time.Timer
	granted time.Time
	done    func(error)
	ended   error // why it was revoked; under the loop's mu
}

// use returns the cached connection to ep, dialing it if there is none
// (concurrent first requests share one dial), with a use the caller ends
// with release.
func (lp *loop) use(ep netip.AddrPort, isolated bool) (*channel, error) {
	lp.mu.Lock()
	if lp.closing {
		lp.mu.Unlock()
		return nil, errLoopClosing
	}
	lp.entering++
	lp.mu.Unlock()
	ch, err := lp.lookupOrDial(chanKey{ep, isolated})
	lp.mu.Lock()
	defer lp.mu.Unlock()
	lp.entering--
	if err != nil {
		return nil, err
	}
	if ch.dead {
		return nil, fmt.Errorf("deliver: channel %d to %s failed", ch.id, ep)
	}
	if lp.closing {
		// Dialed while the loop was being released: close kills every
		// channel it finds until none is left and nobody is entering.
		return nil, errLoopClosing
	}
	ch.users++
	return ch, nil
}

// errLoopClosing: the loop's writer loop is leaving (DetachLoop) or the
// engine is closing.
var errLoopClosing = errors.New("deliver: writer loop detached")

// isDead reports whether ch has been retired (killed).
func (lp *loop) isDead(ch *channel) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return ch.dead
}

// release ends a use; the last user of a dead channel destroys it.
func (lp *loop) release(ch *channel) {
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

// nextChannelID gives a channel id that fits the 30 bits a send id has
// for it, never 0.
func (e *Engine) nextChannelID() uint32 {
	for {
		if id := e.nextCh.Add(1) & chanIDMask; id != 0 {
			return id
		}
	}
}

// dial connects to a client's endpoint: message area, QP on this loop's
// CQ with its receives posted before the connection exists (iWARP has no
// RNR retry), the channel id in the private data.
func (lp *loop) dial(key chanKey) (_ *channel, err error) {
	e := lp.e
	e.st.dials.Add(1)
	ch := &channel{id: e.nextChannelID(), ep: key.ep, key: key, pd: e.pd, exps: map[uint64]*exposure{}}
	if key.isolated {
		if ch.pd, err = e.dev.AllocPD(); err != nil {
			return nil, fmt.Errorf("ibv_alloc_pd: %w", err)
		}
		e.st.livePDs.Add(1)
		defer func() {
			if err != nil {
				ch.pd.Close()
				e.st.livePDs.Add(-1)
			}
		}()
	}
	if ch.mem, err = rdma.Alloc(msgArea(serverRecvSlots, serverSendSlots)); err != nil {
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
	e.st.liveMRs.Add(1)
	defer func() {
		if err != nil {
			ch.mr.Close()
			e.st.liveMRs.Add(-1)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.DialTimeout)
	defer cancel()
	var sgl [1]rdma.SGE
	cfg := rdma.QPConfig{
		PD: ch.pd, SendCQ: lp.cq, RecvCQ: lp.cq,
		MaxSendWR: sqDepth, MaxRecvWR: serverRecvSlots, MaxInline: msgLen,
		InitiatorDepth: 1, ResponderResources: e.info.MaxQPRdAtom,
		Prepare: func(qp rdma.QP) error {
			for i := 0; i < serverRecvSlots; i++ {
				sgl[0] = rdma.SGEOf(ch.mr, i*msgLen, msgLen)
				if err := qp.PostRecv(recvID(ch.id, i), sgl[:]); err != nil {
					return err
				}
			}
			return nil
		},
	}
	ch.qp, err = e.dev.Dial(ctx, key.ep.String(), cfg, putPriv(ch.id))
	if err != nil {
		return nil, err
	}
	e.st.liveQPs.Add(1)
	ch.watch = time.AfterFunc(time.Hour, func() { lp.watchdog(ch) })
	ch.watch.Stop()
	ch.barrier = time.AfterFunc(time.Hour, func() { lp.reclaimIdle(ch) })
	ch.barrier.Stop()
	return ch, nil
}

// sendSlot writes a message into ch's next send slot and returns its
// SGE. Under ch.postMu.
func (lp *loop) sendSlot(ch *channel, kind uint32, opID uint64) rdma.SGE {
	slot := serverRecvSlots + ch.next
	ch.next = (ch.next + 1) % serverSendSlots
	putMsg(ch.mem.Bytes()[slot*msgLen:], kind, opID)
	return rdma.SGEOf(ch.mr, slot*msgLen, msgLen)
}

// post gives u the channel's next sequence number and runs postFn with
// the work-request id every request of the unit carries and whether the
// unit's last request is to be signalled. u is queued before postFn
// runs (its completion may come at once) and forgotten again if posting
// fails. wrs is how many work requests the unit posts.
func (lp *loop) post(ch *channel, u *unit, wrs int, postFn func(id uint64, signal bool) error) error {
	ch.postMu.Lock()
	defer ch.postMu.Unlock()
	return lp.postLocked(ch, u, wrs, postFn)
}

func (lp *loop) postLocked(ch *channel, u *unit, wrs int, postFn func(id uint64, signal bool) error) error {
	cfg := &lp.e.cfg
	lp.mu.Lock()
	if ch.dead {
		lp.mu.Unlock()
		return fmt.Errorf("channel %d failed", ch.id)
	}
	ch.seq++
	u.seq, u.ch = ch.seq, ch
	// Signal where someone waits for this unit, always when signalling
	// every reply, and sparsely where the batch would otherwise grow
	// too long, too large, or fill the send queue: an unsignalled request
	// keeps its send-queue slot until a later signalled one completes.
	u.signaled = u.wait || u.kind == unitBarrier || cfg.Signal == SignalEveryReply ||
		ch.unsigUnits+1 >= cfg.SignalInterval || ch.unsigBytes+u.bytes >= cfg.SignalBytes ||
		ch.unsigWRs+wrs >= sqDepth/2
	u.posted = time.Now()
	u.posting = true
	ch.q.push(u)
	if !ch.watching {
		ch.watching = true
		ch.watch.Reset(cfg.CompletionTimeout)
	}
	lp.mu.Unlock()

	err := postFn(sendID(ch.id, u.seq), u.signaled)

	lp.mu.Lock()
	u.posting = false
	if err != nil {
		// Never told: the caller falls back, whether or not a completion
		// retired the unit meanwhile.
		if ch.q.len() > 0 && ch.q.back() == u {
			ch.q.popBack()
		}
		lp.mu.Unlock()
		if errors.Is(err, rdma.ErrQPState) {
			// The QP failed (a Terminate, a reset) before the loop heard of
			// it: retire the channel now, so the next delivery dials again
			// instead of falling back on it too. The caller's use keeps the
			// QP until it lets go.
			lp.kill(ch)
		}
		return err
	}
	ch.lastPost = u.posted
	if u.signaled {
		ch.unsigUnits, ch.unsigWRs, ch.unsigBytes = 0, 0, 0
	} else {
		ch.unsigUnits++
		ch.unsigWRs += wrs
		ch.unsigBytes += u.bytes
		if !ch.reclaiming {
			ch.reclaiming = true
			ch.barrier.Reset(cfg.ReclaimDelay)
		}
	}
	retired, why := u.retired, u.retireErr
	lp.mu.Unlock()
	if retired {
		lp.finish(u, why) // its completion came while it was being posted
	}
	return nil
}

// reclaimIdle runs ReclaimDelay after an unsignalled unit was posted: if
// the channel has posted nothing since for that long and units still
// await a completion, it posts a signalled barrier message behind them,
// whose completion retires them all. A busy channel signals by its own
// posts and is left alone.
func (lp *loop) reclaimIdle(ch *channel) { lp.postBarrier(ch, true) }

// postBarrier posts a signalled barrier behind ch's unsignalled units, if
// it has any: only if the channel has been idle for ReclaimDelay
// (reclaimIdle), or at once (a loop leaving, DetachLoop).
func (lp *loop) postBarrier(ch *channel, onlyIdle bool) {
	ch.postMu.Lock()
	defer ch.postMu.Unlock()
	lp.mu.Lock()
	if onlyIdle {
		ch.reclaiming = false
	}
	if ch.dead || ch.unsigUnits == 0 {
		lp.mu.Unlock()
		return
	}
	if idle := time.Since(ch.lastPost); onlyIdle && idle < lp.e.cfg.ReclaimDelay {
		ch.reclaiming = true
		ch.barrier.Reset(lp.e.cfg.ReclaimDelay - idle)
		lp.mu.Unlock()
		return
	}
	ch.users++ // the QP outlives this post
	lp.mu.Unlock()
	defer lp.release(ch)
	u := &unit{kind: unitBarrier}
	_ = lp.postLocked(ch, u, 1, func(id uint64, _ bool) error {
		ch.sgl[0] = lp.sendSlot(ch, msgBarrier, 0)
		// Counted before the post: its completion may retire the units
		// behind it (Stats().Written) on the loop's goroutine before
		// PostSend returns here, and a reader of Stats who saw them
		// retired must see the barrier that did it.
		lp.e.st.barriers.Add(1)
		err := ch.qp.PostSend(id, ch.sgl[:], rdma.SendSignaled|rdma.SendInline)
		if err != nil {
			lp.e.st.barriers.Add(-1)
		}
		return err
	})
}

// watchdog runs CompletionTimeout after the channel's oldest unit was
// posted. Devices can lose completions (siw, after a Terminate,
// sometimes never completes the Write in flight), and a reply held
// forever would hang its connection: a unit with no completion in time
// is told it failed (a held reply goes out, with the body over the
// protocol's connection where the binding prepared that), and the
// channel is killed. The unit's memory stays until a completion or the
// QP's destruction (forgetUnits), since the device may still use it.
func (lp *loop) watchdog(ch *channel) {
	timeout := lp.e.cfg.CompletionTimeout
	lp.mu.Lock()
	if ch.closed || ch.q.len() == 0 {
		ch.watching = false
		lp.mu.Unlock()
		return
	}
	u := ch.q.front()
	if age := time.Since(u.posted); age < timeout || u.posting {
		ch.watch.Reset(max(timeout-age, time.Millisecond))
		lp.mu.Unlock()
		return
	}
	ch.watching = false
	lp.mu.Unlock()
	lp.e.st.stuck.Add(1)
	lp.tell(u, &UnitError{Err: ErrNoCompletion, Detail: "no completion in " + timeout.String()})
	// A channel that lost a completion is not trusted again: killing it
	// flushes what it still has, and destroying its QP (forgetUnits)
	// frees the memory of units whose completions never come.
	lp.kill(ch)
}

// tell calls u's Ready, once, if its caller waits for it.
func (lp *loop) tell(u *unit, err error) {
	if !u.wait || u.notify.Ready == nil {
		return
	}
	lp.mu.Lock()
	told := u.told
	u.told = true
	lp.mu.Unlock()
	if !told {
		u.notify.Ready(err)
	}
}

// onCQ is the loop's completion source: take the event, re-arm, then
// drain (the order of the CQ contract, so nothing is missed).
func (lp *loop) onCQ() {
	if _, err := lp.cq.Consume(); err != nil {
		return
	}
	_ = lp.cq.Arm(false)
	lp.drain()
}

func (lp *loop) drain() {
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

// complete handles one completion, in the loop.
func (lp *loop) complete(wc *rdma.Completion) {
	if wc.WRID&tagRecv != 0 {
		lp.received(wc)
		return
	}
	if wc.WRID&tagSend == 0 {
		return
	}
	id, low := splitSendID(wc.WRID)
	lp.mu.Lock()
	ch := lp.byID[id]
	if ch == nil || ch.closed {
		lp.mu.Unlock()
		return // its channel is gone, and its units were forgotten
	}
	if wc.Status == rdma.StatusSuccess {
		lp.e.st.signaled.Add(1)
		lp.takeThrough(ch, low, nil)
		lp.mu.Unlock()
		for _, u := range lp.batch {
			lp.finish(u, nil)
		}
		clear(lp.batch)
		return
	}
	// An error: the QP is in ERROR now and everything after this request
	// is flushed. Units before it completed (a send queue completes in
	// order, and an earlier failure would have come first), but a device
	// may not report flushed unsignalled requests at all, so the units up
	// to this one are failed rather than assumed done: nobody waits on an
	// unsignalled unit, and a client that got its bytes has its message.
	if ch.fault == rdma.StatusSuccess {
		ch.fault = wc.Status
	}
	err := lp.unitError(ch, wc.Status, ch.fault)
	lp.takeThrough(ch, low, err)
	lp.mu.Unlock()
	if len(lp.batch) == 0 && wc.Status != rdma.StatusWRFlushErr {
		lp.e.st.lost.Add(1) // a request of a unit already given up (its post failed)
	}
	// The channel dies before anyone hears of the failure: a caller that
	// asks again at once must get a new channel, not this one.
	lp.kill(ch)
	for _, u := range lp.batch {
		lp.finish(u, err)
	}
	clear(lp.batch)
}

// takeThrough moves the units of ch up to the one whose sequence number
// ends in low into lp.batch, to be finished with err; one still being
// posted is only marked (see unit.posting). Under lp.mu.
func (lp *loop) takeThrough(ch *channel, low uint32, err error) {
	lp.batch = lp.batch[:0]
	if ch.q.len() == 0 {
		return
	}
	back := ch.q.back().seq
	seq := back - uint64(uint32(back)-low)
	for ch.q.len() > 0 && ch.q.front().seq <= seq {
		u := ch.q.pop()
		if u.posting {
			u.retired, u.retireErr = true, err
			continue
		}
		lp.batch = append(lp.batch, u)
	}
}

// unitError is why the units of a failed completion failed, in words a
// peer can be told: the first error seen on the channel, and why the QP
// failed if all we have is a flush. Under lp.mu (QP.Err takes only the
// provider's own lock).
func (lp *loop) unitError(ch *channel, status, fault rdma.Status) error {
	why := fault
	if why == rdma.StatusSuccess || why == rdma.StatusWRFlushErr {
		why = status
	}
	detail := why.String()
	if why == rdma.StatusWRFlushErr {
		if err := ch.qp.Err(); err != nil {
			detail += " (" + err.Error() + ")" // why the QP failed: a Terminate, a reset
		}
	}
	return &UnitError{Err: ErrTransfer, Status: why, Detail: detail}
}

// finish ends a unit the loop retired: its memory goes (the device is
// done with it), its caller hears the outcome.
func (lp *loop) finish(u *unit, err error) {
	st := &lp.e.st
	switch u.kind {
	case unitWrite:
		st.rdmaNanos.Add(int64(time.Since(u.posted)))
		if err == nil {
			st.written.Add(1)
			st.writtenBytes.Add(u.bytes)
		} else {
			st.lost.Add(1)
		}
		u.body.Release() // a held reply's alternative keeps its own reference
		u.body = nil
		lp.tell(u, err)
		if u.notify.Done != nil {
			u.notify.Done(err)
		}
	case unitBind:
		st.rdmaNanos.Add(int64(time.Since(u.posted)))
		if err != nil {
			st.lost.Add(1)
			lp.revoke(u.exp, err, nil) // the key never worked; its Done says why
		} else {
			lp.grant(u.exp)
		}
		lp.tell(u, err) // the grant goes out; on failure the client's Read fails and it asks again
	}
}

// received handles a receive completion: a read-done message revokes its
// exposure; the slot is posted again.
func (lp *loop) received(wc *rdma.Completion) {
	chID, slot := splitRecvID(wc.WRID)
	lp.mu.Lock()
	ch := lp.byID[chID]
	dead := ch == nil || ch.dead
	if !dead {
		// A use, like a poster's: a processor's failed post or the
		// watchdog may kill the channel meanwhile, and its QP and message
		// area must outlive the repost below.
		ch.users++
	}
	lp.mu.Unlock()
	if dead {
		return // a flushed receive of a channel torn down
	}
	defer lp.release(ch)
	if wc.Status != rdma.StatusSuccess {
		lp.kill(ch) // flushed: the client went away or broke the protocol
		return
	}
	if kind, opID, ok := parseMsg(ch.mem.Bytes()[slot*msgLen:]); ok && kind == msgReadDone {
		lp.confirm(ch, 0, opID, false) // HTTP's exposures have owner 0
	}
	sgl := [1]rdma.SGE{rdma.SGEOf(ch.mr, slot*msgLen, msgLen)}
	if err := ch.qp.PostRecv(wc.WRID, sgl[:]); err != nil {
		lp.kill(ch)
	}
}

// addExposure records x on its channel. It refuses (a *Fallback) when
// the channel is dead, the op id is already exposed there, or the client
// already holds MaxExposuresPerChannel unconfirmed exposures on it. The
// exposure's timer starts at grant.
func (lp *loop) addExposure(x *exposure) error {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	switch {
	case x.ch.dead:
		return fallback(ReasonPostFailed, "channel failed")
	case x.ch.exps[x.op] != nil:
		return fallback(ReasonPostFailed, fmt.Sprintf("op %d already exposed", x.op))
	case len(x.ch.exps) >= MaxExposuresPerChannel:
		return fallback(ReasonTooManyExposures, "")
	}
	x.ch.exps[x.op] = x
	x.granted = time.Now()
	lp.e.st.liveExposures.Add(1)
	lp.e.st.exposed.Add(1)
	return nil
}

// grant starts x's timer once its key works (a window bound, a
// per-operation MR registered): a client that never confirms loses it
// ExposureTimeout later.
func (lp *loop) grant(x *exposure) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if x.ch.exps[x.op] != x {
		return // revoked already: its channel died
	}
	x.granted = time.Now()
	x.timer = time.AfterFunc(lp.e.cfg.ExposureTimeout, func() {
		if lp.revoke(x, ErrExposureExpired, &lp.e.st.timedOut) {
		}
	})
}

// confirm ends the exposures a client says it has read: op alone, or
// with through every exposure of the channel up to op (a cumulative
// completion: the client's high-water mark); owner's only. It returns
// how many ended.
func (lp *loop) confirm(ch *channel, owner, op uint64, through bool) int {
	var xs []*exposure
	lp.mu.Lock()
	if through {
		for k, x := range ch.exps {
			if k <= op && x.owner == owner {
				xs = append(xs, x)
			}
		}
	} else if x := ch.exps[op]; x != nil && x.owner == owner {
		xs = append(xs, x)
	}
	lp.mu.Unlock()
	n := 0
	for _, x := range xs {
		if lp.revoke(x, nil, &lp.e.st.confirmed) {
			n++
		}
	}
	return n
}

// revoke ends x if it is still live: the window is destroyed (or the
// per-operation MR deregistered), so its key dies, and its memory is let
// go; x's Done hears why (nil: confirmed). True if x was live. outcome,
// if not nil, counts how it ended (confirmed, timed out), before the live
// count drops: whoever sees no exposure live sees every ending counted.
func (lp *loop) revoke(x *exposure, why error, outcome *atomic.Int64) bool {
	lp.mu.Lock()
	live := x.ch.exps[x.op] == x
	if live {
		delete(x.ch.exps, x.op)
		x.ended = why
		lp.ending++
	}
	timer := x.timer
	lp.mu.Unlock()
	if !live {
		return false
	}
	defer func() {
		lp.mu.Lock()
		lp.ending--
		lp.mu.Unlock()
	}()
	if timer != nil {
		timer.Stop()
	}
	lp.e.st.exposureNanos.Add(int64(time.Since(x.granted)))
	if outcome != nil {
		outcome.Add(1)
	}
	lp.discard(x)
	// After its window and memory are released: a count of live exposures
	// at zero then means their resources are gone too, which is what a
	// reader of Stats (and a test taking a snapshot) counts on.
	lp.e.st.liveExposures.Add(-1)
	if x.done != nil {
		x.done(why)
	}
	return true
}

// discard releases an exposure's key, then its memory (a window must go
// before the MR under it can).
func (lp *loop) discard(x *exposure) {
	st := &lp.e.st
	if x.mw != nil {
		if err := x.mw.Close(); err == nil {
			st.liveMWs.Add(-1)
		} else {
			lp.e.keepErr("exposure %d: ibv_dealloc_mw: %w", x.op, err)
		}
	}
	if x.mr != nil {
		if err := x.mr.Close(); err == nil {
			st.liveMRs.Add(-1)
		} else {
			lp.e.keepErr("exposure %d: ibv_dereg_mr: %w", x.op, err)
		}
	}
	x.body.Release()
}

// kill retires a failed channel: out of the cache (the next delivery
// dials again), its exposures revoked, its QP disconnected. Completions
// still owed for its units arrive as flushes and fail them; the QP is
// destroyed when its last user lets go.
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
	xs := make([]*exposure, 0, len(ch.exps))
	for _, x := range ch.exps {
		xs = append(xs, x)
	}
	lp.mu.Unlock()
	for _, x := range xs {
		lp.revoke(x, ErrChannelClosed, nil)
	}
	_ = ch.qp.Disconnect() // flushes what is outstanding; posts now fail
	if now {
		lp.closeChannel(ch)
	}
}

func (lp *loop) closeChannel(ch *channel) {
	st := &lp.e.st
	ch.watch.Stop()
	ch.barrier.Stop()
	if err := ch.qp.Close(); err == nil {
		st.liveQPs.Add(-1)
		lp.forgetUnits(ch)
	} else {
		lp.e.keepErr("channel %d: destroying its QP: %w", ch.id, err)
	}
	lp.mu.Lock()
	if lp.byID[ch.id] == ch {
		delete(lp.byID, ch.id)
	}
	lp.mu.Unlock()
	if err := ch.mr.Close(); err == nil {
		st.liveMRs.Add(-1)
	} else {
		lp.e.keepErr("channel %d: message area ibv_dereg_mr: %w", ch.id, err)
	}
	ch.mem.Free()
	// Its exposures were revoked when it died; a per-operation MR the
	// device still held would keep the PD busy, and Close reports that.
	if ch.key.isolated {
		if err := ch.pd.Close(); err == nil {
			st.livePDs.Add(-1)
		} else {
			lp.e.keepErr("channel %d: ibv_dealloc_pd: %w", ch.id, err)
		}
	}
}

// forgetUnits ends the units still queued on ch once its QP is
// destroyed: the device no longer uses their memory, and no completion
// will come for them (siw, after a Terminate, may never complete the
// Write in flight; one already in the CQ finds no channel and is
// ignored). Without this their staging memory and cache references
// stayed until Close.
func (lp *loop) forgetUnits(ch *channel) {
	lp.mu.Lock()
	var gone []*unit
	for ch.q.len() > 0 {
		gone = append(gone, ch.q.pop())
	}
	detail := "connection closed"
	if ch.fault != rdma.StatusSuccess {
		detail += " after " + ch.fault.String()
	}
	lp.mu.Unlock()
	err := &UnitError{Err: ErrChannelClosed, Status: ch.fault, Detail: detail}
	for _, u := range gone {
		lp.finish(u, err)
	}
}

// settleTick is how often settle looks at a leaving loop's CQ and
// exposures: the poller no longer watches the CQ, and waiting on its fd
// would depend on each provider's event semantics. A millisecond is
// nothing beside the client's OpTimeout and costs only the leaving
// loop's goroutine.
const settleTick = time.Millisecond

// settle lets a leaving loop's work end by itself until deadline: it
// handles the loop's completions (retiring units, read-done messages),
// posts a barrier behind every channel's unsignalled units, and returns
// as soon as no live channel has a unit queued or an exposure open.
// After unregister: the caller is the loop goroutine now.
func (lp *loop) settle(deadline time.Time) {
	for {
		lp.drain()
		chans, busy := lp.pending()
		if !busy || !time.Now().Before(deadline) {
			return
		}
		for _, ch := range chans {
			lp.postBarrier(ch, false)
		}
		time.Sleep(settleTick)
	}
}

// pending returns the live channels and whether any of them has work
// that has not ended: a unit not retired, an exposure not confirmed or
// one still being released.
func (lp *loop) pending() ([]*channel, bool) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	var chans []*channel
	busy := lp.ending > 0
	for _, ch := range lp.byID {
		if ch.dead {
			continue // its units are failed by the flush or at its QP's destruction
		}
		chans = append(chans, ch)
		busy = busy || ch.q.len() > 0 || len(ch.exps) > 0
	}
	return chans, busy
}

// unregister removes the CQ's fd from the loop's poller, once.
func (lp *loop) unregister() error {
	lp.mu.Lock()
	detach := lp.detach
	lp.detach = nil
	lp.mu.Unlock()
	if detach == nil {
		return nil
	}
	lp.e.st.liveSources.Add(-1)
	return detach()
}

// closeCQ destroys the CQ, once.
func (lp *loop) closeCQ() error {
	lp.mu.Lock()
	done := lp.cqClosed
	lp.mu.Unlock()
	if done {
		return nil
	}
	if err := lp.cq.Close(); err != nil {
		return fmt.Errorf("deliver: loop %d: ibv_destroy_cq: %w", lp.idx, err)
	}
	lp.mu.Lock()
	lp.cqClosed = true
	lp.mu.Unlock()
	lp.e.st.liveCQs.Add(-1)
	return nil
}

// close's waits for the channels it kills to be destroyed, so the CQ
// under their QPs can go. releaseWait is for a caller still on one: a
// post never blocks, so it lets go within microseconds, and a dial (up to
// DialTimeout) is not waited for; the loop is left for Close.
// closingWait is for a channel another goroutine is destroying (the
// watchdog killed it): the provider ends a QP's goroutines promptly, so
// this only bounds a provider that does not.
const (
	releaseWait = 100 * time.Millisecond
	closingWait = 10 * time.Second
)

// close tears the loop down once its writer loop no longer runs its
// completion source (DetachLoop, Close): every channel and exposure, the
// units still queued (flushed by the QP closes), and the CQ, which goes
// only when no QP uses it. It may be called again (Close, for a loop
// DetachLoop could not release).
func (lp *loop) close() error {
	_ = lp.unregister() // the loop's poller may be gone already
	lp.mu.Lock()
	lp.closing = true
	lp.mu.Unlock()
	t0 := time.Now()
	for {
		lp.mu.Lock()
		chans := make([]*channel, 0, len(lp.byID))
		for _, ch := range lp.byID {
			chans = append(chans, ch)
		}
		lp.mu.Unlock()
		for _, ch := range chans {
			lp.kill(ch) // destroys it now unless someone is on it
		}
		lp.drain() // what the kills flushed: their channels are gone, so it is dropped
		lp.mu.Lock()
		inUse, closing := lp.entering+lp.ending, 0
		for _, ch := range lp.byID {
			if ch.users > 0 || !ch.closed {
				inUse++
			} else {
				closing++ // being destroyed by another goroutine
			}
		}
		lp.mu.Unlock()
		if inUse == 0 && closing == 0 {
			break
		}
		if waited := time.Since(t0); (inUse > 0 && waited >= releaseWait) || waited >= closingWait {
			return fmt.Errorf("deliver: loop %d: %d channels or dials still in use, %d still being destroyed; its CQ stays until Close", lp.idx, inUse, closing)
		}
		time.Sleep(settleTick)
	}
	return lp.closeCQ()
}
