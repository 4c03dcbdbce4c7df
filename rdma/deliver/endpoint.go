package deliver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// DefaultOpTimeout bounds a client's wait for one RDMA operation (the
// written message, a Read, the server's connection named in a reply).
const DefaultOpTimeout = 10 * time.Second

// ErrLost is returned when an RDMA operation was lost: no written
// message in time, a failed Read, or the channel failed first. RDMA
// operations are not reliable end to end; the requester asks again with
// a new operation id (or without RDMA).
var ErrLost = errors.New("deliver: RDMA operation lost")

// EndpointConfig configures an Endpoint.
type EndpointConfig struct {
	// Provider opens the client's device; required.
	Provider rdma.Provider
	// Addr is the endpoint, "ip:port" (port 0 picks one; "" means
	// 127.0.0.1:0). The IP must be one the server can reach and, unless
	// the server allows foreign endpoints, the one the client's requests
	// come from.
	Addr string
	// OpTimeout bounds each wait for an operation; then it counts as
	// lost. Default DefaultOpTimeout.
	OpTimeout time.Duration
}

// Endpoint is the client side of RDMA delivery, protocol-neutral: an
// RDMA listener the servers dial (one QP per server writer loop, plus
// an isolated one where the server exposes per-operation MRs), its
// device, PD and CQ, and the routing of what arrives: written messages
// and Read completions to the operation waiting for them. It owns two
// goroutines (accept and completions) and every Buffer it made; Close
// releases all of it. Its methods are safe for concurrent use, Close
// included: the waits it cuts short return ErrEndpointClosed, and it
// releases nothing before the calls using the QPs, the PD or a buffer
// have left.
//
// Operation ids are the endpoint's (NextOp): one counter, however many
// protocol connections share the endpoint, so a written message names
// one operation.
type Endpoint struct {
	cfg EndpointConfig
	dev rdma.Device
	pd  rdma.PD
	cq  rdma.CQ
	ln  rdma.Listener
	ep  netip.AddrPort

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextOp atomic.Uint64

	mu sync.Mutex
	// closed is set by Close; ops counts the calls on the endpoint's QPs,
	// PD and buffers (Read, NewBuffer, Buffer.Close), which enter only
	// while it is not: Close waits for them before it releases anything.
	closed  bool
	ops     sync.WaitGroup
	chans   map[uint32]*clientChan
	byIdx   []*clientChan
	waits   map[uint64]*Wait
	bufs    map[*Buffer]struct{}
	changed chan struct{} // closed and replaced when a channel arrives
	written chan struct{} // a token per written message awaited
}

// clientChan is one QP a server dialed to this endpoint.
type clientChan struct {
	id   uint32
	idx  int
	qp   rdma.QP
	mem  *rdma.Memory
	mr   rdma.MR
	next int           // next send slot; guarded by Endpoint.mu
	down chan struct{} // closed when the channel fails
	dead atomic.Bool
}

func (ch *clientChan) fail() {
	if ch.dead.CompareAndSwap(false, true) {
		close(ch.down)
	}
}

// NewEndpoint opens the device that owns cfg.Addr's IP and listens.
func NewEndpoint(cfg EndpointConfig) (_ *Endpoint, err error) {
	if cfg.Provider == nil {
		return nil, errors.New("deliver: EndpointConfig.Provider is nil")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	ap, err := netip.ParseAddrPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("deliver: endpoint address: %w", err)
	}
	e := &Endpoint{cfg: cfg, chans: map[uint32]*clientChan{}, waits: map[uint64]*Wait{},
		bufs: map[*Buffer]struct{}{}, changed: make(chan struct{}), written: make(chan struct{}, MaxWrittenInFlight)}
	defer func() {
		if err != nil {
			e.release()
		}
	}()
	if e.dev, err = cfg.Provider.OpenByAddr(ap.Addr()); err != nil {
		return nil, fmt.Errorf("deliver: opening device for %s: %w", ap.Addr(), err)
	}
	if e.pd, err = e.dev.AllocPD(); err != nil {
		return nil, fmt.Errorf("deliver: ibv_alloc_pd: %w", err)
	}
	if e.cq, err = e.dev.CreateCQ(cqDepth); err != nil {
		return nil, fmt.Errorf("deliver: ibv_create_cq: %w", err)
	}
	if e.ln, err = e.dev.Listen(cfg.Addr, 64); err != nil {
		return nil, fmt.Errorf("deliver: rdma_listen %s: %w", cfg.Addr, err)
	}
	if e.ep, err = netip.ParseAddrPort(e.ln.Addr().String()); err != nil {
		return nil, err
	}
	waiter, err := rdma.NewWaiter(e.cq)
	if err != nil {
		return nil, err
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(2)
	go e.acceptLoop()
	go e.completionLoop(waiter)
	return e, nil
}

// Addr is the endpoint the client announces.
func (e *Endpoint) Addr() netip.AddrPort { return e.ep }

// OpTimeout is the configured wait for one operation.
func (e *Endpoint) OpTimeout() time.Duration { return e.cfg.OpTimeout }

// NextOp returns a new operation id, greater than every earlier one.
func (e *Endpoint) NextOp() uint64 { return e.nextOp.Add(1) }

// ErrEndpointClosed is what calls on a closed Endpoint return, and
// what the waits it cut short return.
var ErrEndpointClosed = fmt.Errorf("%w: deliver endpoint closed", rdma.ErrClosed)

// enter starts a call that uses the endpoint's RDMA objects; end it with
// e.ops.Done.
func (e *Endpoint) enter() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrEndpointClosed
	}
	e.ops.Add(1)
	return nil
}

// Close stops the goroutines, ends every wait with ErrEndpointClosed,
// waits for the calls under way, and releases every RDMA object, the
// buffers included. A second Close returns nil.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	err := e.ln.Close()
	e.wg.Wait()
	e.ops.Wait()
	return errors.Join(err, e.release())
}

// release frees what NewEndpoint built, in reverse.
func (e *Endpoint) release() error {
	var errs []error
	for _, ch := range e.byIdx {
		errs = append(errs, ch.qp.Close(), ch.mr.Close(), ch.mem.Free())
	}
	e.byIdx = nil
	e.mu.Lock()
	bufs := e.bufs
	e.bufs = nil
	e.mu.Unlock()
	for b := range bufs {
		errs = append(errs, b.free())
	}
	if e.ln != nil {
		errs = append(errs, e.ln.Close())
	}
	if e.cq != nil {
		errs = append(errs, e.cq.Close())
	}
	if e.pd != nil {
		errs = append(errs, e.pd.Close())
	}
	if e.dev != nil {
		errs = append(errs, e.dev.Close())
	}
	return errors.Join(errs...)
}

// Buffer is registered memory a server may write into (server-writes)
// or the client reads into (client-reads). It belongs to whoever made it
// with NewBuffer until Close (or the endpoint's Close).
type Buffer struct {
	e   *Endpoint
	mem *rdma.Memory
	mr  rdma.MR
}

// NewBuffer registers n bytes, locally and remotely writable.
func (e *Endpoint) NewBuffer(n int) (*Buffer, error) {
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.ops.Done()
	mem, err := rdma.Alloc(n)
	if err != nil {
		return nil, err
	}
	mr, err := e.pd.Register(mem.Bytes(), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	if err != nil {
		mem.Free()
		return nil, fmt.Errorf("deliver: ibv_reg_mr: %w", err)
	}
	b := &Buffer{e: e, mem: mem, mr: mr}
	e.mu.Lock()
	e.bufs[b] = struct{}{}
	e.mu.Unlock()
	return b, nil
}

// ErrBufferClosed is what a use of a Buffer that is closed (its own
// Close, or its endpoint's) reports.
var ErrBufferClosed = fmt.Errorf("%w: deliver buffer closed", rdma.ErrClosed)

// Bytes is the buffer's memory; it dies with Close (the buffer's or the
// endpoint's), and is nil once either has begun: a caller that races a
// Close gets nil, not memory about to be unmapped, or being.
func (b *Buffer) Bytes() []byte {
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	if !b.openLocked() {
		return nil
	}
	return b.mem.Bytes()
}

// Len is the buffer's size; 0 once it is closed.
func (b *Buffer) Len() int { return len(b.Bytes()) }

// Region is what a server-writes request names: the whole buffer; the
// zero Region once it is closed.
func (b *Buffer) Region() Region {
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	if !b.openLocked() {
		return Region{}
	}
	return Region{Addr: b.mr.Addr(), RKey: b.mr.RKey(), Len: int64(b.mem.Len())}
}

// openLocked says whether b is still its endpoint's: Close (the
// buffer's, or the endpoint's release) takes it out of the endpoint's
// set, under the endpoint's mutex (held here), before it frees anything.
func (b *Buffer) openLocked() bool {
	_, ok := b.e.bufs[b]
	return ok
}

// Close deregisters and frees the buffer. No operation may be using it.
// After the endpoint's Close it does nothing: that released the buffer.
func (b *Buffer) Close() error {
	if err := b.e.enter(); err != nil {
		return nil
	}
	defer b.e.ops.Done()
	b.e.mu.Lock()
	_, mine := b.e.bufs[b]
	delete(b.e.bufs, b)
	b.e.mu.Unlock()
	if !mine {
		return nil
	}
	return b.free()
}

func (b *Buffer) free() error {
	return errors.Join(b.mr.Close(), b.mem.Free())
}

// acceptLoop accepts the servers' connections, each with its receives
// posted before the connection is up.
func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		req, err := e.ln.Accept(e.ctx)
		if err != nil {
			return
		}
		id, ok := parsePriv(req.PrivateData())
		if !ok {
			_ = req.Reject(nil)
			continue
		}
		ch := &clientChan{id: id, down: make(chan struct{})}
		if err := e.accept(req, ch); err != nil {
			continue
		}
		e.mu.Lock()
		if old := e.chans[id]; old != nil {
			old.fail()
		}
		e.chans[id] = ch
		close(e.changed)
		e.changed = make(chan struct{})
		e.mu.Unlock()
	}
}

func (e *Endpoint) accept(req rdma.ConnRequest, ch *clientChan) (err error) {
	if ch.mem, err = rdma.Alloc(msgArea(clientRecvSlots, clientSendSlots)); err != nil {
		_ = req.Reject(nil)
		return err
	}
	if ch.mr, err = e.pd.Register(ch.mem.Bytes(), rdma.AccessLocalWrite); err != nil {
		ch.mem.Free()
		_ = req.Reject(nil)
		return err
	}
	e.mu.Lock()
	ch.idx = len(e.byIdx)
	e.byIdx = append(e.byIdx, ch) // owned from here: released by Close
	e.mu.Unlock()
	var sgl [1]rdma.SGE
	qp, err := req.Accept(e.ctx, rdma.QPConfig{
		PD: e.pd, SendCQ: e.cq, RecvCQ: e.cq,
		MaxSendWR: clientSendSlots, MaxRecvWR: clientRecvSlots, MaxInline: msgLen,
		InitiatorDepth: 16,
		Prepare: func(qp rdma.QP) error {
			// The server may send the moment the connection is up, before
			// Accept returns: route must find the QP already.
			e.mu.Lock()
			ch.qp = qp
			e.mu.Unlock()
			for i := 0; i < clientRecvSlots; i++ {
				sgl[0] = rdma.SGEOf(ch.mr, i*msgLen, msgLen)
				if err := qp.PostRecv(recvID(uint32(ch.idx), i), sgl[:]); err != nil {
					return err
				}
			}
			return nil
		},
	}, nil)
	if err != nil {
		e.mu.Lock()
		e.byIdx = e.byIdx[:ch.idx]
		e.mu.Unlock()
		ch.mr.Close()
		ch.mem.Free()
		return err
	}
	e.mu.Lock()
	ch.qp = qp
	e.mu.Unlock()
	return nil
}

// completionLoop routes completions: written messages and Read
// completions to the operation waiting for them.
func (e *Endpoint) completionLoop(w *rdma.Waiter) {
	defer e.wg.Done()
	defer w.Close()
	wcs := make([]rdma.Completion, 32)
	for {
		n, err := w.Wait(e.ctx, wcs)
		if err != nil {
			return
		}
		for i := range wcs[:n] {
			e.route(&wcs[i])
		}
	}
}

// Work-request ids of the endpoint: Reads carry tagRead|op, read-done
// Sends tagDone|op, receives recvID(channel index, slot).
const (
	tagRead uint64 = 1 << 62
	tagDone uint64 = 1 << 61
	opMask         = tagDone - 1
)

func (e *Endpoint) route(wc *rdma.Completion) {
	switch {
	case wc.WRID&tagRecv != 0:
		idx, slot := splitRecvID(wc.WRID)
		e.mu.Lock()
		var ch *clientChan
		var qp rdma.QP
		if int(idx) < len(e.byIdx) {
			ch = e.byIdx[idx]
			qp = ch.qp
		}
		e.mu.Unlock()
		if ch == nil || qp == nil {
			return
		}
		if wc.Status != rdma.StatusSuccess {
			// The QP failed: every operation still waiting on it is lost,
			// and nothing more will arrive in order behind it.
			ch.fail()
			return
		}
		kind, op, ok := parseMsg(ch.mem.Bytes()[slot*msgLen:])
		// The slot goes back before anyone hears of the message: a request
		// that completes on it may be followed at once by another, whose
		// message must find a receive (see MaxWrittenInFlight).
		sgl := [1]rdma.SGE{rdma.SGEOf(ch.mr, slot*msgLen, msgLen)}
		if qp.PostRecv(wc.WRID, sgl[:]) != nil {
			ch.fail()
		}
		if ok && wc.Bytes == msgLen && kind == msgWritten {
			e.deliver(op, rdma.StatusSuccess)
		}
	case wc.WRID&tagRead != 0:
		e.deliver(wc.WRID&opMask, wc.Status)
	}
}

func (e *Endpoint) deliver(op uint64, st rdma.Status) {
	e.mu.Lock()
	w := e.waits[op]
	e.mu.Unlock()
	if w != nil {
		select {
		case w.c <- st:
		default:
		}
	}
}

// Wait is one operation's wait for its written message (or its Read's
// completion). Make it with Expect before the request that names the
// operation goes out (the message may arrive before the reply), and end
// it with Cancel.
type Wait struct {
	e      *Endpoint
	op     uint64
	c      chan rdma.Status
	credit bool // holds one of the endpoint's MaxWrittenInFlight (guarded by Endpoint.mu)
}

// Expect reserves a wait for one written message. At most
// MaxWrittenInFlight may be reserved at once (the servers may send no
// more messages than the endpoint has receives posted); Expect blocks
// until one is cancelled, or ctx ends. Name the operation with For
// before the request that asks for it goes out (the message may arrive
// before the reply), and end the wait with Cancel once the message came
// or can no longer come.
func (e *Endpoint) Expect(ctx context.Context) (*Wait, error) {
	if e.ctx.Err() != nil {
		return nil, ErrEndpointClosed
	}
	select {
	case e.written <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.ctx.Done():
		return nil, ErrEndpointClosed
	}
	return &Wait{e: e, c: make(chan rdma.Status, 1), credit: true}, nil
}

// For names the operation w waits for.
func (w *Wait) For(op uint64) {
	w.op = op
	w.e.mu.Lock()
	w.e.waits[op] = w
	w.e.mu.Unlock()
}

// expect starts waiting for op's Read.
func (e *Endpoint) expect(op uint64) *Wait {
	w := &Wait{e: e, c: make(chan rdma.Status, 1)}
	w.For(op)
	return w
}

// Cancel stops waiting and gives the reservation back; later calls do
// nothing.
func (w *Wait) Cancel() {
	w.e.mu.Lock()
	if w.e.waits[w.op] == w {
		delete(w.e.waits, w.op)
	}
	credit := w.credit
	w.credit = false
	w.e.mu.Unlock()
	if credit {
		<-w.e.written
	}
}

// Await waits at most the operation timeout for the operation: nil once
// its written message arrived (the bytes are in place: RC ordering put
// them there first) or its Read completed. It returns an error matching
// ErrLost when the Read failed, when chanID's QP (the one the reply
// named; 0: any) failed before the message came, or when nothing came
// in time.
func (w *Wait) Await(ctx context.Context, chanID uint32) error {
	t := time.NewTimer(w.e.cfg.OpTimeout)
	defer t.Stop()
	var down chan struct{}
	if chanID != 0 {
		ch, err := w.e.channel(ctx, chanID, t.C)
		if err != nil {
			return err
		}
		down = ch.down
	}
	select {
	case st := <-w.c:
		return statusErr(st)
	case <-down:
		// A message that arrived before the failure still counts.
		select {
		case st := <-w.c:
			return statusErr(st)
		default:
		}
		return fmt.Errorf("%w: channel %d failed", ErrLost, chanID)
	case <-t.C:
		return fmt.Errorf("%w: no completion in %v", ErrLost, w.e.cfg.OpTimeout)
	case <-ctx.Done():
		return ctx.Err()
	case <-w.e.ctx.Done():
		return ErrEndpointClosed
	}
}

func statusErr(st rdma.Status) error {
	if st != rdma.StatusSuccess {
		return fmt.Errorf("%w: %s", ErrLost, st)
	}
	return nil
}

// channel waits (until expired) for the QP the server names: its
// connection may be accepted a moment after the reply arrives.
func (e *Endpoint) channel(ctx context.Context, id uint32, expired <-chan time.Time) (*clientChan, error) {
	for {
		e.mu.Lock()
		ch, changed := e.chans[id], e.changed
		e.mu.Unlock()
		if ch != nil {
			return ch, nil
		}
		select {
		case <-changed:
		case <-expired:
			return nil, fmt.Errorf("%w: no RDMA connection with channel id %d", ErrLost, id)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-e.ctx.Done():
			return nil, ErrEndpointClosed
		}
	}
}

// Read is client-reads: an RDMA Read of rg into the start of into, on
// the QP the server named (chanID), waited for at most the operation
// timeout. With readDone it then sends the read-done message on that QP
// (HTTP's confirmation; the messenger confirms with a completion frame
// instead). A failed Read moves the QP to ERROR (the server retires its
// side). Errors match ErrLost.
func (e *Endpoint) Read(ctx context.Context, chanID uint32, op uint64, rg Region, into *Buffer, readDone bool) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.ops.Done()
	n := into.Len()
	if n == 0 {
		return ErrBufferClosed // a Buffer is never empty: closed
	}
	if rg.Len > int64(n) {
		return fmt.Errorf("deliver: %d bytes to read into a %d-byte buffer", rg.Len, n)
	}
	t := time.NewTimer(e.cfg.OpTimeout)
	defer t.Stop()
	ch, err := e.channel(ctx, chanID, t.C)
	if err != nil {
		return err
	}
	w := e.expect(op)
	defer w.Cancel()
	sgl := [1]rdma.SGE{rdma.SGEOf(into.mr, 0, int(rg.Len))}
	if err := ch.qp.PostRead(tagRead|op, sgl[:], rg.Addr, rg.RKey, rdma.SendSignaled); err != nil {
		return fmt.Errorf("%w: ibv_post_send (read): %w", ErrLost, err)
	}
	if err := w.Await(ctx, chanID); err != nil {
		return err
	}
	if readDone {
		// A failed post leaves the exposure to the server's timer; the
		// bytes are here either way.
		_ = e.sendReadDone(ch, op)
	}
	return nil
}

// Decline tells the server, on the QP it named (chanID), that op's
// client-reads exposure will not be read (HTTP's read-done message
// without a Read): a client whose buffer cannot hold the body, say. The
// server revokes the exposure at once instead of at its ExposureTimeout.
// Errors match ErrLost; the exposure then waits for the server's timer.
func (e *Endpoint) Decline(ctx context.Context, chanID uint32, op uint64) error {
	if err := e.enter(); err != nil {
		return err
	}
	defer e.ops.Done()
	t := time.NewTimer(e.cfg.OpTimeout)
	defer t.Stop()
	ch, err := e.channel(ctx, chanID, t.C)
	if err != nil {
		return err
	}
	return e.sendReadDone(ch, op)
}

// sendReadDone posts op's read-done message on ch.
func (e *Endpoint) sendReadDone(ch *clientChan, op uint64) error {
	e.mu.Lock()
	slot := clientRecvSlots + ch.next
	ch.next = (ch.next + 1) % clientSendSlots
	e.mu.Unlock()
	putMsg(ch.mem.Bytes()[slot*msgLen:], msgReadDone, op)
	sgl := [1]rdma.SGE{rdma.SGEOf(ch.mr, slot*msgLen, msgLen)}
	if err := ch.qp.PostSend(tagDone|op, sgl[:], rdma.SendInline); err != nil {
		return fmt.Errorf("%w: ibv_post_send (read-done): %w", ErrLost, err)
	}
	return nil
}

// LocalAddrFor returns the local IP this host uses to reach host (no
// packet is sent: a UDP socket is only connected): the address a client
// endpoint listens on so that the server there can dial it back.
func LocalAddrFor(host string) (netip.Addr, error) {
	conn, err := net.Dial("udp", net.JoinHostPort(host, "9"))
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	ap, err := netip.ParseAddrPort(conn.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	return ap.Addr().Unmap(), nil
}
