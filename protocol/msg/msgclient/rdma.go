package msgclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// DefaultRDMARetries is how many times a lost RDMA operation is asked
// for again before the request goes without RDMA.
const DefaultRDMARetries = 2

// Errors of requests with Deliver.
var (
	// ErrNoEndpoint is returned for a Request with Deliver on a Client
	// without Config.Endpoint, or without Into.
	ErrNoEndpoint = errors.New("quartet: msg: RDMA delivery needs Config.Endpoint and Request.Into")

	// ErrIntoTooSmall is returned when a client-reads reply exposes more
	// bytes than Request.Into holds. The exposure is confirmed unread, so
	// the server frees it; the request is not retried.
	ErrIntoTooSmall = errors.New("quartet: msg: reply exposes more than Request.Into holds")
)

// doRDMA sends req asking for its reply's payload by RDMA, and asks
// again, with a new operation id, when the operation is lost (RDS: the
// requester detects the loss); after RDMARetries losses it asks once
// more without RDMA.
func (c *Client) doRDMA(ctx context.Context, req *Request) (Reply, error) {
	if c.cfg.Endpoint == nil || req.Into == nil {
		return Reply{}, ErrNoEndpoint
	}
	if req.Into.Len() == 0 {
		return Reply{}, fmt.Errorf("%w: Request.Into", deliver.ErrBufferClosed)
	}
	if req.Deliver != deliver.ModeServerWrites && req.Deliver != deliver.ModeClientReads {
		return Reply{}, fmt.Errorf("%w: mode %s", msg.ErrDescriptor, req.Deliver)
	}
	retries := c.cfg.RDMARetries
	switch {
	case retries == 0:
		retries = DefaultRDMARetries
	case retries < 0:
		retries = 0
	}
	for attempt := 1; attempt <= retries+1; attempt++ {
		r, err := c.tryRDMA(ctx, req)
		r.Attempts = attempt
		if !errors.Is(err, deliver.ErrLost) {
			return r, err
		}
	}
	r, err := c.Do(ctx, &Request{Payload: req.Payload, Order: req.Order})
	r.Attempts = retries + 2
	return r, err
}

// tryRDMA is one attempt.
func (c *Client) tryRDMA(ctx context.Context, req *Request) (Reply, error) {
	if uint64(len(req.Payload)) > math.MaxUint32 {
		return Reply{}, fmt.Errorf("%w: %d bytes, the wire's limit is %d", msg.ErrPayloadTooLarge, len(req.Payload), uint32(math.MaxUint32))
	}
	ep := c.cfg.Endpoint
	cl := &call{
		ctx:      ctx,
		done:     make(chan struct{}),
		payload:  req.Payload,
		delivery: true,
		h: msg.Header{Type: msg.TypeRequest, TxID: 1, Flags: msg.FlagRDMA, Length: uint32(len(req.Payload)),
			RDMA: msg.Descriptor{Mode: req.Deliver, Op: 1, Endpoint: ep.Addr()}},
	}
	if req.Order == Unordered || req.Order == OrderDefault && !c.cfg.Ordered {
		cl.h.Flags |= msg.FlagUnordered
	}
	if req.Deliver == deliver.ModeServerWrites {
		rg := req.Into.Region()
		cl.h.RDMA.Addr, cl.h.RDMA.RKey, cl.h.RDMA.Len = rg.Addr, rg.RKey, uint64(rg.Len)
		w, err := ep.Expect(ctx) // a receive for the written message
		if err != nil {
			return Reply{}, err
		}
		cl.wait = w
	}
	var scratch [msg.MaxHeadSize]byte
	if _, err := msg.PutHead(scratch[:], &cl.h); err != nil {
		c.cleanup(cl, nil)
		return Reply{}, err
	}
	r, err := c.do(ctx, cl)
	if err != nil {
		if cl.state.Load() != stateAbandoned { // else the reader cleans up
			c.cleanup(cl, nil)
		}
		return r, err
	}
	d := &r.RDMA
	if !r.ByRDMA() || d.Len == 0 {
		// Inline (a fallback: r.RDMA.Reason says why), or nothing to move.
		c.cleanup(cl, nil)
		return r, nil
	}
	op := cl.op.Load()
	if req.Deliver == deliver.ModeServerWrites {
		// The written message follows the Writes on the same queue pair:
		// once it is here, so are the bytes (RC ordering). The reply alone
		// proves nothing.
		err = cl.wait.Await(ctx, d.Channel)
		c.cleanup(cl, nil)
		if err != nil {
			return r, err
		}
		return payloadIn(r, req.Into, d.Len)
	}
	n := d.Len
	if into := req.Into.Len(); n > uint64(into) {
		c.cleanup(cl, &r.RDMA)
		if into == 0 {
			return r, fmt.Errorf("%w: Request.Into closed before the payload was read", deliver.ErrBufferClosed)
		}
		return r, fmt.Errorf("%w: %d bytes, Into holds %d", ErrIntoTooSmall, n, into)
	}
	err = ep.Read(ctx, d.Channel, op, deliver.Region{Addr: d.Addr, RKey: d.RKey, Len: int64(n)}, req.Into, false)
	c.cleanup(cl, &r.RDMA) // confirmed either way: read, or given up
	if err != nil {
		return r, err
	}
	return payloadIn(r, req.Into, n)
}

// payloadIn is r with its payload, the first n bytes delivered into into:
// an error, not a panic, when into was closed (by its Close, or its
// endpoint's) while the request was out, which leaves no memory to alias.
func payloadIn(r Reply, into *deliver.Buffer, n uint64) (Reply, error) {
	b := into.Bytes()
	if uint64(len(b)) < n {
		return r, fmt.Errorf("%w: Request.Into closed with the reply's payload in it", deliver.ErrBufferClosed)
	}
	r.Payload = b[:n]
	return r, nil
}

// numberOp gives an RDMA request its operation id as the writer writes
// it, so ids grow in wire order: the endpoint's when the client has one
// (one counter for every connection that shares it), else the
// connection's. A request with Deliver starts waiting for its written
// message now, since the message may arrive before the reply, and a
// client-reads one counts as unread until it is confirmed. Writer
// goroutine.
func (c *Client) numberOp(cl *call) {
	var op uint64
	if ep := c.cfg.Endpoint; ep != nil {
		op = ep.NextOp()
		c.lastOp.Store(op)
	} else {
		op = c.lastOp.Add(1)
	}
	cl.h.RDMA.Op = op
	cl.op.Store(op)
	if !cl.delivery {
		return
	}
	if cl.wait != nil {
		cl.wait.For(op)
	}
	if cl.h.RDMA.Mode == deliver.ModeClientReads {
		c.cmu.Lock()
		c.unread[op] = struct{}{}
		c.cmu.Unlock()
	}
}

// cleanup ends what a delivery call holds: the written message's wait
// goes back, and a client-reads operation leaves the unread set,
// confirmed to the server if d names an exposure (read, or given up) so
// it is revoked at once.
func (c *Client) cleanup(cl *call, d *msg.Descriptor) {
	if cl.wait != nil {
		cl.wait.Cancel()
	}
	op := cl.op.Load()
	if op == 0 || cl.h.RDMA.Mode != deliver.ModeClientReads {
		return
	}
	if d == nil || d.Len == 0 {
		c.cmu.Lock()
		delete(c.unread, op)
		c.cmu.Unlock()
		return
	}
	c.confirm(op, d.Channel)
}

// abandoned cleans up after a delivery call that Do gave up on once its
// frame was sent: the reply (h, or nil when the connection died first)
// arrives with nobody to read it. An exposure is confirmed unread, so
// the server frees it; a written message may still be on its way, so its
// wait is kept until it comes or times out. Reader goroutine.
func (c *Client) abandoned(cl *call, h *msg.Header) {
	if !cl.delivery {
		return
	}
	if h == nil || !h.Flags.Has(msg.FlagByRDMA) || h.RDMA.Len == 0 {
		c.cleanup(cl, nil)
		return
	}
	if cl.h.RDMA.Mode == deliver.ModeClientReads {
		// Not here: the reader must never wait for room in the write
		// queue (the writer may be waiting for the server, which may be
		// waiting for this reader).
		d := h.RDMA
		c.wg.Go(func() { c.cleanup(cl, &d) })
		return
	}
	ch := h.RDMA.Channel
	c.wg.Go(func() {
		_ = cl.wait.Await(c.life, ch)
		cl.wait.Cancel()
	})
}

// confirm tells the server that client-reads operation op, exposed on
// channel ch, is done with. When no lower operation of the connection
// is still unread, one cumulative completion for ch covers it and every
// other done by the time the writer writes the frame (RDS's barrier, from
// the client: "all ops up to N read"); completions already queued for ch
// absorb it. Otherwise op is confirmed alone, at once, so its exposure
// does not wait for a slower one.
func (c *Client) confirm(op uint64, ch uint32) {
	c.cmu.Lock()
	delete(c.unread, op)
	lowest := true
	for u := range c.unread {
		if u < op {
			lowest = false
			break
		}
	}
	if lowest && c.queued[ch] {
		c.cmu.Unlock()
		return
	}
	if lowest {
		c.queued[ch] = true
	}
	c.cmu.Unlock()
	cl := &call{ctx: context.Background(), done: make(chan struct{}), oneway: true,
		h: msg.Header{Type: msg.TypeCompletion, Flags: msg.FlagRDMA, RDMA: msg.Descriptor{Mode: deliver.ModeClientReads, Op: op, Channel: ch}}}
	if lowest {
		cl.h.Flags |= msg.FlagCumulative
		cl.fill = func(h *msg.Header) { h.RDMA.Op = c.highWater(ch) }
	}
	select {
	case c.queue <- cl:
	case <-c.failed: // the server revokes on its own when the connection goes
	}
}

// highWater is the op a cumulative completion for ch may name as the
// writer writes it: every operation below the lowest unread one, or
// every operation so far. Writer goroutine.
func (c *Client) highWater(ch uint32) uint64 {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.queued[ch] = false
	hw := c.lastOp.Load()
	for u := range c.unread {
		hw = min(hw, u-1)
	}
	return hw
}

// NewEndpoint opens an endpoint on p for replies by RDMA from the server
// at server (HOST:PORT, as Dial takes it). The server dials the endpoint
// at the address the client announces, so the endpoint listens on local
// when it is valid, else on the local address this host reaches the
// server from. opTimeout is deliver.EndpointConfig's (0: its default).
// The caller closes it after the Clients that use it.
func NewEndpoint(p rdma.Provider, server string, local netip.Addr, opTimeout time.Duration) (*deliver.Endpoint, error) {
	if !local.IsValid() {
		host, _, err := net.SplitHostPort(server)
		if err != nil {
			return nil, err
		}
		if local, err = deliver.LocalAddrFor(host); err != nil {
			return nil, fmt.Errorf("finding the local address towards %s: %w", host, err)
		}
	}
	return deliver.NewEndpoint(deliver.EndpointConfig{Provider: p, Addr: netip.AddrPortFrom(local, 0).String(), OpTimeout: opTimeout})
}
