package rdmahttp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/rdma"
	"github.com/quartet-server/quartet/runtime"
	"github.com/quartet-server/quartet/stages"
)

// Defaults of Config.
const (
	// DefaultDialTimeout bounds connecting to a client's endpoint; the
	// processor waits that long at most before falling back to TCP.
	DefaultDialTimeout = 2 * time.Second
	// DefaultExposureTimeout is how long a client-reads exposure waits
	// for its read-done message before it is revoked: long enough for a
	// large Read over software iWARP, short enough that a vanished client
	// does not pin memory for long.
	DefaultExposureTimeout = 10 * time.Second
	// DefaultCompletionTimeout bounds the wait for a posted request's
	// completion before its response is let go anyway.
	DefaultCompletionTimeout = 30 * time.Second
	// DefaultMaxCachedFiles bounds the registration cache.
	DefaultMaxCachedFiles = 1024
	// DefaultMaxStaging bounds the registered copy of a generated body;
	// larger bodies go over TCP (too-large).
	DefaultMaxStaging = 256 << 20

	// cqDepth is each writer loop's CQ: every channel's send queue and
	// receives complete there.
	cqDepth = 1 << 14
	// sqDepth is per channel: Writes, Binds and messages of the responses
	// in flight to one client endpoint.
	sqDepth = 1024
	// maxWriteChunk splits a segment into Writes the SGE length (uint32)
	// can describe.
	maxWriteChunk = 1 << 30
	// completionsPerPoll is the Poll batch; the CQ is drained fully each
	// turn (a completion left behind would raise no new event).
	completionsPerPoll = 64
)

// Config configures a Server.
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

	// AllowForeignEndpoints lets a client name an RDMA endpoint on
	// another host than the one its HTTP request came from. Off by
	// default: otherwise any client could make the server connect to
	// any address.
	AllowForeignEndpoints bool

	// loseWrittenCompletions makes the writer loops ignore the completions
	// of written messages, as a device that loses them would: the op stays
	// registered, and only its expiry (or Close) ends it. Tests only.
	loseWrittenCompletions bool
}

// Server is the server side of RDMA delivery, as a runtime.Module
// (Module). It owns one device and PD, a CQ per writer loop, the RDMA
// channels to clients, the file registration cache and every exposure.
// Close it after the HTTP server has stopped.
type Server struct {
	cfg   Config
	dev   rdma.Device
	pd    rdma.PD
	info  rdma.DeviceInfo
	mw    bool // memory windows: exposures are windows, not MRs
	cache *fileCache
	st    stats

	mu     sync.Mutex
	loops  []*loop
	nextCh atomic.Uint32
	closed bool
}

// stats are live counts and totals; Stats copies them.
type stats struct {
	liveMRs, liveMWs, liveQPs, liveExposures atomic.Int64
	livePDs                                  atomic.Int64 // isolated channels' own
	cacheHits, cacheMisses, cacheCopies      atomic.Int64
	written, writtenBytes, exposed           atomic.Int64
	confirmed, timedOut, lost, fallbacks     atomic.Int64
	dials                                    atomic.Int64
	collectNanos, rdmaNanos, exposureNanos   atomic.Int64
	stuck                                    atomic.Int64
	byWindow                                 atomic.Int64
}

// Stats is a snapshot of the module's counters: Live* are resources held
// now (zero when idle after every exposure ended), the rest are totals.
type Stats struct {
	LiveMRs, LiveMWs, LiveQPs, LiveExposures int64
	LivePDs                                  int64 // of isolated channels (per-operation MR exposures), besides the server's own
	CacheHits, CacheMisses                   int64
	CacheCopies                              int64 // files cached as a registered copy (the mapping was refused)
	Written, WrittenBytes                    int64 // server-writes delivered (posted and completed)
	Exposed, Confirmed, TimedOut             int64 // client-reads exposures and how they ended
	ExposedByWindow                          int64 // of Exposed, through a memory window (else a per-operation MR)
	Lost                                     int64 // RDMA operations that failed at the server
	Fallbacks                                int64 // RDMA asked for, body sent over TCP
	Dials                                    int64
	Stuck                                    int64 // posted requests whose completion did not come in CompletionTimeout

	// Where the time goes, summed over responses: in the processor from
	// EOS to the hold being passed (mapping, digest, registration,
	// posting: CollectTime), from posting to the completion in the writer
	// loop (RDMATime: the Writes and message, or the window bind), and
	// from grant to revocation of client-reads exposures (ExposureTime:
	// the client's Read and its confirmation).
	CollectTime, RDMATime, ExposureTime time.Duration
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		LiveMRs: s.st.liveMRs.Load(), LiveMWs: s.st.liveMWs.Load(), LiveQPs: s.st.liveQPs.Load(),
		LiveExposures: s.st.liveExposures.Load(), LivePDs: s.st.livePDs.Load(),
		CacheHits: s.st.cacheHits.Load(), CacheMisses: s.st.cacheMisses.Load(), CacheCopies: s.st.cacheCopies.Load(),
		Written: s.st.written.Load(), WrittenBytes: s.st.writtenBytes.Load(),
		Exposed: s.st.exposed.Load(), Confirmed: s.st.confirmed.Load(), TimedOut: s.st.timedOut.Load(),
		Lost: s.st.lost.Load(), Fallbacks: s.st.fallbacks.Load(), Dials: s.st.dials.Load(), Stuck: s.st.stuck.Load(), ExposedByWindow: s.st.byWindow.Load(),
		CollectTime:  time.Duration(s.st.collectNanos.Load()),
		RDMATime:     time.Duration(s.st.rdmaNanos.Load()),
		ExposureTime: time.Duration(s.st.exposureNanos.Load()),
	}
}

// NewServer opens the device and allocates the PD; writer loops get
// their CQs when they start (Module's StageInit).
func NewServer(cfg Config) (*Server, error) {
	if cfg.Provider == nil {
		return nil, errors.New("rdmahttp: Config.Provider is nil")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ExposureTimeout <= 0 {
		cfg.ExposureTimeout = DefaultExposureTimeout
	}
	if cfg.CompletionTimeout <= 0 {
		cfg.CompletionTimeout = DefaultCompletionTimeout
	}
	if cfg.MaxCachedFiles <= 0 {
		cfg.MaxCachedFiles = DefaultMaxCachedFiles
	}
	if cfg.MaxStaging <= 0 {
		cfg.MaxStaging = DefaultMaxStaging
	}
	s := &Server{cfg: cfg}
	var err error
	if cfg.Addr.IsValid() && !cfg.Addr.IsUnspecified() {
		s.dev, err = cfg.Provider.OpenByAddr(cfg.Addr)
	} else {
		s.dev, err = cfg.Provider.Open(cfg.Device)
	}
	if err != nil {
		return nil, fmt.Errorf("rdmahttp: opening device: %w", err)
	}
	if s.pd, err = s.dev.AllocPD(); err != nil {
		s.dev.Close()
		return nil, fmt.Errorf("rdmahttp: ibv_alloc_pd: %w", err)
	}
	s.info = s.dev.Info()
	s.mw = s.info.Caps&rdma.CapMemoryWindows != 0
	access := rdma.Access(0) // a source of Writes needs no rights
	if s.mw {
		access = rdma.AccessMWBind // windows carry the remote rights, never the MR
	}
	s.cache = newFileCache(s.pd, access, cfg.MaxCachedFiles, &s.st)
	return s, nil
}

// DeviceInfo is the opened device's description.
func (s *Server) DeviceInfo() rdma.DeviceInfo { return s.info }

// MemoryWindows reports whether exposures are memory windows (else
// per-operation registrations).
func (s *Server) MemoryWindows() bool { return s.mw }

// Module is the server module: StageInit gives each writer loop a CQ in
// its poller, InsertFilter reads the request's X-RDMA-* headers and adds
// the output filter that ships the body.
func (s *Server) Module() runtime.Module {
	return runtime.Module{
		Name:         "rdma",
		StageInit:    s.stageInit,
		InsertFilter: s.insertFilter,
	}
}

// stageInit creates the writer loop's CQ and registers its fd with the
// loop, so completions are handled where the responses are written.
func (s *Server) stageInit(info runtime.StageInfo) error {
	if info.Stage != runtime.StageWriter || info.Sources == nil {
		return nil
	}
	cq, err := s.dev.CreateCQ(cqDepth)
	if err != nil {
		return fmt.Errorf("rdmahttp: ibv_create_cq: %w", err)
	}
	lp := &loop{s: s, idx: info.Index, cq: cq, srcs: info.Sources,
		chans: map[chanKey]*channel{}, byID: map[uint32]*channel{},
		ops: map[uint64]*op{}, wcs: make([]rdma.Completion, completionsPerPoll)}
	if err := cq.Arm(false); err != nil {
		cq.Close()
		return fmt.Errorf("rdmahttp: ibv_req_notify_cq: %w", err)
	}
	id, err := info.Sources.AddSource(cq.Fd(), lp.onCQ)
	if err != nil {
		cq.Close()
		return err
	}
	lp.src = id
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = info.Sources.RemoveSource(id)
		cq.Close()
		return errors.New("rdmahttp: server closed")
	}
	for len(s.loops) <= info.Index {
		s.loops = append(s.loops, nil)
	}
	s.loops[info.Index] = lp
	return nil
}

func (s *Server) loopFor(i int) *loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || i >= len(s.loops) {
		return nil
	}
	return s.loops[i]
}

// insertFilter is mod_rdma's insert_filter: read the headers, and add the
// output filter when the client asked for RDMA.
func (s *Server) insertFilter(r *stages.Request, w *processor.ResponseWriter) {
	q, err := parseRequest(func(name string) string { return string(r.Header(name)) })
	if q.mode == ModeOff && err == nil {
		return // a client that did not ask sees plain HTTP
	}
	if !r.IsMethod("GET") {
		return
	}
	if err != nil {
		s.st.fallbacks.Add(1)
		w.Header().Set(HeaderFallback, reasonBadRequest+": "+err.Error())
		return
	}
	f := &bodyFilter{s: s, q: q}
	if !s.cfg.AllowForeignEndpoints && q.endpoint.Addr().Unmap() != r.Conn.Remote.Addr().Unmap() {
		f.passReason = reasonForeignEndpoint
	}
	if err := w.AddOutputFilter(f); err != nil {
		s.st.fallbacks.Add(1)
		w.Header().Set(HeaderFallback, reasonUnsupported+": "+err.Error())
	}
}

// Close releases everything: call it after the HTTP server's Serve has
// returned (its writer loops have stopped, so no completion callback
// runs). Exposures still open are revoked. It reports resources that
// could not be released; the device's own busy check makes a leak an
// error here.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	loops := s.loops
	s.loops = nil
	s.mu.Unlock()
	var errs []error
	for _, lp := range loops {
		if lp != nil {
			errs = append(errs, lp.close())
		}
	}
	errs = append(errs, s.cache.close())
	if err := s.pd.Close(); err != nil {
		errs = append(errs, fmt.Errorf("rdmahttp: ibv_dealloc_pd: %w", err))
	}
	if err := s.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("rdmahttp: ibv_close_device: %w", err))
	}
	return errors.Join(errs...)
}
