package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"reflect"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/protocol/http1"
	"github.com/quartet-server/quartet/protocol/msg"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// Config is everything a Server is built from. The zero value works: every
// zero field takes the default in parentheses (DefaultConfig has them all),
// so a Config names only what it changes. Every stage size is here, so that
// load experiments can sweep it.
type Config struct {
	// Addr is the listen address, host:port; port 0 picks a free port
	// (Server.Addr tells which). Default "127.0.0.1:8080".
	Addr string
	// Listener, when set, is served instead of binding Addr: a listening
	// TCP socket the caller opened (net.Listen on ":0" in a test, or
	// net.FileListener on a systemd socket). New takes it over: the
	// server closes it when it stops, and New when it fails.
	Listener  net.Listener
	Listeners int  // accept loops; more than one uses SO_REUSEPORT (1)
	ReusePort bool // SO_REUSEPORT even with one accept loop (false)

	// MsgAddr, when set, is a second listen address, whose connections
	// speak the messenger (package protocol/msg, docs/messenger.md)
	// instead of HTTP/1.1, served by the same reader loops, processors
	// and writer loops; Server.MsgAddr tells the address. MsgListener,
	// when set, is served instead of binding MsgAddr, as Listener is for
	// Addr. MaxConns applies to each listener on its own. ("": off.)
	MsgAddr     string
	MsgListener net.Listener
	// MsgDispatcher answers the messenger's requests (msg.Echo when nil).
	MsgDispatcher msg.Dispatcher
	// MsgRDMA, when set, sends the replies of messenger requests that ask
	// for RDMA: msgrdma.New(engine).Stages(), on an engine whose loops are
	// attached to the writer loops (rdmahttp's module attaches the engine
	// it owns; the two protocols may share it). nil: such replies go
	// inline, saying no-rdma.
	MsgRDMA msg.RDMA
	// MsgMaxPayload bounds a messenger request's payload; a larger one is
	// refused with an error frame (CodeTooLarge) and the connection
	// closed. The reader reads each payload whole before dispatch, into a
	// buffer of the frame's size when it does not fit the connection's
	// read buffer, so this is also the most one messenger connection
	// makes the server hold beside its window. (msg.DefaultMaxPayload,
	// 64 MiB.)
	MsgMaxPayload int
	// MsgWindow and MsgWindowBytes bound a messenger connection's
	// requests in flight: the reader reads a connection on while its
	// earlier requests run, up to MsgWindow requests holding
	// MsgWindowBytes of frames between them (one request always goes,
	// whatever its size). Replies leave as they are ready, unless a
	// request asks for order. 0 takes msg.DefaultWindow (32) and
	// msg.DefaultWindowBytes (4 MiB); a MsgWindow of 1 serves a
	// connection's requests one at a time.
	MsgWindow      int
	MsgWindowBytes int64

	// Readers and Writers are the reader and writer event loops, sized
	// as the processors are: alone, a count above zero pins the stage at
	// it; with a bound set (ReadersMin, ReadersMax, WritersMin,
	// WritersMax), a controller sizes it within the bounds (the bound not
	// set takes its default) from the loops' busy fraction, starting at
	// the count. All zero: the controller sizes each within 1..GOMAXPROCS,
	// starting at one loop per two CPUs. Counts change while serving
	// through Server.ChangeStage too.
	Readers    int
	ReadersMin int
	ReadersMax int
	Writers    int
	WritersMin int
	WritersMax int

	// Processors, ProcessorsMin and ProcessorsMax size the processor
	// pool: the handlers that may run at once (places; see processor's
	// Places). With neither bound set, a Processors above zero pins the
	// pool at that size, and zero lets the controller size it between the
	// default bounds: GOMAXPROCS (enough to keep every CPU busy with
	// handlers that compute) and DefaultMaxProcessorsPerCPU × GOMAXPROCS.
	// With a bound set, the controller sizes the pool within
	// [ProcessorsMin, ProcessorsMax] (the one not set takes its default),
	// starting at Processors, or at the minimum if Processors is 0. Sizes
	// change while serving through Server.ChangeStage too. (0, 0, 0:
	// sized by the controller.)
	Processors    int
	ProcessorsMin int
	ProcessorsMax int

	// QueueWaitTarget is admission control's target: a request that would
	// wait longer than this for a processor place is refused at once with
	// 503 and a Retry-After, in the reader, before it takes a place (its
	// class's queue is judged by its own service rate; see package
	// control). Negative turns admission control off: requests then wait
	// for as long as the queue holds them. (500ms)
	QueueWaitTarget time.Duration

	// QueueCapacity sizes each hand-off queue: reader→processor (one ring
	// per request class, up to eight, each made when its class opens),
	// and the inbound queue of every reader and writer loop (4096; at most
	// 1 Mi). A ring is made whole, 16 bytes an entry: a capacity of 1 Mi
	// costs 16 MiB per queue before a request arrives.
	QueueCapacity int

	MaxConns       int   // open connections at most; 0: no limit (0)
	MaxHeaderBytes int   // header block limit, 431 beyond (64 KiB)
	MaxRequestLine int   // request line limit, 414 beyond (8 KiB)
	MaxHeaders     int   // header field count limit, 431 beyond (100)
	MaxBodyBytes   int64 // request body limit, 413 beyond (64 MiB)

	HeaderTimeout time.Duration // first byte to end of header block, and of a preread body (PrereadBody), 408 beyond (20s)
	IdleTimeout   time.Duration // keep-alive wait for the next request (60s)
	BodyTimeout   time.Duration // a handler waiting this long for body bytes fails (30s); a streamed body's only
	WriteTimeout  time.Duration // a client that reads nothing this long is dropped (30s)
	LingerTimeout time.Duration // lingering close: wait for the client's FIN (2s)

	// ShutdownTimeout is how long a graceful shutdown lets requests in
	// flight finish before closing their connections (30s).
	ShutdownTimeout time.Duration

	// PrereadBody: request bodies of up to this many bytes (with a
	// Content-Length, and no Expect: 100-continue) are read whole before
	// the request is dispatched, so a slow small upload never reaches a
	// processor (nginx's client_body_buffer_size); larger ones stream
	// while the handler runs. Default reader.DefaultPrereadBody (64 KiB).
	// A preread body is part of the request the reader waits for: it
	// must arrive within HeaderTimeout of the request's first byte (a
	// stalled one is answered 408 and counted with the slow headers);
	// BodyTimeout and MinBodyRate apply to streamed bodies.
	PrereadBody int

	// MaxParked bounds the handlers waiting on their client (request body
	// bytes, or a client reading slower than they write) without holding
	// one of the Processors places: Processors bounds handlers that run,
	// MaxParked those that wait. Default processor.DefaultMaxParked;
	// negative: handlers never give their place back.
	MaxParked int

	// MinBodyRate (bytes/s) cuts off a client that sends a streamed
	// request body slower than this once MinBodyRateGrace has passed
	// (Apache mod_reqtimeout "body=20,MinRate=500"): the handler's body
	// Read fails, the client gets a 408 unless the handler had committed
	// its response, and the connection closes. Defaults
	// reader.DefaultMinBodyRate and reader.DefaultMinBodyRateGrace;
	// a negative rate disables the check.
	MinBodyRate      int64
	MinBodyRateGrace time.Duration

	// MinResponseRate (bytes/s) cuts off, with a reset, a client that
	// takes a response slower than this, measured over windows of
	// MinResponseRateGrace while the writer is blocked on it (Kestrel's
	// MinResponseDataRate). Defaults writer.DefaultMinRate (240 B/s) and
	// writer.DefaultMinRateGrace (10 s); a negative rate disables it.
	MinResponseRate      int64
	MinResponseRateGrace time.Duration

	// HighWater is how many unsent bytes a response may have before its
	// handler's Write waits for the client (256 KiB).
	HighWater int64

	ServerName string // the Server header's value ("quartet")

	// Handler runs every request. nil answers 404 to everything, as an
	// empty net/http ServeMux does; Builtin(nil) is the load-test
	// endpoints.
	//
	// A request whose handler declares that serving it never blocks
	// (processor.Inliner) is served on the reader loop that read it,
	// without the hand-offs to a processor and back, unless NoInline is
	// set, a module's InsertFilter may block for it (Module.Inline), or
	// its body is streamed. Every other request goes through the
	// processors, so a handler that blocks never stalls an event loop.
	Handler processor.Handler
	// NoInline sends every request through the processors, even those
	// whose handler declares it never blocks (to compare the two paths).
	NoInline bool
	// NoBatchedSends writes each response with its own system call. By
	// default a reader loop queues the small whole replies it serves in a
	// turn, and a writer loop those it starts, and each sends its turn's
	// with one io_uring_enter before it polls again (writer/batch.go);
	// where the kernel refuses io_uring (a seccomp filter,
	// kernel.io_uring_disabled) they write each, and the server says so
	// once in the log.
	NoBatchedSends bool
	// NoBatchedReads reads each connection a reader loop's turn finds
	// readable with its own system call. By default the loop reads all
	// that start a request in one io_uring_enter (reader.Config.BatchReads),
	// where the kernel grants an io_uring.
	NoBatchedReads bool
	// KeepFreedMemory leaves returning freed heap to the OS to Go's
	// runtime (minutes on an idle server). By default, once a burst of
	// connections has gone, the server collects and returns it
	// (runtime/memreturn.go). Default false.
	KeepFreedMemory bool
	// Log runs in the writer after each response's last byte (or abort),
	// with the exact bytes sent, on the loop that sent it: it must not
	// wait. An AccessLogger's Log is one. nil logs nothing.
	Log func(*stages.Response)
	// Logger receives server events: handler panics, loop failures,
	// accepts failing (the fd table full), admission control refusing
	// requests and the listeners stopped at MaxConns (a line when each
	// begins, one a minute while it lasts, one when it ends), a shutdown
	// that had to cut requests off (slog.Default()).
	Logger *slog.Logger

	// Modules plug features in through hooks, in this order.
	Modules []Module
}

// Defaults not owned by a stage.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultQueueCapacity   = 4096
	DefaultShutdownTimeout = 30 * time.Second

	// DefaultMaxProcessorsPerCPU bounds the processor pool the controller
	// may grow to by default, per CPU: handlers that block 10 ms each need
	// a thousand places per CPU to keep one CPU's worth of requests (about
	// 100k a second of simple ones) moving; beyond that the I/O stages,
	// not the places, are the limit. A place costs a goroutine (8 KiB of
	// stack) only while it has work.
	DefaultMaxProcessorsPerCPU = 1024
)

// DefaultConfig is the configuration a zero Config stands for: every
// stage sized by its controller (Readers, Writers, Processors and their
// bounds 0; see Config.Readers and Config.Processors for where each
// starts and its bounds on this machine). Each value comes from the
// Default constant of the package that owns the setting.
func DefaultConfig() Config {
	return Config{
		Addr:            DefaultAddr,
		Listeners:       1,
		QueueCapacity:   DefaultQueueCapacity,
		MaxHeaderBytes:  http1.DefaultMaxHeaderBytes,
		MaxRequestLine:  http1.DefaultMaxRequestLine,
		MaxHeaders:      http1.DefaultMaxHeaders,
		MaxBodyBytes:    reader.DefaultMaxBodyBytes,
		HeaderTimeout:   reader.DefaultHeaderTimeout,
		IdleTimeout:     reader.DefaultIdleTimeout,
		BodyTimeout:     reader.DefaultBodyTimeout,
		WriteTimeout:    processor.DefaultWriteTimeout,
		LingerTimeout:   reader.DefaultLingerTimeout,
		ShutdownTimeout: DefaultShutdownTimeout,
		HighWater:       processor.DefaultHighWater,
		ServerName:      processor.DefaultServerName,
		MsgMaxPayload:   msg.DefaultMaxPayload,

		PrereadBody:          reader.DefaultPrereadBody,
		MaxParked:            processor.DefaultMaxParked,
		MinBodyRate:          reader.DefaultMinBodyRate,
		MinBodyRateGrace:     reader.DefaultMinBodyRateGrace,
		MinResponseRate:      writer.DefaultMinRate,
		MinResponseRateGrace: writer.DefaultMinRateGrace,
		QueueWaitTarget:      control.DefaultQueueWaitTarget,
	}
}

// ErrBadConfig is wrapped by every error Validate returns.
var ErrBadConfig = errors.New("quartet: bad config")

// ConfigError is the error Validate returns: which field, its value, and
// why it cannot work. Field is the Config field's name, so that a command
// line can name its own flag instead.
type ConfigError struct {
	Field  string
	Value  any
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%v: %s = %v: %s", ErrBadConfig, e.Field, e.Value, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBadConfig) hold.
func (e *ConfigError) Unwrap() error { return ErrBadConfig }

// Validate reports a setting that cannot work, as a *ConfigError (the
// first it checks: one field at a time, then the bounds that fields set
// for each other). Zero values are valid: they take defaults.
func (c *Config) Validate() error {
	checks := []struct {
		field string
		value any
		bad   bool
		why   string
	}{
		{"Addr", c.Addr, c.Listener == nil && badListenAddr(c.Addr), "must be host:port, the port a number 0..65535 or a service name"},
		{"MsgAddr", c.MsgAddr, c.MsgListener == nil && badListenAddr(c.MsgAddr), "must be host:port, the port a number 0..65535 or a service name"},
		{"Listeners", c.Listeners, c.Listeners < 0 || c.Listeners > maxLoops || (c.Listener != nil && c.Listeners > 1),
			"must be 0..1024, and at most 1 with a Listener"},
		{"Readers", c.Readers, c.Readers < 0 || c.Readers > 1024, "must be 0..1024"},
		{"Processors", c.Processors, c.Processors < 0 || c.Processors > maxProcessors, "must be 0..65536"},
		{"ProcessorsMin", c.ProcessorsMin, c.ProcessorsMin < 0 || c.ProcessorsMin > maxProcessors, "must be 0..65536"},
		{"ProcessorsMax", c.ProcessorsMax, c.ProcessorsMax < 0 || c.ProcessorsMax > maxProcessors, "must be 0..65536"},
		{"ProcessorsMin", c.ProcessorsMin, c.ProcessorsMin > 0 && c.ProcessorsMax > 0 && c.ProcessorsMin > c.ProcessorsMax,
			fmt.Sprintf("must be at most ProcessorsMax (%d)", c.ProcessorsMax)},
		{"Processors", c.Processors, c.Processors > 0 && c.ProcessorsMin > 0 && c.Processors < c.ProcessorsMin,
			fmt.Sprintf("must be at least ProcessorsMin (%d)", c.ProcessorsMin)},
		{"Processors", c.Processors, c.Processors > 0 && c.ProcessorsMax > 0 && c.Processors > c.ProcessorsMax,
			fmt.Sprintf("must be at most ProcessorsMax (%d)", c.ProcessorsMax)},
		{"Writers", c.Writers, c.Writers < 0 || c.Writers > 1024, "must be 0..1024"},
		{"ReadersMin", c.ReadersMin, c.ReadersMin < 0 || c.ReadersMin > maxLoops, "must be 0..1024"},
		{"ReadersMax", c.ReadersMax, c.ReadersMax < 0 || c.ReadersMax > maxLoops, "must be 0..1024"},
		{"WritersMin", c.WritersMin, c.WritersMin < 0 || c.WritersMin > maxLoops, "must be 0..1024"},
		{"WritersMax", c.WritersMax, c.WritersMax < 0 || c.WritersMax > maxLoops, "must be 0..1024"},
		{"ReadersMin", c.ReadersMin, c.ReadersMin > 0 && c.ReadersMax > 0 && c.ReadersMin > c.ReadersMax,
			fmt.Sprintf("must be at most ReadersMax (%d)", c.ReadersMax)},
		{"Readers", c.Readers, c.Readers > 0 && c.ReadersMin > 0 && c.Readers < c.ReadersMin,
			fmt.Sprintf("must be at least ReadersMin (%d)", c.ReadersMin)},
		{"Readers", c.Readers, c.Readers > 0 && c.ReadersMax > 0 && c.Readers > c.ReadersMax,
			fmt.Sprintf("must be at most ReadersMax (%d)", c.ReadersMax)},
		{"WritersMin", c.WritersMin, c.WritersMin > 0 && c.WritersMax > 0 && c.WritersMin > c.WritersMax,
			fmt.Sprintf("must be at most WritersMax (%d)", c.WritersMax)},
		{"Writers", c.Writers, c.Writers > 0 && c.WritersMin > 0 && c.Writers < c.WritersMin,
			fmt.Sprintf("must be at least WritersMin (%d)", c.WritersMin)},
		{"Writers", c.Writers, c.Writers > 0 && c.WritersMax > 0 && c.Writers > c.WritersMax,
			fmt.Sprintf("must be at most WritersMax (%d)", c.WritersMax)},
		{"QueueCapacity", c.QueueCapacity, c.QueueCapacity < 0 || c.QueueCapacity > maxQueueCapacity,
			"must be 0..1048576 (each request class has a queue of this capacity)"},
		{"MaxConns", c.MaxConns, c.MaxConns < 0, "must be >= 0"},
		{"MsgMaxPayload", c.MsgMaxPayload, c.MsgMaxPayload < 0 || c.MsgMaxPayload > math.MaxUint32,
			"must be 0..4294967295 (the wire's length field)"},
		{"MsgWindow", c.MsgWindow, c.MsgWindow < 0 || c.MsgWindow > 1<<15, "must be 0..32768"},
		{"MsgWindowBytes", c.MsgWindowBytes, c.MsgWindowBytes < 0, "must be >= 0"},
		{"MaxHeaderBytes", c.MaxHeaderBytes, c.MaxHeaderBytes < 0 || c.MaxHeaderBytes > maxHeadBytes ||
			c.MaxHeaderBytes > 0 && c.MaxHeaderBytes < minHeadLimit,
			"must be 0 (the default) or 64..67108864 (a request head is read into one buffer; less refuses ordinary requests)"},
		{"MaxRequestLine", c.MaxRequestLine, c.MaxRequestLine < 0 || c.MaxRequestLine > maxHeadBytes ||
			c.MaxRequestLine > 0 && c.MaxRequestLine < minHeadLimit,
			"must be 0 (the default) or 64..67108864 (a request head is read into one buffer; less refuses ordinary requests)"},
		{"MaxHeaders", c.MaxHeaders, c.MaxHeaders < 0, "must be >= 0"},
		{"MaxBodyBytes", c.MaxBodyBytes, c.MaxBodyBytes < 0, "must be >= 0"},
		{"HeaderTimeout", c.HeaderTimeout, c.HeaderTimeout < 0, "must be >= 0"},
		{"IdleTimeout", c.IdleTimeout, c.IdleTimeout < 0, "must be >= 0"},
		{"BodyTimeout", c.BodyTimeout, c.BodyTimeout < 0, "must be >= 0"},
		{"WriteTimeout", c.WriteTimeout, c.WriteTimeout < 0, "must be >= 0"},
		{"LingerTimeout", c.LingerTimeout, c.LingerTimeout < 0, "must be >= 0"},
		{"ShutdownTimeout", c.ShutdownTimeout, c.ShutdownTimeout < 0, "must be >= 0"},
		{"HighWater", c.HighWater, c.HighWater < 0, "must be >= 0"},
		{"PrereadBody", c.PrereadBody, c.PrereadBody < 0 || c.PrereadBody > maxPrereadBody,
			"must be 0..67108864 (a buffer of this size is taken per upload)"},
		{"MaxParked", c.MaxParked, c.MaxParked > 1<<20, "must be at most 1048576 (negative: never park)"},
		{"MinBodyRateGrace", c.MinBodyRateGrace, c.MinBodyRateGrace < 0, "must be >= 0"},
		{"MinResponseRateGrace", c.MinResponseRateGrace, c.MinResponseRateGrace < 0, "must be >= 0"},
		{"ServerName", c.ServerName, http1.UnsafeFieldValue(c.ServerName),
			"must not hold CR, LF or NUL (it is sent as the Server field's value)"},
	}
	for _, ch := range checks {
		if ch.bad {
			return &ConfigError{Field: ch.field, Value: ch.value, Reason: ch.why}
		}
	}
	return nil
}

// badListenAddr reports whether a listen address is malformed, by its
// syntax alone: a host name is looked up only when the server starts.
func badListenAddr(addr string) bool {
	if addr == "" {
		return false // the default
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return true
	}
	if n, err := strconv.ParseUint(port, 10, 64); err == nil {
		return n > 65535
	}
	return strings.IndexFunc(port, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-')
	}) >= 0
}

// maxQueueCapacity bounds QueueCapacity: the processor's queue and each
// request class's (up to eight) are rings of this many entries, made
// when the server starts and when a class opens.
const maxQueueCapacity = 1 << 20

// maxHeadBytes bounds MaxHeaderBytes and MaxRequestLine: a connection
// reads its request head into one buffer, grown up to the limit.
const maxHeadBytes = 64 << 20

// minHeadLimit is the least MaxHeaderBytes and MaxRequestLine take: below
// it a GET with a short path is refused (414, 431), which is a unit
// mistake (8 for 8 KiB), not a policy.
const minHeadLimit = 64

// maxPrereadBody bounds PrereadBody: the reader gives a preread body a
// buffer of its own size.
const maxPrereadBody = 64 << 20

// maxProcessors bounds the processor pool's size and bounds.
const maxProcessors = 1 << 16

// withDefaults fills every zero field from DefaultConfig: the one place
// where defaults are applied.
func (c Config) withDefaults() Config {
	d := reflect.ValueOf(DefaultConfig())
	v := reflect.ValueOf(&c).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.IsZero() {
			f.Set(d.Field(i))
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Handler == nil {
		c.Handler = notFound{}
	}
	c.Processors, c.ProcessorsMin, c.ProcessorsMax = processorSizes(c.Processors, c.ProcessorsMin, c.ProcessorsMax)
	c.Readers, c.ReadersMin, c.ReadersMax = loopSizes(c.Readers, c.ReadersMin, c.ReadersMax)
	c.Writers, c.WritersMin, c.WritersMax = loopSizes(c.Writers, c.WritersMin, c.WritersMax)
	return c
}

// LoopSizing is what c says of the reader or writer loops: where their
// count starts, its bounds, and whether a controller sizes it (see
// Config.Readers).
func (c Config) LoopSizing(st Stage) StageSize {
	size, lo, hi := c.Readers, c.ReadersMin, c.ReadersMax
	if st == StageWriter {
		size, lo, hi = c.Writers, c.WritersMin, c.WritersMax
	}
	size, lo, hi = loopSizes(size, lo, hi)
	return StageSize{Stage: st, Size: size, Min: lo, Max: hi, Auto: lo < hi, Resizable: true}
}

// loopSizes fills in a loop count and its bounds (see Config.Readers): a
// pinned count becomes equal bounds; the default bounds are 1 and
// GOMAXPROCS (more loops than CPUs only add wake-ups), the default start
// one loop per two CPUs (each loop serves thousands of connections).
func loopSizes(size, lo, hi int) (int, int, int) {
	if lo == 0 && hi == 0 && size > 0 {
		return size, size, size
	}
	cpus := goruntime.GOMAXPROCS(0)
	if lo == 0 {
		lo = 1
	}
	if hi == 0 {
		hi = max(lo, cpus)
	}
	if size == 0 {
		size = max(1, cpus/2)
	}
	return min(max(size, lo), hi), lo, hi
}

// ProcessorSizing is what c says of the processor pool: where it starts,
// its bounds, and whether its controller sizes it (see Config.Processors).
func (c Config) ProcessorSizing() StageSize {
	size, lo, hi := processorSizes(c.Processors, c.ProcessorsMin, c.ProcessorsMax)
	return StageSize{Stage: StageProcessor, Size: size, Min: lo, Max: hi, Auto: lo < hi, Resizable: true}
}

// processorSizes fills in the processor pool's size and bounds (see
// Config.Processors): a pinned size becomes equal bounds.
func processorSizes(size, lo, hi int) (int, int, int) {
	if lo == 0 && hi == 0 && size > 0 {
		return size, size, size
	}
	cpus := goruntime.GOMAXPROCS(0)
	if lo == 0 {
		lo = cpus
		if hi > 0 {
			lo = min(lo, hi)
		}
	}
	if hi == 0 {
		hi = min(max(lo, DefaultMaxProcessorsPerCPU*cpus), maxProcessors)
	}
	if size == 0 {
		size = lo
	}
	return min(max(size, lo), hi), lo, hi
}

// notFound is the handler of a Config without one.
type notFound struct{}

func (notFound) ServeQuartet(w *processor.ResponseWriter, _ *stages.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(404)
	w.WriteString("404 page not found\n")
}
