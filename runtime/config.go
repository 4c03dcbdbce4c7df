package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"time"

	"github.com/quartet-server/quartet/control"
	"github.com/quartet-server/quartet/processor"
	"github.com/quartet-server/quartet/reader"
	"github.com/quartet-server/quartet/stages"
	"github.com/quartet-server/quartet/writer"
)

// Config is everything a Server is built from. Every stage size is here so
// load experiments can sweep it; zero values take the defaults below.
type Config struct {
	Addr      string // listen address, host:port (port 0 picks one)
	Listeners int    // accept loops; more than one uses SO_REUSEPORT
	ReusePort bool   // SO_REUSEPORT even with one accept loop

	Readers int // R reader event loops
	Writers int // W writer event loops

	// Processors, ProcessorsMin and ProcessorsMax size the processor
	// pool: the handlers that may run at once (places; see processor's
	// Places). With neither bound set, a Processors above zero pins the
	// pool at that size, and zero lets the controller size it between the
	// default bounds: GOMAXPROCS (enough to keep every CPU busy with
	// handlers that compute) and DefaultMaxProcessorsPerCPU × GOMAXPROCS.
	// With a bound set, the controller sizes the pool within
	// [ProcessorsMin, ProcessorsMax] (the one not set takes its default),
	// starting at Processors, or at the minimum if Processors is 0. Sizes
	// change while serving through Server.ChangeStage too.
	Processors    int
	ProcessorsMin int
	ProcessorsMax int

	// QueueWaitTarget is admission control's target: a request that would
	// wait longer than this for a processor place is refused at once with
	// 503 and a Retry-After, in the reader, before it takes a place (its
	// class's queue is judged by its own service rate; see package
	// control). 0 means control.DefaultQueueWaitTarget (500 ms); negative
	// turns admission control off (requests then wait for as long as the
	// queue holds them).
	QueueWaitTarget time.Duration

	// QueueCapacity sizes each hand-off queue: reader→processor, and the
	// inbound queue of every reader and writer loop.
	QueueCapacity int

	MaxConns       int   // open connections at most; 0: no limit
	MaxHeaderBytes int   // header block limit (431)
	MaxRequestLine int   // request line limit (414)
	MaxHeaders     int   // header field count limit (431)
	MaxBodyBytes   int64 // request body limit (413)

	HeaderTimeout time.Duration // first byte to end of header block (408)
	IdleTimeout   time.Duration // keep-alive wait for the next request
	BodyTimeout   time.Duration // a handler waiting this long for body bytes fails
	WriteTimeout  time.Duration // a client that reads nothing this long is dropped
	LingerTimeout time.Duration // lingering close: wait for the client's FIN

	HighWater int64 // unsent bytes per response before its handler waits

	// PrereadBody: request bodies of up to this many bytes (with a
	// Content-Length, and no Expect: 100-continue) are read whole before
	// the request is dispatched, so a slow small upload never reaches a
	// processor (nginx's client_body_buffer_size); larger ones stream
	// while the handler runs. Default reader.DefaultPrereadBody (64 KiB).
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

	ServerName string

	// Handler runs every request. nil serves the built-in endpoints only.
	Handler processor.Handler
	// Log runs in the writer after each response's last byte (or abort),
	// with the exact bytes sent. nil logs nothing.
	Log func(*stages.Response)
	// Logger receives server events (handler panics, loop failures).
	Logger *slog.Logger

	// Modules plug features in through hooks, in this order.
	Modules []Module
}

// DefaultMaxProcessorsPerCPU bounds the processor pool the controller may
// grow to by default, per CPU: handlers that block 10 ms each need a
// thousand places per CPU to keep one CPU's worth of requests (about 100k
// a second of simple ones) moving; beyond that the I/O stages, not the
// places, are the limit. A place costs a goroutine (8 KiB of stack) only
// while it has work.
const DefaultMaxProcessorsPerCPU = 1024

// DefaultConfig sizes the stages for this machine: a reader and a writer
// loop per two CPUs (each loop serves thousands of connections; more loops
// than CPUs only adds wake-ups), and a processor pool that its controller
// sizes (Processors 0, default bounds).
func DefaultConfig() Config {
	cpus := goruntime.GOMAXPROCS(0)
	loops := max(1, cpus/2)
	return Config{
		Addr:          "127.0.0.1:8080",
		Listeners:     1,
		Readers:       loops,
		Writers:       loops,
		QueueCapacity: 4096,
		MaxConns:      0,
		MaxBodyBytes:  reader.DefaultMaxBodyBytes,
		HeaderTimeout: reader.DefaultHeaderTimeout,
		IdleTimeout:   reader.DefaultIdleTimeout,
		BodyTimeout:   reader.DefaultBodyTimeout,
		WriteTimeout:  processor.DefaultWriteTimeout,
		LingerTimeout: reader.DefaultLingerTimeout,
		HighWater:     processor.DefaultHighWater,
		ServerName:    processor.DefaultServerName,

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

// Validate reports the first setting that cannot work, naming it.
func (c *Config) Validate() error {
	bad := func(name string, v any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrBadConfig, name, v, why)
	}
	switch {
	case c.Addr == "":
		return bad("Addr", `""`, "need host:port")
	case c.Listeners < 0:
		return bad("Listeners", c.Listeners, "must be >= 0")
	case c.Readers < 0 || c.Readers > 1024:
		return bad("Readers", c.Readers, "must be 0..1024")
	case c.Processors < 0 || c.Processors > maxProcessors:
		return bad("Processors", c.Processors, "must be 0..65536")
	case c.ProcessorsMin < 0 || c.ProcessorsMin > maxProcessors:
		return bad("ProcessorsMin", c.ProcessorsMin, "must be 0..65536")
	case c.ProcessorsMax < 0 || c.ProcessorsMax > maxProcessors:
		return bad("ProcessorsMax", c.ProcessorsMax, "must be 0..65536")
	case c.ProcessorsMin > 0 && c.ProcessorsMax > 0 && c.ProcessorsMin > c.ProcessorsMax:
		return bad("ProcessorsMin", c.ProcessorsMin, fmt.Sprintf("must be at most ProcessorsMax (%d)", c.ProcessorsMax))
	case c.Processors > 0 && c.ProcessorsMin > 0 && c.Processors < c.ProcessorsMin:
		return bad("Processors", c.Processors, fmt.Sprintf("must be at least ProcessorsMin (%d)", c.ProcessorsMin))
	case c.Processors > 0 && c.ProcessorsMax > 0 && c.Processors > c.ProcessorsMax:
		return bad("Processors", c.Processors, fmt.Sprintf("must be at most ProcessorsMax (%d)", c.ProcessorsMax))
	case c.Writers < 0 || c.Writers > 1024:
		return bad("Writers", c.Writers, "must be 0..1024")
	case c.QueueCapacity < 0 || c.QueueCapacity > 1<<24:
		return bad("QueueCapacity", c.QueueCapacity, "must be 0..16777216")
	case c.MaxConns < 0:
		return bad("MaxConns", c.MaxConns, "must be >= 0")
	case c.MaxBodyBytes < 0:
		return bad("MaxBodyBytes", c.MaxBodyBytes, "must be >= 0")
	case c.HighWater < 0:
		return bad("HighWater", c.HighWater, "must be >= 0")
	case c.PrereadBody < 0 || c.PrereadBody > maxPrereadBody:
		return bad("PrereadBody", c.PrereadBody, "must be 0..67108864 (a buffer of this size is taken per upload)")
	case c.MaxParked > 1<<20:
		return bad("MaxParked", c.MaxParked, "must be at most 1048576 (negative: never park)")
	case c.MinBodyRateGrace < 0:
		return bad("MinBodyRateGrace", c.MinBodyRateGrace, "must be >= 0")
	case c.MinResponseRateGrace < 0:
		return bad("MinResponseRateGrace", c.MinResponseRateGrace, "must be >= 0")
	}
	for name, d := range map[string]time.Duration{
		"HeaderTimeout": c.HeaderTimeout, "IdleTimeout": c.IdleTimeout, "BodyTimeout": c.BodyTimeout,
		"WriteTimeout": c.WriteTimeout, "LingerTimeout": c.LingerTimeout,
	} {
		if d < 0 {
			return bad(name, d, "must be >= 0")
		}
	}
	return nil
}

// maxProcessors bounds the processor pool's size and bounds.
const maxProcessors = 1 << 16

// maxPrereadBody bounds PrereadBody: the reader gives a preread body a
// buffer of its own size.
const maxPrereadBody = 64 << 20

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Listeners == 0 {
		c.Listeners = d.Listeners
	}
	if c.Readers == 0 {
		c.Readers = d.Readers
	}
	c.Processors, c.ProcessorsMin, c.ProcessorsMax = processorSizes(c.Processors, c.ProcessorsMin, c.ProcessorsMax)
	if c.Writers == 0 {
		c.Writers = d.Writers
	}
	if c.QueueCapacity == 0 {
		c.QueueCapacity = d.QueueCapacity
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if c.ServerName == "" {
		c.ServerName = d.ServerName
	}
	if c.Handler == nil {
		c.Handler = Builtin(nil)
	}
	if c.PrereadBody == 0 {
		c.PrereadBody = d.PrereadBody
	}
	if c.MaxParked == 0 {
		c.MaxParked = d.MaxParked
	}
	if c.MinBodyRate == 0 {
		c.MinBodyRate = d.MinBodyRate
	}
	if c.MinBodyRateGrace == 0 {
		c.MinBodyRateGrace = d.MinBodyRateGrace
	}
	if c.MinResponseRate == 0 {
		c.MinResponseRate = d.MinResponseRate
	}
	if c.MinResponseRateGrace == 0 {
		c.MinResponseRateGrace = d.MinResponseRateGrace
	}
	if c.QueueWaitTarget == 0 {
		c.QueueWaitTarget = d.QueueWaitTarget
	}
	return c
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
