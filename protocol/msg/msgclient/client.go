package msgclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/rdma/deliver"
)

// Defaults for Config's zero fields.
const (
	// DefaultMaxInFlight bounds the requests one connection carries at
	// once. The server answers each in its own time, so this is the
	// client's share of the server's processors and of its memory for
	// payloads in flight; past it, Do waits.
	DefaultMaxInFlight = 128
	// DefaultBufferSize is the size of the read and write buffers: small
	// frames are batched into one write and one read; payloads larger
	// than a buffer go straight between the socket and their own memory.
	DefaultBufferSize = 64 << 10
)

// Config sets up a Client; the zero value takes the defaults.
type Config struct {
	// Limits bound the replies the client reads: a reply whose payload is
	// over Limits.MaxPayload fails the connection (msg.ErrPayloadTooLarge).
	Limits msg.Limits
	// MaxInFlight bounds requests sent and not yet answered, calls that
	// gave up waiting included (their replies still come). Default
	// DefaultMaxInFlight.
	MaxInFlight int
	// Ordered asks for every reply in request order (no FlagUnordered),
	// unless a Request says otherwise. The default is unordered: a slow
	// request does not hold up the replies behind it.
	Ordered bool
	// BufferSize is the size of the read and write buffers, at least
	// msg.MaxHeadSize. Default DefaultBufferSize.
	BufferSize int
	// Endpoint, when set, is where servers deliver the payloads of the
	// replies a Request asks for by RDMA (Request.Deliver): the servers
	// dial it. Several Clients may share one; its owner closes it after
	// them. Operation ids then come from the endpoint, so they name one
	// operation however many connections share it.
	Endpoint *deliver.Endpoint
	// RDMARetries is how many times a request whose RDMA operation was
	// lost is sent again by RDMA, with a new operation id, before it is
	// sent once more without RDMA (the reply inline). 0 means
	// DefaultRDMARetries; negative, none.
	RDMARetries int
}

// Order is a request's choice of reply order.
type Order uint8

const (
	// OrderDefault follows Config.Ordered.
	OrderDefault Order = iota
	// Unordered lets the reply overtake, and be overtaken by, others
	// (FlagUnordered).
	Unordered
	// Ordered has the server send the reply after the replies to every
	// request sent before it on the connection.
	Ordered
)

// Request is one request.
type Request struct {
	// Payload is sent as the request's payload. It must not change until
	// Do returns.
	Payload []byte
	Order   Order
	// Deliver asks for the reply's payload by RDMA, in this mode, into
	// Into, through Config.Endpoint: server-writes names Into in the
	// request and the server writes into it; client-reads has the server
	// expose the payload, and the client reads it into Into and confirms.
	// Reply.Payload then aliases Into. A lost operation is asked for
	// again (Config.RDMARetries), so such a request may reach the
	// dispatcher more than once: use it for requests that may be
	// repeated (the echo dispatcher, reads).
	Deliver deliver.Mode
	// Into receives the payload delivered by RDMA; it must hold the
	// largest reply and is the request's until Do returns.
	Into *deliver.Buffer
	// RDMA, when set, asks for the reply's payload by RDMA and is sent as
	// the request's descriptor, except Op: the client numbers RDMA
	// requests itself, strictly increasing in the order they go on the
	// wire, and Reply.RDMA.Op says which id this one got. With RDMA the
	// client moves no data: the caller registers the buffer
	// (server-writes) or reads the exposure and calls Complete
	// (client-reads). Deliver does all of that instead.
	RDMA *msg.Descriptor
}

// Reply is a request's reply.
type Reply struct {
	TxID uint64
	// Flags are the reply's flags: msg.FlagRDMA when the request asked
	// for RDMA, with msg.FlagByRDMA when the payload went that way.
	Flags msg.Flags
	// RDMA is the server's descriptor when Flags has msg.FlagRDMA: where
	// the payload went (written length, or the exposure to read) or, on a
	// reply that carries the payload inline, the Reason.
	RDMA msg.Descriptor
	// Payload is the reply's payload, in memory of its own; for a
	// Request with Deliver whose payload came by RDMA, Request.Into's
	// first bytes; empty when it went by RDMA on a raw Request.RDMA.
	Payload []byte
	// Attempts is how many times a Request with Deliver was sent: more
	// than one when an RDMA operation was lost; the last one went without
	// RDMA when ByRDMA is false and Flags has no msg.FlagRDMA.
	Attempts int
}

// ByRDMA reports whether the payload was delivered by RDMA rather than
// in the reply.
func (r *Reply) ByRDMA() bool { return r.Flags.Has(msg.FlagByRDMA) }

// Errors. A failed connection fails every call in flight with an error
// that matches ErrConnection and, with errors.Is or errors.As, its
// cause: one of these, a msg frame error (the server sent a frame that
// breaks the format), a fatal *msg.Error from the server, or the
// network's error.
var (
	// ErrConnection is the class of every error that ended the
	// connection; Do returns it for the calls in flight and every call
	// after.
	ErrConnection = errors.New("quartet: msg: connection failed")

	// ErrClosed is returned by Do after Close, and for calls in flight
	// when Close is called.
	ErrClosed = errors.New("quartet: msg: client closed")

	// ErrUnknownTxID is the cause when the server replies to a
	// transaction id with no request in flight (never sent, or already
	// answered).
	ErrUnknownTxID = errors.New("quartet: msg: reply for a transaction id with no request in flight")

	// ErrServerClosed is the cause when the server closes the connection
	// without a connection error frame.
	ErrServerClosed = errors.New("quartet: msg: server closed the connection")

	// ErrReplyMismatch is the cause when a reply's RDMA descriptor does
	// not fit its request: a descriptor on a reply to a request that did
	// not ask for RDMA, none on one that did, another operation id or
	// mode, or more bytes written than the client's buffer holds.
	ErrReplyMismatch = errors.New("quartet: msg: reply does not match its request")

	// ErrCanceledMidFrame is the cause when a call's context ended while
	// its frame was being written: a frame cannot be taken back once
	// started, so the connection is closed instead.
	ErrCanceledMidFrame = errors.New("quartet: msg: request canceled while its frame was being written")
)

// Client is one messenger connection carrying many requests at once
// (a multiplexer; see the package comment for why not a pool). Its
// methods are safe for concurrent use.
type Client struct {
	conn   net.Conn
	cfg    Config
	slots  chan struct{}   // one token per request in flight
	queue  chan *call      // to the writer goroutine
	failed chan struct{}   // closed when the connection ends
	life   context.Context // canceled when the connection ends
	end    context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[uint64]*call // requests sent or queued, by txid
	nextTx  uint64
	err     error // why the connection ended; set before failed closes

	lastOp atomic.Uint64 // last RDMA op id written; the writer assigns them

	// Client-reads operations whose exposure is not yet read (or given
	// up): the client's high-water mark, for cumulative completions.
	cmu    sync.Mutex
	unread map[uint64]struct{}
	queued map[uint32]bool // channels with a cumulative completion queued

	// Writer goroutine only.
	bw   *bufio.Writer
	head [msg.MaxHeadSize]byte

	// Reader goroutine only.
	br     *bufio.Reader
	parser msg.Parser
	errBuf [2 + msg.MaxErrorMessage]byte
}

// Dial connects to a messenger server at addr (host:port, TCP).
func Dial(ctx context.Context, addr string, cfg Config) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return New(conn, cfg), nil
}

// New runs the protocol over conn, which the Client owns from now on.
func New(conn net.Conn, cfg Config) *Client {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	cfg.BufferSize = max(cfg.BufferSize, msg.MaxHeadSize)
	c := &Client{
		conn:    conn,
		cfg:     cfg,
		slots:   make(chan struct{}, cfg.MaxInFlight),
		queue:   make(chan *call, cfg.MaxInFlight),
		failed:  make(chan struct{}),
		pending: make(map[uint64]*call),
		bw:      bufio.NewWriterSize(conn, cfg.BufferSize),
		br:      bufio.NewReaderSize(conn, cfg.BufferSize),
		parser:  msg.NewParser(msg.RoleClient, cfg.Limits),
		unread:  map[uint64]struct{}{},
		queued:  map[uint32]bool{},
	}
	c.life, c.end = context.WithCancel(context.Background())
	c.wg.Add(2)
	go c.writeLoop()
	go c.readLoop()
	return c
}

// Call sends payload as an unordered request (or as Config.Ordered
// says) and returns the reply's payload.
func (c *Client) Call(ctx context.Context, payload []byte) ([]byte, error) {
	r, err := c.Do(ctx, &Request{Payload: payload})
	return r.Payload, err
}

// Do sends req and waits for its reply, ctx's end, or the connection's.
// A reply with an error frame returns a *msg.Error. When ctx ends first
// Do returns ctx.Err() at once, except while the request's frame is
// being written: the frame cannot be withdrawn half-sent, so the write
// is interrupted and the connection closed (ErrCanceledMidFrame for the
// other calls); a request already sent stays in flight (it holds its
// MaxInFlight slot) until its reply comes and is dropped.
func (c *Client) Do(ctx context.Context, req *Request) (Reply, error) {
	if req.Deliver != deliver.ModeOff {
		return c.doRDMA(ctx, req)
	}
	if uint64(len(req.Payload)) > math.MaxUint32 {
		return Reply{}, fmt.Errorf("%w: %d bytes, the wire's limit is %d", msg.ErrPayloadTooLarge, len(req.Payload), uint32(math.MaxUint32))
	}
	cl := &call{
		ctx:     ctx,
		done:    make(chan struct{}),
		payload: req.Payload,
		h:       msg.Header{Type: msg.TypeRequest, TxID: 1, Length: uint32(len(req.Payload))},
	}
	if req.Order == Unordered || req.Order == OrderDefault && !c.cfg.Ordered {
		cl.h.Flags |= msg.FlagUnordered
	}
	if req.RDMA != nil {
		cl.h.Flags |= msg.FlagRDMA
		cl.h.RDMA = *req.RDMA
		cl.h.RDMA.Op = 1 // the writer numbers it; 1 stands in to check the rest now
	}
	var scratch [msg.MaxHeadSize]byte
	if _, err := msg.PutHead(scratch[:], &cl.h); err != nil {
		return Reply{}, err
	}
	return c.do(ctx, cl)
}

// Complete tells the server that client-reads operations are done, so
// it can revoke their exposures: d names the operation (Mode
// client-reads, Op, and the Channel its reply named); with cumulative,
// every operation of this connection up to d.Op is done (RDS's barrier),
// so one completion can confirm a batch. It returns once the frame is
// written; a completion has no reply.
func (c *Client) Complete(ctx context.Context, d msg.Descriptor, cumulative bool) error {
	if last := c.lastOp.Load(); d.Op > last {
		return fmt.Errorf("%w: completion for op %d, last requested %d", msg.ErrOpID, d.Op, last)
	}
	cl := &call{ctx: ctx, done: make(chan struct{}), oneway: true,
		h: msg.Header{Type: msg.TypeCompletion, Flags: msg.FlagRDMA, RDMA: d}}
	if cumulative {
		cl.h.Flags |= msg.FlagCumulative
	}
	var scratch [msg.MaxHeadSize]byte
	if _, err := msg.PutHead(scratch[:], &cl.h); err != nil {
		return err
	}
	_, err := c.do(ctx, cl)
	return err
}

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection; calls in flight return ErrClosed. It
// waits for the client's goroutines to end.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

// A call's state. Only the transitions below happen, each by one CAS,
// so exactly one party ends a call:
//
//	queued   → writing (writer) → written (writer)
//	queued, writing, written → done (reader: the reply; anyone: failure)
//	queued   → canceled (Do: ctx ended before the writer took it)
//	written  → abandoned (Do: ctx ended; the reply will be dropped)
const (
	stateQueued uint32 = iota
	stateWriting
	stateWritten
	stateDone
	stateCanceled
	stateAbandoned
)

type call struct {
	ctx     context.Context
	h       msg.Header
	payload []byte
	oneway  bool          // a completion: no txid, no reply
	op      atomic.Uint64 // the RDMA op id the writer gave it, for the reader to check
	// A Request with Deliver: the written message's wait (server-writes),
	// and whether its op counts as unread until confirmed (client-reads).
	// After Do gave up on the call (abandoned), the reader cleans up.
	delivery bool
	wait     *deliver.Wait
	// fill, for a cumulative completion, sets its op as the writer writes
	// it, so one frame covers every read finished by then.
	fill func(h *msg.Header)

	// wmu is held by the writer while it writes this call's frame, so
	// Do, by taking it once before it returns, knows the writer is done
	// with payload.
	wmu   sync.Mutex
	state atomic.Uint32
	done  chan struct{} // closed on → done, after reply and err are set
	reply Reply
	err   error
}

// waitWriter returns once the writer is not writing cl's frame: it
// holds wmu for as long as it does.
func (cl *call) waitWriter() {
	cl.wmu.Lock()
	//lint:ignore SA2001 taking the lock is the wait; nothing is guarded here
	cl.wmu.Unlock()
}

// do queues cl and waits for its end.
func (c *Client) do(ctx context.Context, cl *call) (Reply, error) {
	if !cl.oneway {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return Reply{}, ctx.Err()
		case <-c.failed:
			return Reply{}, c.Err()
		}
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			<-c.slots
			return Reply{}, c.err
		}
		c.nextTx++
		cl.h.TxID = c.nextTx
		c.pending[cl.h.TxID] = cl
		c.mu.Unlock()
	}
	select {
	case c.queue <- cl: // room is reserved by the slot; completions may wait
	case <-ctx.Done():
		c.cancel(cl)
		return cl.reply, cl.err
	case <-c.failed:
		c.finish(cl, Reply{}, c.Err())
		<-cl.done
		return cl.reply, cl.err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.cancel(cl)
	}
	cl.waitWriter()
	return cl.reply, cl.err
}

// cancel ends cl because its context ended, in whatever state it is.
func (c *Client) cancel(cl *call) {
	for {
		switch cl.state.Load() {
		case stateQueued:
			if cl.state.CompareAndSwap(stateQueued, stateCanceled) {
				c.forget(cl)
				cl.err = cl.ctx.Err()
				return
			}
		case stateWriting:
			// The writer's interrupt (context.AfterFunc on cl.ctx) ends the
			// write; wait for it, then look again.
			cl.waitWriter()
		case stateWritten:
			if cl.state.CompareAndSwap(stateWritten, stateAbandoned) {
				cl.err = cl.ctx.Err()
				return
			}
		default: // done: the reply (or the failure) won the race
			<-cl.done
			return
		}
	}
}

// finish ends cl with a reply or an error unless it has ended already;
// false if it had (Do gave up on it, or it failed before).
func (c *Client) finish(cl *call, r Reply, err error) bool {
	for {
		s := cl.state.Load()
		if s == stateDone || s == stateCanceled || s == stateAbandoned {
			return false
		}
		if cl.state.CompareAndSwap(s, stateDone) {
			cl.reply, cl.err = r, err
			close(cl.done)
			return true
		}
	}
}

// forget drops a request that will get no reply from the pending set.
func (c *Client) forget(cl *call) {
	if cl.oneway {
		return
	}
	c.mu.Lock()
	if c.pending[cl.h.TxID] == cl {
		delete(c.pending, cl.h.TxID)
		<-c.slots
	}
	c.mu.Unlock()
}

// take removes the request a reply answers from the pending set.
func (c *Client) take(txid uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.pending[txid]
	if cl != nil {
		delete(c.pending, txid)
		<-c.slots
	}
	return cl
}

// fail ends the connection for err, once: every call in flight ends
// with err, and every later one too.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.failed)
	c.end()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.conn.Close()
	for _, cl := range pending {
		if !c.finish(cl, Reply{}, err) && cl.state.Load() == stateAbandoned {
			c.abandoned(cl, nil)
		}
	}
}

func connErr(cause error) error { return fmt.Errorf("%w: %w", ErrConnection, cause) }

// aLongTimeAgo is a write deadline in the past: setting it makes a
// blocked write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// writeLoop writes queued frames, as many as are queued at a time, then
// flushes: pipelined requests share write calls.
func (c *Client) writeLoop() {
	defer c.wg.Done()
	for {
		var cl *call
		select {
		case cl = <-c.queue:
		case <-c.failed:
			return
		}
		for cl != nil {
			if err := c.writeCall(cl); err != nil {
				c.fail(err)
				return
			}
			select {
			case cl = <-c.queue:
			default:
				cl = nil
			}
		}
		if err := c.bw.Flush(); err != nil {
			c.fail(connErr(err))
			return
		}
	}
}

// writeCall writes one call's frame into the write buffer.
func (c *Client) writeCall(cl *call) error {
	cl.wmu.Lock()
	defer cl.wmu.Unlock()
	if cl.ctx.Err() != nil {
		return nil // Do is canceling it; starting now would only be interrupted
	}
	if !cl.state.CompareAndSwap(stateQueued, stateWriting) {
		return nil
	}
	if cl.h.Type == msg.TypeRequest && cl.h.Flags.Has(msg.FlagRDMA) {
		c.numberOp(cl)
	}
	if cl.fill != nil {
		cl.fill(&cl.h)
	}
	n, err := msg.PutHead(c.head[:], &cl.h)
	if err != nil { // checked by Do; only a bug gets here
		c.finish(cl, Reply{}, err)
		c.forget(cl)
		return nil
	}
	var stop func() bool
	var fired chan struct{}
	if cl.ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(cl.ctx, func() {
			_ = c.conn.SetWriteDeadline(aLongTimeAgo)
			close(fired)
		})
	}
	_, err = c.bw.Write(c.head[:n])
	if err == nil {
		_, err = c.bw.Write(cl.payload)
	}
	if stop != nil && !stop() {
		<-fired
		if err == nil {
			err = c.conn.SetWriteDeadline(time.Time{})
		} else {
			// This call ends for its own reason; the others for the
			// connection's.
			c.finish(cl, Reply{}, cl.ctx.Err())
			err = ErrCanceledMidFrame
		}
	}
	cl.state.CompareAndSwap(stateWriting, stateWritten)
	if err != nil {
		return connErr(err)
	}
	if cl.oneway {
		c.finish(cl, Reply{}, nil)
	}
	return nil
}

// readLoop reads replies and ends their calls.
func (c *Client) readLoop() {
	defer c.wg.Done()
	for {
		var h msg.Header
		if err := c.parser.ReadHead(c.br, &h); err != nil {
			if errors.Is(err, io.EOF) {
				err = ErrServerClosed
			}
			c.fail(connErr(err))
			return
		}
		if h.Flags.Has(msg.FlagError) {
			if !c.readError(&h) {
				return
			}
			continue
		}
		cl := c.take(h.TxID)
		if cl == nil {
			c.fail(connErr(fmt.Errorf("%w: %d", ErrUnknownTxID, h.TxID)))
			return
		}
		if cl.state.Load() == stateAbandoned {
			if err := c.parser.SkipPayload(c.br); err != nil {
				c.fail(connErr(err))
				return
			}
			c.abandoned(cl, &h)
			continue
		}
		payload, err := c.parser.ReadPayload(c.br, nil)
		if err == nil {
			err = cl.matches(&h)
		}
		if err != nil {
			err = connErr(err)
			c.finish(cl, Reply{}, err) // taken from pending: fail would miss it
			c.fail(err)
			return
		}
		if !c.finish(cl, Reply{TxID: h.TxID, Flags: h.Flags, RDMA: h.RDMA, Payload: payload}, nil) {
			c.abandoned(cl, &h) // Do gave up while the payload was read
		}
	}
}

// matches checks a reply's RDMA descriptor against its request.
func (cl *call) matches(h *msg.Header) error {
	asked, got := cl.h.Flags.Has(msg.FlagRDMA), h.Flags.Has(msg.FlagRDMA)
	switch {
	case !asked && !got:
		return nil
	case !asked:
		return fmt.Errorf("%w: txid %d: an RDMA descriptor on a reply to a plain request", ErrReplyMismatch, h.TxID)
	case !got:
		return fmt.Errorf("%w: txid %d: no RDMA descriptor on the reply to an RDMA request", ErrReplyMismatch, h.TxID)
	case h.RDMA.Op != cl.op.Load() || h.RDMA.Mode != cl.h.RDMA.Mode:
		return fmt.Errorf("%w: txid %d: reply for %s op %d, request was %s op %d", ErrReplyMismatch, h.TxID, h.RDMA.Mode, h.RDMA.Op, cl.h.RDMA.Mode, cl.op.Load())
	case h.Flags.Has(msg.FlagByRDMA) && h.RDMA.Mode == deliver.ModeServerWrites && h.RDMA.Len > cl.h.RDMA.Len:
		return fmt.Errorf("%w: txid %d: %d bytes written into a %d-byte buffer", ErrReplyMismatch, h.TxID, h.RDMA.Len, cl.h.RDMA.Len)
	}
	return nil
}

// readError handles an error frame: the request's error, and for a
// connection error (TxID 0, or a fatal code) the connection's end. It
// reports whether to go on reading.
func (c *Client) readError(h *msg.Header) bool {
	body, err := c.parser.ReadPayload(c.br, c.errBuf[:0])
	var e *msg.Error
	if err == nil {
		e, err = msg.ParseError(body)
	}
	if err != nil {
		c.fail(connErr(err))
		return false
	}
	if h.TxID != 0 {
		cl := c.take(h.TxID)
		if cl == nil {
			c.fail(connErr(fmt.Errorf("%w: %d (error %v)", ErrUnknownTxID, h.TxID, e)))
			return false
		}
		if !c.finish(cl, Reply{TxID: h.TxID, Flags: h.Flags}, e) && cl.state.Load() == stateAbandoned {
			c.abandoned(cl, h)
		}
	}
	if h.TxID == 0 || e.Code.Fatal() {
		c.fail(connErr(e))
		return false
	}
	return true
}
