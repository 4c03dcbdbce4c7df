package deliver

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/rdma"
)

// Defaults of Config.
const (
	// DefaultDialTimeout bounds connecting to a client's endpoint; the
	// caller (a processor) waits that long at most before falling back.
	DefaultDialTimeout = 2 * time.Second
	// DefaultExposureTimeout is how long a client-reads exposure waits
	// for its confirmation before it is revoked: long enough for a large
	// Read over software iWARP, short enough that a vanished client does
	// not pin memory for long.
	DefaultExposureTimeout = 10 * time.Second
	// DefaultCompletionTimeout bounds the wait for a posted unit's
	// completion (or, signalled sparsely, for a completion at or beyond
	// it) before it counts as lost and its channel is retired.
	DefaultCompletionTimeout = 30 * time.Second
	// DefaultMaxCachedFiles bounds the file registration cache.
	DefaultMaxCachedFiles = 1024
	// DefaultMaxStaging bounds the registered copy of a body's heap
	// bytes; larger bodies are refused (ReasonTooLarge).
	DefaultMaxStaging = 256 << 20
	// DefaultStagingPool is how many bytes of registered staging memory
	// are kept idle for reuse.
	DefaultStagingPool = 32 << 20
	// DefaultSignalInterval: signalled sparsely, at least every this many
	// units of a channel ask for a completion.
	DefaultSignalInterval = 16
	// DefaultSignalBytes: signalled sparsely, a unit that brings the
	// bytes posted since the last signalled one to this many asks for a
	// completion, which bounds the staging memory awaiting reclaim.
	DefaultSignalBytes = 8 << 20
	// DefaultReclaimDelay: signalled sparsely, a channel that has posted
	// nothing for this long while units await reclaim posts a signalled
	// barrier, so the tail of a burst does not hold its memory until the
	// next burst.
	DefaultReclaimDelay = time.Millisecond

	// DefaultDetachTimeout is how long DetachLoop lets a leaving loop's
	// RDMA work end by itself (sparsely signalled units reach their
	// barrier's completion, clients confirm their Reads) before it fails
	// what is left. Its replies have all been written, so an honest
	// client confirms within a round trip; a second is far beyond that,
	// and it delays only the leaving loop's goroutine.
	DefaultDetachTimeout = time.Second

	// MaxExposuresPerChannel bounds a client's unconfirmed client-reads
	// exposures on one channel: an honest client confirms each soon, so
	// this only stops one that never does from pinning memory.
	MaxExposuresPerChannel = 64

	// cqDepth is each loop's CQ: every channel's send queue and
	// receives complete there.
	cqDepth = 1 << 14
	// sqDepth is per channel: Writes, Binds and messages of the units in
	// flight to one client endpoint.
	sqDepth = 1024
	// maxWriteChunk splits a segment into Writes the SGE length (uint32)
	// can describe.
	maxWriteChunk = 1 << 30
	// completionsPerPoll is the Poll batch; the CQ is drained fully each
	// turn (a completion left behind would raise no new event).
	completionsPerPoll = 64
)

// Signalling is when the server asks its device for a completion.
type Signalling uint8

const (
	// SignalEveryReply: every server-writes unit's message is signalled,
	// and the protocol holds its reply until that completion (Receipt.
	// Wait), so a transfer that fails in time is replaced by the body
	// over the protocol's connection in the same reply. One completion,
	// one writer-loop event and one hand-off per reply.
	SignalEveryReply Signalling = iota
	// SignalSparse: RDS's model. The server posts and answers at once
	// (the client trusts the written message, which RC ordering places
	// after the bytes, not the reply); only every SignalInterval-th unit
	// of a channel, one that reaches SignalBytes, one that would fill
	// half the send queue, or a barrier after ReclaimDelay of quiet asks
	// for a completion, and that completion retires every unit posted
	// before it (the high-water mark), releasing their staging memory and
	// cache references in one batch. A transfer that fails is detected
	// by the client (no written message), which asks again.
	SignalSparse
)

func (s Signalling) String() string {
	if s == SignalSparse {
		return "sparse"
	}
	return "every"
}

// ParseSignalling parses "every" or "sparse".
func ParseSignalling(s string) (Signalling, error) {
	switch s {
	case "every", "":
		return SignalEveryReply, nil
	case "sparse":
		return SignalSparse, nil
	}
	return 0, fmt.Errorf("deliver: unknown signalling %q (every, sparse)", s)
}

// Config configures an Engine. The zero value of every field but
// Provider takes its default.
type Config struct {
	// Provider opens the device; required.
	Provider rdma.Provider
	// Device names the device to open ("" for the provider's default);
	// Addr, if valid, picks the device that owns that IP instead.
	Device string
	Addr   netip.Addr

	DialTimeout       time.Duration
	ExposureTimeout   time.Duration
	CompletionTimeout time.Duration
	MaxCachedFiles    int
	MaxStaging        int64
	// StagingPool is the idle registered staging memory kept for reuse,
	// in bytes; negative keeps none.
	StagingPool int64

	// Signal chooses when completions are asked for; SignalInterval,
	// SignalBytes and ReclaimDelay tune SignalSparse.
	Signal         Signalling
	SignalInterval int
	SignalBytes    int64
	ReclaimDelay   time.Duration

	// DetachTimeout bounds DetachLoop's wait for a leaving loop's work
	// to end by itself; negative waits not at all.
	DetachTimeout time.Duration

	// AllowForeignEndpoints lets a client name an RDMA endpoint on
	// another host than the one its request came from. Off by default:
	// otherwise any client could make the server connect to any address.
	AllowForeignEndpoints bool
}

func (c *Config) defaults() {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ExposureTimeout <= 0 {
		c.ExposureTimeout = DefaultExposureTimeout
	}
	if c.CompletionTimeout <= 0 {
		c.CompletionTimeout = DefaultCompletionTimeout
	}
	if c.MaxCachedFiles <= 0 {
		c.MaxCachedFiles = DefaultMaxCachedFiles
	}
	if c.MaxStaging <= 0 {
		c.MaxStaging = DefaultMaxStaging
	}
	if c.StagingPool == 0 {
		c.StagingPool = DefaultStagingPool
	}
	if c.SignalInterval <= 0 {
		c.SignalInterval = DefaultSignalInterval
	}
	if c.SignalBytes <= 0 {
		c.SignalBytes = DefaultSignalBytes
	}
	if c.ReclaimDelay <= 0 {
		c.ReclaimDelay = DefaultReclaimDelay
	}
	if c.DetachTimeout == 0 {
		c.DetachTimeout = DefaultDetachTimeout
	}
}

// Engine is the server side of RDMA delivery, protocol-neutral: one
// device and PD, a CQ and channels per writer loop, the file
// registration cache, the staging pool, and every exposure. Protocol
// bindings (rdmahttp for HTTP, msgrdma for the messenger) share one.
// Close it after the servers using it have stopped.
type Engine struct {
	cfg   Config
	dev   rdma.Device
	pd    rdma.PD
	info  rdma.DeviceInfo
	mw    bool // memory windows: exposures are windows, not MRs
	cache *fileCache
	pool  *stagePool
	st    stats

	mu    sync.Mutex
	loops []*loop
	// leaving are loops DetachLoop has taken out of loops: being
	// released (Confirm still finds their channels), or kept because a
	// caller still held one of their channels, for Close.
	leaving []*loop
	nextCh  atomic.Uint32
	closed  bool
	// kept are releases that failed while serving (a channel's QP or MR,
	// an exposure's window), reported by Close: the object stays counted
	// live, and the device's busy check would otherwise be all Close says.
	kept []error
}

// maxKept bounds kept: the first failures say what is wrong.
const maxKept = 16

func (e *Engine) keepErr(format string, args ...any) {
	err := fmt.Errorf("deliver: "+format, args...)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.kept) < maxKept {
		e.kept = append(e.kept, err)
	}
}

// stats are live counts and totals; Stats copies them.
type stats struct {
	liveMRs, liveMWs, liveQPs, liveExposures atomic.Int64
	liveCQs, liveSources                     atomic.Int64
	livePDs, pooledMRs                       atomic.Int64
	cacheHits, cacheMisses, cacheCopies      atomic.Int64
	written, writtenBytes, exposed           atomic.Int64
	confirmed, timedOut, lost, fallbacks     atomic.Int64
	dials, redials                           atomic.Int64
	collectNanos, rdmaNanos, exposureNanos   atomic.Int64
	stuck                                    atomic.Int64
	byWindow                                 atomic.Int64
	signaled, barriers                       atomic.Int64
}

// Stats is a snapshot of the engine's counters: Live* are resources held
// now (exposures and windows return to zero when idle; MRs and QPs
// include the file cache's registrations and the cached channels), the
// rest are totals.
type Stats struct {
	LiveMRs, LiveMWs, LiveQPs, LiveExposures int64
	LivePDs                                  int64 // of isolated channels (per-operation MR exposures), besides the engine's own
	LiveCQs                                  int64 // one per attached loop (and per loop DetachLoop had to leave for Close)
	LiveSources                              int64 // CQ fds registered with a loop's poller (AttachLoop's Register)
	PooledMRs                                int64 // idle registered staging buffers kept for reuse (not in LiveMRs)
	CacheHits, CacheMisses                   int64
	CacheCopies                              int64 // files cached as a registered copy (the mapping was refused)
	Written, WrittenBytes                    int64 // server-writes units retired by a successful completion
	Exposed, Confirmed, TimedOut             int64 // client-reads exposures and how they ended
	ExposedByWindow                          int64 // of Exposed, through a memory window (else a per-operation MR)
	Lost                                     int64 // RDMA operations that failed at the server
	Fallbacks                                int64 // RDMA asked for, body sent over the protocol's connection
	Dials                                    int64
	Redials                                  int64 // deliveries posted again on a new channel: the first one's QP had failed unheard
	Stuck                                    int64 // units with no completion in CompletionTimeout
	Signaled                                 int64 // send-queue completions taken (signalled units and barriers)
	Barriers                                 int64 // barriers posted to reclaim an idle channel's units

	// Where the time goes, summed over deliveries: from Map to Deliver's
	// return (mapping, digest, registration, posting: CollectTime), from
	// posting to the retiring completion (RDMATime: the Writes and the
	// message, or the window bind; signalled sparsely, the wait for the
	// batch's completion), and from grant to revocation of client-reads
	// exposures (ExposureTime: the client's Read and its confirmation).
	CollectTime, RDMATime, ExposureTime time.Duration
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	s := &e.st
	return Stats{
		LiveMRs: s.liveMRs.Load(), LiveMWs: s.liveMWs.Load(), LiveQPs: s.liveQPs.Load(),
		LiveExposures: s.liveExposures.Load(), LivePDs: s.livePDs.Load(), PooledMRs: s.pooledMRs.Load(),
		LiveCQs: s.liveCQs.Load(), LiveSources: s.liveSources.Load(),
		CacheHits: s.cacheHits.Load(), CacheMisses: s.cacheMisses.Load(), CacheCopies: s.cacheCopies.Load(),
		Written: s.written.Load(), WrittenBytes: s.writtenBytes.Load(),
		Exposed: s.exposed.Load(), Confirmed: s.confirmed.Load(), TimedOut: s.timedOut.Load(),
		Lost: s.lost.Load(), Fallbacks: s.fallbacks.Load(), Dials: s.dials.Load(), Redials: s.redials.Load(), Stuck: s.stuck.Load(),
		ExposedByWindow: s.byWindow.Load(), Signaled: s.signaled.Load(), Barriers: s.barriers.Load(),
		CollectTime:  time.Duration(s.collectNanos.Load()),
		RDMATime:     time.Duration(s.rdmaNanos.Load()),
		ExposureTime: time.Duration(s.exposureNanos.Load()),
	}
}

// CountFallback counts a body that was asked for by RDMA and sent over
// the protocol's connection: bindings call it for the fallbacks they
// decide (a Deliver that fails is counted by the binding too, since only
// it knows whether it then sends the body).
func (e *Engine) CountFallback() { e.st.fallbacks.Add(1) }

// UncountFallback takes one back: a binding counted a fallback it then
// could not make (a divert that lost its race to a release).
func (e *Engine) UncountFallback() { e.st.fallbacks.Add(-1) }

// New opens the device and allocates the PD; loops are attached as the
// writer loops start (AttachLoop).
func New(cfg Config) (*Engine, error) {
	if cfg.Provider == nil {
		return nil, errors.New("deliver: Config.Provider is nil")
	}
	cfg.defaults()
	e := &Engine{cfg: cfg}
	var err error
	if cfg.Addr.IsValid() && !cfg.Addr.IsUnspecified() {
		e.dev, err = cfg.Provider.OpenByAddr(cfg.Addr)
	} else {
		e.dev, err = cfg.Provider.Open(cfg.Device)
	}
	if err != nil {
		return nil, fmt.Errorf("deliver: opening device: %w", err)
	}
	if e.pd, err = e.dev.AllocPD(); err != nil {
		e.dev.Close()
		return nil, fmt.Errorf("deliver: ibv_alloc_pd: %w", err)
	}
	e.info = e.dev.Info()
	e.mw = e.info.Caps&rdma.CapMemoryWindows != 0
	access := rdma.Access(0) // a source of Writes needs no rights
	if e.mw {
		access = rdma.AccessMWBind // windows carry the remote rights, never the MR
	}
	e.cache = newFileCache(e.pd, access, cfg.MaxCachedFiles, &e.st)
	e.pool = newStagePool(e.pd, access, cfg.StagingPool, &e.st)
	e.pool.keepErr = e.keepErr
	return e, nil
}

// Config is the engine's configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// DeviceInfo is the opened device's description.
func (e *Engine) DeviceInfo() rdma.DeviceInfo { return e.info }

// MemoryWindows reports whether exposures are memory windows (else
// per-operation registrations on isolated channels).
func (e *Engine) MemoryWindows() bool { return e.mw }

// Register is how an event loop takes a completion source: run fn in
// the loop each time fd is readable (level-triggered) until detach. The
// writer stage's Sources satisfies it in two lines; GoSource runs one on
// a goroutine of its own, for tools and tests.
type Register func(fd int, fn func()) (detach func() error, err error)

// AttachLoop gives writer loop idx its CQ and registers the CQ's fd
// through register, so the completions of every channel this loop uses
// are handled in the loop (which is where its replies are written).
// Call it once per loop, as the loop starts, and DetachLoop as it stops:
// a loop that later takes the same index attaches again.
func (e *Engine) AttachLoop(idx int, register Register) error {
	if idx < 0 {
		return fmt.Errorf("deliver: loop index %d", idx)
	}
	if register == nil {
		return errors.New("deliver: AttachLoop: register is nil")
	}
	cq, err := e.dev.CreateCQ(cqDepth)
	if err != nil {
		return fmt.Errorf("deliver: ibv_create_cq: %w", err)
	}
	e.st.liveCQs.Add(1)
	lp := newLoop(e, idx, cq)
	if err := cq.Arm(false); err != nil {
		lp.closeCQ()
		return fmt.Errorf("deliver: ibv_req_notify_cq: %w", err)
	}
	detach, err := register(cq.Fd(), lp.onCQ)
	if err != nil {
		lp.closeCQ()
		return err
	}
	e.st.liveSources.Add(1)
	lp.detach = detach
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		err = errors.New("deliver: engine closed")
	case idx < len(e.loops) && e.loops[idx] != nil:
		err = fmt.Errorf("deliver: loop %d attached twice (DetachLoop releases a loop that stops)", idx)
	}
	if err != nil {
		_ = lp.unregister()
		lp.closeCQ()
		return err
	}
	for len(e.loops) <= idx {
		e.loops = append(e.loops, nil)
	}
	e.loops[idx] = lp
	return nil
}

// DetachLoop releases what AttachLoop gave writer loop idx, so that a
// loop that later takes the same index can attach: the CQ's registration
// with the loop's poller, the loop's channels (QPs, message areas,
// isolated PDs) and their exposures, and the CQ. Call it as the loop
// stops, on its goroutine (a writer stage's exit, where its completion
// sources can still be removed), or once it has stopped: it takes the CQ
// over from the loop. Deliveries to idx fall back (ReasonNoRDMA) from
// the moment it is called.
//
// By the runtime's contract every reply the loop wrote has been written
// and recycled, and no reply waits on it (a reply held for Ready keeps
// its response, and so the loop, alive). But RDMA work can outlive its
// reply:
//
//   - signalled sparsely, server-writes units are retired only by a
//     later signalled completion, and hold their staging memory and
//     cache references until then;
//   - a client-reads exposure lasts until the client confirms its Read
//     (HTTP's read-done message arrives on the channel's QP, so in this
//     loop's CQ; the messenger's completion frame through Confirm);
//   - a unit whose completion the device lost waits for the watchdog.
//
// None of it can move to another loop: a QP's completions go to the CQ
// it was created with, and the client holds the channel id its reply
// named. So the loop finishes what finishes soon and fails the rest the
// way the protocol already recovers from. For up to
// Config.DetachTimeout it handles its own completions (the poller no
// longer does), posts a signalled barrier behind every channel's
// unsignalled units, and lets clients confirm; then it kills the
// channels left: their exposures are revoked (a client still reading
// gets a failed Read and asks again, or falls back to TCP; a late
// confirmation finds nothing, which is no error), their queued work is
// flushed, and a unit's memory is released only once its QP is
// destroyed, when the device can no longer read it. The CQ is destroyed
// last, when no QP uses it.
//
// A caller still posting on one of the loop's channels (the contract
// says none is: a delivery runs while its reply is bound to the loop)
// keeps that channel's QP, and so the CQ, alive: DetachLoop then reports
// it and leaves the loop for Close to release; the index is free anyway.
func (e *Engine) DetachLoop(idx int) error {
	e.mu.Lock()
	var lp *loop
	if !e.closed && idx >= 0 && idx < len(e.loops) {
		lp = e.loops[idx]
	}
	if lp == nil {
		closed := e.closed
		e.mu.Unlock()
		if closed {
			return errors.New("deliver: DetachLoop: engine closed")
		}
		return fmt.Errorf("deliver: DetachLoop: loop %d is not attached", idx)
	}
	e.loops[idx] = nil
	e.leaving = append(e.leaving, lp)
	e.mu.Unlock()

	var errs []error
	if err := lp.unregister(); err != nil {
		errs = append(errs, fmt.Errorf("deliver: loop %d: removing its completion source: %w", idx, err))
	}
	lp.settle(time.Now().Add(e.cfg.DetachTimeout))
	if err := lp.close(); err != nil {
		return errors.Join(append(errs, err)...) // stays in leaving, for Close
	}
	e.mu.Lock()
	for i, l := range e.leaving {
		if l == lp {
			e.leaving = append(e.leaving[:i], e.leaving[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	return errors.Join(errs...)
}

func (e *Engine) loopAt(i int) *loop {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || i < 0 || i >= len(e.loops) {
		return nil
	}
	return e.loops[i]
}

// Permit reports whether the engine may dial ep for a request that came
// from the address from: only an endpoint on the requesting host, unless
// Config.AllowForeignEndpoints.
func (e *Engine) Permit(ep netip.AddrPort, from netip.Addr) bool {
	return e.cfg.AllowForeignEndpoints || ep.Addr().Unmap() == from.Unmap()
}

// Limit is the largest body t may be delivered, and the reason when a
// body is larger: the client's buffer for server-writes, MaxStaging for
// client-reads.
func (e *Engine) Limit(t *Target) (int64, Reason) {
	if t.Mode == ModeServerWrites {
		return t.Buffer.Len, ReasonBufferTooSmall
	}
	return e.cfg.MaxStaging, ReasonTooLarge
}

// Close releases everything: call it after the servers using the engine
// have stopped (their writer loops no longer run completion callbacks)
// and released the bodies they retained. Units still in flight end with
// ErrClosed, exposures still open are revoked. It reports resources that
// could not be released; the device's own busy check turns a leak into
// an error here.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	loops := append(e.loops, e.leaving...)
	e.loops, e.leaving = nil, nil
	e.mu.Unlock()
	var errs []error
	for _, lp := range loops {
		if lp != nil {
			errs = append(errs, lp.close())
		}
	}
	errs = append(errs, e.pool.close(), e.cache.close())
	e.mu.Lock()
	errs = append(errs, e.kept...)
	e.mu.Unlock()
	if err := e.pd.Close(); err != nil {
		errs = append(errs, fmt.Errorf("deliver: ibv_dealloc_pd: %w", err))
	}
	if err := e.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("deliver: ibv_close_device: %w", err))
	}
	return errors.Join(errs...)
}
