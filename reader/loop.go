package reader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
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
	// DefaultMaxHeadBytes bounds the bytes buffered for one request's
	// head (HTTP/1.1's default header block limit).
	DefaultMaxHeadBytes = 64 << 10
	// DefaultPipeBytes bounds how far a streaming body may run ahead of its
	// handler: the loop stops reading the socket when the pipe holds this much.
	DefaultPipeBytes = 64 << 10
	// maxDiscardBytes is how many bytes of unread request body (chunk
	// framing included) the loop will read and throw away to keep a
	// connection alive after its response (stages.DiscardLimit); beyond
	// it a lingering close is cheaper.
	maxDiscardBytes = stages.DiscardLimit

	// DefaultMinBodyRate is the slowest a client may send a streamed
	// request body once DefaultMinBodyRateGrace has passed, in bytes per
	// second: Apache's mod_reqtimeout "body=20,MinRate=500". A client
	// must deliver grace + received/rate seconds' worth, so a fast start
	// earns credit and a 1 MiB upload at one byte every 10 s is cut off
	// after 20 s instead of holding its handler for days; the clock stops
	// while the body's pipe is full (the handler, not the client, is slow).
	DefaultMinBodyRate = 500
	// DefaultMinBodyRateGrace: see DefaultMinBodyRate.
	DefaultMinBodyRateGrace = 20 * time.Second
)

// Per-turn budgets.
const (
	// maxReadBytesPerTurn bounds what one connection may read before the
	// loop serves the others (edge-triggered: the rest waits in the ready list).
	maxReadBytesPerTurn = 256 << 10
	// maxLingerBytes: a client that keeps sending after we said goodbye
	// is not read further than this. The loop stops reading it, and closes
	// when the client does or at the linger timeout, not at once: a close
	// with the client's bytes unread answers them with a reset, which can
	// reach the client before it has read the response and destroy it
	// there (net/http stops reading and closes 500 ms later, for the same
	// reason).
	maxLingerBytes = 64 << 10
)

// Config sets a reader loop's limits and hooks.
type Config struct {
	// MaxHeadBytes is the most the loop buffers for one request's head
	// before it refuses it with stages.ErrHeadTooLarge; a protocol's
	// parser bounds its heads itself, and says so first. 0 means
	// DefaultMaxHeadBytes.
	MaxHeadBytes  int
	HeaderTimeout time.Duration // first byte of a request to its last header byte; then 408
	IdleTimeout   time.Duration // keep-alive wait for the next request's first byte
	LingerTimeout time.Duration // lingering close: wait for the client's FIN
	BodyTimeout   time.Duration // a handler waiting this long for body bytes gets an error
	MaxBodyBytes  int64         // larger bodies are refused (declared) or fail to read (decoded): stages.ErrBodyTooLarge
	PrereadBody   int           // stages.BodyLength bodies up to this size are read before dispatch
	PipeBytes     int           // streaming body buffer per request
	QueueCapacity int           // hand-off queue from the listener and writers

	// MinBodyRate cuts off a client that sends a streamed body slower
	// than this many bytes per second once MinBodyRateGrace has passed:
	// the handler's Read fails with ErrBodyTooSlow (a 408, unless the
	// handler had committed its response), and the connection closes after
	// the response. The client must have delivered
	// MinBodyRate × (waited − MinBodyRateGrace) bytes, where waited counts
	// only time the loop was ready to take more. 0 means
	// DefaultMinBodyRate; negative disables the check.
	MinBodyRate      int64
	MinBodyRateGrace time.Duration // 0 means DefaultMinBodyRateGrace

	// Dispatch hands a parsed request to the processors (or answers it
	// otherwise: the runtime may refuse it with a 503 through the
	// writer), after which the connection is out of the loop's care until
	// it is returned. False means the processors' queue is full: the loop
	// keeps the request, reads nothing more from its connection, and
	// dispatches it again after Unblock.
	Dispatch func(*stages.Request) bool
	// Inline reports whether Dispatch will serve the request on the
	// loop itself, its reply written before Dispatch returns unless the
	// socket is full (stage fusion). A pipelined protocol's request so
	// served, with none of its connection in flight, goes out as one
	// that has the connection to itself (no ticket), so that the loop
	// reads the connection's next request only once it is answered: it
	// can then be served inline too, where one read meanwhile would find
	// the first still in flight and go to the processors. Nil: none is.
	Inline func(*stages.Request) bool
	// Flush sends what Dispatch queued to be written in one system call
	// for several connections (writer.Direct.WriteBatched): the loop
	// calls it before each wait and before it acts on what came back to
	// it, so no queued reply waits for an event. Such a connection is out
	// until its reply is sent, as one served inline always is. Nil: the
	// runtime queues nothing.
	Flush func()
	// Protocols are the protocols the loop serves, by stages.ProtocolID:
	// a connection is parsed with its entry's FrameParser. A connection
	// whose protocol has no entry is closed (a wiring bug).
	Protocols []stages.Protocol
	// Reject answers a request the loop cannot dispatch (its parser's
	// error, stages.ErrHeadTimeout, ErrHeadTooLarge or ErrBodyTooLarge)
	// with its protocol's Reject, through the writer, which hands the
	// connection back for a lingering close. req may be partly parsed.
	Reject func(c *stages.Conn, req *stages.Request, err error)
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

	// Classify, if set, gives a request the class Dispatch would (a
	// stages.ClassQueue class): a request of a class with requests the
	// processors had no room for waits behind them.
	Classify func(*stages.Request) uint8

	// Handover picks the loop a connection moves to when this one gives
	// it away (Retire, Rebalance): another loop of the stage that takes
	// connections, or nil when there is none (the connection stays). It
	// runs on this loop's goroutine.
	Handover func(from *Loop) *Loop

	// Nudge, if set, is the stages.LoopNudge the loop joins, so that
	// CPU-bound workers hand it the CPU when its clients have written.
	Nudge *stages.LoopNudge
}

func (c *Config) fill() {
	if c.MaxHeadBytes <= 0 {
		c.MaxHeadBytes = DefaultMaxHeadBytes
	}
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
	if c.MinBodyRate == 0 {
		c.MinBodyRate = DefaultMinBodyRate
	}
	if c.MinBodyRateGrace <= 0 {
		c.MinBodyRateGrace = DefaultMinBodyRateGrace
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
	// A pipelined protocol's connection (flight.go):
	stateFull    // its window of requests in flight is full, or a parked request waits for earlier answers: not read → header, idle, closing
	stateClosing // closed as far as reading goes; the fd waits for the answers in flight → closed
)

var stateNames = [...]string{"free", "header", "body", "out", "drain", "idle", "linger", "full", "closing"}

const numStates = len(stateNames)

// setState moves rc, a connection in the table, to state s. Every change
// of a tracked connection's state goes through here, so that the census
// can count by state without a pass over the table.
func (l *Loop) setState(rc *rconn, s connState) {
	l.states[rc.state]--
	l.states[s]++
	rc.state = s
	l.stale = true
}

// track counts rc, just put in the table; untrack uncounts it, about to
// leave the table (closed, or given to another loop).
func (l *Loop) track(rc *rconn) {
	l.states[rc.state]++
	if rc.work != nil {
		l.worked++
	}
	l.stale = true
}

func (l *Loop) untrack(rc *rconn) {
	l.states[rc.state]--
	if rc.work != nil {
		l.worked--
	}
	l.stale = true
}

// out is how many connections have a request out with another stage.
func (l *Loop) out() int64 { return l.states[stateOut] + l.states[stateFull] }

// checkDrift counts the table by state with a pass over it and keeps, in
// drift, the first time the kept counts differ (checkCounts).
func (l *Loop) checkDrift() {
	var states [numStates]int64
	var worked int64
	for _, rc := range l.conns {
		if rc == nil {
			continue
		}
		states[rc.state]++
		if rc.work != nil {
			worked++
		}
	}
	if states != l.states || worked != l.worked {
		d := fmt.Sprintf("reader %d: kept %v with %d records, counted %v with %d", l.id, l.states, l.worked, states, worked)
		l.drift.CompareAndSwap(nil, &d)
	}
}

func (s connState) String() string { return stateNames[s] }

// timeout classes, one FIFO each; every entry of a class is appended with
// the same duration, so each list stays sorted.
const (
	classNone = iota
	classHeader
	classIdle
	classLinger
	classBody // a streamed body's minimum-rate check, every bodyRateCheck
	numClasses
)

// bodyRateCheck is how often a streamed body is held to its minimum rate.
// A fixed period keeps the class a FIFO (a deadline that moves with every
// byte would not); a late check costs a slow client one more second.
const bodyRateCheck = time.Second

// msgOp is what another stage asks of the loop about a connection.
type msgOp uint8

const (
	opAdopt    msgOp = iota // from the listener: a new connection
	opReturn                // from the writer: response done
	opResume                // from a handler: the body pipe has room again
	opMove                  // from another reader loop: a connection it gave away (handover.go)
	opAnswered              // from the writer: one of a connection's requests in flight is answered (flight.go)
)

type msg struct {
	c     *stages.Conn
	rc    *rconn // opMove: the connection's record, as its last loop left it
	op    msgOp
	fate  stages.Fate // opReturn; opMove with back
	back  bool        // opMove: the connection has just come back from its request, with fate
	class uint8       // opMove: the timeout class it was under (its deadline is in rc)
	// ticket: opAnswered's request (stages.Request.Ticket).
	ticket int32
}

// rconn is the loop's record of one connection: what it must remember
// between requests. It is small (48 bytes) because a server holds many
// more idle keep-alive connections than busy ones: the request being read
// and its buffers live in a work record, taken from the loop's stash at a
// request's first byte and given back when the connection goes idle again
// (nginx frees a request's pool and buffers between keep-alive requests
// for the same reason).
type rconn struct {
	c *stages.Conn
	// work is the request in hand; nil while the connection waits for a
	// request's first byte (idle, or new and silent). Its fields are
	// promoted: touch them only where the state says a request is in hand.
	*work
	seq        uint64 // requests so far; the next one's Seq is seq+1
	gen        uint32
	state      connState
	class      uint8
	peerClosed bool  // EOF seen: no more requests after the current one
	mustClose  bool  // the request's framing was lost (a body error): linger, then close
	deadline   int64 // of the timer in class, in ns since the loop's epoch
	prev, next int32
}

// work is one request's state while the reader has it in hand, from its
// first byte until the connection is idle again (or closed). The
// Request's address is stable while other stages hold it, since work is a
// pointer; a work is never held by two connections at once (takeWork,
// dropWork).
type work struct {
	buf        []byte // read buffer; the current request starts at buf[start]
	start, end int
	hdrLen     int // header block length of the dispatched request
	consumed   int // bytes of buf from start that belong to the dispatched request
	// parsers hold the request parser of each protocol this record has
	// served, by stages.ProtocolID: made the first time, kept (reset)
	// with the record in the loop's pool, so a loop serving several
	// protocols does not make a parser per request.
	parsers   []stages.FrameParser
	req       stages.Request
	small     bytes.Reader       // body of a preread request
	pipe      pipe               // body of a streaming request
	feeding   bool               // the loop is still reading this request's body
	remaining int64              // Content-Length body bytes not yet read
	decoder   stages.BodyDecoder // a stages.BodyDecoded body's, the parser's; nil for a counted body
	fpos      int                // next body byte in buf not yet moved to the pipe
	carry     []byte             // bytes past a decoded body: the next request's start
	bodyTotal int64
	discarded int64
	// drained: the request's last read left the socket empty (it found
	// EAGAIN, or did not fill the buffer) and no readiness event has come
	// since. Edge-triggered, any byte that arrives later raises a new
	// event, and one that comes while another stage holds the connection
	// clears this; so a Return that finds it set need not read, a read
	// that would only find EAGAIN (one syscall per keep-alive request).
	// It lives in work because it matters only from a request's last read
	// to its Return, while the request is in hand.
	drained bool
	// finQueued: an event reported the client's FIN (or a hangup) while
	// this record was in hand, so the socket ends in an EOF that a short
	// read does not return: the read after it does. Edge-triggered, the
	// FIN raises no second event, so the loop must keep reading (drained
	// stays false) until it finds the EOF. Without it, a client that sent
	// a request and half-closed in one go, or whose FIN came while the
	// request was out with the next one's bytes partly read, kept its
	// connection open until the idle timeout. Set from the event, never
	// cleared: the connection ends at that EOF.
	finQueued bool
	// refusal is a pipelined connection's refusal (reject) waiting for
	// the answers to its requests in flight, which go first.
	refusal error
	// pipelined: the request in hand had begun arriving before the one
	// ahead of it came back, so its client pipelined (hangUp). Set at
	// every request's start from the buffer (nextRequest).
	pipelined bool
	// A read made for this record by gather, for readSome to take
	// (gather.go).
	pre    uint8
	preN   int
	preErr error

	// A streamed body's minimum rate: since rateFrom the loop has waited
	// on the client, which has sent rateBytes; the clock stops while the
	// pipe is full (from rateStopped, zero while reading).
	rateFrom    time.Time
	rateBytes   int64
	rateStopped time.Time
	rateAwaits  bool // stages.BodyPlan.Await: the clock starts with the first body byte, once the client has been told to send

	// A pipelined protocol's connection (flight.go). The connection's
	// current record counts its requests in flight, out of outBytes of
	// request; a launched request's record holds its size instead.
	out      int32
	outBytes int64
	size     int64
	parked   bool // the request parsed in this record waits to be launched
	overtake bool // the parsed request's stages.Head.Overtake
	key      uint64
	// flight lists the connection's requests in flight (the current
	// record holds the head), linked through nextOut, for their keys.
	flight, nextOut *work
}

// Loop is one reader event loop: the connection table, timers and queue
// of a reader, turned by a stages.Loop (see turn).
type Loop struct {
	id     int
	cfg    Config
	core   *stages.Loop
	poller *poll.Poller
	in     *stages.Ring[msg]
	ctx    context.Context // Run's: its end means close everything now

	// Batched reads (gather.go): the ring, nil for a read each; the
	// turn's connections; the reads gather made, and the system calls
	// that made them (ReadCounts).
	ring                       *poll.Ring
	gatherMin                  int // gatherMin, but 1 in tests
	gathered                   []int32
	readsGathered, readBatches atomic.Uint64

	// conns is the connection table: a slot's entry is nil while the
	// slot is free, so a burst of connections leaves behind 8 bytes per
	// slot rather than a whole rconn (and trim cuts the free tail).
	conns []*rconn
	free  []int32
	gen   uint32 // last generation given to a connection: loop-wide, so a reused slot never repeats one
	open  atomic.Int64

	fifo  [numClasses]struct{ head, tail int32 }
	epoch time.Time     // timer deadlines count from here
	mono  time.Duration // the latest clock reading since epoch (parse's), for clock
	// The turn's time (the stage loop's Now) and its offset from epoch,
	// for the timers most requests set in it (turnOffset).
	offsetOf time.Time
	offset   time.Duration

	ready   []int32      // connections with more to read than one turn allowed
	blocked blockedQueue // parsed requests the processors had no room for, by slot (blocked.go)
	// Requests launched beside others of their connection (flight.go):
	// their records by ticket-1, the free entries, and the tickets of
	// those the processors had no room for.
	windows     []window // by stages.ProtocolID
	held        []*work
	heldFree    []int32
	heldBlocked blockedQueue // by ticket
	nblocked    atomic.Int32 // both queues' requests, for Blocked
	unblocked   atomic.Bool  // Unblock was called: the processors have room again
	// spill holds what send found no room for in the queue (see send).
	spillMu sync.Mutex
	spill   []msg
	spilled atomic.Int32 // len(spill)
	// own holds the Returns the loop made to itself (ReturnOwn), in order;
	// drainQueue takes them before the queue. Loop goroutine only.
	own       []msg
	draining  bool
	forced    bool
	counters  *stages.StageCounters
	readLimit int

	// Memory kept for reuse, each bounded, and each giving back what a
	// whole decayInterval did not use (stash).
	bufs      stash[[]byte] // read buffers of DefaultReadBuffer bytes
	pipes     stash[[]byte] // streamed-body pipe buffers of PipeBytes
	spares    stash[*rconn] // connection records
	works     stash[*work]  // request records, with their header arrays
	big       bigBufs       // read buffers for requests larger than DefaultReadBuffer (bigbuf.go)
	nextDecay time.Duration // when giveBack next runs, from epoch

	// census is the loop's connections by state, published at most once
	// per censusInterval by the loop itself (it alone may read its table).
	census     [numCensus]atomic.Int64
	nextCensus time.Duration // when takeCensus next counts, from epoch
	// withWork is how many connections held a request record at the last
	// census: those with a request in hand, never the idle ones.
	withWork atomic.Int64
	// states counts the table's connections by state, and worked those
	// holding a request record, kept as they change (setState, track,
	// untrack, takeWork, dropWork) rather than counted by a pass over the
	// table: at a million connections a pass a second touched every
	// record. stale: they changed since the census last published them.
	// Loop goroutine only.
	states [numStates]int64
	worked int64
	stale  bool
	// checkCounts makes every turn check states and worked against a
	// pass over the table, and keep the first difference in drift
	// (tests).
	checkCounts bool
	drift       atomic.Pointer[string]

	resets      atomic.Uint64 // connections closed with RST
	slowHeaders atomic.Uint64 // requests cut off at HeaderTimeout, partly received (a 408)
	slowBodies  atomic.Uint64 // streamed bodies cut off below the minimum rate
	hangups     atomic.Uint64 // clients that hung up while their request was out

	drainReq atomic.Bool // Drain was called; the loop drains on its next turn

	// Giving connections away to other loops (handover.go).
	life     atomic.Int32 // lifeServing, lifeRetiring, lifeExited
	giveAway atomic.Int64 // connections Rebalance asked for and not yet handed over
	sweepReq atomic.Bool  // Retire or Rebalance was called: look through the table once
	moved    atomic.Uint64
}

// censusInterval: state counts are for dashboards, and a second old is
// fine. The census publishes the counts kept as connections change state
// (setState), once per censusInterval at most and only when they changed
// or a request is out (whose phase only a pass over the table can read):
// a loop holding idle connections is not woken for it. Counting the table
// every second instead cost 23 ns a connection a second (15,000 idle
// connections: 0.80 ms of CPU a second, against 0.45 without the pass),
// 2% of a core at a million.
const censusInterval = time.Second

// Census counters, by what a connection waits for.
const (
	censusIdle = iota
	censusReading
	censusQueued
	censusRunning
	censusParked
	censusWriting
	censusLingering
	numCensus
)

// Census is the loop's connections by state as of its last count. A
// connection whose request is out of the reader's care is counted by the
// request's stages.Phase.
type Census struct {
	Idle      int // keep-alive, waiting for the next request
	Reading   int // a request is arriving (header, or a body read before dispatch), or an unread body is being discarded
	Queued    int // dispatched, waiting for a processor place
	Running   int // a handler runs with a processor place
	Parked    int // a handler waits on its client without a place
	Writing   int // the handler has returned; the response is still being written
	Lingering int // response sent, waiting for the client to close
}

// Census returns the last count. Any goroutine.
func (l *Loop) Census() Census {
	return Census{
		Idle:      int(l.census[censusIdle].Load()),
		Reading:   int(l.census[censusReading].Load()),
		Queued:    int(l.census[censusQueued].Load()),
		Running:   int(l.census[censusRunning].Load()),
		Parked:    int(l.census[censusParked].Load()),
		Writing:   int(l.census[censusWriting].Load()),
		Lingering: int(l.census[censusLingering].Load()),
	}
}

// Resets is the number of connections the loop closed with RST (timed
// out with data still queued, or given up by the writer), SlowHeaders the
// number of requests cut off at HeaderTimeout with part of them received
// (their head, or the body read with it before dispatch: slowloris's
// clients), SlowBodies the number of streamed bodies cut off below the
// minimum rate, and HangUps the number of clients that hung up while
// their request was out. Any goroutine.
func (l *Loop) Resets() uint64      { return l.resets.Load() }
func (l *Loop) SlowHeaders() uint64 { return l.slowHeaders.Load() }
func (l *Loop) SlowBodies() uint64  { return l.slowBodies.Load() }
func (l *Loop) HangUps() uint64     { return l.hangups.Load() }

func (l *Loop) takeCensus(at time.Duration) {
	if at < l.nextCensus || (!l.stale && l.out() == 0) {
		return
	}
	l.nextCensus = at + censusInterval
	st := &l.states
	var n [numCensus]int64
	n[censusIdle] = st[stateIdle]
	n[censusReading] = st[stateHeader] + st[stateBody] + st[stateDrain]
	n[censusLingering] = st[stateLinger]
	n[censusWriting] = st[stateClosing]
	if l.out() > 0 {
		// Where another stage has the request, its phase says what the
		// connection waits for: the one pass over the table left, made
		// only while some request is out.
		for _, rc := range l.conns {
			if rc == nil || (rc.state != stateOut && rc.state != stateFull) {
				continue
			}
			switch rc.c.Phase() {
			case stages.PhaseQueued:
				n[censusQueued]++
			case stages.PhaseRunning:
				n[censusRunning]++
			case stages.PhaseParked:
				n[censusParked]++
			default:
				n[censusWriting]++
			}
		}
	}
	for i := range n {
		l.census[i].Store(n[i])
	}
	l.withWork.Store(l.worked)
	l.stale = false
}

// New makes reader loop id. counters may be shared with a Stats reader.
func New(id int, cfg Config, counters *stages.StageCounters) (*Loop, error) {
	cfg.fill()
	if cfg.Dispatch == nil || cfg.Reject == nil {
		return nil, errors.New("quartet: reader: Config.Dispatch and Config.Reject are required")
	}
	l := &Loop{id: id, cfg: cfg, counters: counters, in: stages.NewRing[msg](cfg.QueueCapacity), gatherMin: gatherMin}
	core, err := stages.NewLoop(stages.LoopHooks{
		Drain: l.drainQueue, Turn: l.turn, Pending: l.pending, Gather: l.gather, Event: l.event,
	}, stages.LoopOptions{Nudge: cfg.Nudge})
	if err != nil {
		return nil, err
	}
	l.core, l.poller = core, core.Poller()
	l.bufs.max, l.pipes.max, l.spares.max, l.works.max = maxStashedBufs, maxStashedPipes, maxStashedConns, maxStashedWorks
	l.big.init()
	l.epoch = time.Now()
	for i := range l.fifo {
		l.fifo[i].head, l.fifo[i].tail = -1, -1
	}
	l.readLimit = cfg.MaxHeadBytes
	l.windows = windows(cfg.Protocols)
	return l, nil
}

// Open is the number of connections the loop holds.
func (l *Loop) Open() int { return int(l.open.Load()) }

// QueueDepth and QueueCap describe the loop's hand-off queue.
func (l *Loop) QueueDepth() int { return l.in.Len() + int(l.spilled.Load()) }
func (l *Loop) QueueCap() int   { return l.in.Cap() }

// send queues m for the loop, and never waits: what finds the queue full
// goes to the spill list, which drainQueue takes after the queue. The
// loop sends to itself (a response it wrote itself, or a 503 whose writer
// finished first, is let go on the loop's goroutine, and its Return comes
// here), and a loop waiting for room in its own queue waits forever: with
// queues smaller than the connections, 200 connections wedged a loop of
// --queue 32, and with it the writer and listener waiting on it. The
// spill holds at most a message or two per connection the loop owns (a
// Return, a Resume); new connections wait for room instead (Adopt). While
// anything is spilled, everything spills, so a sender's messages keep
// their order.
func (l *Loop) send(m msg) {
	if l.spilled.Load() > 0 || !l.in.Push(m) {
		l.spillMu.Lock()
		l.spill = append(l.spill, m)
		l.spilled.Add(1)
		l.spillMu.Unlock()
	}
	if l.counters != nil {
		l.counters.Enqueued.Add(1)
	}
	l.core.Wake()
}

// Adopt gives the loop a newly accepted connection and reports true, or
// reports false when the loop has retired (Retire) and is gone: the
// caller gives the connection to another loop. Listener only.
func (l *Loop) Adopt(c *stages.Conn) bool {
	if !l.reserve() {
		return false
	}
	// The listener waits for room, not on this loop's goroutine: a loop
	// this far behind is given new connections no faster than it takes
	// them.
	for l.in.Len() >= l.in.Cap() {
		l.core.Wake()
		time.Sleep(50 * time.Microsecond)
	}
	l.send(msg{c: c, op: opAdopt})
	return true
}

// Return gives a connection back after its request, with the fate its
// response decided (stages.Fate says what each one does here). The stage
// that held the connection last calls it: the writer's recycling, or the
// runtime for requests a stopping pool left unserved.
func (l *Loop) Return(c *stages.Conn, f stages.Fate) { l.send(msg{c: c, op: opReturn, fate: f}) }

// ReturnOwn is Return made by the loop's own goroutine, inside its
// Dispatch: the response of a request it served inline and wrote itself
// has been let go. It skips the queue, whose push and pop (and the
// Enqueued and Dequeued counts, lines every sender writes) cost about as
// much as the rest of the hand-back; the loop acts on it at its next
// drain, as on a queued Return. Loop goroutine only.
func (l *Loop) ReturnOwn(c *stages.Conn, f stages.Fate) {
	l.own = append(l.own, msg{c: c, op: opReturn, fate: f})
}

// Unblock tells the loop that the processors' queue has room again, so
// that it dispatches the requests it holds because the queue was full. Any
// goroutine; the processors' queue calls it (through the runtime) when a
// pop makes room after a dispatch found it full.
func (l *Loop) Unblock() {
	l.unblocked.Store(true)
	l.core.Notify() // may come at any time, also as the loop closes
}

// Drain starts a graceful shutdown: idle connections are closed, the others
// when their current response is done. Any goroutine, at any time, also
// as or after the loop retires.
func (l *Loop) Drain() {
	l.drainReq.Store(true)
	l.core.Notify()
}

// Stop makes Run return once the loop holds no connections (after Drain),
// or at once when ctx given to Run is cancelled.
func (l *Loop) Stop() { l.core.Stop() }

// Run is the loop. When ctx is cancelled every connection still held is
// closed; the poller and waker are released on return.
func (l *Loop) Run(ctx context.Context) error {
	defer l.core.Close()
	defer func() {
		if l.ring != nil { // gather drops a ring that failed
			l.ring.Close()
			l.ring = nil
		}
	}()
	l.ctx = ctx
	if l.cfg.Init != nil {
		if err := l.cfg.Init(); err != nil {
			l.force()
			return fmt.Errorf("reader %d: init: %w", l.id, err)
		}
	}
	if l.cfg.Exit != nil {
		defer l.cfg.Exit() // before the poller and waker close (deferred earlier)
	}
	if err := l.core.Run(ctx); err != nil {
		// The poller is gone: nothing can be served. Close what the
		// loop owns; the rest cannot be waited for.
		l.force()
		return fmt.Errorf("reader %d: %w", l.id, err)
	}
	return nil
}

// turn is the reader's work between waits, after the queue is drained:
// connections with bytes left from the last turn, dispatches the
// processors had no room for, timeouts; and how long to wait.
func (l *Loop) turn(now time.Time, stopping bool) (time.Duration, bool) {
	if !l.draining && l.drainReq.Load() {
		l.drain()
	}
	l.sweep()
	l.serveReady()
	l.retryBlocked()
	l.flush() // before the timers: a connection whose reply is queued is out, not idle
	// The turn's clock as an offset from epoch, once: the timers, the
	// census and giveBack all count from there.
	at := l.turnOffset()
	l.expire(now, at)
	if l.checkCounts {
		l.checkDrift()
	}
	l.takeCensus(at)
	l.giveBack(at)
	if stopping {
		if l.ctx.Err() != nil && !l.forced {
			l.force()
		}
		if l.open.Load() == 0 {
			return 0, true
		}
	}
	if l.life.Load() == lifeRetiring && l.open.Load() == 0 {
		if l.exit() {
			return 0, true
		}
		return time.Millisecond, false // a connection arriving as it tried: try again soon
	}
	timeout := l.nextTimeout(at)
	if (l.stale || l.out() > 0 || l.holdsSpares()) && (timeout < 0 || timeout > censusInterval) {
		// The census, and giving memory back. A loop whose connections
		// stay as they are (a million idle ones) is not woken for it.
		timeout = censusInterval
	}
	if len(l.ready) > 0 || len(l.own) > 0 {
		timeout = 0
	}
	return timeout, false
}

// next takes the next message: from the queue, then what send spilled
// (which is younger than all the queue holds).
func (l *Loop) next() (msg, bool) {
	if m, ok := l.in.Pop(); ok || l.spilled.Load() == 0 {
		return m, ok
	}
	return l.unspill()
}

// unspill takes the oldest message send spilled.
func (l *Loop) unspill() (msg, bool) {
	l.spillMu.Lock()
	defer l.spillMu.Unlock()
	if len(l.spill) == 0 {
		return msg{}, false
	}
	m := l.spill[0]
	l.spill[0] = msg{}
	l.spill = l.spill[1:]
	if len(l.spill) == 0 {
		l.spill = nil // a burst's list is not kept
	}
	l.spilled.Add(-1)
	return m, true
}

// pending is the re-check after the loop announced sleep: a hand-off
// pushed, or an Unblock, since the turn looked found the loop running and
// wrote no eventfd.
func (l *Loop) pending() bool {
	return len(l.own) > 0 || l.in.Len() > 0 || l.spilled.Load() > 0 || l.unblocked.Load() || l.sweepReq.Load() || (l.drainReq.Load() && !l.draining)
}

// event handles a readiness event for a connection, unless the connection
// it was collected for has gone from its slot since.
func (l *Loop) event(ev poll.Event) {
	slot := int32(ev.Token.Slot())
	if rc := l.conn(slot); ev.Token.Kind() != poll.KindConn || rc == nil || !ev.Token.Matches(rc.gen) {
		return
	}
	l.readable(slot, ev.Hangup() || ev.Error())
}

// drainQueue acts on up to budget messages from the other stages and
// returns how many it took.
func (l *Loop) drainQueue(budget int) int {
	// The replies of the last turn's events go first; their connections
	// come back to drainOwn, whose next requests, already read, are
	// served and their replies sent in turn, until none is left: a
	// pipelining client is answered at the pace of its requests, a batch
	// for every round, rather than one reply a turn.
	l.flush()
	n := 0
	for len(l.own) > 0 && n < budget {
		n += l.drainOwn(budget - n)
		l.flush()
	}
	for ; n < budget; n++ {
		m, ok := l.next()
		if !ok {
			break
		}
		if l.counters != nil {
			l.counters.Dequeued.Add(1)
		}
		l.act(m)
	}
	l.flush()
	return n
}

// flush sends the replies queued for one system call (Config.Flush).
func (l *Loop) flush() {
	if l.cfg.Flush != nil {
		l.cfg.Flush()
	}
}

// drainOwn acts on up to budget of the Returns the loop made to itself
// (ReturnOwn), oldest first, and returns how many. Acting on one may add
// another (the connection's next request, already buffered, served
// inline in turn).
func (l *Loop) drainOwn(budget int) int {
	n := 0
	for ; n < len(l.own) && n < budget; n++ {
		m := l.own[n]
		l.own[n] = msg{}
		l.act(m)
	}
	rest := copy(l.own, l.own[n:])
	clear(l.own[rest:])
	l.own = l.own[:rest]
	return n
}

// act carries out one message from the other stages (or from the loop
// itself: ReturnOwn).
func (l *Loop) act(m msg) {
	switch m.op {
	case opAdopt:
		if !l.forward(m) {
			l.adopt(m.c)
		}
	case opMove:
		if !l.forward(m) {
			l.arrive(m)
		}
	case opReturn:
		if rc := l.conn(m.c.RSlot); rc != nil && rc.c == m.c && !l.giveBackOnReturn(m.c.RSlot, m.fate) {
			l.returned(m.c.RSlot, m.fate)
		}
	case opAnswered:
		l.answered(m.c, m.ticket, m.fate)
	case opResume:
		rc := l.conn(m.c.RSlot)
		if rc != nil && rc.c == m.c && rc.state == stateOut && rc.feeding {
			l.feed(m.c.RSlot)
		}
	}
}

func (l *Loop) adopt(c *stages.Conn) {
	slot := l.alloc()
	rc := l.conns[slot]
	rc.c = c
	c.RSlot, c.Reader = slot, l.id // a retiring loop may have passed it on (forward)
	tok := poll.MakeToken(poll.KindConn, rc.gen, int(slot))
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
	l.startRequest(slot, false)
	l.readable(slot, false)
}

// alloc gives a new connection a slot and a record: a stashed one if
// there is one (so connection churn does not allocate), else a new one.
func (l *Loop) alloc() int32 {
	slot := l.takeSlot()
	rc, ok := l.spares.get()
	if !ok {
		rc = &rconn{prev: -1, next: -1}
	}
	l.gen++
	rc.gen = l.gen
	l.conns[slot] = rc
	l.track(rc)
	return slot
}

// takeSlot takes a free slot of the table, growing it if there is none.
func (l *Loop) takeSlot() int32 {
	if n := len(l.free); n > 0 {
		slot := l.free[n-1]
		l.free = l.free[:n-1]
		return slot
	}
	l.conns = append(l.conns, nil)
	return int32(len(l.conns) - 1)
}

// conn is the record in slot, or nil if the slot is free or gone.
func (l *Loop) conn(slot int32) *rconn {
	if slot < 0 || int(slot) >= len(l.conns) {
		return nil
	}
	return l.conns[slot]
}

// startRequest readies the connection for its next request: idle waits
// for the first byte under the keep-alive timeout; otherwise the header
// timeout runs (for a new connection, from accept, as nginx's
// client_header_timeout does). Both run from the turn's time.
func (l *Loop) startRequest(slot int32, idle bool) {
	rc := l.conns[slot]
	if w := rc.work; w != nil {
		w.req.Reset()
		w.feeding, w.remaining, w.bodyTotal, w.discarded = false, 0, 0, 0
		w.hdrLen, w.consumed = 0, 0
	}
	if idle {
		l.setState(rc, stateIdle)
		if rc.inFlight() == 0 {
			l.setTimerIn(slot, classIdle, l.cfg.IdleTimeout)
		} else {
			l.clearTimer(slot) // not idle while it waits for answers; flightDone starts the wait
		}
	} else {
		l.setState(rc, stateHeader)
		l.setTimerIn(slot, classHeader, l.cfg.HeaderTimeout)
	}
}

// readable handles a readiness event or a retry for slot.
func (l *Loop) readable(slot int32, hup bool) {
	rc := l.conns[slot]
	if hup && rc.work == nil && (rc.state == stateIdle || rc.state == stateHeader) {
		l.takeWork(rc) // to hold finQueued while the bytes ahead of the FIN are read
	}
	if rc.work != nil {
		rc.drained = false // an event, or work left over: bytes may wait
		rc.finQueued = rc.finQueued || hup
	}
	switch rc.state {
	case stateHeader, stateIdle, stateBody:
		l.readRequest(slot)
	case stateOut:
		if rc.feeding {
			l.feed(slot)
		} else if hup {
			l.hangUp(slot)
		}
		// Otherwise another stage owns the connection: edge-triggered, the
		// event is simply not ours, and drained (now false) makes the
		// writer's hand-back read.
	case stateFull:
		if hup {
			l.hangUp(slot)
		}
		// Not read until an answer comes back; resume reads then.
	case stateDrain:
		l.drainBody(slot)
	case stateLinger:
		l.linger(slot, hup)
	}
}

// How much memory the loop keeps for reuse at most (each stash also gives
// back what it does not use). Read buffers and request records: enough
// for a thousand connections arriving at once without allocating, 4 MiB
// and about 0.7 MiB at most. Pipes are 64 KiB each, and only streamed
// bodies need one. Connection records are 48 bytes.
const (
	maxStashedBufs  = 1024
	maxStashedPipes = 16
	maxStashedConns = 1024
	maxStashedWorks = 1024
	// maxKeptHeaders: a request record keeps its header array for the
	// next request unless an unusual one grew it past this many fields.
	maxKeptHeaders = 400
)

// takeWork gives rc a request record and a read buffer, if it has none:
// a request's first byte is about to be read.
func (l *Loop) takeWork(rc *rconn) {
	if rc.work == nil {
		w, ok := l.works.get()
		if !ok {
			w = new(work)
			w.req.Reset()
		}
		rc.work = w
		l.worked++
		l.stale = true
	}
	l.getBuf(rc)
}

// dropWork takes back rc's request record and its read buffer, cleared,
// once no request is in hand: the connection is idle with nothing
// buffered, or closed (after endBody). No other stage holds the request by
// then (the writer and processor let go before they return a
// connection), so the record is free for another connection. It keeps its
// header array and its pipe's channel and timer, so that reuse allocates
// nothing.
//
// A connection with requests in flight keeps its record, which counts
// them (flight.go).
func (l *Loop) dropWork(rc *rconn) {
	w := rc.work
	if w == nil || w.out > 0 {
		return
	}
	w.start, w.end = 0, 0
	l.putBuf(rc)
	rc.work = nil
	l.worked--
	l.stale = true
	l.stashWork(w)
}

// stashWork clears a request record without a buffer and keeps it for
// the next request.
func (l *Loop) stashWork(w *work) {
	hdrs := w.req.Headers[:0]
	if cap(hdrs) > maxKeptHeaders {
		hdrs = nil // grown by an unusual request: not worth keeping
	}
	ready, timer, parsers := w.pipe.ready, w.pipe.timer, w.parsers
	for _, p := range parsers {
		if p != nil {
			p.Reset() // the record may serve another connection next
		}
	}
	// One clear of the whole record, its request included; then what
	// Request.Reset sets beyond the zero value.
	*w = work{pipe: pipe{ready: ready, timer: timer}, parsers: parsers}
	w.req.Headers, w.req.ContentLength = hdrs, -1
	l.works.put(w)
}

// getBuf gives rc a read buffer if it has none (idle connections give
// theirs back, so an idle connection costs no buffer).
func (l *Loop) getBuf(rc *rconn) {
	if rc.buf != nil {
		return
	}
	if b, ok := l.bufs.get(); ok {
		rc.buf = b
	} else {
		rc.buf = make([]byte, DefaultReadBuffer)
	}
	rc.start, rc.end = 0, 0
}

// putBuf takes back an empty buffer.
func (l *Loop) putBuf(rc *rconn) {
	if rc.buf == nil || rc.end > rc.start {
		return
	}
	l.recycleBuf(rc.buf)
	rc.buf, rc.start, rc.end = nil, 0, 0
}

// holdsSpares reports whether the loop keeps memory it may have to give
// back (so it must wake up to do it).
func (l *Loop) holdsSpares() bool {
	return l.bufs.len() > 0 || l.pipes.len() > 0 || l.spares.len() > 0 || l.works.len() > 0 || l.big.len() > 0
}

// giveBack returns memory a burst of connections left behind, once per
// decayInterval: what the stashes did not use, and the free tail of the
// connection table.
func (l *Loop) giveBack(at time.Duration) {
	if at < l.nextDecay {
		return
	}
	l.nextDecay = at + decayInterval
	l.bufs.decay()
	l.pipes.decay()
	l.spares.decay()
	l.works.decay()
	l.big.decay()
	l.trim()
}

// minTrimConns is the table size below which trimming is not worth it.
const minTrimConns = 64

// trim shrinks the connection table to just past its highest slot in use,
// once at most a quarter of it is in use, and rebuilds the free list so
// that the lowest slots are handed out first and the table stays dense.
// Connections in use never move: their slots are in epoll tokens, in
// their Conns and in the timer lists.
func (l *Loop) trim() {
	if len(l.conns) <= minTrimConns || int(l.open.Load()) > len(l.conns)/4 {
		return
	}
	top := len(l.conns)
	for top > 0 && l.conns[top-1] == nil {
		top--
	}
	keep := max(top, minTrimConns)
	l.conns = append([]*rconn(nil), l.conns[:keep]...)
	free := make([]int32, 0, keep-int(l.open.Load()))
	for i := keep - 1; i >= 0; i-- {
		if l.conns[i] == nil {
			free = append(free, int32(i))
		}
	}
	l.free = free
	if cap(l.ready) > 4*minTrimConns {
		l.ready = append([]int32(nil), l.ready...)
	}
	l.blocked.trim(4 * minTrimConns)
	l.heldBlocked.trim(4 * minTrimConns)
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
		var n int
		var err error
		if rc.pre == preDone {
			n, err = rc.preN, rc.preErr
			rc.pre, rc.preErr = preNone, nil
		} else {
			n, err = poll.Read(rc.c.FD, rc.buf[rc.end:])
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			rc.drained = err == unix.EAGAIN
			return 0, err
		}
		if n == 0 {
			return 0, errEOF
		}
		// A stream socket's read copies all it has queued, up to the
		// room given: a read that leaves room left the socket empty.
		rc.drained = rc.end+n < len(rc.buf) && !rc.finQueued
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
		if rc.work != nil && rc.end > rc.start {
			if l.parse(slot) {
				if l.conns[slot] == rc && (rc.state == stateHeader || rc.state == stateIdle) {
					continue // launched beside others (flight.go): read on
				}
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
		l.takeWork(rc)
		limit := l.readLimit
		if rc.state == stateBody {
			limit = rc.hdrLen + int(rc.remaining) + (rc.end - rc.start - rc.hdrLen)
		}
		n, err := l.readSome(rc, limit)
		budget -= n
		switch {
		case err == nil:
			if rc.state == stateIdle {
				l.setState(rc, stateHeader)
				rc.req.Received = l.core.Now()
				l.setTimerIn(slot, classHeader, l.cfg.HeaderTimeout)
			} else if rc.req.Received.IsZero() {
				rc.req.Received = l.core.Now()
			}
		case err == unix.EAGAIN:
			if rc.end == rc.start && (rc.state == stateIdle || rc.state == stateHeader) {
				l.dropWork(rc) // waiting for a first byte costs no request record
			}
			return
		case err == errBufferFull:
			l.reject(slot, stages.ErrHeadTooLarge)
			return
		case err == errEOF && rc.end == rc.start:
			// A clean FIN between requests: the requests in flight are
			// answered (close waits for them) when the client said it
			// still reads (a pipelined protocol's half-close); otherwise
			// those not yet started are not started.
			if !l.halfCloseReads(rc) {
				l.goneWithFlight(rc)
			}
			l.close(slot)
			return
		default:
			// EOF mid-request, or a socket error: nobody to answer.
			l.goneWithFlight(rc)
			l.close(slot)
			return
		}
	}
}

// Every connection goes through the same states, whatever its protocol:
// the protocol's parser (stages.FrameParser) reads the head in place from
// the read buffer and plans the body, and the loop carries the plan out:
//
//	header  the head is parsed in place (zero-copy: the parser either
//	        points the request's fields into the buffer, or decodes the
//	        head into its own record, req.Frame);
//	body    a body to be read before dispatch (stages.BodyWhole, or a
//	        small stages.BodyLength one) is read whole into the same
//	        buffer; one that does not fit behind the head gets a buffer
//	        of its own size, which goes back to the garbage collector,
//	        not to the loop's pool, when the connection goes idle;
//	out     dispatched, a larger or coded body streaming to the handler
//	        through the pipe (body.go); the next request is parsed when
//	        the connection comes back (one request in the stages at a
//	        time, so replies go in request order and never interleave).
//
// A parser error, a head too large, a declared body too large, or a
// request not received within the header timeout is answered with the
// protocol's refusal (Config.Reject) and a lingering close, never by
// waiting.

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
		rc.req.Body, rc.req.BodyBytes = &rc.small, body
		rc.req.WireBytes.Add(int64(len(body)))
		rc.consumed = rc.hdrLen + len(body)
		rc.remaining = 0
		l.dispatch(slot)
		return true
	}
	if rc.state == stateIdle {
		l.setState(rc, stateHeader)
		rc.req.Received = l.core.Now()
		l.setTimerIn(slot, classHeader, l.cfg.HeaderTimeout)
	}
	parser := l.parser(rc)
	if parser == nil {
		l.close(slot) // a listener marked it with a protocol nobody serves: a wiring bug
		return true
	}
	// The parse is timed on the monotonic clock alone: time.Now would
	// read the wall clock too, a third clock read for every request.
	start := time.Since(l.epoch)
	rc.req.Conn = rc.c // the parser may keep connection state there
	head, err := parser.Head(rc.buf[rc.start:rc.end], &rc.req)
	if err == stages.ErrNeedMore {
		return false
	}
	end := time.Since(l.epoch)
	l.mono = end
	if l.counters != nil {
		l.counters.Service.Record(end - start)
	}
	if err != nil {
		l.reject(slot, err)
		return true
	}
	n, plan := head.Size, head.Body
	rc.hdrLen, rc.overtake, rc.key = n, head.Overtake, head.Key
	rc.req.WireBytes.Store(int64(n))
	rc.seq++
	rc.req.Conn, rc.req.Seq = rc.c, rc.seq
	if rc.req.Received.IsZero() {
		rc.req.Received = l.core.Now()
	}
	switch {
	case plan.Kind == stages.BodyNone:
		rc.req.Body = noBody{}
		rc.consumed = n
	case plan.Kind == stages.BodyLength && plan.Length > l.cfg.MaxBodyBytes:
		l.reject(slot, stages.ErrBodyTooLarge)
		return true
	case plan.Kind == stages.BodyWhole,
		plan.Kind == stages.BodyLength && plan.Length <= int64(l.cfg.PrereadBody) && !plan.Await:
		rc.req.ContentLength = plan.Length
		rc.remaining = plan.Length
		if buffered := rc.end - rc.start - n; int64(buffered) < rc.remaining {
			if need := n + int(rc.remaining); len(rc.buf)-rc.start < need && !l.regrow(slot, parser, head, need) {
				return true
			}
			l.setState(rc, stateBody) // parse dispatches once the body is in
			return false
		}
		body := rc.buf[rc.start+n : rc.start+n+int(rc.remaining)]
		rc.small.Reset(body)
		rc.req.Body, rc.req.BodyBytes = &rc.small, body
		rc.req.WireBytes.Add(int64(len(body)))
		rc.consumed = n + len(body)
		rc.remaining = 0
	default:
		l.startStream(slot, plan)
	}
	l.dispatch(slot)
	return true
}

// parser is the parser of rc's protocol for rc's request record, made
// the first time the record serves that protocol; nil if no protocol of
// the loop's has that id.
func (l *Loop) parser(rc *rconn) stages.FrameParser {
	id := int(rc.c.Protocol)
	if id >= len(l.cfg.Protocols) || l.cfg.Protocols[id] == nil {
		return nil
	}
	if id >= len(rc.parsers) {
		rc.parsers = append(rc.parsers, make([]stages.FrameParser, id+1-len(rc.parsers))...)
	}
	p := rc.parsers[id]
	if p == nil {
		p = l.cfg.Protocols[id].NewParser()
		rc.parsers[id] = p
	}
	return p
}

// regrow gives the request a buffer of need bytes from its first byte,
// for a body to be read before dispatch that does not fit behind its
// head in this one. A head whose fields alias the buffer is parsed again
// in the new one (stages.Head.Aliases), so they point into it; the same
// bytes parsed a moment ago, so that cannot fail, but if it did the
// request is refused. It reports false when it refused the request.
func (l *Loop) regrow(slot int32, parser stages.FrameParser, head stages.Head, need int) bool {
	rc := l.conns[slot]
	nb := l.big.get(need)
	rc.end = copy(nb, rc.buf[rc.start:rc.end])
	l.recycleBuf(rc.buf) // nothing points into it: an aliasing head is parsed again below
	rc.buf, rc.start = nb, 0
	if !head.Aliases {
		return true
	}
	received, length := rc.req.Received, rc.req.ContentLength
	parser.Reset()
	rc.req.Reset()
	rc.req.Conn = rc.c
	if _, err := parser.Head(rc.buf[:rc.end], &rc.req); err != nil {
		l.reject(slot, err)
		return false
	}
	rc.req.Conn, rc.req.Seq, rc.req.Received, rc.req.ContentLength = rc.c, rc.seq, received, length
	rc.req.WireBytes.Store(int64(head.Size))
	return true
}

func (l *Loop) dispatch(slot int32) {
	rc := l.conns[slot]
	if !rc.feeding && len(rc.carry) == 0 {
		if win := l.windowOf(rc); win.requests > 0 && (rc.out > 0 || l.cfg.Inline == nil || !l.cfg.Inline(&rc.req)) {
			l.launch(slot, win)
			return
		}
	}
	rc.req.Follows = rc.inFlight() > 0
	l.setState(rc, stateOut)
	rc.c.SetPhase(stages.PhaseQueued)
	l.clearTimer(slot)
	if rc.feeding && l.cfg.MinBodyRate > 0 {
		l.setTimer(slot, classBody, l.core.Now().Add(bodyRateCheck))
	}
	rc.req.Dispatched = l.clock()
	if l.queueBehind(&rc.req) || !l.cfg.Dispatch(&rc.req) {
		l.blocked.push(rc.req.Class, slot)
		l.countBlocked()
	}
}

// reject answers the current request with its protocol's refusal
// (stages.Protocol.Reject) through the writer; the connection comes back
// for a lingering close, as no further request of it will be read.
func (l *Loop) reject(slot int32, err error) {
	rc := l.conns[slot]
	if rc.inFlight() > 0 {
		// A pipelined connection's answers in flight go first (a
		// duplicate key is refused "once they are answered"): refused
		// now, the refusal and the writer's shutdown of the sending side
		// after it would cut them off. The connection is read no more;
		// flightDone refuses once the last answer is back.
		rc.refusal = err
		rc.feeding = false
		l.setState(rc, stateFull)
		l.clearTimer(slot)
		return
	}
	l.setState(rc, stateOut)
	rc.feeding = false
	rc.peerClosed = true // no further request will be read
	rc.c.SetPhase(stages.PhaseWriting)
	l.clearTimer(slot)
	rc.req.Follows = rc.inFlight() > 0
	l.cfg.Reject(rc.c, &rc.req, err)
}

// returned takes a connection back after its request, and carries out the
// fate its response decided.
func (l *Loop) returned(slot int32, f stages.Fate) {
	rc := l.conns[slot]
	if rc.state != stateOut {
		return
	}
	switch f {
	case stages.FateLinger:
		l.endBody(rc)
		rc.feeding = false
		l.setState(rc, stateLinger)
		l.setTimer(slot, classLinger, l.core.Now().Add(l.cfg.LingerTimeout))
		rc.discarded = 0
		l.linger(slot, false)
		return
	case stages.FateClose:
		l.close(slot)
		return
	case stages.FateReset:
		l.reset(slot)
		return
	}
	if rc.feeding {
		// The handler did not read its whole body: throw the rest away if
		// that is cheap, so the connection can carry another request.
		rc.pipe.finish()
		l.setState(rc, stateDrain)
		l.setTimer(slot, classHeader, l.core.Now().Add(l.cfg.HeaderTimeout))
		l.drainBody(slot)
		return
	}
	l.nextRequest(slot)
}

// nextRequest recycles the finished request and starts on the next one,
// from bytes already buffered (pipelining) or from the socket.
func (l *Loop) nextRequest(slot int32) {
	rc := l.conns[slot]
	l.endBody(rc)
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
	idle := rc.end == rc.start
	rc.pipelined = !idle
	l.startRequest(slot, idle)
	if idle && rc.drained {
		// Nothing buffered, the socket was empty when last read, and no
		// event came while the request was out: the next byte will raise
		// one. The request record and buffer go back until then.
		l.dropWork(rc)
		return
	}
	// Edge-triggered: bytes that arrived while the request was out raised
	// an event that was not ours to act on, so look now.
	l.readRequest(slot)
}

// endBody ends the request's body for good (later Reads fail) and takes
// back its pipe buffer, so that a connection that once streamed a body
// does not keep 64 KiB for the rest of its life. Only once the handler
// has returned: the connection is back, or the loop closes it.
func (l *Loop) endBody(rc *rconn) {
	rc.pipe.finish()
	if b := rc.pipe.release(); b != nil {
		l.pipes.put(b)
	}
}

// hangUp records that the client hung up while its request was out (a
// FIN or a reset seen while another stage holds the connection), unless
// it pipelined: a client that sends requests ahead and then half-closes
// wants its answers, those of the requests still unread and that of the
// request out, if it came pipelined too (its FIN may be seen only once
// that request is out, waiting in the queue). Other stages see it
// through Conn.Gone. A request that came on its own and was followed by
// a FIN is taken for abandoned: a FIN and a close look the same here.
func (l *Loop) hangUp(slot int32) {
	rc := l.conns[slot]
	if rc.c.Gone() {
		return
	}
	if rc.end > rc.start+rc.consumed || len(rc.carry) > 0 {
		return // pipelined request bytes already read
	}
	if n, err := rc.c.RecvQueue(); err == nil && n > 0 {
		return // pipelined request bytes still in the socket
	}
	rc.peerClosed = true
	if rc.pipelined || l.halfCloseReads(rc) {
		return // served, and then no further request
	}
	if rc.c.Phase() == stages.PhaseWriting {
		return // the handler is done: the writer finds out for itself
	}
	l.hangups.Add(1)
	rc.c.HangUp()
}

// halfCloseReads reports whether rc's protocol takes a client's FIN for
// a half-close, after which the client still reads the answers to the
// requests it sent: a pipelined protocol's (the messenger's, whose
// clients shut their sending side once they have sent their requests).
// HTTP/1.1 takes a FIN after a lone request for a client gone, whose
// request need not be run (hangUp).
func (l *Loop) halfCloseReads(rc *rconn) bool {
	id := int(rc.c.Protocol)
	if id >= len(l.cfg.Protocols) {
		return false
	}
	_, ok := l.cfg.Protocols[id].(stages.Pipelined)
	return ok
}

// reset closes the connection with RST instead of FIN: with SO_LINGER set
// to {on, 0}, close(2) drops whatever the socket still queues, so a client
// we gave up on is not fed megabytes by an orphaned socket for minutes
// (nginx's reset_timedout_connection).
func (l *Loop) reset(slot int32) {
	rc := l.conns[slot]
	_ = unix.SetsockoptLinger(rc.c.FD, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	l.resets.Add(1)
	l.close(slot)
}

// closeTimedOut closes a connection whose timer ran out: with a reset if
// the client left data of ours unacknowledged in the socket (it is not
// reading), with a FIN otherwise.
func (l *Loop) closeTimedOut(slot int32) {
	if q, err := l.conns[slot].c.SendQueue(); err == nil && q > 0 {
		l.reset(slot)
		return
	}
	l.close(slot)
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
	l.setState(rc, stateLinger)
	rc.discarded = 0
	l.setTimer(slot, classLinger, l.core.Now().Add(l.cfg.LingerTimeout))
	l.linger(slot, false)
}

// linger discards what a connection shut for writing still receives, up
// to maxLingerBytes, and closes it at the client's FIN. hup: its event
// reported a hang-up. Past maxLingerBytes the loop stops reading and
// leaves the rest to the timer, unless the client has finished sending
// (its FIN is queued): then what is left is what the socket holds, which
// is read to the end, so that the close sends no reset to a client that
// may still be reading the response.
func (l *Loop) linger(slot int32, hup bool) {
	rc := l.conns[slot]
	fin := hup || (rc.work != nil && rc.finQueued)
	if rc.discarded > maxLingerBytes && !fin {
		return
	}
	var scratch [4096]byte
	for budget := maxReadBytesPerTurn; ; {
		n, err := poll.Read(rc.c.FD, scratch[:])
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
		if budget -= n; budget <= 0 && fin && rc.work != nil {
			// The rest next turn; finQueued keeps the FIN in mind. Without
			// a record to keep it in, read on: the socket holds no more
			// than the window the client had when it finished.
			l.ready = append(l.ready, slot)
			return
		}
		if rc.discarded > maxLingerBytes && !fin {
			// Stop reading: the client's window closes, and its bytes
			// wait unread until it closes or the timer does.
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
		if rc == nil {
			continue
		}
		if rc.state == stateIdle || (rc.state == stateHeader && (rc.work == nil || rc.end == rc.start)) {
			l.close(int32(i))
		}
	}
}

func (l *Loop) close(slot int32) {
	rc := l.conns[slot]
	if rc.inFlight() > 0 {
		l.closeLater(slot)
		return
	}
	c := rc.c
	l.clearTimer(slot)
	if err := unix.Close(c.FD); err != nil && l.counters != nil {
		// EBADF would mean an ownership bug; count it as rejected so it shows.
		l.counters.Rejected.Add(1)
	}
	if rc.work != nil {
		l.endBody(rc)
		l.dropWork(rc)
	}
	l.untrack(rc)
	l.conns[slot] = nil
	l.free = append(l.free, slot)
	l.open.Add(-1)
	l.recycleConn(rc)
	c.RunCleanups()
	if l.cfg.Closed != nil {
		l.cfg.Closed(c)
	}
}

// recycleConn clears a closed connection's record (dropWork has taken its
// request record) and stashes it for the next connection.
func (l *Loop) recycleConn(rc *rconn) {
	*rc = rconn{prev: -1, next: -1}
	l.spares.put(rc)
}

// force ends every connection as fast as ownership allows: those the loop
// owns (and those whose dispatch is still pending) are closed; those
// another stage holds have their socket shut down, so the writer fails
// fast and hands them back to be closed. Their fds stay open until then,
// so no write can land in a reused fd.
func (l *Loop) force() {
	l.forced = true
	l.flush()
	l.blocked.each(func(slot int32) bool {
		if l.conn(slot) != nil {
			l.close(slot)
		}
		return false
	})
	l.countBlocked()
	for i := range l.conns {
		rc := l.conns[i]
		switch {
		case rc == nil:
		case rc.inFlight() > 0 && rc.state != stateOut:
			l.shutFlight(int32(i))
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
		if l.conn(slot) != nil {
			l.readable(slot, false)
		}
	}
	if l.ready == nil {
		l.ready = ready[:0]
	}
}

// clock is the time now as well as the loop knows it without reading the
// clock: the turn's time, moved on by the latest reading taken since (the
// parse's, which every request pays for anyway). A request's Dispatched
// is its hand-off time to within the handling of one request, not the
// turn's start, which at thousands of connections can be milliseconds
// earlier: the processors measure its queue wait from there, and a
// request served inline its service time. Its wall clock is the turn's,
// advanced by the monotonic clock.
func (l *Loop) clock() time.Time {
	turn := l.core.Now()
	if turn.IsZero() {
		return turn // no turn yet: the caller reads the clock
	}
	if d := l.mono - l.turnOffset(); d > 0 {
		return turn.Add(d)
	}
	return turn
}

// Timer FIFOs.

func (l *Loop) setTimer(slot int32, class int, deadline time.Time) {
	l.setTimerAt(slot, class, deadline.Sub(l.epoch))
}

// setTimerIn sets slot's timer to d from the turn's time: what a
// request's idle and header timeouts run from, without the two
// time.Time sums per timer that setTimer costs.
func (l *Loop) setTimerIn(slot int32, class int, d time.Duration) {
	l.setTimerAt(slot, class, l.turnOffset()+d)
}

// turnOffset is the turn's time (the stage loop's Now) as an offset from
// epoch, worked out once per turn.
func (l *Loop) turnOffset() time.Duration {
	if now := l.core.Now(); now != l.offsetOf {
		l.offsetOf, l.offset = now, now.Sub(l.epoch)
	}
	return l.offset
}

// setTimerAt sets slot's timer to deadline, an offset from epoch.
func (l *Loop) setTimerAt(slot int32, class int, deadline time.Duration) {
	l.clearTimer(slot)
	rc := l.conns[slot]
	rc.class, rc.deadline = uint8(class), int64(deadline)
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

func (l *Loop) nextTimeout(at time.Duration) time.Duration {
	best := time.Duration(-1)
	for c := classHeader; c < numClasses; c++ {
		if h := l.fifo[c].head; h >= 0 {
			d := time.Duration(l.conns[h].deadline) - at
			if d < 0 {
				d = 0
			}
			if best < 0 || d < best {
				best = d
			}
		}
	}
	if l.core.Stopping() && (best < 0 || best > 10*time.Millisecond) {
		best = 10 * time.Millisecond
	}
	return best
}

// expire acts on the timers due at the turn's time now, at from epoch.
func (l *Loop) expire(now time.Time, at time.Duration) {
	for c := classHeader; c < numClasses; c++ {
		for {
			h := l.fifo[c].head
			if h < 0 || l.conns[h].deadline > int64(at) {
				break
			}
			rc := l.conns[h]
			switch {
			case c == classBody:
				l.checkBodyRate(h, now)
			case c == classHeader && rc.state == stateHeader && rc.work != nil && rc.end > rc.start,
				c == classHeader && rc.state == stateBody:
				l.slowHeaders.Add(1)               // before the 408 can reach the client
				l.reject(h, stages.ErrHeadTimeout) // a partial request: say why we hang up
			default:
				l.closeTimedOut(h)
			}
		}
	}
}

// noBody is the body of a request without one. Its zero size means storing
// it in an io.Reader allocates nothing.
type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, ioEOF }
