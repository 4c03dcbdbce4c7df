package reader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quartet-server/quartet/internal/poll"
	"github.com/quartet-server/quartet/stages"
)

// Defaults for Config's zero values.
const (
	DefaultHeaderTimeout = 20 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
	DefaultLingerTimeout = 2 * time.Second
	DefaultBodyTimeout   = 30 * time.Second
	DefaultMaxBodyBytes  = 64 << 20
	DefaultPrereadBody   = 64 << 10
	DefaultReadBuffer    = 4 << 10
	// DefaultPipeBytes bounds how far a streaming body may run ahead of its
	// handler: the loop stops reading the socket when the pipe holds this much.
	DefaultPipeBytes = 64 << 10
	// maxDiscardBytes is how much unread request body the loop will read
	// and throw away to keep a connection alive after its response (net/http
	// uses 256 KiB for the same decision); beyond it closing is cheaper.
	maxDiscardBytes = 256 << 10
)

// Per-turn budgets.
const (
	// maxReadBytesPerTurn bounds what one connection may read before the
	// loop serves the others (edge-triggered: the rest waits in the ready list).
	maxReadBytesPerTurn = 256 << 10
	// maxLingerBytes: a client that keeps sending after we said goodbye is
	// not owed more than this before we close.
	maxLingerBytes = 64 << 10
)

// Config sets a reader loop's limits and hooks.
type Config struct {
	Limits        Limits
	HeaderTimeout time.Duration // first byte of a request to its last header byte; then 408
	IdleTimeout   time.Duration // keep-alive wait for the next request's first byte
	LingerTimeout time.Duration // lingering close: wait for the client's FIN
	BodyTimeout   time.Duration // a handler waiting this long for body bytes gets an error
	MaxBodyBytes  int64         // larger bodies get 413 (declared) or a read error (chunked)
	PrereadBody   int           // bodies up to this size are read before dispatch
	PipeBytes     int           // streaming body buffer per request
	QueueCapacity int           // hand-off queue from the listener and writers

	// Dispatch hands a parsed request to the processors; false means their
	// queue is full and the loop will try again on its next turn.
	Dispatch func(*stages.Request) bool
	// Fail answers a request the loop cannot dispatch (status 400, 408,
	// 413, 414, 431, 501, 505) through the writer, which hands the
	// connection back for a lingering close. req may be partly parsed.
	Fail func(c *stages.Conn, req *stages.Request, status int)
	// Closed runs after the loop closes a connection's fd (and after the
	// connection's own clean-ups).
	Closed func(c *stages.Conn)
	// PreConnection runs when the loop adopts a connection, before its
	// first request is read; an error closes the connection.
	PreConnection func(c *stages.Conn) error
	// Init runs once on the loop's goroutine when Run starts (Apache's
	// child_init); an error stops the loop.
	Init func() error
	// Exit runs once on the loop's goroutine when Run returns after a
	// successful Init, once the loop holds no connections.
	Exit func()
}

func (c *Config) fill() {
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = DefaultHeaderTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.LingerTimeout <= 0 {
		c.LingerTimeout = DefaultLingerTimeout
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = DefaultBodyTimeout
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.PrereadBody <= 0 {
		c.PrereadBody = DefaultPrereadBody
	}
	if c.PipeBytes <= 0 {
		c.PipeBytes = DefaultPipeBytes
	}
	if c.QueueCapacity <= 0 {
		c.QueueCapacity = 4096
	}
}

// connState is where a connection is in the reader's care. Each state lists
// the states it may move to.
type connState uint8

const (
	stateFree   connState = iota // slot unused → header
	stateHeader                  // reading a request's header block → body, out, linger (error), closed
	stateBody                    // reading a small body before dispatch → out, closed
	stateOut                     // request dispatched: another stage owns the conn → idle, header, drain, linger, closed
	stateDrain                   // discarding the unread body of a finished request → idle, header, closed
	stateIdle                    // keep-alive, waiting for the first byte → header, closed
	stateLinger                  // response sent with FIN; discarding until the client's FIN → closed
)

var stateNames = [...]string{"free", "header", "body", "out", "drain", "idle", "linger"}

func (s connState) String() string { return stateNames[s] }

// timeout classes, one FIFO each.
const (
	classNone = iota
	classHeader
	classIdle
	classLinger
	numClasses
)

// msgOp is what another stage asks of the loop about a connection.
type msgOp uint8

const (
	opAdopt  msgOp = iota // from the listener: a new connection
	opReturn              // from the writer: response done
	opResume              // from a handler: the body pipe has room again
	opDrain               // from the runtime: shut down gracefully
)

type msg struct {
	c    *stages.Conn
	op   msgOp
	disp uint8 // for opReturn: 0 keep-alive, 1 linger, 2 close (writer.Disposition)
}

// rconn is the loop's state for one connection.
type rconn struct {
	c     *stages.Conn
	gen   uint32
	state connState

	buf        []byte // read buffer; the current request starts at buf[start]
	start, end int
	hdrLen     int // header block length of the dispatched request
	consumed   int // bytes of buf from start that belong to the dispatched request
	parser     Parser
	req        stages.Request
	seq        uint64
	small      bytes.Reader // body of a preread request
	pipe       pipe         // body of a streaming request
	feeding    bool         // the loop is still reading this request's body
	remaining  int64        // Content-Length body bytes not yet read
	chunked    ChunkedDecoder
	fpos       int    // next body byte in buf not yet moved to the pipe
	carry      []byte // bytes past a chunked body: the next request's start
	bodyTotal  int64
	discarded  int64
	peerClosed bool // EOF seen: no more requests after the current one
	mustClose  bool // the request's framing was lost (a body error): linger, then close

	class      int
	deadline   time.Time
	prev, next int32
}

// Loop is one reader event loop.
type Loop struct {
	id     int
	cfg    Config
	poller *poll.Poller
	waker  *stages.LoopWaker
	in     *stages.Ring[msg]

	conns []*rconn // pointers: requests and pipes inside are shared with other stages and must not move
	free  []int32
	open  atomic.Int64

	fifo [numClasses]struct{ head, tail int32 }

	ready     []int32 // connections with more to read than one turn allowed
	blocked   []int32 // parsed requests the processors had no room for
	bufs      [][]byte
	events    []poll.Event
	draining  bool
	forced    bool
	stopping  atomic.Bool
	counters  *stages.StageCounters
	readLimit int

	// census is the loop's connections by state, counted at most once per
	// censusInterval by the loop itself (it alone may read its table).
	census     [stateLinger + 1]atomic.Int64
	lastCensus time.Time
}

// censusInterval: state counts are for dashboards, a second old is fine,
// and a scan of the table per second costs little even at 100k connections.
const censusInterval = time.Second

// Census is the loop's connections by state as of its last count.
type Census struct{ Idle, Reading, Out, Lingering int }

// Census returns the last count. Any goroutine.
func (l *Loop) Census() Census {
	return Census{
		Idle:      int(l.census[stateIdle].Load()),
		Reading:   int(l.census[stateHeader].Load() + l.census[stateBody].Load() + l.census[stateDrain].Load()),
		Out:       int(l.census[stateOut].Load()),
		Lingering: int(l.census[stateLinger].Load()),
	}
}

func (l *Loop) takeCensus(now time.Time) {
	if now.Sub(l.lastCensus) < censusInterval {
		return
	}
	l.lastCensus = now
	var n [stateLinger + 1]int64
	for _, rc := range l.conns {
		if rc.c != nil {
			n[rc.state]++
		}
	}
	for i := range n {
		l.census[i].Store(n[i])
	}
}

const tokenWaker = ^uint64(0)

// New makes reader loop id. counters may be shared with a Stats reader.
func New(id int, cfg Config, counters *stages.StageCounters) (*Loop, error) {
	cfg.fill()
	if cfg.Dispatch == nil || cfg.Fail == nil {
		return nil, errors.New("quartet: reader: Config.Dispatch and Config.Fail are required")
	}
	p, w, err := stages.OpenLoop(tokenWaker)
	if err != nil {
		return nil, err
	}
	l := &Loop{id: id, cfg: cfg, poller: p, waker: w, counters: counters,
		in: stages.NewRing[msg](cfg.QueueCapacity), events: make([]poll.Event, 0, 128)}
	for i := range l.fifo {
		l.fifo[i].head, l.fifo[i].tail = -1, -1
	}
	l.readLimit = cfg.Limits.maxHeaderBytes()
	return l, nil
}

// Open is the number of connections the loop holds.
func (l *Loop) Open() int { return int(l.open.Load()) }

// QueueDepth and QueueCap describe the loop's hand-off queue.
func (l *Loop) QueueDepth() int { return l.in.Len() }
func (l *Loop) QueueCap() int   { return l.in.Cap() }

func (l *Loop) send(m msg) {
	for !l.in.Push(m) {
		// The queue is sized for the connections a loop holds; a full one
		// means the loop is behind, and the sender waits for it rather
		// than drop a connection it owns.
		l.waker.Wake()
		time.Sleep(50 * time.Microsecond)
	}
	if l.counters != nil {
		l.counters.Enqueued.Add(1)
	}
	l.waker.Wake()
}

// Adopt gives the loop a newly accepted connection. Listener only.
func (l *Loop) Adopt(c *stages.Conn) {
	l.open.Add(1)
	l.send(msg{c: c, op: opAdopt})
}

// Return gives a connection back after its response: disp is 0 keep-alive,
// 1 lingering close, 2 close now (writer.Disposition). Writer only.
func (l *Loop) Return(c *stages.Conn, disp uint8) { l.send(msg{c: c, op: opReturn, disp: disp}) }

// Drain starts a graceful shutdown: idle connections are closed, the others
// when their current response is done.
func (l *Loop) Drain() { l.send(msg{op: opDrain}) }

// Stop makes Run return once the loop holds no connections (after Drain),
// or at once when ctx given to Run is cancelled.
func (l *Loop) Stop() {
	l.stopping.Store(true)
	l.waker.Wake()
}

// Run is the loop. When ctx is cancelled every connection still held is
// closed; the poller and waker are released on return.
func (l *Loop) Run(ctx context.Context) error {
	defer l.poller.Close()
	defer l.waker.Close()
	stop := context.AfterFunc(ctx, l.Stop)
	defer stop()
	if l.cfg.Init != nil {
		if err := l.cfg.Init(); err != nil {
			l.stopping.Store(true)
			l.force()
			return fmt.Errorf("reader %d: init: %w", l.id, err)
		}
	}
	if l.cfg.Exit != nil {
		defer l.cfg.Exit() // before the poller and waker close (deferred earlier)
	}
	for {
		l.drainQueue()
		l.serveReady()
		l.retryBlocked()
		now := time.Now()
		l.expire(now)
		l.takeCensus(now)
		if l.stopping.Load() {
			if ctx.Err() != nil && !l.forced {
				l.force()
			}
			if l.open.Load() == 0 {
				return nil
			}
		}
		timeout := l.nextTimeout(now)
		if len(l.conns) > 0 && (timeout < 0 || timeout > censusInterval) {
			timeout = censusInterval
		}
		if len(l.ready) > 0 {
			timeout = 0
		} else if len(l.blocked) > 0 && (timeout < 0 || timeout > time.Millisecond) {
			timeout = time.Millisecond
		}
		sleeping := false
		if timeout != 0 {
			l.waker.Sleep()
			sleeping = true
			if l.in.Len() > 0 || l.stopping.Load() {
				timeout = 0
			}
		}
		evs, err := l.poller.Wait(l.events, timeout)
		if sleeping {
			l.waker.Awake()
		}
		if err != nil {
			// The poller is gone: nothing can be served. Close what the
			// loop owns; the rest cannot be waited for.
			l.force()
			return fmt.Errorf("reader %d: %w", l.id, err)
		}
		l.events = evs
		for _, ev := range evs {
			if ev.Token == tokenWaker {
				continue
			}
			slot, gen := int32(ev.Token), uint32(ev.Token>>32)
			if int(slot) >= len(l.conns) || l.conns[slot].gen != gen {
				continue // stale: the connection in that slot has gone
			}
			l.readable(slot, ev.Hangup())
		}
	}
}

func (l *Loop) drainQueue() {
	for {
		m, ok := l.in.Pop()
		if !ok {
			return
		}
		if l.counters != nil {
			l.counters.Dequeued.Add(1)
		}
		switch m.op {
		case opAdopt:
			l.adopt(m.c)
		case opReturn:
			if rc := l.conns[m.c.RSlot]; rc.c == m.c {
				l.returned(m.c.RSlot, m.disp)
			}
		case opResume:
			rc := l.conns[m.c.RSlot]
			if rc.c == m.c && rc.state == stateOut && rc.feeding {
				l.feed(m.c.RSlot)
			}
		case opDrain:
			l.drain()
		}
	}
}

func (l *Loop) adopt(c *stages.Conn) {
	slot := l.alloc()
	rc := l.conns[slot]
	rc.c = c
	c.RSlot = slot
	tok := uint64(rc.gen)<<32 | uint64(uint32(slot))
	if err := l.poller.Add(c.FD, poll.Readable|poll.EdgeTriggered, tok); err != nil {
		l.close(slot)
		return
	}
	if l.draining {
		l.close(slot)
		return
	}
	if l.cfg.PreConnection != nil {
		if err := l.cfg.PreConnection(c); err != nil {
			l.close(slot)
			return
		}
	}
	l.startRequest(slot, time.Now(), false)
	l.readable(slot, false)
}

func (l *Loop) alloc() int32 {
	if n := len(l.free); n > 0 {
		s := l.free[n-1]
		l.free = l.free[:n-1]
		return s
	}
	l.conns = append(l.conns, &rconn{prev: -1, next: -1})
	return int32(len(l.conns) - 1)
}

// startRequest readies the connection for its next request: idle waits
// for the first byte under the keep-alive timeout; otherwise the header
// timeout runs from now (for a new connection, from accept, as nginx's
// client_header_timeout does).
func (l *Loop) startRequest(slot int32, now time.Time, idle bool) {
	rc := l.conns[slot]
	rc.parser.Reset()
	rc.req.Reset()
	rc.feeding, rc.remaining, rc.bodyTotal, rc.discarded = false, 0, 0, 0
	rc.hdrLen, rc.consumed = 0, 0
	if idle {
		rc.state = stateIdle
		l.setTimer(slot, classIdle, now.Add(l.cfg.IdleTimeout))
	} else {
		rc.state = stateHeader
		l.setTimer(slot, classHeader, now.Add(l.cfg.HeaderTimeout))
	}
}

// readable handles a readiness event or a retry for slot.
func (l *Loop) readable(slot int32, hup bool) {
	rc := l.conns[slot]
	switch rc.state {
	case stateHeader, stateIdle, stateBody:
		l.readRequest(slot)
	case stateOut:
		if rc.feeding {
			l.feed(slot)
		}
		// Otherwise another stage owns the connection: edge-triggered, the
		// event is simply not ours; the writer's hand-back triggers a read.
	case stateDrain:
		l.drainBody(slot)
	case stateLinger:
		l.linger(slot)
	}
}

// getBuf gives rc a read buffer if it has none (idle connections give
// theirs back, so an idle connection costs no buffer).
func (l *Loop) getBuf(rc *rconn) {
	if rc.buf != nil {
		return
	}
	if n := len(l.bufs); n > 0 {
		rc.buf = l.bufs[n-1]
		l.bufs = l.bufs[:n-1]
	} else {
		rc.buf = make([]byte, DefaultReadBuffer)
	}
	rc.start, rc.end = 0, 0
}

// putBuf takes back an empty buffer; only default-sized ones are kept.
func (l *Loop) putBuf(rc *rconn) {
	if rc.buf == nil || rc.end > rc.start {
		return
	}
	if cap(rc.buf) == DefaultReadBuffer && len(l.bufs) < 1024 {
		l.bufs = append(l.bufs, rc.buf[:DefaultReadBuffer])
	}
	rc.buf, rc.start, rc.end = nil, 0, 0
}

// readSome reads from the socket into rc.buf[rc.end:], growing the buffer
// up to limit bytes from rc.start. It returns the bytes read, or an error:
// unix.EAGAIN when the socket is drained, errBufferFull at the limit,
// errEOF on the client's FIN.
func (l *Loop) readSome(rc *rconn, limit int) (int, error) {
	if rc.end == len(rc.buf) {
		if rc.state == stateBody {
			// parse sized the buffer for the whole body; a full buffer here
			// would mean more bytes than declared, which parse consumes.
			return 0, errBufferFull
		}
		if rc.start > 0 {
			// Only between requests: nothing aliases the bytes yet.
			n := copy(rc.buf, rc.buf[rc.start:rc.end])
			rc.start, rc.end = 0, n
		}
		if rc.end == len(rc.buf) {
			if rc.end-rc.start >= limit {
				return 0, errBufferFull
			}
			nb := make([]byte, min(2*len(rc.buf), limit+rc.start))
			copy(nb, rc.buf[:rc.end])
			rc.buf = nb
		}
	}
	for {
		n, err := unix.Read(rc.c.FD, rc.buf[rc.end:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, errEOF
		}
		rc.end += n
		return n, nil
	}
}

var (
	errBufferFull = errors.New("quartet: read buffer full")
	errEOF        = errors.New("quartet: connection closed by client")
)

// readRequest reads and parses until a request is dispatched, the socket
// is drained, or the connection fails.
func (l *Loop) readRequest(slot int32) {
	rc := l.conns[slot]
	budget := maxReadBytesPerTurn
	for {
		if rc.end > rc.start {
			if l.parse(slot) {
				return
			}
			if rc.state != stateHeader && rc.state != stateBody {
				return
			}
		}
		if budget <= 0 {
			l.ready = append(l.ready, slot)
			return
		}
		l.getBuf(rc)
		limit := l.readLimit
		if rc.state == stateBody {
			limit = rc.hdrLen + int(rc.remaining) + (rc.end - rc.start - rc.hdrLen)
		}
		n, err := l.readSome(rc, limit)
		budget -= n
		switch {
		case err == nil:
			if rc.state == stateIdle {
				rc.state = stateHeader
				rc.req.Received = time.Now()
				l.setTimer(slot, classHeader, rc.req.Received.Add(l.cfg.HeaderTimeout))
			} else if rc.req.Received.IsZero() {
				rc.req.Received = time.Now()
			}
		case err == unix.EAGAIN:
			if rc.state == stateIdle {
				l.putBuf(rc)
			}
			return
		case err == errBufferFull:
			l.fail(slot, StatusOf(ErrHeadersTooLarge))
			return
		case err == errEOF && rc.end == rc.start:
			l.close(slot) // clean close between requests
			return
		default:
			// EOF mid-request, or a socket error: nobody to answer.
			l.close(slot)
			return
		}
	}
}

// parse tries to complete the request in rc.buf. It reports true when the
// connection left the header/body states (dispatched, failed or closed).
func (l *Loop) parse(slot int32) bool {
	rc := l.conns[slot]
	if rc.state == stateBody {
		if rc.end-rc.start-rc.hdrLen < int(rc.remaining) {
			return false
		}
		body := rc.buf[rc.start+rc.hdrLen : rc.start+rc.hdrLen+int(rc.remaining)]
		rc.small.Reset(body)
		rc.req.Body = &rc.small
		rc.req.WireBytes.Add(int64(len(body)))
		rc.consumed = rc.hdrLen + len(body)
		rc.remaining = 0
		l.dispatch(slot)
		return true
	}
	if rc.state == stateIdle {
		rc.state = stateHeader
		now := time.Now()
		rc.req.Received = now
		l.setTimer(slot, classHeader, now.Add(l.cfg.HeaderTimeout))
	}
	start := time.Now()
	n, err := rc.parser.Parse(rc.buf[rc.start:rc.end], l.cfg.Limits, &rc.req)
	if err == ErrNeedMore {
		return false
	}
	if l.counters != nil {
		l.counters.Service.Record(time.Since(start))
	}
	if err != nil {
		l.fail(slot, StatusOf(err))
		return true
	}
	rc.hdrLen = n
	rc.req.WireBytes.Store(int64(n))
	rc.seq++
	rc.req.Conn, rc.req.Seq = rc.c, rc.seq
	if rc.req.Received.IsZero() {
		rc.req.Received = time.Now()
	}
	buffered := rc.end - rc.start - n
	switch {
	case rc.req.ContentLength > l.cfg.MaxBodyBytes:
		l.fail(slot, 413)
		return true
	case !rc.req.HasBody():
		rc.req.Body = noBody{}
		rc.consumed = n
	case !rc.req.Chunked && rc.req.ContentLength <= int64(l.cfg.PrereadBody) && !rc.req.Expect100:
		rc.remaining = rc.req.ContentLength
		if int64(buffered) < rc.remaining {
			// The request's fields alias the buffer, so the rest of the
			// body must fit behind them without moving them: give the
			// request a buffer of its own size if this one is short, and
			// parse again so the fields point into it.
			if need := n + int(rc.remaining); len(rc.buf)-rc.start < need {
				received := rc.req.Received
				nb := make([]byte, need)
				rc.end = copy(nb, rc.buf[rc.start:rc.end])
				rc.buf, rc.start = nb, 0
				rc.parser.Reset()
				rc.req.Reset()
				if _, err := rc.parser.Parse(rc.buf[:rc.end], l.cfg.Limits, &rc.req); err != nil {
					l.fail(slot, StatusOf(err)) // cannot happen: the same bytes parsed a moment ago
					return true
				}
				rc.req.Conn, rc.req.Seq, rc.req.Received = rc.c, rc.seq, received
				rc.req.WireBytes.Store(int64(n))
			}
			rc.state = stateBody
			return false
		}
		body := rc.buf[rc.start+n : rc.start+n+int(rc.remaining)]
		rc.small.Reset(body)
		rc.req.Body = &rc.small
		rc.req.WireBytes.Add(int64(len(body)))
		rc.consumed = n + len(body)
		rc.remaining = 0
	default:
		l.startStream(slot)
	}
	l.dispatch(slot)
	return true
}

func (l *Loop) dispatch(slot int32) {
	rc := l.conns[slot]
	rc.state = stateOut
	l.clearTimer(slot)
	if !l.cfg.Dispatch(&rc.req) {
		l.blocked = append(l.blocked, slot)
	}
}

func (l *Loop) retryBlocked() {
	if len(l.blocked) == 0 {
		return
	}
	kept := l.blocked[:0]
	for _, slot := range l.blocked {
		rc := l.conns[slot]
		if rc.state != stateOut || rc.c == nil {
			continue
		}
		if !l.cfg.Dispatch(&rc.req) {
			kept = append(kept, slot)
		}
	}
	l.blocked = kept
}

// fail answers the current request with an error status through the
// writer; the connection comes back for a lingering close.
func (l *Loop) fail(slot int32, status int) {
	rc := l.conns[slot]
	rc.state = stateOut
	rc.feeding = false
	rc.peerClosed = true // no further request will be read
	l.clearTimer(slot)
	l.cfg.Fail(rc.c, &rc.req, status)
}

// returned takes a connection back from the writer.
func (l *Loop) returned(slot int32, disp uint8) {
	rc := l.conns[slot]
	if rc.state != stateOut {
		return
	}
	switch disp {
	case 1:
		rc.pipe.finish()
		rc.feeding = false
		rc.state = stateLinger
		l.setTimer(slot, classLinger, time.Now().Add(l.cfg.LingerTimeout))
		rc.discarded = 0
		l.linger(slot)
		return
	case 2:
		rc.pipe.finish()
		l.close(slot)
		return
	}
	if rc.feeding {
		// The handler did not read its whole body: throw the rest away if
		// that is cheap, so the connection can carry another request.
		rc.pipe.finish()
		rc.state = stateDrain
		l.setTimer(slot, classHeader, time.Now().Add(l.cfg.HeaderTimeout))
		l.drainBody(slot)
		return
	}
	l.nextRequest(slot)
}

// nextRequest recycles the finished request and starts on the next one,
// from bytes already buffered (pipelining) or from the socket.
func (l *Loop) nextRequest(slot int32) {
	rc := l.conns[slot]
	rc.pipe.finish()
	if rc.mustClose {
		// The client may still be sending a body we refused: a plain close
		// with unread data would reset the connection and could destroy the
		// response in the client's receive buffer.
		l.lingerClose(slot)
		return
	}
	if rc.peerClosed || l.draining {
		l.close(slot)
		return
	}
	rc.start += rc.consumed
	if rc.start == rc.end {
		rc.start, rc.end = 0, 0
	}
	if len(rc.carry) > 0 {
		l.getBuf(rc)
		rest := rc.buf[rc.start:rc.end]
		merged := append(append([]byte(nil), rc.carry...), rest...)
		if len(merged) > len(rc.buf) {
			rc.buf = make([]byte, len(merged))
		}
		rc.start, rc.end = 0, copy(rc.buf, merged)
		rc.carry = rc.carry[:0]
	}
	l.startRequest(slot, time.Now(), rc.end == rc.start)
	// Edge-triggered: bytes that arrived while the request was out raised
	// no new event for us, so look now.
	l.readRequest(slot)
}

// lingerClose sends FIN and discards what the client still sends until it
// closes too or the linger timeout passes.
func (l *Loop) lingerClose(slot int32) {
	rc := l.conns[slot]
	rc.feeding = false
	if err := unix.Shutdown(rc.c.FD, unix.SHUT_WR); err != nil {
		l.close(slot)
		return
	}
	rc.state = stateLinger
	rc.discarded = 0
	l.setTimer(slot, classLinger, time.Now().Add(l.cfg.LingerTimeout))
	l.linger(slot)
}

func (l *Loop) linger(slot int32) {
	rc := l.conns[slot]
	var scratch [4096]byte
	for {
		n, err := unix.Read(rc.c.FD, scratch[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if err != nil || n == 0 {
			l.close(slot)
			return
		}
		rc.discarded += int64(n)
		if rc.discarded > maxLingerBytes {
			l.close(slot)
			return
		}
	}
}

// drain is graceful shutdown: connections waiting for a request are closed
// now; the others close after their current response.
func (l *Loop) drain() {
	l.draining = true
	for i := range l.conns {
		rc := l.conns[i]
		if rc.c == nil {
			continue
		}
		if rc.state == stateIdle || (rc.state == stateHeader && rc.end == rc.start) {
			l.close(int32(i))
		}
	}
}

func (l *Loop) close(slot int32) {
	rc := l.conns[slot]
	c := rc.c
	l.clearTimer(slot)
	if err := unix.Close(c.FD); err != nil && l.counters != nil {
		// EBADF would mean an ownership bug; count it as rejected so it shows.
		l.counters.Rejected.Add(1)
	}
	rc.pipe.finish()
	l.putBufAny(rc)
	gen := rc.gen + 1
	hdrs := rc.req.Headers // kept for reuse, as Reset keeps them
	*rc = rconn{gen: gen, prev: -1, next: -1, pipe: pipe{buf: rc.pipe.buf, ready: rc.pipe.ready}}
	rc.req.Headers = hdrs
	rc.req.Reset()
	l.free = append(l.free, slot)
	l.open.Add(-1)
	c.RunCleanups()
	if l.cfg.Closed != nil {
		l.cfg.Closed(c)
	}
}

func (l *Loop) putBufAny(rc *rconn) {
	rc.start, rc.end = 0, 0
	l.putBuf(rc)
}

// force ends every connection as fast as ownership allows: those the loop
// owns (and those whose dispatch is still pending) are closed; those
// another stage holds have their socket shut down, so the writer fails
// fast and hands them back to be closed. Their fds stay open until then,
// so no write can land in a reused fd.
func (l *Loop) force() {
	l.forced = true
	for _, slot := range l.blocked {
		if l.conns[slot].c != nil {
			l.close(slot)
		}
	}
	l.blocked = l.blocked[:0]
	for i := range l.conns {
		rc := l.conns[i]
		switch {
		case rc.c == nil:
		case rc.state == stateOut:
			_ = unix.Shutdown(rc.c.FD, unix.SHUT_RDWR)
			if rc.feeding {
				rc.feeding = false
				rc.pipe.fail(io.ErrUnexpectedEOF)
			}
		default:
			l.close(int32(i))
		}
	}
}

func (l *Loop) serveReady() {
	if len(l.ready) == 0 {
		return
	}
	ready := l.ready
	l.ready = nil
	for _, slot := range ready {
		if l.conns[slot].c != nil {
			l.readable(slot, false)
		}
	}
	if l.ready == nil {
		l.ready = ready[:0]
	}
}

// Timer FIFOs.

func (l *Loop) setTimer(slot int32, class int, deadline time.Time) {
	l.clearTimer(slot)
	rc := l.conns[slot]
	rc.class, rc.deadline = class, deadline
	q := &l.fifo[class]
	rc.prev, rc.next = q.tail, -1
	if q.tail >= 0 {
		l.conns[q.tail].next = slot
	} else {
		q.head = slot
	}
	q.tail = slot
}

func (l *Loop) clearTimer(slot int32) {
	rc := l.conns[slot]
	if rc.class == classNone {
		return
	}
	q := &l.fifo[rc.class]
	if rc.prev >= 0 {
		l.conns[rc.prev].next = rc.next
	} else {
		q.head = rc.next
	}
	if rc.next >= 0 {
		l.conns[rc.next].prev = rc.prev
	} else {
		q.tail = rc.prev
	}
	rc.class, rc.prev, rc.next = classNone, -1, -1
}

func (l *Loop) nextTimeout(now time.Time) time.Duration {
	best := time.Duration(-1)
	for c := classHeader; c < numClasses; c++ {
		if h := l.fifo[c].head; h >= 0 {
			d := l.conns[h].deadline.Sub(now)
			if d < 0 {
				d = 0
			}
			if best < 0 || d < best {
				best = d
			}
		}
	}
	if l.stopping.Load() && (best < 0 || best > 10*time.Millisecond) {
		best = 10 * time.Millisecond
	}
	return best
}

func (l *Loop) expire(now time.Time) {
	for c := classHeader; c < numClasses; c++ {
		for {
			h := l.fifo[c].head
			if h < 0 || l.conns[h].deadline.After(now) {
				break
			}
			rc := l.conns[h]
			switch {
			case c == classHeader && rc.state == stateHeader && rc.end > rc.start,
				c == classHeader && rc.state == stateBody:
				l.fail(h, 408) // a partial request: say why we hang up
			default:
				l.close(h)
			}
		}
	}
}

// noBody is the body of a request without one. Its zero size means storing
// it in an io.Reader allocates nothing.
type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, ioEOF }
