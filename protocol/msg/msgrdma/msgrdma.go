// Package msgrdma is the messenger's RDMA binding on the server side:
// the reply hook's path for a request that asked for its reply's
// payload by RDMA (docs/messenger.md, "Replies by RDMA"), and the
// handling of completion frames, on a deliver.Engine that HTTP's binding
// (rdmahttp) may share.
//
// A transport calls two things:
//
//	// in its ReplyHook.SendReply, on the processor, for a reply without
//	// an error code to a request with msg.FlagRDMA:
//	b.SendReply(msgrdma.Conn{Writer: w, Remote: ip, ID: id}, m, r, send)
//
//	// in its reader, for each completion frame:
//	b.Complete(msgrdma.Conn{...}, &h)
//
// send is the transport's own way to queue a reply frame on the
// connection (a head, an inline payload or none, and the reply's Done to
// call once written), the same one its plain replies use: the binding
// decides the head and whether the payload goes inline, the transport
// keeps the connection's reply order and writes. send is called exactly
// once per SendReply: before SendReply returns, or later from the
// engine's completion in the writer loop (Ready) when the reply waits
// for one.
package msgrdma

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/stages"
)

// Binding is the messenger's RDMA reply path on an engine. It holds no
// state of its own; the engine owns everything RDMA.
type Binding struct {
	e *deliver.Engine
}

// New returns the binding on e. e's loops must be attached to the
// writer loops that write the messenger's replies (AttachLoop as each
// starts) and detached as each stops (DetachLoop), so a loop added later
// under a removed one's index can attach; the transport that runs the
// loops does both.
func New(e *deliver.Engine) *Binding { return &Binding{e: e} }

// Engine is the engine under the binding.
func (b *Binding) Engine() *deliver.Engine { return b.e }

// Conn is what the binding needs of the request's connection.
type Conn struct {
	// Writer is the index of the writer loop that writes the
	// connection's replies: the engine's channel from that loop carries
	// the transfer, so its completion comes back where the reply is
	// written.
	Writer int
	// Remote is the address the connection comes from: a descriptor's
	// zero endpoint address means it, and (unless the engine allows
	// foreign endpoints) the endpoint must be on it.
	Remote netip.Addr
	// ID names the connection among the server's, not 0: a cumulative
	// completion ends only its own connection's exposures.
	ID uint64
}

// Send queues a reply frame on the connection: h is its head, r.Payload
// the inline payload (nil when the payload went by RDMA), and r.Done is
// to be called once the frame is written or the connection is gone.
type Send func(h *msg.Header, r msg.Reply)

// SendReply delivers r's payload as m's RDMA descriptor asks, then sends
// the reply frame through send: by-rdma (its descriptor names the
// channel and what was written, or the exposure to read), or with the
// payload inline and the reason it did not go by RDMA. It runs on the
// caller's goroutine (dialing the client's endpoint and registering may
// block, so a processor, not a writer loop) and returns once the work is
// posted.
//
// m must carry msg.FlagRDMA and r no Code (an error reply has no
// descriptor: the transport frames it itself). r.Payload stays the
// transport's until r.Done, as for any reply: the binding copies it
// into the engine's staging memory, and sends it inline if the transfer
// fails while the reply is still held (ReasonRDMAFailed).
func (b *Binding) SendReply(c Conn, m *msg.Message, r msg.Reply, send Send) {
	req := &m.Header.RDMA
	p := &pending{b: b, c: c, req: m.Header, r: r, send: send}
	ep := req.Endpoint
	if !ep.Addr().IsValid() {
		ep = netip.AddrPortFrom(c.Remote, ep.Port())
	}
	e := b.e
	t := deliver.Target{Mode: req.Mode, Endpoint: ep, Op: req.Op, Owner: c.ID,
		Buffer: deliver.Region{Addr: req.Addr, RKey: req.RKey, Len: int64(min(req.Len, 1<<62))}}
	switch max, tooBig := e.Limit(&t); {
	case !e.Permit(ep, c.Remote):
		p.inline(deliver.ReasonForeignEndpoint)
		return
	case int64(len(r.Payload)) > max:
		p.inline(tooBig)
		return
	case !e.Attached(c.Writer):
		p.inline(deliver.ReasonNoRDMA)
		return
	}
	body := e.NewBody()
	if err := body.AddHeap(r.Payload); err != nil {
		body.Release()
		p.inline(deliver.ReasonRegisterFailed)
		return
	}
	var n deliver.Notify
	if e.WillWait(&t, body) {
		n.Ready = p.ready
	}
	receipt, err := e.Deliver(c.Writer, t, body, n)
	if err != nil {
		body.Release()
		var fb *deliver.Fallback
		reason := deliver.ReasonPostFailed
		if errors.As(err, &fb) {
			reason = fb.Reason
		}
		p.inline(reason)
		return
	}
	p.receipt = receipt
	if !receipt.Wait {
		p.sendByRDMA()
		return
	}
	p.arrive(haveReceipt)
}

// pending is one reply on its way: it meets the receipt (from Deliver,
// in SendReply) and the engine's Ready (from the writer loop), which may
// come in either order, and sends once it has both.
type pending struct {
	b       *Binding
	c       Conn
	req     msg.Header
	r       msg.Reply
	send    Send
	receipt deliver.Receipt
	err     error // Ready's
	have    atomic.Int32
}

const (
	haveReceipt int32 = 1 << iota
	haveReady
)

func (p *pending) ready(err error) {
	p.err = err
	p.arrive(haveReady)
}

// arrive records one half; the second to arrive sends.
func (p *pending) arrive(what int32) {
	if p.have.Or(what)|what != haveReceipt|haveReady {
		return
	}
	if p.err != nil {
		// The transfer failed while the reply was still held: the
		// payload, which the transport keeps until Done, goes inline.
		p.inline(deliver.ReasonRDMAFailed)
		return
	}
	p.sendByRDMA()
}

// sendByRDMA sends the reply that names where the payload went.
func (p *pending) sendByRDMA() {
	h := msg.Header{Type: msg.TypeReply, TxID: p.req.TxID, Flags: msg.FlagRDMA | msg.FlagByRDMA,
		RDMA: msg.Descriptor{Mode: p.req.RDMA.Mode, Op: p.req.RDMA.Op, Channel: p.receipt.Channel}}
	if p.req.RDMA.Mode == deliver.ModeServerWrites {
		h.RDMA.Len = uint64(p.receipt.Written)
	} else {
		x := p.receipt.Exposure
		h.RDMA.Addr, h.RDMA.RKey, h.RDMA.Len = x.Addr, x.RKey, uint64(x.Len)
	}
	p.send(&h, msg.Reply{Done: p.r.Done})
}

// inline sends the payload in the reply, saying why it did not go by
// RDMA.
func (p *pending) inline(why deliver.Reason) {
	p.b.e.CountFallback()
	h := msg.Header{Type: msg.TypeReply, TxID: p.req.TxID, Flags: msg.FlagRDMA, Length: uint32(len(p.r.Payload)),
		RDMA: msg.Descriptor{Mode: p.req.RDMA.Mode, Op: p.req.RDMA.Op, Reason: why}}
	p.send(&h, p.r)
}

// Complete handles a completion frame: the client has read the
// client-reads operation h names (or, cumulative, every one of its
// connection's operations on that channel up to it), so the engine
// revokes those exposures. It returns how many ended; a completion for
// an exposure that is gone (timed out, its channel died) ends none and
// is no error.
func (b *Binding) Complete(c Conn, h *msg.Header) int {
	return b.e.Confirm(c.Writer, c.Remote, c.ID, h.RDMA.Channel, h.RDMA.Op, h.Flags.Has(msg.FlagCumulative))
}

// Stages returns the binding as msg.Transport's RDMA path, for the
// messenger served on Quartet's stages (runtime.Config.MsgRDMA): a
// connection's replies go through the engine's loop of the writer loop
// that writes them, so the engine's loops must be attached to the writer
// loops (rdmahttp's module attaches the engine it owns).
func (b *Binding) Stages() msg.RDMA { return stagesPath{b} }

// stagesPath adapts the binding to msg.RDMA.
type stagesPath struct{ b *Binding }

func stagesConn(c *stages.Conn) Conn {
	return Conn{Writer: c.Writer, Remote: c.Remote.Addr().Unmap(), ID: c.ID}
}

func (p stagesPath) SendReply(c *stages.Conn, m *msg.Message, r msg.Reply, send func(h *msg.Header, r msg.Reply)) {
	// The channel and the exposures the client confirms later live in
	// the engine loop of the connection's writer loop: keep it there.
	c.PinWriter()
	p.b.SendReply(stagesConn(c), m, r, send)
}

func (p stagesPath) Complete(c *stages.Conn, h *msg.Header) { p.b.Complete(stagesConn(c), h) }
