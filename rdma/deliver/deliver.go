package deliver

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// Target is what the client asked for: how, to which endpoint, under
// which of its operation ids, and (server-writes) into which buffer.
type Target struct {
	Mode Mode
	// Endpoint is the client's RDMA listener, resolved (a protocol that
	// lets a client say "my connection's address" fills it in). Check it
	// with Engine.Permit first.
	Endpoint netip.AddrPort
	// Op is the client's operation id: the written message carries it,
	// and it names the exposure the client confirms. Ids are the
	// client's, strictly increasing; a retry uses a new one.
	Op uint64
	// Buffer is the client's registered, remotely writable buffer
	// (server-writes).
	Buffer Region
	// Owner names the protocol connection the request came on, for
	// client-reads: a confirmation ends only its own connection's
	// exposures (clients that share an endpoint share channels, and a
	// cumulative confirmation means "every op of this connection up to
	// N"). 0 is HTTP's: confirmed by the read-done message on the QP.
	Owner uint64
}

// Receipt is what a successful Deliver tells the protocol to put in its
// reply.
type Receipt struct {
	// Channel names the server's connection the unit went on; 0 for an
	// empty body, which moves nothing.
	Channel uint32
	// Written is the number of bytes written into the client's buffer
	// (server-writes).
	Written int64
	// Exposure is what the client reads (client-reads): address, key and
	// length, valid on Channel only.
	Exposure Region
	// Wait: the reply must not leave before Notify.Ready is called. Set
	// when the engine signals every reply (a server-writes reply waits
	// for its completion, so a failure can still replace it) and for a
	// window's bind (the key works only once bound).
	Wait bool
}

// Notify are a delivery's callbacks. They run in the loop that owns the
// channel (the writer loop that handles its completions) or, for a unit
// whose completion never comes, on a timer's goroutine; they must not
// block. Either may be nil.
type Notify struct {
	// Ready is called once, and only when Receipt.Wait: nil when the
	// reply may go now; otherwise the transfer failed before the reply
	// left (a *UnitError), and the reply should carry the body itself
	// (ReasonRDMAFailed and the error's text) if the protocol kept it.
	// It may run before Deliver has returned.
	Ready func(err error)
	// Done is called once, when the engine is finished with the
	// delivery: server-writes when a completion at or beyond the unit
	// retires it (nil) or it fails; client-reads when the exposure ends
	// (nil: the client confirmed; ErrExposureExpired; ErrChannelClosed).
	// For an empty body it is called before Deliver returns.
	Done func(err error)
}

// Deliver moves body to the client t names, by RDMA, from writer loop
// w's channel to t.Endpoint (dialing it once per loop and endpoint):
// server-writes posts the Writes and the written message behind them;
// client-reads exposes the body read-only to that channel's QP. It runs
// in the caller's goroutine (a processor: dialing and registering may
// block) and returns once the work is posted; the loop retires it.
//
// On success the engine has taken the caller's reference to body (see
// Body). On failure it returns a *Fallback and body is still the
// caller's: send it another way, saying why.
func (e *Engine) Deliver(w int, t Target, body *Body, n Notify) (Receipt, error) {
	lp := e.loopAt(w)
	if lp == nil {
		return Receipt{}, fallback(ReasonNoRDMA, "")
	}
	if t.Mode != ModeServerWrites && t.Mode != ModeClientReads {
		return Receipt{}, fallback(ReasonUnsupported, "mode "+t.Mode.String())
	}
	if max, why := e.Limit(&t); body.total > max {
		return Receipt{}, fallback(why, fmt.Sprintf("%d bytes, at most %d", body.total, max))
	}
	if err := body.Map(); err != nil {
		return Receipt{}, err
	}
	defer func() { e.st.collectNanos.Add(int64(time.Since(body.t0))) }()
	if body.total == 0 {
		// Nothing to move: answer at once, no RDMA operation exists.
		body.Release()
		if n.Done != nil {
			n.Done(nil)
		}
		return Receipt{}, nil
	}
	// A per-operation MR exposure needs a channel in a PD of its own.
	isolated := t.Mode == ModeClientReads && !e.byWindow(body)
	for redialed := false; ; redialed = true {
		ch, err := lp.use(t.Endpoint, isolated)
		if errors.Is(err, errLoopClosing) {
			return Receipt{}, fallback(ReasonNoRDMA, "") // detached meanwhile: as if never attached
		}
		if err != nil {
			return Receipt{}, fallback(ReasonConnectFailed, err.Error())
		}
		var r Receipt
		if t.Mode == ModeServerWrites {
			r, err = lp.write(ch, &t, body, n)
		} else {
			r, err = lp.expose(ch, &t, body, n)
		}
		died := err != nil && lp.isDead(ch)
		lp.release(ch)
		// A cached channel whose QP failed before its loop heard of it (a
		// Terminate or a reset still on its way to the CQ) refuses the
		// post and is retired by it; nothing of this delivery has reached
		// the client (Writes that left before the refusal carry the same
		// bytes to the same place), so it is posted once more on a
		// channel dialed now rather than sent the slow way because of an
		// older failure. Once only: a new channel that fails at once is
		// this client's doing.
		if !died || redialed {
			return r, err
		}
		e.st.redials.Add(1)
	}
}

// write is server-writes: Writes of every segment into the client's
// buffer, then the written message, as one unit.
func (lp *loop) write(ch *channel, t *Target, b *Body, n Notify) (Receipt, error) {
	e := lp.e
	if b.used > 0 {
		if err := e.pool.register(b.stage); err != nil {
			return Receipt{}, fallback(ReasonRegisterFailed, err.Error())
		}
	}
	wrs := 1
	for _, sg := range b.segs {
		wrs += int((sg.n + maxWriteChunk - 1) / maxWriteChunk)
	}
	total := b.total
	u := &unit{kind: unitWrite, bytes: total, body: b, wait: e.WillWait(t, b), notify: n}
	b.Retain() // the unit's reference
	err := lp.post(ch, u, wrs, func(id uint64, signal bool) error {
		raddr := t.Buffer.Addr
		for _, sg := range b.segs {
			var mr rdma.MR
			if sg.fe != nil {
				mr = sg.fe.mr
			} else {
				mr = b.stage.mr
			}
			base := sg.off
			for off := int64(0); off < sg.n; off += maxWriteChunk {
				k := min(sg.n-off, maxWriteChunk)
				ch.sgl[0] = rdma.SGEOf(mr, int(base+off), int(k))
				if err := ch.qp.PostWrite(id, ch.sgl[:], raddr, t.Buffer.RKey, 0); err != nil {
					// Writes already posted may still land; the client's
					// buffer is its own, and the body sent another way
					// supersedes them.
					return err
				}
				raddr += uint64(k)
			}
		}
		ch.sgl[0] = lp.sendSlot(ch, msgWritten, t.Op)
		flags := rdma.SendInline
		if signal {
			flags |= rdma.SendSignaled
		}
		return ch.qp.PostSend(id, ch.sgl[:], flags)
	})
	if err != nil {
		b.Release() // the unit's: it was never queued
		return Receipt{}, &Fallback{Reason: ReasonPostFailed, Detail: err.Error(), cause: err}
	}
	wait := u.wait
	b.Release() // the caller's, taken
	return Receipt{Channel: ch.id, Written: total, Wait: wait}, nil
}

// byWindow reports whether a client-reads exposure of body is a memory
// window: where the device has them and the window reaches only the
// body, either because the device enforces a window's range or because
// the window covers its whole MR (a whole cached file; staging memory,
// whose slack is cleared). Otherwise (no windows, as on siw; part of a
// file on a device such as Linux 6.1's rxe) it is a per-operation MR, on
// an isolated channel. After Map.
func (e *Engine) byWindow(b *Body) bool {
	if !e.mw {
		return false
	}
	if sg, ok := b.oneFile(); ok {
		whole := sg.off == 0 && sg.n == sg.fe.size
		return whole || e.info.Caps&rdma.CapMWRangeChecked != 0
	}
	return true
}

// expose is client-reads: one contiguous registered region holding
// exactly the body, exposed read-only to this client's QP only.
func (lp *loop) expose(ch *channel, t *Target, b *Body, n Notify) (Receipt, error) {
	e := lp.e
	useMW := e.byWindow(b)
	var (
		base  rdma.MR // what the window binds over
		off   int
		bytes []byte
	)
	if sg, ok := b.oneFile(); ok {
		base, off = sg.fe.mr, int(sg.off)
		bytes = sg.fe.mem.Bytes()[sg.off : sg.off+sg.n]
	} else {
		for _, sg := range b.segs {
			if sg.file != nil { // mixed heap and file: one contiguous copy
				if err := b.flatten(); err != nil {
					return Receipt{}, fallback(ReasonRegisterFailed, err.Error())
				}
				break
			}
		}
		bytes = b.stage.bytes()[:b.used]
		if useMW {
			if err := e.pool.register(b.stage); err != nil {
				return Receipt{}, fallback(ReasonRegisterFailed, err.Error())
			}
			base = b.stage.mr
			if e.info.Caps&rdma.CapMWRangeChecked == 0 {
				b.clearSlack() // the window reaches the whole buffer
			}
		}
	}
	x := &exposure{op: t.Op, owner: t.Owner, ch: ch, body: b, done: n.Done}
	if !useMW {
		mr, err := ch.pd.Register(bytes, rdma.AccessRemoteRead) // the isolated channel's PD
		if err != nil {
			return Receipt{}, fallback(ReasonRegisterFailed, err.Error())
		}
		e.st.liveMRs.Add(1)
		x.mr = mr
		b.Retain() // the exposure's
		if err := lp.addExposure(x); err != nil {
			lp.discard(x)
			return Receipt{}, err
		}
		lp.grant(x)
		b.Release() // the caller's, taken
		return Receipt{Channel: ch.id, Exposure: Region{Addr: mr.Addr(), RKey: mr.RKey(), Len: int64(len(bytes))}}, nil
	}
	mw, err := ch.pd.AllocMW()
	if err != nil {
		return Receipt{}, fallback(ReasonRegisterFailed, "ibv_alloc_mw: "+err.Error())
	}
	e.st.liveMWs.Add(1)
	x.mw = mw
	// Done is withheld while the bind is posted: a channel that refuses
	// the post is retired by it, revoking x, and the caller hears of
	// that from this return alone.
	x.done = nil
	b.Retain() // the exposure's
	if err := lp.addExposure(x); err != nil {
		lp.discard(x)
		return Receipt{}, err
	}
	sge := rdma.SGEOf(base, off, len(bytes))
	u := &unit{kind: unitBind, exp: x, wait: true, notify: n}
	var rkey uint32
	err = lp.post(ch, u, 1, func(id uint64, _ bool) error {
		var err error
		rkey, err = ch.qp.BindMW(id, mw, base, sge, rdma.AccessRemoteRead, rdma.SendSignaled)
		return err
	})
	if err != nil {
		lp.revoke(x, err, nil)
		return Receipt{}, &Fallback{Reason: ReasonPostFailed, Detail: "ibv_bind_mw: " + err.Error(), cause: err}
	}
	lp.mu.Lock()
	live := ch.exps[x.op] == x
	if live {
		x.done = n.Done
	}
	ended := x.ended
	lp.mu.Unlock()
	if !live && n.Done != nil {
		n.Done(ended) // revoked between the post and now (its bind failed, its channel died)
	}
	e.st.byWindow.Add(1)
	b.Release() // the caller's, taken
	return Receipt{Channel: ch.id, Exposure: Region{Addr: sge.Addr, RKey: rkey, Len: int64(len(bytes))}, Wait: true}, nil
}

// Confirm ends client-reads exposures a client says it has read (the
// messenger's completion frame; HTTP clients send the read-done message
// on the queue pair instead): op on channel chanID of writer loop w, or
// with through every exposure of that channel up to op (a cumulative
// completion: the client's high-water mark), of connection owner only
// (Target.Owner). from is the address the confirmation came from: only
// the channel's own client may confirm (unless
// Config.AllowForeignEndpoints). It returns how many exposures ended.
//
// The channel is looked for in loop w first, then in every other loop,
// those DetachLoop is releasing included: channel ids are the engine's,
// and a connection's replies may have moved to another writer loop (its
// own left) since the exposure was made.
func (e *Engine) Confirm(w int, from netip.Addr, owner uint64, chanID uint32, op uint64, through bool) int {
	lp, ch := e.channelByID(w, chanID)
	if ch == nil || !e.Permit(ch.ep, from) {
		return 0
	}
	return lp.confirm(ch, owner, op, through)
}

// channelByID finds channel id, in loop w first.
func (e *Engine) channelByID(w int, id uint32) (*loop, *channel) {
	find := func(lp *loop) *channel {
		lp.mu.Lock()
		defer lp.mu.Unlock()
		return lp.byID[id]
	}
	if lp := e.loopAt(w); lp != nil {
		if ch := find(lp); ch != nil {
			return lp, ch
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, nil
	}
	loops := make([]*loop, 0, len(e.loops)+len(e.leaving))
	for _, lp := range e.loops {
		if lp != nil {
			loops = append(loops, lp)
		}
	}
	loops = append(loops, e.leaving...)
	e.mu.Unlock()
	for _, lp := range loops {
		if ch := find(lp); ch != nil {
			return lp, ch
		}
	}
	return nil, nil
}

// Attached reports whether writer loop w is attached (has its CQ),
// so a binding can fall back (ReasonNoRDMA) before collecting a body.
func (e *Engine) Attached(w int) bool { return e.loopAt(w) != nil }

// WillWait reports whether a Deliver of body to t will return a Receipt
// with Wait (after Map): a binding that must prepare for Ready, making a
// hold or keeping the body for a replacement reply, does so before
// Deliver, since Ready may run before Deliver returns.
func (e *Engine) WillWait(t *Target, body *Body) bool {
	switch {
	case body.total == 0:
		return false
	case t.Mode == ModeServerWrites:
		return e.cfg.Signal == SignalEveryReply
	case t.Mode == ModeClientReads:
		return e.byWindow(body)
	}
	return false
}
