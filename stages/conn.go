package stages

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one accepted client connection. Exactly one stage owns it at any
// moment, and only its owner may touch its mutable fields; ownership passes
// with the hand-off through a stage queue, never by sharing.
//
// The file descriptor is closed only by the reader loop the connection
// belongs to, and only while that loop owns it. So an fd number cannot be
// reused by the kernel while any other stage still holds the Conn: a
// response queued for a connection whose peer has gone writes into the old,
// still-open socket (and fails with EPIPE), never into a new connection that
// happens to get the same number.
type Conn struct {
	ID       uint64 // unique for the server's lifetime; fds are reused, IDs are not
	FD       int
	Remote   netip.AddrPort
	Local    netip.AddrPort
	Accepted time.Time

	Reader int // index of the reader loop that owns reading and closing
	Writer int // index of the writer loop that owns writing

	// RSlot is the connection's place in its reader loop's table. Only
	// that loop writes it; others pass it back unchanged.
	RSlot int32

	// Shared between stages: atomics, written by the stage that holds
	// the request, read by any.
	phase atomic.Uint32 // where the dispatched request stands (Phase)
	gone  atomic.Bool   // the client hung up while a request was out

	// Protocol is what the connection speaks, set by the listener that
	// accepted it and never changed after. It sits in the padding after
	// gone: it costs an idle connection nothing.
	Protocol ProtocolID

	// extras holds what few connections use, made on first use, so that
	// the many idle connections of a busy server do not pay 80 bytes each
	// for it.
	extras atomic.Pointer[connExtras]
}

// connExtras is a connection's rarely used state.
type connExtras struct {
	// ctx is cancelled when the client hangs up; only handlers that ask
	// for it (net/http's, through Adapt) pay for it.
	ctxMu  sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc

	// Per-connection module state and clean-ups, set by pre-connection
	// hooks (in the reader loop, before the first request) and read by
	// whichever stage owns the connection afterwards.
	values   []any
	cleanups []func()

	// protoState is a framed protocol's word of per-connection state
	// that must outlive the reader's parse state, which an idle
	// connection gives back (the messenger's last RDMA operation id).
	// Reader loop only.
	protoState uint64

	// writerPinned: a module keeps state of this connection's in its
	// writer loop (PinWriter).
	writerPinned atomic.Bool
}

// more returns the connection's extras, making them on first use. Any
// goroutine: Context may race the owner's SetValue.
func (c *Conn) more() *connExtras {
	if x := c.extras.Load(); x != nil {
		return x
	}
	x := new(connExtras)
	if c.extras.CompareAndSwap(nil, x) {
		return x
	}
	return c.extras.Load()
}

// SetPhase records where the connection's dispatched request stands. The
// stage that holds the request calls it.
func (c *Conn) SetPhase(p Phase) { c.phase.Store(uint32(p)) }

// Phase is where the connection's dispatched request stands; meaningful
// only while a request is out of the reader's care. Any goroutine.
func (c *Conn) Phase() Phase { return Phase(c.phase.Load()) }

// Gone reports whether the client hung up while a request was out: it
// will read no response, so a request not yet started is not worth
// starting, and a handler may stop early. Any goroutine; one atomic load.
//
// A client that half-closes (shutdown(SHUT_WR)) right after its last
// request cannot be told from one that closed: the reader counts a FIN
// that arrives while a request is out, with no further request bytes
// unread, as gone, as net/http's background read treats EOF (it cancels
// the request's context) and as HAProxy's abortonclose drops queued
// requests. A FIN that arrived together with the request, or after
// pipelined requests, is a half-close: those are served.
func (c *Conn) Gone() bool { return c.gone.Load() }

// HangUp records that the client has gone and cancels Context. The
// connection's reader calls it, at most once per connection.
func (c *Conn) HangUp() {
	if c.gone.Swap(true) {
		return
	}
	// Context makes its extras before it reads gone, and HangUp sets gone
	// before it reads extras: one of the two sees the other and cancels.
	x := c.extras.Load()
	if x == nil {
		return
	}
	x.ctxMu.Lock()
	cancel := x.cancel
	x.ctxMu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Context returns a context cancelled when the client hangs up (Gone). It
// is made on the first call; handlers derive their request contexts from
// it (processor.Adapt does), so that a handler waiting on its context
// stops when the client goes, as under net/http. Any goroutine.
func (c *Conn) Context() context.Context {
	x := c.more()
	x.ctxMu.Lock()
	defer x.ctxMu.Unlock()
	if x.ctx == nil {
		x.ctx, x.cancel = context.WithCancel(context.Background())
		if c.gone.Load() {
			x.cancel()
		}
	}
	return x.ctx
}

// ProtocolState returns what SetProtocolState stored, 0 if nothing. The
// connection's reader loop only (its protocol's parser).
func (c *Conn) ProtocolState() uint64 {
	if x := c.extras.Load(); x != nil {
		return x.protoState
	}
	return 0
}

// SetProtocolState keeps one word of a framed protocol's connection state
// while the connection is idle and holds no parser. Only connections that
// need it pay for it (the extras are made on first use). The connection's
// reader loop only.
func (c *Conn) SetProtocolState(v uint64) { c.more().protoState = v }

// PinWriter keeps the connection's responses on the writer loop it has
// now (Conn.Writer) for the rest of its life, unless that loop is removed:
// for a module that keeps per-connection state in the loop, such as the
// RDMA channel and the exposures whose completions the connection's later
// requests confirm there. Otherwise the runtime may move a connection to
// another writer loop between responses, to spread connections over
// loops added while serving. The stage that holds the request calls it,
// before the state is made.
func (c *Conn) PinWriter() { c.more().writerPinned.Store(true) }

// WriterPinned reports whether PinWriter was called. Any goroutine.
func (c *Conn) WriterPinned() bool {
	x := c.extras.Load()
	return x != nil && x.writerPinned.Load()
}

// SetValue attaches v to the connection under key (a module's index).
// Call it from a pre-connection hook, or from the stage that owns the
// connection.
func (c *Conn) SetValue(key int, v any) {
	x := c.more()
	for len(x.values) <= key {
		x.values = append(x.values, nil)
	}
	x.values[key] = v
}

// Value returns what SetValue attached under key, or nil.
func (c *Conn) Value(key int) any {
	if x := c.extras.Load(); x != nil && key < len(x.values) {
		return x.values[key]
	}
	return nil
}

// OnClose registers fn to run when the connection's fd is closed, in the
// reader loop, last registered first (mod_rdma's connection clean-up: an
// RDMA connection cached for this client is torn down here).
func (c *Conn) OnClose(fn func()) {
	x := c.more()
	x.cleanups = append(x.cleanups, fn)
}

// RunCleanups runs the clean-ups registered with OnClose. The reader calls
// it after closing the fd.
func (c *Conn) RunCleanups() {
	x := c.extras.Load()
	if x == nil {
		return
	}
	for i := len(x.cleanups) - 1; i >= 0; i-- {
		x.cleanups[i]()
	}
	x.cleanups, x.values = nil, nil
	x.ctxMu.Lock()
	if x.cancel != nil {
		x.cancel() // release the context: nothing can be waiting for this connection now
	}
	x.ctxMu.Unlock()
}
