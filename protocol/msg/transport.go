package msg

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"

	"github.com/quartet-server/quartet/rdma/deliver"
	"github.com/quartet-server/quartet/stages"
)

// Transport is the messenger served by Quartet's own stages
// (runtime.Config.MsgAddr): the reader loops parse its frames with the
// FrameParser it makes, the processors hand each request to its
// Dispatcher, and its reply hook, the TCP transport, frames each reply
// into the stages.Response the writer loops send. It implements
// stages.Protocol.
//
// What it does today, exactly:
//
//   - Depth and order: a connection may have up to Window requests in
//     flight, holding WindowBytes of frames (stages.Pipelined): the
//     reader reads on while earlier requests run, and a reply leaves as
//     soon as it is ready if its request has FlagUnordered. A request
//     without it is dispatched only once every earlier request of the
//     connection is answered, so its reply follows theirs (and a
//     dispatcher that replies late to it holds back the requests behind
//     it, as HTTP/1.1 pipelining would). The connection's writer loop
//     writes one reply at a time, whole. Completion frames have no reply
//     and are never held back. A request whose txid is already in flight
//     on the connection is malformed (the reader refuses it with
//     stages.ErrDuplicateKey): the connection gets CodeMalformed and
//     closes once the requests in flight are answered.
//   - RDMA: with TransportConfig.RDMA (msgrdma's binding on the engine
//     attached to the writer loops) a reply to a request with FlagRDMA
//     goes through it: the payload by RDMA and the reply frame behind
//     it, or inline with the reason it did not; completion frames go to
//     it too. Without, such a request gets its payload inline with
//     deliver.ReasonNoRDMA (the protocol's fallback), and a completion
//     frame has nothing to revoke. Either way a completion has no reply.
//   - Operation ids are checked to grow over the connection's life: the
//     reader keeps no parse state for an idle connection, so the last id
//     is kept in the connection's rarely used extras
//     (stages.Conn.SetProtocolState), made only for connections that ask
//     for RDMA.
type Transport struct {
	d      Dispatcher
	limits Limits
	rdma   RDMA
	// calls holds the per-request records (the Message, the reply hook
	// and its head buffer), from Serve until the request's response is
	// recycled, so steady serving allocates none.
	calls sync.Pool
	// unanswered counts the requests Serve took whose reply has not been
	// handed to the writer yet (Wait).
	unanswered sync.WaitGroup
	// pending lists the calls whose dispatcher returned without a reply,
	// so that Abandon can find them; calls answered within Dispatch (the
	// usual case) never take pendingMu. abandoning: Abandon has run, and
	// a call that would be listed is abandoned instead.
	pendingMu  sync.Mutex
	pending    *call
	abandoning bool

	window      int
	windowBytes int64
	immediate   bool // the dispatcher is Immediate
}

var (
	_ stages.Pipelined      = (*Transport)(nil)
	_ stages.Abandoner      = (*Transport)(nil)
	_ stages.InlineProtocol = (*Transport)(nil)
)

// ServesInline reports whether req may be served on the reader loop
// (stages.InlineProtocol): a request, not asking for RDMA, to an
// Immediate dispatcher.
func (t *Transport) ServesInline(req *stages.Request) bool {
	if !t.immediate {
		return false
	}
	h, _ := req.Frame.(*Header)
	return h != nil && h.Type == TypeRequest && !h.Flags.Has(FlagRDMA)
}

// Window is a connection's bound on requests in flight
// (stages.Pipelined): TransportConfig's.
func (t *Transport) Window() (requests int, bytes int64) { return t.window, t.windowBytes }

// TransportConfig sets up a Transport.
type TransportConfig struct {
	// Dispatcher answers requests; Echo when nil.
	Dispatcher Dispatcher
	// Limits bound what the reader parses.
	Limits Limits
	// RDMA, when set, sends the replies of requests that ask for RDMA;
	// nil sends them inline with deliver.ReasonNoRDMA.
	RDMA RDMA
	// Window bounds each connection's requests in flight: the reader
	// reads a connection on while its earlier requests run, up to
	// Window requests holding WindowBytes of frames between them (one
	// request always goes, whatever its size). 0 takes
	// DefaultWindow and DefaultWindowBytes; a Window of 1 serves one
	// request of a connection at a time.
	Window      int
	WindowBytes int64
}

// Defaults for TransportConfig's window: enough requests in flight to
// keep a pipelining client's connection busy through a slow reply, and a
// byte bound so that a client cannot make one connection hold more than
// a few MiB beyond the one large request it may always send.
const (
	DefaultWindow      = 32
	DefaultWindowBytes = 4 << 20
)

// RDMA is a Transport's path for replies by RDMA: msgrdma.Binding.Stages,
// on the engine whose loops are attached to the server's writer loops
// (msgrdma imports this package, so this one names none of its types).
type RDMA interface {
	// SendReply delivers r's payload as m's descriptor asks and calls
	// send exactly once with the reply's head and the reply to frame
	// (its payload nil when it went by RDMA): before it returns, or
	// later from the writer loop's completion. It runs on the goroutine
	// that sent the reply, and may block on dialing and registering.
	// m carries FlagRDMA; r has no Code.
	SendReply(c *stages.Conn, m *Message, r Reply, send func(h *Header, r Reply))
	// Complete ends the client-reads exposures a completion frame from c
	// confirms. A processor calls it.
	Complete(c *stages.Conn, h *Header)
}

// NewTransport returns the messenger for the stages.
func NewTransport(cfg TransportConfig) *Transport {
	if cfg.Dispatcher == nil {
		cfg.Dispatcher = Echo{}
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.WindowBytes <= 0 {
		cfg.WindowBytes = DefaultWindowBytes
	}
	t := &Transport{d: cfg.Dispatcher, limits: cfg.Limits, rdma: cfg.RDMA, window: cfg.Window, windowBytes: cfg.WindowBytes}
	_, t.immediate = cfg.Dispatcher.(Immediate)
	t.calls.New = func() any { return new(call) }
	return t
}

// NewParser returns a server-side parser for one connection at a time.
// Reader loop only (stages.Protocol).
func (t *Transport) NewParser() stages.FrameParser {
	return &frameParser{p: NewParser(RoleServer, t.limits), limits: t.limits}
}

// frameParser adapts Parser to the reader stage: the head is decoded
// into h, which the request points to (stages.Request.Frame) until the
// next head, and the payload is left to the reader, which reads it whole
// into its buffer (Skip keeps the parser's count).
type frameParser struct {
	p      Parser
	h      Header
	limits Limits
	// resumed: the parser has taken the connection's last operation id
	// (stages.Conn.ProtocolState) since its Reset. The reader drops its
	// parse state while a connection idles; the id must keep growing
	// across that.
	resumed bool
}

// Head parses the next frame's head (stages.FrameParser). The head is
// decoded into the parser's own record, and the payload is read whole
// before dispatch (stages.BodyWhole): Limits bound it, and a reply may
// alias it.
func (f *frameParser) Head(buf []byte, req *stages.Request) (stages.Head, error) {
	if !f.resumed && req.Conn != nil {
		f.p.Resume(req.Conn.ProtocolState())
		f.resumed = true
	}
	n, err := f.p.Next(buf, &f.h)
	req.Frame = &f.h // also on failure: Reject names the TxID of a request too large
	if err == ErrNeedMore {
		return stages.Head{}, stages.ErrNeedMore
	}
	if err != nil {
		return stages.Head{}, err
	}
	f.p.Skip(int(f.h.Length))
	if f.h.Type == TypeRequest && f.h.Flags.Has(FlagRDMA) && req.Conn != nil {
		req.Conn.SetProtocolState(f.h.RDMA.Op) // only connections that use RDMA pay for it
	}
	// A completion has no reply to order; a request's may overtake only
	// if the client said so.
	overtake := f.h.Type != TypeRequest || f.h.Flags.Has(FlagUnordered)
	var key uint64
	if f.h.Type == TypeRequest {
		key = f.h.TxID // replies are matched by it: two in flight is malformed
	}
	return stages.Head{Size: n, Overtake: overtake, Key: key, Body: stages.BodyPlan{Kind: stages.BodyWhole, Length: int64(f.h.Length)}}, nil
}

// Reset readies the parser for another connection (stages.FrameParser).
func (f *frameParser) Reset() {
	f.p = NewParser(RoleServer, f.limits)
	f.h = Header{}
	f.resumed = false
}

// Serve dispatches one request, or takes a completion, on a processor
// (stages.Protocol).
func (t *Transport) Serve(resp *stages.Response, req *stages.Request) {
	h, _ := req.Frame.(*Header)
	if h == nil || h.Type != TypeRequest {
		// A completion: the RDMA path revokes what it confirms (without
		// one, nothing was exposed); it has no answer, and an empty
		// response hands the connection back. (A request without a head
		// cannot reach here; it would be closed too.)
		if h != nil && t.rdma != nil {
			t.rdma.Complete(resp.Conn, h)
		}
		resp.KeepAlive = h != nil
		_ = resp.Append(stages.Bucket{Kind: stages.BucketEOS})
		resp.Conn.SetPhase(stages.PhaseWriting)
		resp.Done()
		return
	}
	c := t.calls.Get().(*call)
	c.t, c.resp = t, resp
	t.unanswered.Add(1)
	c.refs.Store(2) // this Serve, and the reply
	c.m.Reset(h, req.BodyBytes, c)
	t.dispatch(c)
	if !c.m.answered() {
		t.hold(c)
	}
	c.release()
}

// Wait returns once every request Serve took has its reply with the
// writer, or has been abandoned (stages.Protocol). Only once the
// processors have stopped: no Serve may start meanwhile.
func (t *Transport) Wait() { t.unanswered.Wait() }

// Abandon gives up on every reply still to come (stages.Abandoner): the
// runtime calls it when a shutdown's grace is over. Each such request's
// connection gets CodeShutdown and is closed, and its dispatcher's
// SendReply, when it comes, returns ErrAbandoned. Without it, a
// dispatcher that lost a reply held the shutdown forever, past any
// deadline. A reply already sent is not abandoned: an RDMA delivery in
// progress ends as the engine's timeouts end it. A request dispatched
// after Abandon (a processor still running) is abandoned as soon as its
// Dispatch returns without replying.
func (t *Transport) Abandon() {
	t.pendingMu.Lock()
	t.abandoning = true
	var gone []*call
	for c := t.pending; c != nil; {
		next := c.next
		if c.m.abandon() {
			t.unlist(c)
			gone = append(gone, c)
		} // else its SendReply has begun, and unlists it
		c = next
	}
	t.pendingMu.Unlock()
	for _, c := range gone {
		c.sendAbandoned()
	}
}

// hold lists c, whose dispatcher returned without replying, for Abandon.
// Its reply may be arriving meanwhile on another goroutine: c.watched is
// set before c.m's state is read here, and the reply reads it after
// setting that state (SendReply), so either c is not listed or the reply
// takes it off the list.
func (t *Transport) hold(c *call) {
	c.watched.Store(true)
	t.pendingMu.Lock()
	if !t.abandoning {
		if !c.m.answered() {
			c.next = t.pending
			if t.pending != nil {
				t.pending.prev = c
			}
			t.pending, c.listed = c, true
		}
		t.pendingMu.Unlock()
		return
	}
	t.pendingMu.Unlock()
	if c.m.abandon() {
		c.sendAbandoned()
	}
}

// unhold takes c off the list once its reply has come.
func (t *Transport) unhold(c *call) {
	t.pendingMu.Lock()
	if c.listed {
		t.unlist(c)
	}
	t.pendingMu.Unlock()
}

// unlist removes c from t.pending; pendingMu held.
func (t *Transport) unlist(c *call) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		t.pending = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

// dispatch runs the dispatcher; a panic fails the request (CodeInternal,
// unless it had replied already) rather than the processor.
func (t *Transport) dispatch(c *call) {
	defer func() {
		if v := recover(); v != nil {
			_ = c.m.SendReply(Reply{Code: CodeInternal, Payload: []byte("dispatcher panicked")})
		}
	}()
	t.d.Dispatch(&c.m)
}

// Reject frames the error frame for a request the stages refuse
// (stages.Protocol): the parser's error, a timeout or overload. Only
// overload leaves the connection open; it answers the request with
// CodeBusy. It runs on the refusing goroutine, on the error path, and
// allocates its frame.
func (t *Transport) Reject(req *stages.Request, why stages.Refusal) stages.Rejection {
	err := why.Err
	h, _ := req.Frame.(*Header)
	var txid uint64
	keep := false
	code := CodeOf(err)
	switch {
	case errors.Is(err, stages.ErrOverloaded):
		if h == nil || h.Type != TypeRequest {
			return stages.Rejection{KeepAlive: true} // a completion: nobody waits for an answer
		}
		code, txid, keep = CodeBusy, h.TxID, true
	case errors.Is(err, stages.ErrHeadTimeout):
		code = CodeTimeout // with TxID 0: the connection's error
	case code == CodeTooLarge && h != nil:
		txid = h.TxID
	}
	frame := make([]byte, MaxErrorFrame)
	n, ferr := PutErrorFrame(frame, txid, code, err.Error())
	if ferr != nil { // cannot happen: the code is not 0 and the buffer is MaxErrorFrame
		n, _ = PutErrorFrame(frame, 0, CodeInternal, ferr.Error())
	}
	return stages.Rejection{Frame: frame[:n], Head: n, KeepAlive: keep}
}

// call is one request between Serve and its response's recycling: the
// Message the dispatcher sees, and the reply hook that frames its reply.
type call struct {
	t    *Transport
	resp *stages.Response
	m    Message
	// refs: Serve's and the reply's. The response's producer side is let
	// go (Done) only when both are over, so a reply sent after Serve
	// returned still writes into a response nobody has recycled.
	refs atomic.Int32
	done func(error) // the reply's Done, run when the response is recycled
	head [MaxHeadSize]byte
	// watched: the dispatcher returned without replying (Transport.hold).
	// prev, next and listed place the call on Transport.pending, under
	// its pendingMu.
	watched    atomic.Bool
	prev, next *call
	listed     bool
}

// SendReply frames r after m's head and hands both to the writer
// (ReplyHook), through the RDMA path first when the request asked for
// it. Any goroutine, once per message (Message.SendReply).
func (c *call) SendReply(m *Message, r Reply) error {
	if c.watched.Load() {
		c.t.unhold(c)
	}
	if r.Code == 0 && m.Header.Flags.Has(FlagRDMA) && c.t.rdma != nil {
		c.t.rdma.SendReply(c.resp.Conn, m, r, c.sendRDMA)
		return nil // a failure is the reply's Done's to report
	}
	h := Header{Type: TypeReply, TxID: m.Header.TxID, Length: uint32(len(r.Payload))}
	if m.Header.Flags.Has(FlagRDMA) {
		// The protocol's fallback: the payload inline, and why.
		h.Flags = FlagRDMA
		h.RDMA = Descriptor{Mode: m.Header.RDMA.Mode, Op: m.Header.RDMA.Op, Reason: deliver.ReasonNoRDMA}
	}
	return c.send(&h, r)
}

// sendRDMA is send for the RDMA path, which may call it from the writer
// loop's completion, with nobody to hear an error: the reply's Done
// does.
func (c *call) sendRDMA(h *Header, r Reply) { _ = c.send(h, r) }

// send frames head h, then r's payload (or, with r.Code, an error frame
// in place of both) into the response, and lets go of the call for the
// reply.
func (c *call) send(h *Header, r Reply) error {
	resp := c.resp
	var head, payload []byte
	if r.Code == 0 && uint64(len(r.Payload)) <= math.MaxUint32 {
		h.Length = uint32(len(r.Payload))
		n, err := PutHead(c.head[:], h)
		if err == nil {
			head, payload = c.head[:n], r.Payload
		}
	}
	if head == nil {
		// An error reply, or a reply this side cannot frame: an error
		// frame, built on the error path.
		code, text := r.Code, string(r.Payload)
		if code == 0 {
			code, text = CodeInternal, "reply payload over the wire's 4 GiB"
		}
		buf := make([]byte, MaxErrorFrame)
		n, _ := PutErrorFrame(buf, h.TxID, code, text)
		head = buf[:n]
	}
	resp.KeepAlive = r.Code == 0 || !r.Code.Fatal()
	resp.HeaderBytes = int64(len(head))
	resp.Cleanups = append(resp.Cleanups, c)
	c.done = r.Done
	var err error
	if len(payload) > 0 {
		err = resp.Append(stages.Bucket{Kind: stages.BucketHeap, Data: head}, stages.Bucket{Kind: stages.BucketHeap, Data: payload}, stages.Bucket{Kind: stages.BucketEOS})
	} else {
		err = resp.Append(stages.Bucket{Kind: stages.BucketHeap, Data: head}, stages.Bucket{Kind: stages.BucketEOS})
	}
	if err != nil {
		// The writer gave up on the connection (and ends the response
		// itself): the reply was not taken, so its Done is not called
		// (ReplyHook's contract).
		c.done = nil
	}
	c.release()
	return err
}

// sendAbandoned answers an abandoned call's request in place of its
// dispatcher: CodeShutdown, which closes the connection.
func (c *call) sendAbandoned() {
	_ = c.send(&Header{Type: TypeReply}, Reply{Code: CodeShutdown, Payload: []byte("server shut down before the reply")})
}

// release lets go of the call for Serve or for the reply; the last one
// lets go of the response's producer side.
func (c *call) release() {
	if c.refs.Add(-1) == 0 {
		resp, t := c.resp, c.t
		resp.Conn.SetPhase(stages.PhaseWriting) // before Done: the connection may go back to its reader from there
		resp.Done()                             // resp, and c with it, may be recycled from here on
		t.unanswered.Done()                     // the reply is with the writer, which finishes it before it stops
	}
}

// Cleanup runs when the response is recycled, after its last byte was
// written or the writer gave up: the reply's Done learns which, and the
// call goes back to the pool (stages.Cleanup).
func (c *call) Cleanup() {
	if c.done != nil {
		c.done(c.resp.WriteErr)
	}
	if c.m.state.Load() == messageAbandoned {
		// Its dispatcher still holds c.m and may call SendReply at any
		// time: the call is left to the garbage collector, untouched.
		return
	}
	t := c.t
	c.t, c.resp, c.done = nil, nil, nil
	c.m.Header, c.m.Payload, c.m.hook = Header{}, nil, nil
	t.calls.Put(c)
}
